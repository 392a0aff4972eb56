"""Class vocabularies: what the label numbers of a data set mean, and how many classes there are.

A vocabulary file is a CSV in one of two layouts (``docs/your_own_data.md``):

- YouTube-8M's own ``vocabulary.csv``: a header ``Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,
  Vertical1,Vertical2,Vertical3,WikiDescription``; any header holding an ``Index`` and a ``Name`` column (any
  case, any other columns, in any order) is read the same way;
- a plain ``index,name`` CSV, with that header or with none (the first row then starts with a number).

Indices are whole numbers >= 0, each at most once; they need not be contiguous (a label with no row is not in
the vocabulary). The number of classes is the largest index + 1. Names may be empty (shown by number).

A frame store keeps its vocabulary as ``vocabulary.csv`` (the normalised ``index,name`` layout) beside
``store.json``; ``FrameStore.class_names`` reads it.

Without a vocabulary the class count is decided at ingest (``fewframes.data.ingest``): an official
YouTube-8M release recognised from its records has its release's count (``RELEASES``), anything else the
largest label + 1.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field

from fewframes import fsio
from fewframes.errors import DataError

STORE_VOCABULARY_FILE = "vocabulary.csv"


@dataclass(frozen=True)
class Release:
    """An official YouTube-8M release: the context key of its video ids and its vocabulary's size."""

    name: str
    id_key: str
    num_classes: int


# The 2017 release (4,716 classes, ids under ``video_id``) and the 2018 release, also used by the 2019
# challenge (3,862 classes, ``id``): https://research.google.com/youtube8m/download.html.
RELEASES: dict[str, Release] = {
    "2017": Release("YouTube-8M 2017", "video_id", 4716),
    "2018": Release("YouTube-8M 2018", "id", 3862),
}
# Official video ids are 4 characters of [A-Za-z0-9_-] (pseudo-ids, the same shape in both releases).
OFFICIAL_ID = re.compile(r"[A-Za-z0-9_-]{4}")


def release_of(id_key: str) -> Release:
    """The release whose records hold their video id under ``id_key``."""
    return next(r for r in RELEASES.values() if r.id_key == id_key)


@dataclass(frozen=True)
class Vocabulary:
    """Class index -> name. ``num_classes`` is the largest index + 1; ``source`` says where it came from."""

    names: dict[int, str]
    source: str = ""
    num_classes: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise DataError(f"{self.source or 'vocabulary'}: holds no class")
        object.__setattr__(self, "num_classes", max(self.names) + 1)

    def __contains__(self, label: object) -> bool:
        return label in self.names

    def name(self, label: int) -> str:
        """The name of class ``label`` ('' when the vocabulary has none)."""
        return self.names.get(int(label), "")

    def name_list(self) -> list[str]:
        """Every class's name, index by index ('' for indices without a row)."""
        return [self.names.get(i, "") for i in range(self.num_classes)]

    def to_csv(self) -> str:
        """The normalised ``index,name`` layout a frame store keeps."""
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "name"])
        for index in sorted(self.names):
            writer.writerow([index, self.names[index]])
        return buffer.getvalue()


def parse_vocabulary(text: str, source: str) -> Vocabulary:
    """A vocabulary from CSV text (either layout, see the module docstring); ``DataError`` names the line."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))
    if not rows or not any(rows):
        raise DataError(f"{source}: empty vocabulary file (expected 'index,name' rows or YouTube-8M's vocabulary.csv)")
    header = [cell.strip().lower() for cell in rows[0]]
    first_line = 1
    index_col, name_col = 0, 1
    if header and not _is_int(header[0]):
        if "index" not in header or "name" not in header:
            raise DataError(
                f"{source} line 1: header {rows[0]!r} has no 'index' and 'name' columns (expected YouTube-8M's "
                "Index,TrainVideoCount,KnowledgeGraphId,Name,... or index,name)"
            )
        index_col, name_col = header.index("index"), header.index("name")
        first_line = 2
    names: dict[int, str] = {}
    for number, row in enumerate(rows[first_line - 1 :], start=first_line):
        if not row or not any(cell.strip() for cell in row):
            continue  # a blank line (e.g. at the end)
        if len(row) <= max(index_col, name_col):
            raise DataError(f"{source} line {number}: {len(row)} column(s); needs the index and the name")
        raw = row[index_col].strip()
        if not _is_int(raw):
            raise DataError(f"{source} line {number}: index {raw!r} is not a whole number >= 0")
        index = int(raw)
        if index in names:
            raise DataError(f"{source} line {number}: index {index} appears twice")
        names[index] = row[name_col].strip()
    return Vocabulary(names, source)


def _is_int(text: str) -> bool:
    return text.strip().isdigit()


def load_vocabulary(path: str | os.PathLike[str]) -> Vocabulary:
    """Read the vocabulary file ``path`` (local or ``gs://``); one-line ``DataError`` when it cannot be read."""
    path = os.fspath(path)
    if not fsio.is_gcs(path) and os.path.isdir(path):
        raise DataError(f"--vocabulary {path}: is a folder, expected a CSV file")
    try:
        raw = fsio.read_bytes(path)
    except Exception as exc:  # StorageError: missing, permission denied, unreachable bucket
        raise DataError(f"--vocabulary {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"--vocabulary {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_vocabulary(text, path)


__all__ = [
    "OFFICIAL_ID",
    "RELEASES",
    "Release",
    "STORE_VOCABULARY_FILE",
    "Vocabulary",
    "load_vocabulary",
    "parse_vocabulary",
    "release_of",
]
