"""``fewframes data inspect``: counts, frame-length histogram and label frequencies of a data set.

PATH is either a frame store (a folder, local or ``gs://``, holding ``store.json``) or TFRecord shards (a
file, folder or glob). A store is described from its index alone (no frame is read); TFRecords are read
and validated, invalid records counted (not fatal) so that inspect can describe a damaged set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from fewframes import fsio
from fewframes.config import MAX_FRAMES
from fewframes.data.yt8m import ReadStats, list_shards, read_tfrecords, shard_size

HISTOGRAM_BIN = 30  # frames per length-histogram bin: 1-30, 31-60, ..., 271-300


def _is_store(path: str) -> bool:
    from fewframes.data.store import METADATA_FILE

    try:
        return fsio.exists(fsio.join(path, METADATA_FILE))
    except Exception:  # a glob pattern or an unreachable bucket: not a store
        return False


def _describe(lengths: np.ndarray, labels: Iterable[np.ndarray]) -> dict[str, Any]:
    label_list = list(labels)
    # label_counts counts VIDEOS: a label listed twice in one record still counts that video once.
    flat = np.concatenate([np.unique(x) for x in label_list]) if label_list else np.zeros(0, dtype=np.int64)
    ids, counts = np.unique(flat, return_counts=True)
    edges = np.arange(0, MAX_FRAMES + HISTOGRAM_BIN, HISTOGRAM_BIN)
    hist, _ = np.histogram(lengths, bins=np.append(edges[:-1] + 0.5, np.inf)) if len(lengths) else (np.zeros(len(edges) - 1, int), None)
    histogram = {f"{lo + 1}-{lo + HISTOGRAM_BIN}": int(n) for lo, n in zip(edges[:-1], hist)}
    per_video = np.array([len(x) for x in label_list])
    return {
        "videos": int(len(lengths)),
        "frames": int(lengths.sum()) if len(lengths) else 0,
        "min_length": int(lengths.min()) if len(lengths) else 0,
        "mean_length": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
        "max_length": int(lengths.max()) if len(lengths) else 0,
        "length_histogram": histogram,
        "classes_seen": int(len(ids)),
        "labels_per_video": round(float(per_video.mean()), 3) if len(per_video) else 0.0,
        "label_counts": {str(int(label)): int(n) for label, n in zip(ids, counts)},
    }


def inspect_path(path: str | os.PathLike[str], *, num_classes: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Describe a frame store or TFRecord shards as one JSON-able dict.

    Keys: ``kind`` (``frame_store`` | ``tfrecord``), ``path``, ``videos``, ``frames``, ``min/mean/max_length``,
    ``length_histogram`` (30-frame bins), ``classes_seen``, ``labels_per_video``, ``label_counts`` (label id
    -> videos with it), ``bytes``; a store adds ``num_classes`` and ``store_shards``; TFRecords add
    ``shards``, ``invalid`` and ``invalid_reasons`` (at most 10).
    """
    path = os.fspath(path)
    if _is_store(path):
        from fewframes.data.store import FrameStore

        store = FrameStore.open(path)
        report = {"kind": "frame_store", "path": path}
        report.update(_describe(np.asarray(store.lengths), store.labels))
        report["num_classes"] = store.num_classes
        report["store_shards"] = len(store.shards)
        report["bytes"] = int(sum(int(s.get("file_bytes", 0)) for s in store.shards))
        return report

    from tqdm import tqdm

    shards = list_shards(path)
    stats = ReadStats()
    lengths, labels = [], []
    videos = read_tfrecords(path, num_classes=num_classes, skip_invalid=True, stats=stats, allow_empty=True)
    for video in tqdm(videos, desc="inspect", unit="video", disable=not progress):
        lengths.append(video.num_frames)
        labels.append(video.labels)
    report = {"kind": "tfrecord", "path": path}
    report.update(_describe(np.asarray(lengths, dtype=np.int64), labels))
    report["shards"] = len(shards)
    report["bytes"] = int(sum(shard_size(s) for s in shards))
    report["invalid"] = stats.invalid
    report["invalid_reasons"] = stats.invalid_reasons[:10]
    return report


def format_report(report: dict[str, Any], *, top: int = 15) -> str:
    """The human-readable form of ``inspect_path``'s report."""
    lines = [
        f"{report['kind']}  {report['path']}",
        f"videos {report['videos']}   frames {report['frames']}   bytes {report['bytes']:,}",
        f"length min/mean/max {report['min_length']} / {report['mean_length']} / {report['max_length']}",
        f"classes seen {report['classes_seen']}" + (f" of {report['num_classes']}" if "num_classes" in report else "")
        + f"   labels per video {report['labels_per_video']}",
    ]
    if "invalid" in report:
        lines.append(f"shards {report['shards']}   invalid records {report['invalid']}")
        lines += [f"  invalid: {reason}" for reason in report["invalid_reasons"]]
    lines.append("frame-length histogram:")
    peak = max(report["length_histogram"].values(), default=0) or 1
    for bin_name, count in report["length_histogram"].items():
        lines.append(f"  {bin_name:>8}  {count:7d}  {'#' * round(40 * count / peak)}")
    counts = sorted(report["label_counts"].items(), key=lambda kv: (-kv[1], int(kv[0])))
    lines.append(f"label frequencies (top {min(top, len(counts))} of {len(counts)}; label: videos):")
    for label, count in counts[:top]:
        lines.append(f"  {label:>6}  {count:7d}")
    return "\n".join(lines)


__all__ = ["HISTOGRAM_BIN", "format_report", "inspect_path"]
