"""The paper's experiments as a report of ONE pipeline run: Tables 1-4, Figures 2-3, Pareto plots, the
paper's claims each with a verdict, and the recommended student.

Input: the run's evaluated models as rows (``fewframes.components.steps.report_rows``: each evaluation's
``row.json`` — the model's parameters, seed, GAP/mAP/... — joined with its benchmark figures), the
per-epoch validation history of each training run (from MLflow: ``training_histories``) and the sampled
encodings of the teacher and a student (``encodings.parquet`` of their evaluations, for Figure 3).
Output, in one folder: ``report.md`` (figures as PNG files beside it), ``report.html`` (figures embedded,
for the Kubeflow UI) and ``summary.json`` (every table, claim and verdict as data).

Rules chosen here (and stated in the report):
- Models that differ only in their seed form one configuration; its cells show the mean and, where more
  than one seed ran, ± the sample standard deviation and the number of seeds.
- "Within tolerance of the teacher" is relative: GAP >= teacher GAP * (1 - tolerance). The same yardstick
  (tolerance x teacher GAP) decides "about equal" (serial vs parallel) and "no gain" (intermediate matching).
- A claim whose models are not in the run is "not measured", never guessed.

matplotlib and scikit-learn are imported inside the functions that draw.
"""

from __future__ import annotations

import base64
import html as html_lib
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewframes import fsio
from fewframes.config import BASELINE_SELECTIONS, DISTILL_LOSSES, TRAINING_MODES
from fewframes.errors import PipelineError

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
SUMMARY_FILE = "summary.json"

BASELINE_NAMES = {
    "uniform": "Uniform-k",
    "random": "Random-k",
    "first": "First-k",
    "middle": "Middle-k",
    "last": "Last-k",
    "first_middle_last": "First-Middle-Last-k",
}
LOSS_NAMES = {"rep": "L_rep", "rep_ce": "L_rep+L_CE", "rep_pred_ce": "L_rep+L_pred+L_CE"}
LOSS_LETTERS = {"rep": "(a)", "rep_ce": "(b)", "rep_pred_ce": "(c)"}
# The per-epoch metrics the report reads back from each training run.
HISTORY_METRICS = ("val_gap", "teacher_val_gap")
# The paper's k for intermediate matching (Table 2), less training data (Table 3) and Figure 2.
PAPER_K = 30


# ----------------------------------------------------------------------------------------------------------
# configurations: rows that differ only in the seed
# ----------------------------------------------------------------------------------------------------------


def _fraction(row: dict[str, Any]) -> float:
    value = row.get("train_fraction", 1.0)
    return 1.0 if value in (None, "") else float(value)


def _k(row: dict[str, Any]) -> int | None:
    value = row.get("k")
    return None if value in (None, "") else int(value)


def config_of(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a model is, without its seed: (role, k, frame_selection, loss, mode, matching, train_fraction)."""
    role = row["role"]
    if role == "teacher":
        return ("teacher", None, "all", "", "", "", _fraction(row))
    if role == "baseline":
        return ("baseline", _k(row), row.get("frame_selection", ""), "", "", "", _fraction(row))
    return ("student", _k(row), "uniform", row.get("loss", ""), row.get("mode", ""),
            row.get("matching") or "final", _fraction(row))


@dataclass
class Config:
    """One configuration and its runs (one per seed)."""

    role: str
    k: int | None
    frame_selection: str
    loss: str
    mode: str
    matching: str
    train_fraction: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def seeds(self) -> list[Any]:
        return [r.get("seed", "") for r in self.rows]

    def values(self, metric: str) -> list[float]:
        return [float(r[metric]) for r in self.rows if r.get(metric) not in (None, "")]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def spread(self, metric: str) -> float | None:
        """Sample standard deviation over seeds (None with fewer than 2)."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else None

    def first(self) -> dict[str, Any]:
        """The run of the pipeline's own seed (the one not marked as a repeat), for per-model facts."""
        plain = [r for r in self.rows if "-seed" not in str(r.get("model_key", ""))]
        return (plain or self.rows)[0]

    @property
    def name(self) -> str:
        if self.role == "teacher":
            return "Teacher-Skyline"
        if self.role == "baseline":
            return BASELINE_NAMES.get(self.frame_selection, self.frame_selection)
        name = f"{self.mode.capitalize()} {LOSS_LETTERS.get(self.loss, '')}, {LOSS_NAMES.get(self.loss, self.loss)}"
        return name + (" (intermediate)" if self.matching == "intermediate" else "")


def group_configs(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], Config]:
    configs: dict[tuple[Any, ...], Config] = {}
    for row in rows:
        key = config_of(row)
        if key not in configs:
            configs[key] = Config(*key)
        configs[key].rows.append(row)
    return configs


class Grid:
    """Look-ups into the run's configurations by what the paper's tables ask for."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.configs = group_configs(rows)

    def teacher(self) -> Config | None:
        return self.configs.get(("teacher", None, "all", "", "", "", 1.0))

    def baseline(self, selection: str, k: int, fraction: float = 1.0) -> Config | None:
        return self.configs.get(("baseline", k, selection, "", "", "", fraction))

    def student(self, mode: str, loss: str, k: int, matching: str = "final", fraction: float = 1.0) -> Config | None:
        return self.configs.get(("student", k, "uniform", loss, mode, matching, fraction))

    def ks(self) -> list[int]:
        return sorted({c.k for c in self.configs.values() if c.k is not None and c.train_fraction >= 1.0
                       and c.matching in ("", "final")})

    def present(self, role: str) -> list[Config]:
        return [c for c in self.configs.values() if c.role == role]

    def students(self, matching: str = "final", fraction: float = 1.0) -> list[Config]:
        return [c for c in self.present("student") if c.matching == matching and c.train_fraction == fraction]

    def variants(self) -> list[tuple[str, str]]:
        """(mode, loss) pairs with final-matching full-data students, in the paper's order."""
        found = {(c.mode, c.loss) for c in self.students()}
        order = [(m, loss) for m in ("parallel", "serial") for loss in DISTILL_LOSSES]
        return [v for v in order if v in found] + sorted(found - set(order))


# ----------------------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_config(config: Config | None, metric: str, digits: int = 4) -> str:
    """'0.6123' for one seed, '0.6123 ± 0.0041 (n=3)' for several, '–' when not run."""
    if config is None or config.mean(metric) is None:
        return "–"
    text = fmt(config.mean(metric), digits)
    spread = config.spread(metric)
    if spread is not None:
        text += f" ± {spread:.{digits}f} (n={len(config.values(metric))})"
    return text


def fmt_cost(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# ----------------------------------------------------------------------------------------------------------
# the document: one list of blocks, rendered to Markdown and to HTML
# ----------------------------------------------------------------------------------------------------------


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


Block = tuple[str, Any]  # ("h1"|"h2"|"p"|"ul", text or list) | ("table", Table) | ("figure", Figure)


def _inline_html(text: str) -> str:
    """The Markdown subset the report uses (**bold**, `code`) as HTML."""
    escaped = html_lib.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_markdown(blocks: list[Block], image: Callable[[Figure], str]) -> str:
    lines: list[str] = []
    for kind, value in blocks:
        if kind == "h1":
            lines += [f"# {value}", ""]
        elif kind == "h2":
            lines += [f"## {value}", ""]
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
        if kind in ("h1", "h2"):
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


# ----------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------


def table1(grid: Grid, metric: str) -> Table:
    """Teacher-Skyline, every baseline and every teacher-student variant, one column per k."""
    ks = grid.ks()
    label = "GAP" if metric == "gap" else "mAP"
    rows: list[list[str]] = []
    teacher = grid.teacher()
    if teacher is not None:
        rows.append([teacher.name] + [fmt_config(teacher, metric)] * len(ks))
    for selection in BASELINE_SELECTIONS:
        configs = [grid.baseline(selection, k) for k in ks]
        if any(configs):
            rows.append([BASELINE_NAMES[selection]] + [fmt_config(c, metric) for c in configs])
    for mode, loss in grid.variants():
        configs = [grid.student(mode, loss, k) for k in ks]
        rows.append([configs[[c is not None for c in configs].index(True)].name] + [fmt_config(c, metric) for c in configs])
    return Table(f"Table 1 ({label}): test {label} of every model by k", ["model"] + [f"k={k}" for k in ks], rows,
                 "Teacher-Skyline reads all frames (the same value in every column). Students use final matching "
                 "and all the training data.")


def table2(grid: Grid, k: int) -> Table:
    rows = []
    for mode in TRAINING_MODES:
        for loss in DISTILL_LOSSES:
            final, inter = grid.student(mode, loss, k), grid.student(mode, loss, k, "intermediate")
            if final is None and inter is None:
                continue
            delta = None if final is None or inter is None else inter.mean("gap") - final.mean("gap")
            rows.append([f"{mode.capitalize()} {LOSS_LETTERS[loss]}, {LOSS_NAMES[loss]}",
                         fmt_config(final, "gap"), fmt_config(inter, "gap"), fmt(delta),
                         fmt_config(final, "map"), fmt_config(inter, "map")])
    return Table(f"Table 2: final vs intermediate matching at k={k}",
                 ["variant", "GAP final", "GAP intermediate", "Δ GAP (inter − final)", "mAP final", "mAP intermediate"],
                 rows)


def _fractions(grid: Grid, k: int) -> list[float]:
    found = {c.train_fraction for c in grid.configs.values() if c.k == k and c.train_fraction < 1.0}
    return sorted(found) + [1.0]


def table3(grid: Grid, k: int) -> Table:
    rows = []
    for fraction in _fractions(grid, k):
        serial, uniform = grid.student("serial", "rep_pred_ce", k, fraction=fraction), grid.baseline("uniform", k, fraction)
        margin = None if serial is None or uniform is None else serial.mean("gap") - uniform.mean("gap")
        rows.append([f"{fraction:.0%}", fmt_config(serial, "gap"), fmt_config(uniform, "gap"), fmt(margin),
                     fmt_config(serial, "map"), fmt_config(uniform, "map")])
    return Table(f"Table 3: Serial (c) vs Uniform-k at k={k} on part of the training data",
                 ["training data", "GAP Serial (c)", "GAP Uniform-k", "margin", "mAP Serial (c)", "mAP Uniform-k"], rows,
                 "Students on part of the data distil from the teacher trained on all of it.")


def _cost(config: Config | None, name: str) -> float | None:
    if config is None:
        return None
    value = config.first().get(name)
    return None if value in (None, "") else float(value)


def table4(grid: Grid) -> Table:
    teacher = grid.teacher()
    rows = []
    models: list[tuple[str, Config | None]] = [("Teacher (all frames)", teacher)]
    for k in grid.ks():
        # Every k-frame model (student or baseline) has the same architecture, so the same cost.
        config = grid.student("serial", "rep_pred_ce", k) or grid.baseline("uniform", k) or next(
            (c for c in grid.configs.values() if c.k == k and c.role != "teacher"), None)
        models.append((f"k={k} (student or baseline)", config))
    t_flops, t_e2e = _cost(teacher, "gflops"), _cost(teacher, "e2e_throughput_videos_s")
    for name, config in models:
        flops, e2e = _cost(config, "gflops"), _cost(config, "e2e_throughput_videos_s")
        rows.append([
            name, fmt_cost(_cost(config, "num_parameters")), fmt_cost(flops),
            "–" if flops is None or not t_flops else f"{flops / t_flops:.1%}",
            fmt_cost(_cost(config, "latency_ms_p50")), fmt_cost(_cost(config, "throughput_videos_s")),
            fmt_cost(e2e), "–" if not e2e else f"{1000.0 / e2e:.2f}",
            "–" if not e2e or not t_e2e else f"{e2e / t_e2e:.1f}x",
        ])
    return Table("Table 4: cost per video (benchmark step, this run's machine)",
                 ["model", "params", "GFLOPs/video", "FLOPs vs teacher", "latency p50 (ms, batch 1)",
                  "throughput (videos/s, model only)", "throughput (videos/s, store → scores)",
                  "evaluation time per 1,000 videos (s)", "speed-up vs teacher"], rows,
                 "FLOPs count 2 per multiply-add (the paper's GFLOPs count multiply-adds: half of ours). "
                 "Store → scores reads each model's frames from the frame store on disk: a k-frame model "
                 "reads only its k frames.")


ALL_MODELS_COLUMNS = (
    ("model_key", "model"), ("seed", "seed"), ("gap", "GAP"), ("map", "mAP"), ("hit_at_1", "Hit@1"),
    ("perr", "PERR"), ("num_parameters", "params"), ("gflops", "GFLOPs"), ("latency_ms_p50", "latency p50 (ms)"),
)


def all_models_table(rows: list[dict[str, Any]]) -> Table:
    """One row per evaluated model (every seed), teacher first, then by GAP."""
    ordered = sorted(rows, key=lambda r: (r["role"] != "teacher", -float(r.get("gap") or 0.0)))
    body = []
    for row in ordered:
        cells = []
        for name, _ in ALL_MODELS_COLUMNS:
            value = row.get(name)
            if isinstance(value, float):
                cells.append(fmt_cost(value) if name in ("num_parameters", "gflops", "latency_ms_p50") else fmt(value))
            else:
                cells.append("" if value is None else str(value))
        body.append(cells)
    return Table("All evaluated models", [label for _, label in ALL_MODELS_COLUMNS], body)


# ----------------------------------------------------------------------------------------------------------
# claims
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Claim:
    key: str
    claim: str
    verdict: str
    evidence: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "claim": self.claim, "verdict": self.verdict, "evidence": self.evidence}


def _gap(config: Config | None) -> float | None:
    return None if config is None else config.mean("gap")


def claim_uniform_best(grid: Grid) -> Claim:
    text = "Uniform-k is the best baseline (at every k)"
    beaten, checked = [], 0
    for k in grid.ks():
        uniform = _gap(grid.baseline("uniform", k))
        others = {s: _gap(grid.baseline(s, k)) for s in BASELINE_SELECTIONS if s != "uniform"}
        others = {s: g for s, g in others.items() if g is not None}
        if uniform is None or not others:
            continue
        checked += 1
        best, best_gap = max(others.items(), key=lambda item: item[1])
        if best_gap > uniform:
            beaten.append(f"k={k}: {BASELINE_NAMES[best]} {best_gap:.4f} > Uniform-k {uniform:.4f}")
    if not checked:
        return Claim("uniform_best_baseline", text, NOT_MEASURED, "no k with Uniform-k and another baseline")
    if beaten:
        return Claim("uniform_best_baseline", text, FAILS,
                     f"beaten at {len(beaten)} of {checked} k: " + "; ".join(beaten))
    return Claim("uniform_best_baseline", text, HOLDS, f"Uniform-k has the highest baseline GAP at all {checked} k")


def claim_students_beat_uniform(grid: Grid) -> Claim:
    text = "every teacher–student variant beats Uniform-k at the same k"
    wins, losses = 0, []
    margins = []
    for mode, loss in grid.variants():
        for k in grid.ks():
            student, uniform = _gap(grid.student(mode, loss, k)), _gap(grid.baseline("uniform", k))
            if student is None or uniform is None:
                continue
            margins.append(student - uniform)
            if student > uniform:
                wins += 1
            else:
                losses.append(f"{mode} {LOSS_LETTERS[loss]} k={k}: {student:.4f} vs {uniform:.4f}")
    total = wins + len(losses)
    if not total:
        return Claim("students_beat_uniform", text, NOT_MEASURED, "no student with a Uniform-k baseline at its k")
    evidence = (f"{wins} of {total} (variant, k) pairs beat Uniform-k; mean margin {statistics.fmean(margins):+.4f} GAP"
                + ("; not: " + "; ".join(losses[:8]) + (" …" if len(losses) > 8 else "") if losses else ""))
    return Claim("students_beat_uniform", text, HOLDS if not losses else FAILS, evidence)


def claim_k30_close(grid: Grid, tolerance: float, k: int = 30) -> Claim:
    text = f"the k={k} student is within {tolerance:.0%} GAP of the teacher"
    teacher = _gap(grid.teacher())
    students = [c for c in grid.students() if c.k == k and c.mean("gap") is not None]
    if teacher is None or not students:
        return Claim("k30_within_tolerance", text, NOT_MEASURED, f"no teacher or no k={k} student in this run")
    best = max(students, key=lambda c: c.mean("gap"))
    gap = best.mean("gap")
    relative = 1.0 - gap / teacher
    where = f"{relative:.2%} below" if relative >= 0 else f"{-relative:.2%} above"
    serial_c = grid.student("serial", "rep_pred_ce", k)
    extra = "" if serial_c is None or serial_c is best else (
        f"; Serial (c): {fmt_config(serial_c, 'gap')} ({serial_c.mean('gap') / teacher - 1.0:+.2%} vs the teacher)")
    return Claim("k30_within_tolerance", text, HOLDS if gap >= teacher * (1.0 - tolerance) else FAILS,
                 f"best k={k} student {best.name}: GAP {gap:.4f} vs teacher {teacher:.4f} "
                 f"({where} the teacher){extra}")


def claim_serial_parallel(grid: Grid, tolerance: float) -> Claim:
    text = "serial ≈ parallel training"
    teacher = _gap(grid.teacher())
    diffs = []
    for loss in DISTILL_LOSSES:
        for k in grid.ks():
            serial, parallel = _gap(grid.student("serial", loss, k)), _gap(grid.student("parallel", loss, k))
            if serial is not None and parallel is not None:
                diffs.append(serial - parallel)
    if teacher is None or not diffs:
        return Claim("serial_vs_parallel", text, NOT_MEASURED, "no (loss, k) with both a serial and a parallel student")
    mean_abs = statistics.fmean(abs(d) for d in diffs)
    bound = tolerance * teacher
    serial_wins = sum(d > 0 for d in diffs)
    return Claim("serial_vs_parallel", text, HOLDS if mean_abs <= bound else FAILS,
                 f"mean |serial − parallel| = {mean_abs:.4f} GAP over {len(diffs)} (loss, k) pairs "
                 f"(≈ means ≤ {tolerance:.0%} of the teacher's GAP = {bound:.4f}); serial higher in {serial_wins}, "
                 f"mean serial − parallel {statistics.fmean(diffs):+.4f}, largest |Δ| {max(abs(d) for d in diffs):.4f}")


def claim_intermediate(grid: Grid, tolerance: float, k: int) -> Claim:
    text = f"intermediate matching gives no gain over final matching (k={k})"
    teacher = _gap(grid.teacher())
    diffs = []
    for mode in TRAINING_MODES:
        for loss in DISTILL_LOSSES:
            final, inter = _gap(grid.student(mode, loss, k)), _gap(grid.student(mode, loss, k, "intermediate"))
            if final is not None and inter is not None:
                diffs.append((f"{mode} {LOSS_LETTERS[loss]}", inter - final))
    if teacher is None or not diffs:
        return Claim("intermediate_no_gain", text, NOT_MEASURED, f"no variant with both matchings at k={k}")
    bound = tolerance * teacher
    mean = statistics.fmean(d for _, d in diffs)
    gains = [f"{name} {d:+.4f}" for name, d in diffs if d > bound]
    return Claim("intermediate_no_gain", text, HOLDS if mean <= bound else FAILS,
                 f"mean intermediate − final = {mean:+.4f} GAP over {len(diffs)} variants (a gain means > "
                 f"{bound:.4f}, {tolerance:.0%} of the teacher's GAP)"
                 + (f"; variants above it: {', '.join(gains)}" if gains else ""))


def claim_margin_grows(grid: Grid, k: int) -> Claim:
    text = f"the student's margin over Uniform-k grows as training data shrinks (Serial (c), k={k})"
    margins = []
    for fraction in _fractions(grid, k):
        serial, uniform = _gap(grid.student("serial", "rep_pred_ce", k, fraction=fraction)), _gap(grid.baseline("uniform", k, fraction))
        if serial is not None and uniform is not None:
            margins.append((fraction, serial - uniform))
    if len(margins) < 2:
        return Claim("margin_grows", text, NOT_MEASURED, f"fewer than two data fractions with both models at k={k}")
    by_less_data = sorted(margins, key=lambda m: -m[0])  # 100% first
    steps_up = all(b[1] >= a[1] for a, b in zip(by_less_data, by_less_data[1:]))
    grows = by_less_data[-1][1] > by_less_data[0][1]
    listed = ", ".join(f"{f:.0%}: {m:+.4f}" for f, m in by_less_data)
    verdict = HOLDS if grows and steps_up else FAILS
    detail = "" if verdict == HOLDS else (" (larger with the least data than with all of it, but not at every step)"
                                          if grows else " (not larger with the least data than with all of it)")
    return Claim("margin_grows", text, verdict, f"margin Serial (c) − Uniform-k by training data: {listed}{detail}")


def paper_claims(grid: Grid, tolerance: float, intermediate_k: int, fraction_k: int) -> list[Claim]:
    return [
        claim_uniform_best(grid),
        claim_students_beat_uniform(grid),
        claim_k30_close(grid, tolerance),
        claim_serial_parallel(grid, tolerance),
        claim_intermediate(grid, tolerance, intermediate_k),
        claim_margin_grows(grid, fraction_k),
    ]


# ----------------------------------------------------------------------------------------------------------
# the recommended student
# ----------------------------------------------------------------------------------------------------------


def recommend_student(rows: list[dict[str, Any]], tolerance: float = 0.01) -> dict[str, Any] | None:
    """The smallest-k student (final matching, full data) whose GAP is within ``tolerance`` (relative) of the
    teacher's; ties go to the higher GAP. None when there is no teacher row or no student qualifies."""
    teachers = [r for r in rows if r["role"] == "teacher" and r.get("gap") is not None]
    if not teachers:
        return None
    threshold = float(teachers[0]["gap"]) * (1.0 - tolerance)
    candidates = [
        r
        for r in rows
        if r["role"] == "student"
        and (r.get("matching") or "final") == "final"
        and _fraction(r) >= 1.0
        and r.get("gap") is not None
        and float(r["gap"]) >= threshold
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda r: (int(r["k"]), -float(r["gap"])))


def recommendation(grid: Grid, tolerance: float) -> dict[str, Any] | None:
    """``recommend_student`` over configurations (seed means), with the chosen one's speed-up."""
    teacher = grid.teacher()
    if teacher is None:
        return None
    rows = [{"role": "teacher", "gap": teacher.mean("gap")}]
    by_id = {}
    for config in grid.students():
        rows.append({"role": "student", "k": config.k, "gap": config.mean("gap"), "matching": "final",
                     "train_fraction": 1.0, "config": id(config)})
        by_id[id(config)] = config
    chosen = recommend_student(rows, tolerance)
    if chosen is None:
        return None
    config = by_id[chosen["config"]]
    result: dict[str, Any] = {
        "model_key": config.first().get("model_key", ""), "name": config.name, "k": config.k,
        "mode": config.mode, "loss": config.loss, "gap": config.mean("gap"), "map": config.mean("map"),
        "seeds": config.n, "teacher_gap": teacher.mean("gap"), "tolerance": tolerance,
    }
    for name, ours in (("gflops", "flops_ratio"), ("latency_ms_p50", "latency_ratio")):
        s, t = _cost(config, name), _cost(teacher, name)
        result[ours] = None if s is None or not t else s / t
    s, t = _cost(config, "e2e_throughput_videos_s"), _cost(teacher, "e2e_throughput_videos_s")
    result["speedup_e2e"] = None if not s or not t else s / t
    s, t = _cost(config, "throughput_videos_s"), _cost(teacher, "throughput_videos_s")
    result["speedup_model"] = None if not s or not t else s / t
    return result


# ----------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    plt = _pyplot()
    try:
        with fsio.staged_output_file(path) as temp:  # the temp name has no .png suffix: say the format
            figure.savefig(temp, dpi=110, format="png")
    finally:
        plt.close(figure)


def gap_vs_k_figure(grid: Grid, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    ks = grid.ks()
    series = [(BASELINE_NAMES[s], [grid.baseline(s, k) for k in ks], "--") for s in BASELINE_SELECTIONS]
    series += [(grid.student(m, loss, next(k for k in ks if grid.student(m, loss, k))).name,
                [grid.student(m, loss, k) for k in ks], "-") for m, loss in grid.variants()]
    palette = plt.get_cmap("tab20")  # up to 12 series: tab10's colours would repeat
    for index, (name, configs, style) in enumerate(series):
        points = [(k, c.mean("gap")) for k, c in zip(ks, configs) if c is not None and c.mean("gap") is not None]
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", markersize=3, label=name,
                      color=palette(index % 20))
    teacher = _gap(grid.teacher())
    if teacher is not None:
        axes.axhline(teacher, color="black", linestyle=":", label="Teacher-Skyline (all frames)")
    axes.set_xlabel("k (frames read)")
    axes.set_ylabel("test GAP@20")
    axes.set_title("GAP vs k")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    _save(figure, path)


def figure2(grid: Grid, histories: dict[str, dict[str, list[float]]], path: Path, k: int) -> list[str]:
    """Validation GAP per epoch, serial vs parallel teacher and student, one panel per loss. Returns the
    losses drawn (empty: nothing to draw, no file written)."""
    teacher = grid.teacher()
    teacher_history = histories.get(teacher.first()["model_key"], {}) if teacher else {}
    panels = []
    for loss in DISTILL_LOSSES:
        serial, parallel = grid.student("serial", loss, k), grid.student("parallel", loss, k)
        curves = []
        if teacher_history.get("val_gap"):
            curves.append(("serial teacher", teacher_history["val_gap"], "#1f3b73", "-"))
        if serial is not None and histories.get(serial.first()["model_key"], {}).get("val_gap"):
            curves.append(("serial student", histories[serial.first()["model_key"]]["val_gap"], "#8fb3e8", "-"))
        if parallel is not None:
            history = histories.get(parallel.first()["model_key"], {})
            if history.get("teacher_val_gap"):
                curves.append(("parallel teacher", history["teacher_val_gap"], "#7a1f1f", "--"))
            if history.get("val_gap"):
                curves.append(("parallel student", history["val_gap"], "#f0a3a3", "--"))
        if any(name.endswith("student") for name, *_ in curves):
            panels.append((loss, curves))
    if not panels:
        return []
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (loss, curves) in zip(axes[0], panels):
        for name, values, colour, style in curves:
            ax.plot(range(1, len(values) + 1), values, style, color=colour, marker="o", label=name)
        ax.set_title(f"{LOSS_LETTERS[loss]} {LOSS_NAMES[loss]}, k={k}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation GAP")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    return [loss for loss, _ in panels]


def _encodings_file(config: Config) -> Path | None:
    """The sampled encodings of a configuration's evaluation (None when it kept none)."""
    from fewframes.evaluation import ENCODINGS_FILE

    folder = config.first().get("evaluation_dir")
    path = Path(folder) / ENCODINGS_FILE if folder else None
    return path if path is not None and path.is_file() else None


def figure3(teacher: Config, student: Config, path: Path) -> dict[str, Any]:
    """The t-SNE of teacher and student encodings of the same test videos (5 most frequent classes)."""
    from fewframes.evaluation import encoding_tsne, plot_encoding_tsne

    _pyplot()
    embedding = encoding_tsne(_encodings_file(teacher), _encodings_file(student), num_classes=5)
    figure = plot_encoding_tsne(embedding, title=f"Teacher (dark, o) vs {student.name} k={student.k} (light, ^)")
    _save(figure, path)
    return {"videos": len(embedding.video_ids), "classes": embedding.classes,
            "pair_distance_ratio": embedding.pair_distance_ratio, "mean_cosine": embedding.mean_cosine}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and GAP (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, gap in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or gap > front[-1][1]:
            front.append((cost, gap))
    return front


def pareto_figure(grid: Grid, path: Path) -> dict[str, list[tuple[str, float, float]]] | None:
    """GAP vs GFLOPs and GAP vs latency of every full-data, final-matching model; the front of each.
    None (nothing drawn) when no model has benchmark figures."""
    models = [c for c in grid.configs.values() if c.train_fraction >= 1.0 and c.matching in ("", "final")
              and c.mean("gap") is not None]
    if not any(_cost(c, "gflops") and _cost(c, "latency_ms_p50") for c in models):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    fronts: dict[str, list[tuple[str, float, float]]] = {}
    for ax, metric, label in ((axes[0], "gflops", "GFLOPs per video"), (axes[1], "latency_ms_p50", "latency p50 (ms, batch 1)")):
        points = [(c, _cost(c, metric), c.mean("gap")) for c in models if _cost(c, metric)]
        groups = {"teacher": ("black", "*"), "baseline": ("#888888", "s"), "student": ("#1f77b4", "o")}
        for role, (colour, marker) in groups.items():
            chosen = [(x, y) for c, x, y in points if c.role == role]
            if chosen:
                ax.scatter([p[0] for p in chosen], [p[1] for p in chosen], c=colour, marker=marker, s=28,
                           label="Teacher-Skyline" if role == "teacher" else f"{role}s", alpha=0.8)
        front = pareto_front([(x, y) for _, x, y in points])
        ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="#d62728", label="Pareto front")
        names = {(x, y): c for c, x, y in points}
        fronts[metric] = [(f"{names[p].name} k={names[p].k}" if names[p].k else names[p].name, p[0], p[1]) for p in front]
        for x, y in front:
            config = names[(x, y)]
            ax.annotate(f"k={config.k}" if config.k else "teacher", (x, y), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test GAP@20")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_title("GAP vs GFLOPs")
    axes[1].set_title("GAP vs latency")
    figure.tight_layout()
    _save(figure, path)
    return fronts


# ----------------------------------------------------------------------------------------------------------
# MLflow: the training histories
# ----------------------------------------------------------------------------------------------------------


def training_histories(tracking_uri: str, rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per model key, the per-epoch ``val_gap`` (and, for parallel training, ``teacher_val_gap``) of its
    training run (the ``mlflow_run_id`` of its row), ordered by epoch. Empty when tracking is off."""
    if not tracking_uri:
        return {}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    histories: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        run_id = row.get("mlflow_run_id")
        if not run_id:
            continue
        found = {}
        for metric in HISTORY_METRICS:
            points = sorted(client.get_metric_history(run_id, metric), key=lambda m: (m.step, m.timestamp))
            by_step = {m.step: m.value for m in points}  # a resumed run may log an epoch twice: keep the last
            if by_step:
                found[metric] = [by_step[s] for s in sorted(by_step)]
        histories[row["model_key"]] = found
    return histories


# ----------------------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    folder: Path
    markdown: Path
    html: Path
    summary: dict[str, Any]
    figures: list[Path]


def _describe_run(run_info: dict[str, Any], machine: dict[str, Any], grid: Grid) -> list[str]:
    items = []
    arguments = run_info.get("arguments", {})
    if run_info.get("command"):
        items.append(f"command: `{run_info['command']}`")
    if run_info.get("pipeline") or run_info.get("preset"):
        items.append(f"pipeline `{run_info.get('pipeline', '?')}`, preset `{run_info.get('preset', '?')}`"
                     + (f", run `{run_info['run_id']}`" if run_info.get("run_id") else ""))
    if run_info.get("preset_sizes"):
        items.append("sizes: " + run_info["preset_sizes"])
    if arguments:
        shown = ("source", "ks", "losses", "modes", "baselines", "intermediate_k", "fraction_k", "train_fractions",
                 "seed", "repeat_seeds", "repeat_ks", "epochs", "batch_size", "learning_rate", "hidden_size",
                 "num_layers", "validation_fraction", "test_fraction")
        items.append("parameters: " + ", ".join(f"{k}={arguments[k]}" for k in shown if k in arguments))
    if run_info.get("seconds") is not None:
        seconds = float(run_info["seconds"])
        items.append(f"wall time of the whole pipeline: {seconds / 60:.1f} min ({seconds:.0f} s)")
    if machine:
        items.append(f"machine (benchmark step): {machine.get('cpu_model', '?')}, {machine.get('cpu_cores', '?')} cores, "
                     f"{machine.get('memory_gib', '?')} GiB, device {machine.get('device', '?')}, torch "
                     f"{machine.get('torch', '?')}, {machine.get('torch_threads', '?')} torch thread(s)")
    seeds = sorted({str(r.get("seed", "")) for c in grid.configs.values() for r in c.rows} - {""})
    repeated = [c for c in grid.configs.values() if c.n > 1]
    items.append(f"{sum(c.n for c in grid.configs.values())} evaluated models in {len(grid.configs)} configurations; "
                 f"seeds {', '.join(seeds) or '?'}; "
                 + (f"{len(repeated)} configurations ran with several seeds ({', '.join(sorted({f'{c.name} k={c.k} (n={c.n})' for c in repeated}))})"
                    if repeated else "every configuration ran with one seed"))
    return items


def _seed_noise(grid: Grid) -> str:
    """How much GAP moves with the seed alone, from the configurations run with several seeds ('' if none):
    the yardstick for reading small differences between single-seed cells."""
    repeated = sorted((c for c in grid.configs.values() if c.spread("gap") is not None), key=lambda c: (c.name, c.k or 0))
    if not repeated:
        return ""
    spreads = [c.spread("gap") for c in repeated]
    listed = ", ".join(f"{c.name} k={c.k}: {c.spread('gap'):.4f} (n={c.n})" for c in repeated)
    return (f"Seed noise: the sample standard deviation of GAP over seeds is {listed}; mean "
            f"{statistics.fmean(spreads):.4f}. Differences between single-seed cells smaller than about twice "
            f"that ({2 * statistics.fmean(spreads):.4f}) are within what the seed alone changes.")


def grid_ks(arguments: dict[str, Any]) -> tuple[int, int]:
    """``intermediate_k`` and ``fraction_k`` of a pipeline run's arguments (the paper's k where a run set
    none or 0), for ``build_report``."""
    return int(arguments.get("intermediate_k") or PAPER_K), int(arguments.get("fraction_k") or PAPER_K)


def build_report(
    rows: list[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    tolerance: float = 0.01,
    histories: dict[str, dict[str, list[float]]] | None = None,
    machine: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
    intermediate_k: int = PAPER_K,
    fraction_k: int = PAPER_K,
    notes: list[str] | None = None,
) -> Report:
    """Write report.md, report.html, the figures (PNG) and summary.json for ``rows`` into ``out_dir``.

    ``rows``: one per evaluated model (``report_rows``), each with ``evaluation_dir`` for Figure 3.
    ``notes``: paragraphs of discussion (e.g. the committed run's), shown after the claims.
    """
    if not rows:
        raise PipelineError("report: no evaluated models to report on")
    if not 0.0 <= tolerance < 1.0:
        raise PipelineError(f"report: tolerance must be in [0, 1), got {tolerance}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    grid = Grid(rows)
    histories = histories or {}
    machine = machine or {}
    run_info = run_info or {}
    ks = grid.ks()
    figure_k = PAPER_K if PAPER_K in ks else (max(ks) if ks else 0)

    blocks: list[Block] = [("h1", "fewframes report: the paper's experiments on this run")]
    blocks.append(("ul", _describe_run(run_info, machine, grid)))

    recommended = recommendation(grid, tolerance)
    teacher = grid.teacher()
    if recommended is not None:
        speed = [f"{recommended['flops_ratio']:.1%} of the teacher's FLOPs" if recommended.get("flops_ratio") else "",
                 f"{recommended['speedup_e2e']:.1f}x the teacher's store-to-scores throughput"
                 if recommended.get("speedup_e2e") else ""]
        blocks.append(("p", f"**Recommended student:** `{recommended['model_key']}` — {recommended['name']}, "
                            f"k={recommended['k']}: GAP {recommended['gap']:.4f} vs the teacher's "
                            f"{recommended['teacher_gap']:.4f} (tolerance {tolerance:.1%}; "
                            f"{recommended['seeds']} seed(s))" + "".join(f"; {s}" for s in speed if s) + "."))
    else:
        blocks.append(("p", f"**Recommended student:** none within {tolerance:.1%} of the teacher's GAP"
                            + (f" ({teacher.mean('gap'):.4f})." if teacher else " (no teacher in this run).")))

    claims = paper_claims(grid, tolerance, intermediate_k, fraction_k)
    blocks.append(("h2", "The paper's claims on this run"))
    blocks.append(("table", Table("Claims and verdicts", ["claim", "verdict", "numbers"],
                                  [[c.claim, f"**{c.verdict}**", c.evidence] for c in claims])))
    if notes:
        blocks.append(("h2", "Discussion"))
        blocks += [("p", note) for note in notes]

    tables = [table1(grid, "gap"), table1(grid, "map"), table2(grid, intermediate_k), table3(grid, fraction_k), table4(grid)]
    blocks.append(("h2", "Tables"))
    blocks += [("table", t) for t in tables]

    figures: list[Figure] = []
    gap_vs_k_figure(grid, folder / "gap_vs_k.png")
    figures.append(Figure("GAP vs k", "gap_vs_k.png", "Test GAP of every full-data model by k."))
    fronts = pareto_figure(grid, folder / "pareto.png")
    if fronts is not None:
        figures.append(Figure("Pareto plot: GAP vs GFLOPs and vs latency", "pareto.png",
                              "The front (no model both cheaper and better), by GFLOPs: "
                              + ", ".join(f"{n} ({g:.4f})" for n, _, g in fronts["gflops"])
                              + "; by latency: " + ", ".join(f"{n} ({g:.4f})" for n, _, g in fronts["latency_ms_p50"])))
    drawn = figure2(grid, histories, folder / "figure2_val_gap_per_epoch.png", figure_k)
    if drawn:
        figures.append(Figure("Figure 2: validation GAP per epoch, serial vs parallel", "figure2_val_gap_per_epoch.png",
                              f"k={figure_k}; dark = teacher, light = student; solid = serial (the teacher trained "
                              "alone first), dashed = parallel (teacher and student trained together)."))
    tsne: dict[str, Any] | None = None
    student_for_tsne = grid.student("serial", "rep_pred_ce", figure_k) or next(iter(grid.students()), None)
    if teacher is not None and student_for_tsne is not None and all(
            _encodings_file(c) is not None for c in (teacher, student_for_tsne)):
        tsne = figure3(teacher, student_for_tsne, folder / "figure3_tsne.png")
        figures.append(Figure("Figure 3: t-SNE of teacher and student encodings", "figure3_tsne.png",
                              f"{tsne['videos']} test videos of the 5 most frequent classes ({tsne['classes']}); "
                              f"teacher dark, student light. Mean cosine of the same video's teacher and student "
                              f"encodings {tsne['mean_cosine']:.3f}; teacher-student distance / teacher-teacher "
                              f"distance in the plane {tsne['pair_distance_ratio']:.3f} (0 = overlapping)."))
    blocks.append(("h2", "Figures"))
    blocks += [("figure", f) for f in figures]
    missing = []
    if not drawn:
        missing.append("Figure 2: not drawn — no per-epoch validation history of a student in MLflow for this run.")
    if fronts is None:
        missing.append("Pareto plot and Table 4: no benchmark figures in this run.")
    if tsne is None:
        missing.append("Figure 3: not drawn — no teacher and student evaluations with encodings.")
    rules = [
        f"GAP is GAP@20 and mAP the mean per-class AP on the test split; \"within tolerance\" means GAP ≥ teacher "
        f"GAP × (1 − {tolerance:g}); \"≈\" and \"no gain\" use the same yardstick ({tolerance:g} × teacher GAP).",
        "Configurations run with several seeds show mean ± sample standard deviation (n = seeds); verdicts use the means.",
    ]
    noise = _seed_noise(grid)
    blocks.append(("h2", "Notes"))
    blocks.append(("ul", missing + rules + ([noise] if noise else [])))
    models_table = all_models_table(rows)
    blocks.append(("h2", "Appendix"))
    blocks.append(("table", models_table))

    markdown = render_markdown(blocks, lambda f: f.file)
    page = render_html(blocks, folder, "fewframes report")
    summary = {
        "tolerance": tolerance,
        "run": run_info,
        "machine": machine,
        "claims": [c.as_dict() for c in claims],
        "recommended": recommended,
        "tables": [t.as_dict() for t in tables + [models_table]],
        "figures": [f.file for f in figures],
        "figure2_losses": drawn,
        "tsne": tsne,
        "pareto_front": fronts,
        "seed_noise": noise,
        "configurations": [
            {"name": c.name, "role": c.role, "k": c.k, "frame_selection": c.frame_selection, "loss": c.loss,
             "mode": c.mode, "matching": c.matching, "train_fraction": c.train_fraction, "seeds": c.seeds,
             "model_keys": [r.get("model_key") for r in c.rows], "gap": c.values("gap"), "map": c.values("map"),
             "gap_mean": c.mean("gap"), "gap_std": c.spread("gap"), "map_mean": c.mean("map")}
            for c in grid.configs.values()
        ],
    }
    paths = {}
    for name, text in (("report.md", markdown), ("report.html", page),
                       (SUMMARY_FILE, json.dumps(summary, indent=2, default=str))):
        paths[name] = folder / name
        fsio.write_bytes_atomic(paths[name], text.encode())
    return Report(folder, paths["report.md"], paths["report.html"], summary, [folder / f.file for f in figures])


def embedded_markdown(report: Report) -> str:
    """report.md with its figures inlined as data URIs (one self-contained file, e.g. a KFP Markdown artifact)."""
    text = report.markdown.read_text()
    for figure in report.figures:
        relative = figure.relative_to(report.folder).as_posix()
        data = base64.b64encode(figure.read_bytes()).decode()
        text = text.replace(f"]({relative})", f"](data:image/png;base64,{data})")
    return text


__all__ = [
    "Claim",
    "Config",
    "FAILS",
    "Grid",
    "HOLDS",
    "NOT_MEASURED",
    "Report",
    "build_report",
    "config_of",
    "embedded_markdown",
    "grid_ks",
    "group_configs",
    "paper_claims",
    "pareto_front",
    "recommend_student",
    "recommendation",
    "training_histories",
]
