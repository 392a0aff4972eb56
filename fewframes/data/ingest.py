"""``fewframes data ingest``: YouTube-8M frame-level TFRecord shards -> a frame store.

Each TFRecord shard is parsed and validated (``fewframes.data.yt8m``) and its videos appended to a
``FrameStoreWriter``. With ``workers > 1`` shards are ingested in parallel processes, each shard into its
own *part* store in a temp folder beside the target; ``merge_stores`` then joins the parts in shard order
(so the result is the same store, in the same video order, whatever the worker count). Any failure
removes the parts and leaves nothing at the target (an existing store there stays as it was).

Workers are forked from the caller on Linux when it has not loaded TensorFlow (local shards need none:
``fewframes.data.tfrecord``): a fork starts in milliseconds with every module already imported. Otherwise
(TensorFlow loaded for ``gs://`` listing: not fork-safe; or not Linux) they are spawned, each a fresh
interpreter importing numpy, pyarrow and the library (about a CPU-second each). The parts are hard-linked
into the store, not copied, where they share its file system. ``benchmarks/ingest_speed.py`` measures 1 vs 2
workers.

The class count (``docs/your_own_data.md``), in this order:

1. ``vocabulary``: a vocabulary file (``fewframes.data.vocabulary``): its largest index + 1; it is kept in the
   store and gives the classes their names. A label with no row in it is an error naming the record.
2. ``num_classes``: as given; a label at or above it is an error naming the record.
3. Neither: an official YouTube-8M release recognised from the records (every video id of the official
   shape, and the release's context key: ``video_id`` for 2017, ``id`` for 2018) has its release's count
   (4,716 or 3,862); anything else the largest label + 1. ``IngestSummary.classes_note`` says, once, what was
   assumed and how to set it instead.

Frame widths: declared (``rgb_dim``/``audio_dim``), else read from the first valid record, then required
of every record (another extractor's features, e.g. 2048-byte rgb, need no flag).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewframes import fsio
from fewframes.data.vocabulary import OFFICIAL_ID, RELEASES, Vocabulary, load_vocabulary, release_of
from fewframes.data.yt8m import YOUTUBE_8M_WIDTHS, ReadStats, list_shards, read_shard, shard_size
from fewframes.errors import DataError

DEFAULT_NUM_CLASSES = RELEASES["2018"].num_classes  # the 2018+ YouTube-8M vocabulary
# How a caller's user sets the class count (the note printed when it was assumed names these).
CLI_OVERRIDE = "--vocabulary FILE (class names and count) or --num-classes N"


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
    num_classes: int = 0
    classes_from: str = ""  # vocabulary | num_classes | release | data
    release: str = ""  # "2017" / "2018" when recognised
    vocabulary: str = ""  # the vocabulary file given
    classes_note: str = ""  # what was assumed about the classes and how to set them (none when given)
    rgb_dim: int = 0
    audio_dim: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human summary."""
        out = [
            f"store          {self.store}",
            f"shards read    {self.shards}",
            f"videos         {self.videos}",
            f"frames         {self.frames}",
            f"classes        {self.num_classes} ({self.classes_seen} seen)"
            + (f", names from {self.vocabulary}" if self.vocabulary else ""),
            f"frame widths   rgb {self.rgb_dim} + audio {self.audio_dim} bytes",
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
        if self.classes_note:
            out.append(self.classes_note)
        out += [f"  skipped: {reason}" for reason in self.invalid_reasons[:5]]
        if len(self.invalid_reasons) > 5:
            out.append(f"  ... and {len(self.invalid_reasons) - 5} more")
        return out


@dataclass
class _ShardResult:
    stats: ReadStats
    videos: int
    frames: int
    label_counts: np.ndarray  # per label seen (as long as the largest label + 1)
    id_keys: set[str] = field(default_factory=set)  # the context keys the ids came under
    official_ids: bool = True  # every video id of the official shape


def _add_counts(counts: np.ndarray, more: np.ndarray) -> np.ndarray:
    """``counts + more`` for label-count arrays of any lengths."""
    if len(more) > len(counts):
        counts, more = more.copy(), counts
    counts[: len(more)] += more
    return counts


def _ingest_into(
    writer: Any, shard: str, *, num_classes: int | None, skip_invalid: bool, options: dict[str, Any],
    known: np.ndarray | None = None,
) -> _ShardResult:
    """Append the valid videos of one shard to ``writer``; ``options``: ``labelled``, ``allow_empty``,
    ``widths``, ``labels_from`` (``read_shard``'s). ``known``: which labels the vocabulary has."""
    stats = ReadStats()
    labels_seen: list[np.ndarray] = []
    result = _ShardResult(stats, 0, 0, np.zeros(0, dtype=np.int64))
    for video in read_shard(shard, num_classes=num_classes, skip_invalid=skip_invalid, stats=stats, **options):
        where = f"{shard} record {video.record} (video {video.id!r})"
        if known is not None and video.labels.size and not known[video.labels].all():
            missing = int(video.labels[~known[video.labels]][0])
            raise DataError(f"{where}: label {missing} is not in the vocabulary ({options['labels_from']}: no row {missing})")
        try:
            writer.add(video.id, video.labels, video.rgb, video.audio)
        except DataError as exc:  # e.g. a video id seen in an earlier record
            raise DataError(f"{shard} record {video.record}: {exc}") from None
        labels_seen.append(video.labels)
        result.id_keys.add(video.id_key)
        result.official_ids = result.official_ids and OFFICIAL_ID.fullmatch(video.id) is not None
        result.videos += 1
        result.frames += video.num_frames
    if labels_seen:
        result.label_counts = np.bincount(np.concatenate(labels_seen), minlength=0).astype(np.int64)
    return result


def _ingest_shard_to_part(
    shard: str, part: str, num_classes: int | None, skip_invalid: bool, shard_max_frames: int | None,
    options: dict[str, Any], known: np.ndarray | None,
) -> _ShardResult:
    """Worker: one TFRecord shard -> one part store (runs in a spawned process)."""
    from fewframes.data.store import FrameStoreWriter

    kwargs = {"shard_max_frames": shard_max_frames} if shard_max_frames else {}
    rgb_dim, audio_dim = options["widths"]
    with FrameStoreWriter(
        part, num_classes=num_classes, extra_metadata=_extra(options), rgb_dim=rgb_dim, audio_dim=audio_dim, **kwargs
    ) as writer:
        return _ingest_into(writer, shard, num_classes=num_classes, skip_invalid=skip_invalid, options=options, known=known)


def _extra(options: dict[str, Any]) -> dict[str, Any]:
    """The store metadata an ingest records: an unlabelled store says so (training and evaluation refuse it)."""
    return {} if options["labelled"] else {"labelled": False}


def _first_widths(shards: list[str], declared: tuple[int | None, int | None], options: dict[str, Any]) -> tuple[int, int]:
    """(rgb, audio) frame widths: the declared ones, the others from the first valid record (YouTube-8M's if
    there is none)."""
    if all(declared):
        return declared  # type: ignore[return-value]
    for shard in shards:
        stats = ReadStats()
        peek = read_shard(shard, skip_invalid=True, stats=stats, labelled=False, allow_empty=True, widths=declared)
        try:
            video = next(peek, None)
        finally:
            peek.close()
        if video is not None:
            return (declared[0] or video.rgb.shape[1], declared[1] or video.audio.shape[1])
    return (declared[0] or YOUTUBE_8M_WIDTHS[0], declared[1] or YOUTUBE_8M_WIDTHS[1])


def decide_classes(
    label_counts: np.ndarray, id_keys: set[str], official_ids: bool, *, override: str = CLI_OVERRIDE
) -> tuple[int, dict[str, Any], str]:
    """Without a vocabulary or a count: (classes, the store's ``classes`` record, the note to print once).

    A recognised official release gives its count when every label fits in it; else the largest label + 1."""
    largest = len(label_counts) - 1  # bincount: as long as the largest label + 1
    seen = int(np.count_nonzero(label_counts))
    if len(id_keys) == 1 and official_ids:
        (key,) = id_keys
        year = next(name for name, release in RELEASES.items() if release.id_key == key)
        release = release_of(key)
        if largest < release.num_classes:
            note = (
                f"classes: {release.num_classes}, the {release.name} vocabulary's (recognised from the records: "
                f"video ids under '{key}', all of the official 4-character shape; {seen} classes seen); "
                f"to set them instead give {override}"
            )
            return release.num_classes, {"from": "release", "release": year, "note": note}, note
    count = max(1, largest + 1)
    if largest < 0:
        note = f"classes: 1 assumed (the records hold no label); to set them give {override}"
    else:
        note = (
            f"classes: {count} assumed from the data (the largest label, {largest}, + 1; {seen} classes seen); "
            f"to set them instead give {override}"
        )
    return count, {"from": "data", "note": note}, note


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
    num_classes: int | None = None,
    vocabulary: str | os.PathLike[str] | Vocabulary | None = None,
    rgb_dim: int | None = None,
    audio_dim: int | None = None,
    skip_invalid: bool = False,
    workers: int = 1,
    shard_max_frames: int | None = None,
    progress: bool = True,
    labelled: bool = True,
    allow_empty: bool = False,
    override: str = CLI_OVERRIDE,
) -> IngestSummary:
    """Ingest the TFRecord shards ``src`` (file, folder, glob; local or ``gs://``) into a frame store ``out``.

    Invalid records raise ``DataError`` naming the shard and record (nothing is written), or with
    ``skip_invalid`` are skipped and counted. Returns an ``IngestSummary``. ``labelled=False`` ingests an
    unlabelled set (the official test partition): labels are not read and the store is marked unlabelled.
    ``allow_empty`` accepts shards without records. An ingest that keeps no video at all is an error (and
    writes nothing). The class count and the frame widths: see the module docstring; ``override`` is how the
    caller's user sets the classes (named by ``IngestSummary.classes_note`` when they were assumed).
    """
    from tqdm import tqdm

    from fewframes.data.store import FrameStoreWriter, merge_stores

    if num_classes is not None and num_classes < 1:
        raise DataError(f"--num-classes must be >= 1, got {num_classes}")
    for flag, width in (("--rgb-dim", rgb_dim), ("--audio-dim", audio_dim)):
        if width is not None and width < 1:
            raise DataError(f"{flag} must be >= 1, got {width}")
    if workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    vocab = load_vocabulary(vocabulary) if isinstance(vocabulary, (str, os.PathLike)) else vocabulary
    labels_from = ""
    known = None
    if vocab is not None:
        if num_classes is not None and num_classes != vocab.num_classes:
            raise DataError(
                f"--num-classes {num_classes} disagrees with --vocabulary {vocab.source} ({vocab.num_classes} classes: "
                "its largest index + 1); give one of them"
            )
        num_classes = vocab.num_classes
        labels_from = f"the vocabulary {vocab.source} has {vocab.num_classes} classes"
        known = np.zeros(vocab.num_classes, dtype=bool)
        known[list(vocab.names)] = True
    shards = list_shards(src)
    fsio.check_output_dir(out, "--out", inputs=tuple(shards))  # never write over what is being read
    sizes = [shard_size(s) for s in shards]
    summary = IngestSummary(store=str(out), shards=len(shards))
    summary.stale_removed = [str(p) for p in fsio.remove_stale_temporaries(out)]
    totals = ReadStats()
    seen = _ShardResult(totals, 0, 0, np.zeros(0, dtype=np.int64))

    def account(result: _ShardResult) -> None:
        totals.merge(result.stats)
        summary.videos += result.videos
        summary.frames += result.frames
        seen.label_counts = _add_counts(seen.label_counts, result.label_counts)
        seen.id_keys |= result.id_keys
        seen.official_ids = seen.official_ids and result.official_ids

    options: dict[str, Any] = {"labelled": labelled, "allow_empty": allow_empty, "labels_from": labels_from}
    widths = _first_widths(shards, (rgb_dim, audio_dim), options)
    options["widths"] = widths
    classes: dict[str, Any] = {"from": "vocabulary", "file": vocab.source} if vocab is not None else {"from": "num_classes"}

    def decide() -> int:
        """The class count once every shard is read (given, or decided from what was seen)."""
        nonlocal classes
        if num_classes is not None:
            return num_classes
        count, classes, summary.classes_note = decide_classes(
            seen.label_counts, seen.id_keys, seen.official_ids, override=override
        )
        return count

    kwargs = {"shard_max_frames": shard_max_frames} if shard_max_frames else {}
    bar = tqdm(total=sum(sizes), desc="ingest", unit="B", unit_scale=True, disable=not progress)
    try:
        if workers == 1 or len(shards) == 1:
            with FrameStoreWriter(
                out, num_classes=num_classes, extra_metadata=_extra(options), rgb_dim=widths[0], audio_dim=widths[1],
                vocabulary=vocab, **kwargs,
            ) as writer:
                for shard, size in zip(shards, sizes):
                    account(_ingest_into(writer, shard, num_classes=num_classes, skip_invalid=skip_invalid,
                                         options=options, known=known))
                    bar.update(size)
                    bar.set_postfix(videos=summary.videos)
                _check_kept(summary, totals)  # inside the writer: an error here writes nothing
                writer.num_classes = decide()
                writer.classes = classes
        else:
            def merge(target: str, parts: list[str]) -> Any:
                count = decide()
                # The parts are this ingest's own, deleted afterwards: their shard files are linked, not copied.
                return merge_stores(target, parts, num_classes=count, vocabulary=vocab, classes=classes, link=True)

            _ingest_parallel(
                shards, sizes, out, num_classes, skip_invalid, workers, shard_max_frames, account, bar, merge,
                options, lambda: _check_kept(summary, totals), known,
            )
    finally:
        bar.close()
    label_counts = seen.label_counts
    summary.num_classes = int(num_classes or decide())
    summary.classes_from = str(classes["from"])
    summary.release = str(classes.get("release", ""))
    summary.vocabulary = vocab.source if vocab is not None else ""
    summary.rgb_dim, summary.audio_dim = int(widths[0]), int(widths[1])
    summary.classes_seen = int(np.count_nonzero(label_counts))
    summary.invalid_skipped = totals.invalid
    summary.truncated_shards = totals.truncated_shards
    summary.invalid_reasons = totals.invalid_reasons
    summary.duplicate_labels_dropped = totals.duplicate_labels
    summary.empty_shards = totals.empty_shards
    summary.labelled = labelled
    summary.bytes_written = _store_bytes(out)
    return summary


def _worker_start_method() -> str:
    """``fork`` where it is safe and cheap (Linux, TensorFlow not loaded in this process), else ``spawn``."""
    import sys

    return "fork" if sys.platform.startswith("linux") and "tensorflow" not in sys.modules else "spawn"


def _ingest_parallel(
    shards: list[str],
    sizes: list[int],
    out: str,
    num_classes: int | None,
    skip_invalid: bool,
    workers: int,
    shard_max_frames: int | None,
    account: Any,
    bar: Any,
    merge_stores: Any,
    options: dict[str, Any],
    check_kept: Any,
    known: np.ndarray | None,
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
        context = multiprocessing.get_context(_worker_start_method())
        with ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=context) as pool:
            futures = {
                pool.submit(
                    _ingest_shard_to_part, shard, part, num_classes, skip_invalid, shard_max_frames, options, known
                ): size
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


__all__ = ["CLI_OVERRIDE", "DEFAULT_NUM_CLASSES", "IngestSummary", "decide_classes", "ingest"]
