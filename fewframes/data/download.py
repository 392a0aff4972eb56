"""``fewframes data download``: real YouTube-8M frame-level shards from the official mirrors.

Mirrors the layout the official ``download.py`` (google/youtube-8m, served at data.yt8m.org) uses:

- the *download plan* (checksum index) ``<plan host>/2/download_plans/frame_<split>.json`` =
  ``{"files": {"trainAA.tfrecord": "<md5>", ...}}``;
- each file at ``<mirror>/2/frame/<split>/<name>``, with the mirror ``http://us.data.yt8m.org`` (or the
  ``eu`` / ``asia`` ones);
- a file ``<split>XY.tfrecord`` is saved as ``<split>NNNN.tfrecord``, NNNN the index of the letter pair XY
  in the product of ``a-zA-Z0-9`` with itself (``aa`` -> 0000, ``ab`` -> 0001, ``AA`` -> 1638), as the
  official script does;
- ``--fraction F`` keeps the files whose ``int(md5(name)) % round(1/F) == 0``: the official ``shard=1,N``.

Differences from the official script, on purpose: ``--mirror URL`` points both the plan and the files at
any server with that layout (a local copy, a test server); ``--shards N`` takes the first N files by
saved name; a checksum of 64 hex digits is read as sha256, 32 as md5; a download goes to ``<name>.part``
(continued with an HTTP Range request when the server supports it) and is renamed only once verified;
verified files are skipped on a re-run; any file that fails verification is removed and reported in one
``DataError`` at the end (the others are kept).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import string
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fewframes.errors import DataError

SPLITS = ("train", "validate", "test")
OFFICIAL_PLAN_HOST = "http://data.yt8m.org"
OFFICIAL_MIRROR = "http://us.data.yt8m.org"
DATASET_VERSION = "2"  # the 2018+ release (3862 classes)
_LETTERS = string.ascii_lowercase + string.ascii_uppercase + string.digits
_PAIR_INDEX = {"".join(pair): i for i, pair in enumerate(itertools.product(_LETTERS, repeat=2))}
_CHUNK = 1 << 20


@dataclass
class DownloadSummary:
    """What a download did."""

    out: str
    split: str
    selected: int = 0
    downloaded: int = 0
    skipped_verified: int = 0
    bytes_downloaded: int = 0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_url(split: str, mirror: str | None = None) -> str:
    """The URL of the checksum index of ``split`` (official host unless a mirror is given)."""
    host = (mirror or OFFICIAL_PLAN_HOST).rstrip("/")
    return f"{host}/{DATASET_VERSION}/download_plans/frame_{split}.json"


def file_url(split: str, name: str, mirror: str | None = None) -> str:
    """The URL of one file of ``split`` on ``mirror``."""
    return f"{(mirror or OFFICIAL_MIRROR).rstrip('/')}/{DATASET_VERSION}/frame/{split}/{name}"


def local_name(name: str) -> str:
    """``trainAB.tfrecord`` -> ``train0001.tfrecord`` (the official script's renaming)."""
    stem, dot, ext = name.partition(".")
    pair = stem[-2:]
    if pair not in _PAIR_INDEX:
        return name
    return f"{stem[:-2]}{_PAIR_INDEX[pair]:04d}{dot}{ext}"


def _checksum(path: Path, expected: str) -> tuple[str, str]:
    """(algorithm, hex digest) of ``path``, the algorithm chosen by the expected digest's length."""
    algorithm = {32: "md5", 64: "sha256"}.get(len(expected))
    if algorithm is None:
        raise DataError(f"{path.name}: checksum {expected!r} in the download plan is neither md5 nor sha256")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return algorithm, digest.hexdigest()


def _open(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "fewframes", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)})") from None


def fetch_plan(split: str, mirror: str | None, out: Path) -> dict[str, str]:
    """The ``{remote name: checksum}`` index; cached in ``out`` so a re-run resumes without the network."""
    cached = out / f"{DATASET_VERSION}_frame_{split}_download_plan.json"
    if cached.exists():
        raw = cached.read_bytes()
        source = str(cached)
    else:
        source = plan_url(split, mirror)
        with _open(source) as response:
            raw = response.read()
    try:
        files = json.loads(raw)["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError("files must map names to checksums")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{source}: not a YouTube-8M download plan ({exc})") from None
    if not cached.exists():
        temp = cached.with_name(cached.name + ".part")
        temp.write_bytes(raw)
        temp.replace(cached)
    return files


def select_files(files: dict[str, str], *, fraction: float | None = None, shards: int | None = None) -> list[str]:
    """The remote names to fetch, in saved-name order (see the module docstring)."""
    names = sorted(files, key=local_name)
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"--fraction must be in (0, 1], got {fraction}")
        ways = max(1, round(1.0 / fraction))
        names = [n for n in names if int(hashlib.md5(n.encode("utf-8")).hexdigest(), 16) % ways == 0]
    if shards is not None:
        if shards < 1:
            raise DataError(f"--shards must be >= 1, got {shards}")
        names = names[:shards]
    return names


def _fetch(url: str, target: Path, progress: bool) -> int:
    """Download ``url`` to ``target`` (continuing a partial file if the server honours Range); returns
    the bytes transferred now."""
    from tqdm import tqdm

    have = target.stat().st_size if target.exists() else 0
    response = _open(url, {"Range": f"bytes={have}-"} if have else None)
    with response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        written = 0
        with open(target, "ab" if resumed else "wb") as sink, tqdm(
            total=total, initial=have, desc=target.name.removesuffix(".part"), unit="B", unit_scale=True,
            leave=False, disable=not progress,
        ) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                sink.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    return written


def download(
    out: str | os.PathLike[str],
    *,
    split: str = "train",
    fraction: float | None = None,
    shards: int | None = None,
    mirror: str | None = None,
    progress: bool = True,
) -> DownloadSummary:
    """Download (a part of) the YouTube-8M frame-level ``split`` into ``out``; resumable and verified."""
    from tqdm import tqdm

    if split not in SPLITS:
        raise DataError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if fraction is not None and shards is not None:
        raise DataError("give --fraction or --shards, not both")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = fetch_plan(split, mirror, out_dir)
    names = select_files(files, fraction=fraction, shards=shards)
    summary = DownloadSummary(out=str(out_dir), split=split, selected=len(names))
    failures: list[str] = []
    for name in tqdm(names, desc=f"download {split}", unit="file", disable=not progress):
        expected = files[name].lower()
        target = out_dir / local_name(name)
        summary.files.append(target.name)
        if target.exists():
            if _checksum(target, expected)[1] == expected:
                summary.skipped_verified += 1
                continue
            target.unlink()  # a stale or damaged copy: fetch it again
        partial = target.with_name(target.name + ".part")
        summary.bytes_downloaded += _fetch(file_url(split, name, mirror), partial, progress)
        algorithm, actual = _checksum(partial, expected)
        if actual != expected:
            partial.unlink()
            failures.append(f"{target.name}: {algorithm} {actual} does not match the download plan's {expected}")
            continue
        partial.replace(target)
        summary.downloaded += 1
    if failures:
        raise DataError(
            f"{len(failures)} of {len(names)} file(s) failed verification and were removed (run again to retry): "
            + "; ".join(failures)
        )
    return summary


__all__ = [
    "DownloadSummary",
    "OFFICIAL_MIRROR",
    "OFFICIAL_PLAN_HOST",
    "SPLITS",
    "download",
    "fetch_plan",
    "file_url",
    "local_name",
    "plan_url",
    "select_files",
]
