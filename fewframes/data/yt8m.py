"""The YouTube-8M frame-level TFRecord format: schema, quantisation, validated read and atomic write.

The official frame-level shards hold one ``tf.train.SequenceExample`` per video:

- context ``id`` (bytes; ``video_id`` in the 2017 release) and ``labels`` (int64 list);
- feature lists ``rgb`` (one 1024-byte string per frame) and ``audio`` (one 128-byte string per frame),
  uint8-quantised, one frame per second, at most 300 frames.

Other extractors' features in the same schema (e.g. 2048-byte rgb) are read with ``widths=None`` (each
record's widths taken from its first frame; every frame must match) or with the widths declared.

Features are dequantised exactly as the official starter code does: ``x = q * 4/255 + (4/512 - 2)``.

Local shards are read, parsed and written without TensorFlow (``fewframes.data.tfrecord``: the TFRecord
framing with its CRCs, and the SequenceExample message in protobuf's C parser; canonical frame lists, as
every official shard holds them, become numpy arrays in one step). tensorflow is imported only for
``gs://`` paths (``tf.io.gfile``); the rest of the library never pays for it. TensorFlow's GCS file system
always talks to googleapis.com, so with ``STORAGE_EMULATOR_HOST`` set (a local GCS emulator, as
``fewframes.fsio`` supports) ``gs://`` shards are listed, fetched and uploaded through ``fewframes.fsio``
instead, each shard read from a local temp copy.

Contract details chosen here (not in the issue; the fault catalogue is docs/faults.md):
- An empty ``labels`` list is valid; a missing one is an error unless the shards are read as unlabelled
  (``labelled=False``, ``data ingest --unlabelled``: the official test partition has no labels), which
  ignores any labels present. Labels repeated within a video are dropped (counted in
  ``ReadStats.duplicate_labels``).
- Video ids must be non-empty, valid UTF-8, printable and hold no whitespace or comma: they become the first
  column of the submission CSV, and the official ids (4 characters of [A-Za-z0-9_-]) all qualify.
- A corrupt record (CRC mismatch / truncation, as TensorFlow's reader finds them) ends what can be read of
  that shard, because the record framing after it cannot be trusted. With ``skip_invalid=True`` it counts
  as one invalid record and the rest of that shard is skipped (``ReadStats.truncated_shards``). Bytes after
  the last whole record (a shard cut inside a record header, which the reader, like TensorFlow's, ends at) are the
  same fault, reported with their byte offset.
- A shard with no records is an error unless ``allow_empty``.
- Video-level records (context ``mean_rgb``/``mean_audio``) and frames stored as floats are named as such.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fewframes import fsio
from fewframes.config import AUDIO_DIM, MAX_FRAMES, RGB_DIM
from fewframes.data.tfrecord import (
    CorruptRecord,
    encode_feature_lists,
    encode_frame_list,
    feature_list_bytes,
    frame_record,
    frame_rows,
    read_records,
    sequence_example_class,
)
from fewframes.errors import DataError

# Official quantisation range and offsets (youtube-8m starter code, utils.Dequantize).
QUANT_MIN = -2.0
QUANT_MAX = 2.0
_SCALAR = (QUANT_MAX - QUANT_MIN) / 255.0
_BIAS = (QUANT_MAX - QUANT_MIN) / 512.0 + QUANT_MIN


def _quiet_tensorflow() -> Any:
    """Import tensorflow with its start-up chatter turned off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    return tf


def _via_fsio(path: str) -> bool:
    """gs:// under a GCS emulator: TensorFlow cannot reach it, fewframes.fsio can."""
    return fsio.is_gcs(path) and bool(os.environ.get("STORAGE_EMULATOR_HOST"))


def dequantize(quantized: np.ndarray) -> np.ndarray:
    """uint8 features -> float32 in [-2, 2]: ``q * 4/255 + (4/512 - 2)`` (the official formula)."""
    return np.asarray(quantized, dtype=np.float32) * np.float32(_SCALAR) + np.float32(_BIAS)


def quantize(features: np.ndarray) -> np.ndarray:
    """float features -> uint8: ``round((clip(x, -2, 2) + 2) * 255/4)``."""
    clipped = np.clip(np.asarray(features, dtype=np.float32), QUANT_MIN, QUANT_MAX)
    return np.rint((clipped - QUANT_MIN) * np.float32(255.0 / (QUANT_MAX - QUANT_MIN))).astype(np.uint8)


@dataclass(eq=False)
class Video:
    """One video of a frame-level shard, still quantised."""

    id: str
    labels: np.ndarray  # int64[n_labels]
    rgb: np.ndarray  # uint8[n_frames, 1024] (YouTube-8M; another extractor's width as read)
    audio: np.ndarray  # uint8[n_frames, 128]
    duplicate_labels: int = 0  # labels the record repeated, dropped (not part of equality)
    id_key: str = "id"  # the context key of the id: "id" (2018+) or "video_id" (the 2017 release)
    record: int = 0  # its record number in its shard (when read from one)

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Video):
            return NotImplemented
        return (
            self.id == other.id
            and np.array_equal(self.labels, other.labels)
            and np.array_equal(self.rgb, other.rgb)
            and np.array_equal(self.audio, other.audio)
        )


@dataclass
class ReadStats:
    """What a read saw: records read, invalid records skipped (with reasons), shards cut short."""

    shards: int = 0
    records: int = 0
    invalid: int = 0
    truncated_shards: int = 0
    invalid_reasons: list[str] = field(default_factory=list)
    duplicate_labels: int = 0  # repeated labels dropped, over all videos
    empty_shards: int = 0  # shards without a record (allowed with allow_empty)

    def merge(self, other: ReadStats) -> None:
        self.shards += other.shards
        self.records += other.records
        self.invalid += other.invalid
        self.truncated_shards += other.truncated_shards
        self.invalid_reasons.extend(other.invalid_reasons)
        self.duplicate_labels += other.duplicate_labels
        self.empty_shards += other.empty_shards


def serialize_video(video: Video) -> bytes:
    """One ``Video`` -> a serialised ``tf.train.SequenceExample`` in the official schema (the id under
    ``video.id_key``: "id" as in 2018+, "video_id" as in the 2017 release).

    The frame lists are written with numpy (``fewframes.data.tfrecord``): the bytes TensorFlow's own
    serialiser gives for the same message."""
    _check_video_arrays(video)
    example = sequence_example_class()()
    context = example.context.feature
    if video.id_key not in ("id", "video_id"):
        raise DataError(f"video {video.id!r}: id_key must be 'id' or 'video_id', got {video.id_key!r}")
    context[video.id_key].bytes_list.value.append(video.id.encode("utf-8"))
    context["labels"].int64_list.value.extend(int(label) for label in video.labels)
    lists = {"rgb": encode_frame_list(np.asarray(video.rgb)), "audio": encode_frame_list(np.asarray(video.audio))}
    return example.SerializeToString() + encode_feature_lists(lists)


def _check_video_arrays(video: Video) -> None:
    rgb, audio = np.asarray(video.rgb), np.asarray(video.audio)
    if rgb.dtype != np.uint8 or audio.dtype != np.uint8:
        raise DataError(f"video {video.id!r}: rgb and audio must be uint8 (quantised), got {rgb.dtype}/{audio.dtype}")
    if rgb.ndim != 2 or audio.ndim != 2 or rgb.shape[1] < 1 or audio.shape[1] < 1:
        raise DataError(f"video {video.id!r}: rgb and audio must be [n, width] frames, got {rgb.shape}/{audio.shape}")
    if rgb.shape[0] != audio.shape[0]:
        raise DataError(f"video {video.id!r}: {rgb.shape[0]} rgb frames but {audio.shape[0]} audio frames")


def write_tfrecord(path: str | os.PathLike[str], videos: Iterable[Video]) -> int:
    """Write ``videos`` to one TFRecord shard at ``path`` (local or ``gs://``); returns the count.

    Atomic: records go to a temporary name in the same directory, renamed over ``path`` only when all
    were written, so an existing shard is never left half-written.
    """
    path = os.fspath(path)
    if _via_fsio(path):
        staging = tempfile.mkdtemp(prefix="fewframes-tfrecord-")
        try:
            local = os.path.join(staging, os.path.basename(path))
            count = write_tfrecord(local, videos)
            fsio.upload_file(local, path)  # a GCS object appears whole: atomic
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return count
    directory = os.path.dirname(path)
    temp_path = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    count = 0
    if fsio.is_gcs(path):  # real GCS: TensorFlow's file system
        tf = _quiet_tensorflow()
        try:
            with tf.io.TFRecordWriter(temp_path) as writer:
                for video in videos:
                    writer.write(serialize_video(video))
                    count += 1
            tf.io.gfile.rename(temp_path, path, overwrite=True)
        except BaseException:
            if tf.io.gfile.exists(temp_path):
                tf.io.gfile.remove(temp_path)
            raise
        return count
    if directory:
        os.makedirs(directory, exist_ok=True)
    try:
        with open(temp_path, "wb") as handle:
            for video in videos:
                handle.write(frame_record(serialize_video(video)))
                count += 1
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp_path)
        raise
    return count


def list_shards(path_or_glob: str | os.PathLike[str]) -> list[str]:
    """The shard files a path, a directory (its ``*.tfrecord``) or a glob names, sorted; error if none."""
    pattern = os.fspath(path_or_glob)
    if fsio.is_gcs(pattern):
        fsio.split_gcs(pattern)  # a malformed bucket name is one line, before TensorFlow tries the network
    if _via_fsio(pattern):
        if any(c in pattern for c in "*?["):
            shards = fsio.glob(pattern)
        else:
            shards = fsio.glob(fsio.join(pattern, "*.tfrecord")) or [pattern]
            shards = [s for s in shards if s != pattern or fsio.exists(s)]
        shards = sorted(s for s in shards if not s.rsplit("/", 1)[-1].startswith("."))
        if not shards:
            raise DataError(f"no TFRecord shards match {pattern!r}")
        return shards
    if fsio.is_gcs(pattern):  # real GCS: TensorFlow's file system
        gfile = _quiet_tensorflow().io.gfile
        isdir, glob = gfile.isdir, gfile.glob
    else:
        _check_readable_folder(pattern)
        import glob as globbing

        isdir, glob = os.path.isdir, globbing.glob
    if isdir(pattern):
        pattern = os.path.join(pattern, "*.tfrecord")
    shards = sorted(p for p in glob(pattern) if not os.path.basename(p).startswith("."))
    if not shards:
        raise DataError(f"no TFRecord shards match {os.fspath(path_or_glob)!r}")
    return shards


def _check_readable_folder(pattern: str) -> None:
    """A local folder (or a glob's folder) that cannot be listed is "permission denied", not "no shards match"."""
    folder = pattern if os.path.isdir(pattern) else os.path.dirname(pattern) or "."
    if any(c in folder for c in "*?["):
        return
    if os.path.isdir(folder) and not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"{folder}: permission denied (cannot list the folder)")


def shard_size(shard: str) -> int:
    """Bytes of one shard (local or gs://)."""
    if _via_fsio(shard):
        handle = fsio.open_input_file(shard)
        try:
            return int(handle.size())
        finally:
            handle.close()
    if fsio.is_gcs(shard):
        return int(_quiet_tensorflow().io.gfile.stat(shard).length)
    return os.path.getsize(shard)


def check_video_id(video_id: str) -> str | None:
    """Why ``video_id`` cannot be a video id (None when it can): empty, not printable (newline, NUL, ...),
    whitespace or a comma (the submission CSV's separator), or bytes that were not UTF-8."""
    if not video_id:
        return "is empty"
    if "\ufffd" in video_id:
        return "is not valid UTF-8"
    if not video_id.isprintable():
        return "holds a character that is not printable (newline, tab, NUL, ...)"
    if any(ch.isspace() for ch in video_id) or "," in video_id:
        return "holds whitespace or a comma (the submission CSV's separators)"
    return None


YOUTUBE_8M_WIDTHS = (RGB_DIM, AUDIO_DIM)


def parse_video(
    serialized: bytes,
    *,
    shard: str = "<bytes>",
    index: int = 0,
    num_classes: int | None = None,
    labelled: bool = True,
    widths: tuple[int | None, int | None] | None = YOUTUBE_8M_WIDTHS,
    labels_from: str = "",
) -> Video:
    """Parse and validate one serialised SequenceExample; ``DataError`` names shard, record and field.

    ``labelled=False``: the record's labels, if any, are ignored (an unlabelled set such as the official test
    partition); otherwise a missing ``labels`` feature is an error. ``widths``: the (rgb, audio) bytes per
    frame, YouTube-8M's by default; None takes them from the record's first frame. ``labels_from``: what
    ``num_classes`` comes from, for the message of a label outside it (e.g. "the vocabulary v.csv")."""
    where = f"{shard} record {index}"
    try:
        example = sequence_example_class().FromString(serialized)
    except Exception as exc:  # protobuf DecodeError
        raise DataError(f"{where}: not a tf.train.SequenceExample ({exc})") from None
    context = example.context.feature
    if "id" in context:
        id_key = "id"
    elif "video_id" in context:
        id_key = "video_id"
    else:
        raise DataError(f"{where}: missing context feature 'id' (or 2017 'video_id')")
    id_values = context[id_key].bytes_list.value
    if len(id_values) != 1:
        raise DataError(f"{where}: context 'id' must hold one bytes value, got {len(id_values)}")
    video_id = id_values[0].decode("utf-8", errors="replace")
    where = f"{shard} record {index} (video {video_id!r})"
    bad_id = check_video_id(video_id)
    if bad_id is not None:
        raise DataError(f"{where}: video id {bad_id}")
    duplicates = 0
    if not labelled:
        labels = np.zeros(0, dtype=np.int64)
    elif "labels" not in context:
        raise DataError(
            f"{where}: missing context feature 'labels' (an unlabelled set such as the official test "
            "partition? ingest it with --unlabelled)"
        )
    else:
        raw = context["labels"].int64_list.value
        labels = np.asarray(list(dict.fromkeys(raw)), dtype=np.int64)  # first occurrence of each, in order
        duplicates = len(raw) - labels.size
        if labels.size and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
            bad = int(labels[(labels < 0) | (labels >= (num_classes or np.iinfo(np.int64).max))][0])
            raise DataError(f"{where}: label {bad} out of range [0, {num_classes})" + (f" ({labels_from})" if labels_from else ""))
    lists = example.feature_lists.feature_list
    if ("rgb" not in lists or "audio" not in lists) and any(k in context for k in ("mean_rgb", "mean_audio")):
        raise DataError(
            f"{where}: video-level data (context 'mean_rgb'/'mean_audio', no per-frame lists); fewframes reads "
            "the frame-level shards (the 'frame' partitions of YouTube-8M)"
        )
    frames = {}
    in_place = feature_list_bytes(serialized)  # each list's bytes where they lie in the record, when plain
    for position, name in enumerate(("rgb", "audio")):
        if name not in lists:
            raise DataError(f"{where}: missing feature list '{name}'")
        width = widths[position] if widths is not None and widths[position] else _first_width(lists[name])
        raw = in_place[name] if in_place is not None and name in in_place else lists[name].SerializeToString()
        regular = frame_rows(raw, width)  # all frames at once, when canonical
        if regular is not None:
            frames[name] = regular
            continue
        rows = lists[name].feature  # one by one: finds and names the first bad frame
        for position, row in enumerate(rows):
            values = row.bytes_list.value
            if not values and len(row.float_list.value):
                raise DataError(
                    f"{where}: '{name}' frame {position} holds {len(row.float_list.value)} float values; "
                    f"fewframes reads uint8-quantised frames (one {width}-byte string per frame), not float features"
                )
            if len(values) != 1 or len(values[0]) != width:
                size = len(values[0]) if len(values) == 1 else f"{len(values)} values"
                raise DataError(f"{where}: '{name}' frame {position} has {size} bytes, expected {width}")
        frames[name] = np.frombuffer(b"".join(row.bytes_list.value[0] for row in rows), dtype=np.uint8).reshape(-1, width)
    n_rgb, n_audio = frames["rgb"].shape[0], frames["audio"].shape[0]
    if n_rgb != n_audio:
        raise DataError(f"{where}: 'rgb' has {n_rgb} frames but 'audio' has {n_audio}")
    if not 1 <= n_rgb <= MAX_FRAMES:
        raise DataError(f"{where}: {n_rgb} frames, expected 1 to {MAX_FRAMES}")
    return Video(
        id=video_id, labels=labels, rgb=frames["rgb"], audio=frames["audio"], duplicate_labels=duplicates, id_key=id_key
    )


def _first_width(feature_list: Any) -> int:
    """Bytes of the first frame of a feature list (its width when the widths are read from the records);
    0 when it has no frame or the frame is not one bytes value (the frame checks then name the fault)."""
    rows = feature_list.feature
    if not len(rows) or len(rows[0].bytes_list.value) != 1:
        return 0
    return len(rows[0].bytes_list.value[0])


def read_shard(
    shard: str,
    *,
    num_classes: int | None = None,
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
    labelled: bool = True,
    allow_empty: bool = False,
    widths: tuple[int, int] | None = YOUTUBE_8M_WIDTHS,
    labels_from: str = "",
) -> Iterator[Video]:
    """Yield the validated videos of one shard (see ``read_tfrecords``)."""
    options = dict(labelled=labelled, allow_empty=allow_empty, widths=widths, labels_from=labels_from)
    if _via_fsio(shard):
        staging = tempfile.mkdtemp(prefix="fewframes-tfrecord-")
        try:
            local = os.path.join(staging, "shard.tfrecord")
            if not fsio.exists(shard):
                raise DataError(f"{shard}: no such TFRecord shard")
            fsio.download_file(shard, local)
            yield from _read_local_shard(local, shard, num_classes, skip_invalid, stats, **options)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    yield from _read_local_shard(shard, shard, num_classes, skip_invalid, stats, **options)


def _read_local_shard(
    source: str,
    shard: str,
    num_classes: int | None,
    skip_invalid: bool,
    stats: ReadStats | None,
    *,
    labelled: bool = True,
    allow_empty: bool = False,
    **parse: Any,
) -> Iterator[Video]:
    """Read ``source`` (a local file, or gs:// through TensorFlow's file system); messages name ``shard``
    (the user's path). Records are read and checked by ``fewframes.data.tfrecord`` (TensorFlow's rules)."""
    stats = stats if stats is not None else ReadStats()
    stats.shards += 1
    if fsio.is_gcs(source):
        gfile = _quiet_tensorflow().io.gfile
        if not gfile.exists(source):
            raise DataError(f"{shard}: no such TFRecord shard")
        with gfile.GFile(source, "rb") as handle:
            data = handle.read()
    else:
        if not os.path.exists(source):
            raise DataError(f"{shard}: no such TFRecord shard")
        with open(source, "rb") as handle:  # mapped, not read: each record is copied out once
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(handle.fileno()).st_size else b""
    try:
        yield from _read_records(data, shard, num_classes, skip_invalid, stats, labelled, allow_empty, parse)
    finally:
        if isinstance(data, mmap.mmap):
            data.close()


def _read_records(
    data: Any,
    shard: str,
    num_classes: int | None,
    skip_invalid: bool,
    stats: ReadStats,
    labelled: bool,
    allow_empty: bool,
    parse: dict[str, Any],
) -> Iterator[Video]:
    size = len(data)
    if size == 0 and not allow_empty:
        raise DataError(f"{shard}: empty TFRecord shard (0 bytes, no records); pass --allow-empty to accept it")
    iterator = read_records(data)
    index = 0
    offset = 0  # byte offset of record `index`: each record is length (8) + CRC (4) + data + CRC (4)

    def cut_short(reason: str) -> None:
        if not skip_invalid:
            raise DataError(reason)
        stats.invalid += 1
        stats.truncated_shards += 1
        stats.invalid_reasons.append(reason)

    while True:
        try:
            _, serialized = next(iterator)
        except StopIteration:
            if offset != size:  # the reader ends quietly at a header cut short: the file is not whole
                cut_short(
                    f"{shard}: {size - offset} byte(s) at offset {offset} (after record {index - 1}) are not a "
                    f"whole record; the shard is cut short or damaged"
                )
            elif index == 0 and not allow_empty:
                raise DataError(f"{shard}: empty TFRecord shard (no records); pass --allow-empty to accept it")
            if index == 0:
                stats.empty_shards += 1
            return
        except CorruptRecord as exc:
            cut_short(
                f"{shard} record {index} at byte offset {offset}: corrupt record ({exc}); "
                "rest of the shard unreadable"
            )
            return
        offset += len(serialized) + 16
        try:
            video = parse_video(serialized, shard=shard, index=index, num_classes=num_classes, labelled=labelled, **parse)
        except DataError as exc:
            if not skip_invalid:
                raise
            stats.invalid += 1
            stats.invalid_reasons.append(str(exc))
        else:
            stats.records += 1
            stats.duplicate_labels += video.duplicate_labels
            video.record = index
            yield video
        index += 1


def read_tfrecords(
    path_or_glob: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
    labelled: bool = True,
    allow_empty: bool = False,
    widths: tuple[int, int] | None = YOUTUBE_8M_WIDTHS,
) -> Iterator[Video]:
    """Yield every video of the shards ``path_or_glob`` names (file, directory, glob; local or ``gs://``).

    Each record is validated (fields present, frame sizes, rgb/audio lengths equal, 1..300 frames, labels
    in ``[0, num_classes)`` when given, record CRC). An invalid record raises ``DataError`` naming the
    shard and record index, or with ``skip_invalid`` is skipped and counted in ``stats``. ``widths``: the
    (rgb, audio) frame widths, YouTube-8M's by default; None reads each record's own.
    """
    for shard in list_shards(path_or_glob):
        yield from read_shard(
            shard, num_classes=num_classes, skip_invalid=skip_invalid, stats=stats, labelled=labelled,
            allow_empty=allow_empty, widths=widths,
        )


__all__ = [
    "QUANT_MAX",
    "QUANT_MIN",
    "ReadStats",
    "Video",
    "YOUTUBE_8M_WIDTHS",
    "check_video_id",
    "dequantize",
    "list_shards",
    "parse_video",
    "quantize",
    "read_shard",
    "read_tfrecords",
    "serialize_video",
    "shard_size",
    "write_tfrecord",
]
