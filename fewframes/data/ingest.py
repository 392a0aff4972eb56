"""``fewframes data ingest``: YouTube-8M frame-level TFRecord shards -> a frame store.

Each TFRecord shard is parsed and validated (``fewframes.data.yt8m``) and its videos appended to a
``FrameStoreWriter``. With ``workers > 1`` shards are ingested in parallel processes, each shard into its
own *part* store in a temp folder beside the target; ``merge_stores`` then joins the parts in shard order
(so the result is the same store, in the same video order, whatever the worker count). Any failure
removes the parts and leaves nothing at the target (an existing store there stays as it was).

Workers are started with ``spawn`` (a clean interpreter: no state forked from the caller, which may hold
TensorFlow for ``gs://`` listing, and TensorFlow is not fork-safe). Local shards need no TensorFlow
(``fewframes.data.tfrecord``), so a worker starts in well under a second; ``benchmarks/ingest_speed.py``
measures 1 vs 2 workers.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewframes import fsio
from fewframes.data.yt8m import ReadStats, list_shards, read_shard, shard_size
from fewframes.errors import DataError

DEFAULT_NUM_CLASSES = 3862  # the 2018+ YouTube-8M vocabulary


@dataclass
class IngestSummary:
    """What an ingest did (printed at the end; also the JSON the component logs)."""

    store: str
    shards: int = 0
    videos: int = 0
    frames: int = 0
    classes_seen: int = 0
    bytes_written: int = 0
    invalid_skipped: int = 0
    truncated_shards: int = 0
    invalid_reasons: list[str] = field(default_factory=list)
    duplicate_labels_dropped: int = 0
    empty_shards: int = 0
    labelled: bool = True
    stale_removed: list[str] = field(default_factory=list)  # temporaries of killed earlier runs, removed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human summary."""
        out = [
            f"store          {self.store}",
            f"shards read    {self.shards}",
            f"videos         {self.videos}",
            f"frames         {self.frames}",
            f"classes seen   {self.classes_seen}",
            f"bytes written  {self.bytes_written:,}",
            f"invalid skipped {self.invalid_skipped}" + (f" ({self.truncated_shards} shard(s) cut short by corruption)" if self.truncated_shards else ""),
        ]
        if self.duplicate_labels_dropped:
            out.append(f"duplicate labels dropped {self.duplicate_labels_dropped} (a label repeated within a video)")
        if self.empty_shards:
            out.append(f"empty shards   {self.empty_shards} (accepted: --allow-empty)")
        if not self.labelled:
            out.append("labels         none (--unlabelled: for predict, not for training or evaluation)")
        if self.stale_removed:
            out.append(f"removed {len(self.stale_removed)} temporary folder(s) left by a killed earlier run: "
                       + ", ".join(self.stale_removed))
        out += [f"  skipped: {reason}" for reason in self.invalid_reasons[:5]]
        if len(self.invalid_reasons) > 5:
            out.append(f"  ... and {len(self.invalid_reasons) - 5} more")
        return out


@dataclass
class _ShardResult:
    stats: ReadStats
    videos: int
    frames: int
    label_counts: np.ndarray


def _ingest_into(writer: Any, shard: str, *, num_classes: int, skip_invalid: bool, options: dict[str, bool]) -> _ShardResult:
    """Append the valid videos of one shard to ``writer``; ``options``: ``labelled``, ``allow_empty``."""
    stats = ReadStats()
    label_counts = np.zeros(num_classes, dtype=np.int64)
    videos = frames = 0
    for video in read_shard(shard, num_classes=num_classes, skip_invalid=skip_invalid, stats=stats, **options):
        try:
            writer.add(video.id, video.labels, video.rgb, video.audio)
        except DataError as exc:  # e.g. a video id seen in an earlier record
            raise DataError(f"{shard} record {stats.records + stats.invalid - 1}: {exc}") from None
        label_counts[video.labels] += 1
        videos += 1
        frames += video.num_frames
    return _ShardResult(stats, videos, frames, label_counts)


def _ingest_shard_to_part(
    shard: str, part: str, num_classes: int, skip_invalid: bool, shard_max_frames: int | None, options: dict[str, bool]
) -> _ShardResult:
    """Worker: one TFRecord shard -> one part store (runs in a spawned process)."""
    from fewframes.data.store import FrameStoreWriter

    kwargs = {"shard_max_frames": shard_max_frames} if shard_max_frames else {}
    with FrameStoreWriter(part, num_classes=num_classes, extra_metadata=_extra(options), **kwargs) as writer:
        return _ingest_into(writer, shard, num_classes=num_classes, skip_invalid=skip_invalid, options=options)


def _extra(options: dict[str, bool]) -> dict[str, Any]:
    """The store metadata an ingest records: an unlabelled store says so (training and evaluation refuse it)."""
    return {} if options["labelled"] else {"labelled": False}


def _check_kept(summary: IngestSummary, totals: ReadStats) -> None:
    """An ingest that keeps no video is an error, never an empty store (e.g. --skip-invalid skipping all)."""
    if summary.videos == 0:
        why = f"all {totals.invalid} record(s) were invalid and skipped" if totals.invalid else "the shards hold no records"
        first = f" (first: {totals.invalid_reasons[0]})" if totals.invalid_reasons else ""
        raise DataError(f"--src: no video to ingest from {summary.shards} shard(s): {why}{first}")


def _store_bytes(path: str) -> int:
    """Bytes of the files of the store at ``path``, as its metadata lists them (+ metadata and index)."""
    from fewframes.data.store import INDEX_FILE, METADATA_FILE, FrameStore

    if not fsio.is_gcs(path):
        return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    store = FrameStore.open(path)
    total = sum(int(s.get("file_bytes", 0)) for s in store.shards)
    for name in (METADATA_FILE, store.metadata.get("index", INDEX_FILE)):
        total += len(fsio.read_bytes(fsio.join(path, name)))
    return total


def ingest(
    src: str,
    out: str,
    *,
    num_classes: int = DEFAULT_NUM_CLASSES,
    skip_invalid: bool = False,
    workers: int = 1,
    shard_max_frames: int | None = None,
    progress: bool = True,
    labelled: bool = True,
    allow_empty: bool = False,
) -> IngestSummary:
    """Ingest the TFRecord shards ``src`` (file, folder, glob; local or ``gs://``) into a frame store ``out``.

    Invalid records raise ``DataError`` naming the shard and record (nothing is written), or with
    ``skip_invalid`` are skipped and counted. Returns an ``IngestSummary``. ``labelled=False`` ingests an
    unlabelled set (the official test partition): labels are not read and the store is marked unlabelled.
    ``allow_empty`` accepts shards without records. An ingest that keeps no video at all is an error (and
    writes nothing).
    """
    from tqdm import tqdm

    from fewframes.data.store import FrameStoreWriter, merge_stores

    if num_classes < 1:
        raise DataError(f"--num-classes must be >= 1, got {num_classes}")
    if workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    shards = list_shards(src)
    fsio.check_output_dir(out, "--out", inputs=tuple(shards))  # never write over what is being read
    sizes = [shard_size(s) for s in shards]
    summary = IngestSummary(store=str(out), shards=len(shards))
    summary.stale_removed = [str(p) for p in fsio.remove_stale_temporaries(out)]
    totals = ReadStats()
    label_counts = np.zeros(num_classes, dtype=np.int64)

    def account(result: _ShardResult) -> None:
        totals.merge(result.stats)
        summary.videos += result.videos
        summary.frames += result.frames
        label_counts[:] += result.label_counts

    options = {"labelled": labelled, "allow_empty": allow_empty}
    kwargs = {"shard_max_frames": shard_max_frames} if shard_max_frames else {}
    bar = tqdm(total=sum(sizes), desc="ingest", unit="B", unit_scale=True, disable=not progress)
    try:
        if workers == 1 or len(shards) == 1:
            with FrameStoreWriter(out, num_classes=num_classes, extra_metadata=_extra(options), **kwargs) as writer:
                for shard, size in zip(shards, sizes):
                    account(_ingest_into(writer, shard, num_classes=num_classes, skip_invalid=skip_invalid, options=options))
                    bar.update(size)
                    bar.set_postfix(videos=summary.videos)
                _check_kept(summary, totals)  # inside the writer: an error here writes nothing
        else:
            _ingest_parallel(
                shards, sizes, out, num_classes, skip_invalid, workers, shard_max_frames, account, bar, merge_stores,
                options, lambda: _check_kept(summary, totals),
            )
    finally:
        bar.close()
    summary.classes_seen = int(np.count_nonzero(label_counts))
    summary.invalid_skipped = totals.invalid
    summary.truncated_shards = totals.truncated_shards
    summary.invalid_reasons = totals.invalid_reasons
    summary.duplicate_labels_dropped = totals.duplicate_labels
    summary.empty_shards = totals.empty_shards
    summary.labelled = labelled
    summary.bytes_written = _store_bytes(out)
    return summary


def _ingest_parallel(
    shards: list[str],
    sizes: list[int],
    out: str,
    num_classes: int,
    skip_invalid: bool,
    workers: int,
    shard_max_frames: int | None,
    account: Any,
    bar: Any,
    merge_stores: Any,
    options: dict[str, bool],
    check_kept: Any,
) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    if fsio.is_gcs(out):
        parts_dir = Path(fsio.local_temp_dir("fewframes-ingest-"))
    else:
        target = Path(out).absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        parts_dir = target.with_name(f".{target.name}.parts-{uuid.uuid4().hex[:8]}")
        parts_dir.mkdir()
    parts = [str(parts_dir / f"part-{i:05d}") for i in range(len(shards))]
    try:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=context) as pool:
            futures = {
                pool.submit(_ingest_shard_to_part, shard, part, num_classes, skip_invalid, shard_max_frames, options): size
                for shard, part, size in zip(shards, parts, sizes)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    error = future.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        raise error
                    account(future.result())
                    bar.update(futures[future])
        check_kept()
        merge_stores(out, parts)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


__all__ = ["DEFAULT_NUM_CLASSES", "IngestSummary", "ingest"]
