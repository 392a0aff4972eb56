"""The report as one list of blocks, rendered to Markdown (figures as PNG files beside it) and to a
self-contained HTML page (figures embedded, for the Kubeflow UI)."""

from __future__ import annotations

import base64
import html as html_lib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "header": self.header, "rows": self.rows, "note": self.note}


@dataclass
class Figure:
    title: str
    file: str  # relative to the report folder
    caption: str = ""


Block = tuple[str, Any]  # ("h1"|"h2"|"h3"|"p"|"ul", text or list) | ("table", Table) | ("figure", Figure)


def _inline_html(text: str) -> str:
    """The Markdown subset the report uses (**bold**, `code`) as HTML."""
    escaped = html_lib.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_markdown(blocks: list[Block], image: Callable[[Figure], str] = lambda f: f.file) -> str:
    lines: list[str] = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + f" {value}", ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in value] + [""]
        elif kind == "table":
            table: Table = value
            lines += [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |",
                      "|" + "|".join("---" for _ in table.header) + "|"]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
            lines += [""] + ([table.note, ""] if table.note else [])
        elif kind == "figure":
            figure: Figure = value
            lines += [f"**{figure.title}**", "", f"![{figure.title}]({image(figure)})", ""]
            lines += [figure.caption, ""] if figure.caption else []
    return "\n".join(lines)


def render_html(blocks: list[Block], folder: Path, title: str) -> str:
    body: list[str] = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline_html(value)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(value)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in value) + "</ul>")
        elif kind == "table":
            table: Table = value
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in table.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in table.rows)
            note = f"<p class='note'>{_inline_html(table.note)}</p>" if table.note else ""
            body.append(f"<h3>{_inline_html(table.title)}</h3><table><tr>{head}</tr>{rows}</table>{note}")
        elif kind == "figure":
            figure: Figure = value
            data = base64.b64encode((folder / figure.file).read_bytes()).decode()
            caption = f"<figcaption>{_inline_html(figure.caption)}</figcaption>" if figure.caption else ""
            body.append(f"<figure><h3>{_inline_html(figure.title)}</h3>"
                        f"<img alt='{html_lib.escape(figure.title)}' src='data:image/png;base64,{data}'>{caption}</figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:6px 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}.note{color:#555;font-size:90%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html_lib.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
