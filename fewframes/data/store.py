"""The frame store: quantised YouTube-8M frames laid out so that reading k frames reads only k frames.

Layout of a store folder (local or ``gs://bucket/prefix``; see ``docs/frame_store.md`` for the figures
behind the choice)::

    store.json              metadata, written LAST (its presence means the store is complete)
    index.parquet           one row per video: video_id, labels list<int32>, length, shard, first_row
    shard-00000.arrow ...   uncompressed Arrow IPC files, one record batch, one column
                            ``frame: fixed_size_binary(D)`` (rgb then audio, uint8; D = 1152 =
                            1024 + 128 for YouTube-8M, other extractors' widths as ingested),
                            one row per frame, the frames of a video contiguous
    vocabulary.csv          (optional) the class names, ``index,name`` (``fewframes.data.vocabulary``)
    split.parquet           (optional) the recorded train/validation/test split (``fewframes.data.split``)

``store.json`` records ``num_classes``, ``rgb_dim``/``audio_dim``/``feature_dim`` and where the class count
came from (``classes``: a vocabulary, ``--num-classes``, a recognised YouTube-8M release, or the data), and
per shard the byte offset of the frame column's data buffer in the file, so
frame ``r`` of a shard is the D bytes at ``data_offset + r * D``: any random-access file (a local
memory map, a ranged GCS read) fetches exactly the selected frames, and adjacent frames coalesce into
one range. Local reads index a zero-copy memory map; ``gs://`` reads issue one ranged GET per run of
adjacent frames. ``FrameStore.bytes_read`` counts the payload bytes fetched.

Writing is single-process per writer (``FrameStoreWriter``): TFRecord parsing, not this writer, is the
bottleneck of ingest (see docs/frame_store.md). For parallel ingest, each worker writes its own store
(a "part") and ``merge_stores`` joins them into one store by copying shard files (no re-encoding) and
concatenating the indexes.

A writer is atomic: everything goes to a temp folder beside the target and is renamed into place on a
successful ``close()``; an exception inside ``with FrameStoreWriter(...)`` leaves nothing at the path and
an existing store there untouched. For ``gs://`` targets the store is staged locally, its data files are
uploaded under a fresh ``v-<token>/`` prefix, and ``store.json`` is uploaded last (the commit point); the
previous version's files are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fewframes import fsio
from fewframes.config import AUDIO_DIM, RGB_DIM
from fewframes.data.vocabulary import STORE_VOCABULARY_FILE, Vocabulary, parse_vocabulary
from fewframes.errors import DataError, StoreError

FORMAT_NAME = "fewframes-frame-store"
FORMAT_VERSION = 1
METADATA_FILE = "store.json"
INDEX_FILE = "index.parquet"
SPLIT_FILE = "split.parquet"
FRAME_COLUMN = "frame"
# 65,536 frames x 1152 B = 72 MiB per shard: big enough that a shard is one efficient upload, small
# enough that the writer's in-memory buffer stays modest.
DEFAULT_SHARD_MAX_FRAMES = 1 << 16



def shard_schema(feature_dim: int) -> pa.Schema:
    """The schema of a shard file whose frames are ``feature_dim`` bytes."""
    return pa.schema([pa.field(FRAME_COLUMN, pa.binary(feature_dim), nullable=False)])

INDEX_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("first_row", pa.int64(), nullable=False),
    ]
)


def shard_file_name(shard: int) -> str:
    """The file name of shard ``shard`` inside a store folder."""
    return f"shard-{shard:05d}.arrow"


def _write_shard(path: Path, frames: np.ndarray) -> int:
    """Write ``frames`` (uint8 [F, D]) as one uncompressed Arrow IPC file; return the byte offset of
    the frame column's data buffer in that file."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    feature_dim = frames.shape[1]
    schema = shard_schema(feature_dim)
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(feature_dim), len(frames), [None, pa.py_buffer(frames)])
    batch = pa.record_batch([array], schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(batch)
    # Read the offset back from the file itself (zero-copy map: the buffer's address is inside the map).
    with pa.memory_map(str(path), "r") as source:
        whole = source.read_buffer()
        table = pa.ipc.open_file(whole).read_all()
        data = table.column(FRAME_COLUMN).chunk(0).buffers()[1]
        offset = data.address - whole.address
    if not 0 <= offset <= whole.size - len(frames) * feature_dim:
        raise StoreError(f"{path}: frame buffer offset {offset} outside the file (pyarrow layout changed?)")
    return int(offset)


class FrameStoreWriter:
    """Write videos into a new frame store at ``path`` (local folder or ``gs://bucket/prefix``).

    ``with FrameStoreWriter(path, num_classes=C) as w: w.add(video_id, labels, rgb, audio)``. Nothing
    appears at ``path`` until ``close()`` succeeds; an exception inside the ``with`` block discards it.
    ``overwrite=False`` refuses to replace an existing store.

    ``num_classes=None``: labels are not range-checked and the count is decided by the time of ``close()``:
    the ``num_classes`` attribute if set by then, else the largest label + 1. ``rgb_dim``/``audio_dim``:
    the frame widths (default YouTube-8M's 1024 and 128); None takes them from the first video added.
    ``vocabulary``: the class names, kept in the store (its class count must match). ``classes``: where the
    class count came from (recorded in ``store.json``, see ``fewframes.data.ingest``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        num_classes: int | None,
        shard_max_frames: int = DEFAULT_SHARD_MAX_FRAMES,
        overwrite: bool = True,
        extra_metadata: dict[str, Any] | None = None,
        rgb_dim: int | None = RGB_DIM,
        audio_dim: int | None = AUDIO_DIM,
        vocabulary: Vocabulary | None = None,
        classes: dict[str, Any] | None = None,
    ) -> None:
        if num_classes is not None and num_classes < 1:
            raise StoreError(f"{path}: num_classes must be >= 1, got {num_classes}")
        for name, width in (("rgb_dim", rgb_dim), ("audio_dim", audio_dim)):
            if width is not None and width < 0:
                raise StoreError(f"{path}: {name} must be >= 0, got {width}")
        if shard_max_frames < 1:
            raise StoreError(f"{path}: shard_max_frames must be >= 1, got {shard_max_frames}")
        self.path = str(path)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.rgb_dim, self.audio_dim = rgb_dim, audio_dim
        self.vocabulary = vocabulary
        self.classes = dict(classes or {})
        self._max_label = -1
        self.shard_max_frames = int(shard_max_frames)
        self.overwrite = overwrite
        self.extra_metadata = dict(extra_metadata or {})
        if not overwrite and fsio.exists(fsio.join(self.path, METADATA_FILE)):
            raise StoreError(f"{self.path}: a frame store already exists (pass overwrite=True to replace it)")
        if not fsio.is_gcs(self.path):
            _check_replaceable(Path(self.path))  # before any work, not at the commit
        if fsio.is_gcs(self.path):
            self._staging = Path(fsio.local_temp_dir("fewframes-store-"))
        else:
            target = Path(self.path).absolute()
            target.parent.mkdir(parents=True, exist_ok=True)
            self._staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
            self._staging.mkdir()
        self._ids: set[str] = set()
        self._index: dict[str, list[Any]] = {name: [] for name in INDEX_SCHEMA.names}
        # The current shard's frames, filled in place (one copy per frame); pages are touched only as used.
        self._buffer: np.ndarray | None = None
        self._pending_frames = 0
        self._shards: list[dict[str, Any]] = []
        self._rows_in_shard = 0
        self._closed = False

    # -- writing -----------------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int | None:
        """Bytes of one frame (rgb + audio), once the widths are known."""
        return None if self.rgb_dim is None or self.audio_dim is None else self.rgb_dim + self.audio_dim

    def add(self, video_id: str, labels: np.ndarray | Sequence[int], rgb: np.ndarray, audio: np.ndarray) -> None:
        """Append one video: ``rgb`` uint8 [n, rgb_dim], ``audio`` uint8 [n, audio_dim] (quantised), ``labels`` ints."""
        if self._closed:
            raise StoreError(f"{self.path}: writer is closed")
        video_id = str(video_id)
        rgb, audio = np.asarray(rgb), np.asarray(audio)
        if rgb.dtype != np.uint8 or audio.dtype != np.uint8:
            raise DataError(f"video {video_id!r}: rgb and audio must be uint8 (quantised), got {rgb.dtype}/{audio.dtype}")
        if rgb.ndim == 2 and audio.ndim == 2 and rgb.shape[1] + audio.shape[1] > 0:
            if self.rgb_dim is None:
                self.rgb_dim = int(rgb.shape[1])
            if self.audio_dim is None:
                self.audio_dim = int(audio.shape[1])
        if rgb.ndim != 2 or rgb.shape[1] != self.rgb_dim or audio.ndim != 2 or audio.shape[1] != self.audio_dim:
            raise DataError(
                f"video {video_id!r}: rgb must be [n,{self.rgb_dim}] and audio [n,{self.audio_dim}] (the store's "
                f"frame widths), got {rgb.shape}/{audio.shape}"
            )
        n = rgb.shape[0]
        if audio.shape[0] != n:
            raise DataError(f"video {video_id!r}: {n} rgb frames but {audio.shape[0]} audio frames")
        if n == 0:
            raise DataError(f"video {video_id!r}: has no frames")
        label_array = np.asarray(labels, dtype=np.int64).ravel()
        limit = self.num_classes if self.num_classes is not None else np.iinfo(np.int32).max
        if label_array.size and (label_array.min() < 0 or label_array.max() >= limit):
            raise DataError(f"video {video_id!r}: labels must be in [0, {limit}), got {label_array.tolist()}")
        if video_id in self._ids:
            raise DataError(f"video {video_id!r}: duplicate video id in store {self.path}")
        if self._pending_frames and self._pending_frames + n > self.shard_max_frames:
            self._flush()
        capacity = max(self.shard_max_frames, n)  # a video longer than a shard gets a shard of its own
        if self._buffer is None or len(self._buffer) < capacity:
            self._buffer = np.empty((capacity, self.feature_dim), dtype=np.uint8)
        rows = self._buffer[self._pending_frames : self._pending_frames + n]
        rows[:, : self.rgb_dim] = rgb
        rows[:, self.rgb_dim :] = audio
        if label_array.size:
            self._max_label = max(self._max_label, int(label_array.max()))
        self._ids.add(video_id)
        self._index["video_id"].append(video_id)
        self._index["labels"].append(label_array.astype(np.int32))
        self._index["length"].append(n)
        self._index["shard"].append(len(self._shards))
        self._index["first_row"].append(self._pending_frames)
        self._pending_frames += n

    def add_video(self, video: Any) -> None:
        """Append a ``fewframes.data.yt8m.Video`` (anything with ``id``, ``labels``, ``rgb``, ``audio``)."""
        self.add(video.id, video.labels, video.rgb, video.audio)

    def _flush(self) -> None:
        if not self._pending_frames or self._buffer is None:
            return
        shard = len(self._shards)
        name = shard_file_name(shard)
        frames = self._buffer[: self._pending_frames]
        offset = _write_shard(self._staging / name, frames)
        self._shards.append(
            {
                "file": name,
                "num_frames": int(len(frames)),
                "data_offset": offset,
                "file_bytes": int((self._staging / name).stat().st_size),
            }
        )
        self._pending_frames = 0

    # -- committing --------------------------------------------------------------------------------
    def close(self) -> dict[str, Any]:
        """Write the index and metadata and move the store into place; returns the metadata."""
        if self._closed:
            raise StoreError(f"{self.path}: writer is already closed")
        try:
            self._flush()
            metadata = self._finish_staging()
            if fsio.is_gcs(self.path):
                _commit_gcs(self._staging, self.path, metadata)
            else:
                _commit_local(self._staging, Path(self.path).absolute(), self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        if fsio.is_gcs(self.path):
            shutil.rmtree(self._staging, ignore_errors=True)
        return metadata

    def _finish_staging(self) -> dict[str, Any]:
        if self.num_classes is None:
            self.num_classes = max(1, self._max_label + 1)
        if self._max_label >= self.num_classes:
            raise DataError(f"{self.path}: a video has label {self._max_label}, outside [0, {self.num_classes})")
        if self.vocabulary is not None and self.vocabulary.num_classes != self.num_classes:
            raise StoreError(
                f"{self.path}: the vocabulary has {self.vocabulary.num_classes} classes, the store {self.num_classes}"
            )
        if self.rgb_dim is None or self.audio_dim is None:  # no video was added: YouTube-8M's widths
            self.rgb_dim, self.audio_dim = RGB_DIM if self.rgb_dim is None else self.rgb_dim, (
                AUDIO_DIM if self.audio_dim is None else self.audio_dim)
        table = pa.table(self._index, schema=INDEX_SCHEMA)
        pq.write_table(table, self._staging / INDEX_FILE)
        if self.vocabulary is not None:
            (self._staging / STORE_VOCABULARY_FILE).write_text(self.vocabulary.to_csv(), encoding="utf-8")
        metadata = _metadata(self.num_classes, table, self._shards, self.extra_metadata)
        metadata.update(rgb_dim=self.rgb_dim, audio_dim=self.audio_dim, feature_dim=self.feature_dim,
                        classes=self.classes or {"from": "num_classes"})
        if self.vocabulary is not None:
            metadata["vocabulary"] = STORE_VOCABULARY_FILE
        (self._staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1, sort_keys=True))
        return metadata

    def abort(self) -> None:
        """Discard everything written so far (the target path is not touched)."""
        self._closed = True
        self._buffer = None
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> FrameStoreWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def _metadata(
    num_classes: int, index: pa.Table, shards: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    lengths = index.column("length").to_numpy()
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_classes": int(num_classes),
        "dtype": "uint8 (quantised as in YouTube-8M)",
        "num_videos": int(index.num_rows),
        "num_frames": int(lengths.sum()) if len(lengths) else 0,
        "index": INDEX_FILE,
        "shards": shards,
        "extra": extra,
    }


def _commit_local(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``target``; an existing store is moved aside first and removed only after."""
    backup = None
    if os.path.lexists(target):
        if not overwrite:
            raise StoreError(f"{target}: a frame store already exists (pass overwrite=True to replace it)")
        _check_replaceable(target)
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def is_frame_store(path: str | os.PathLike[str]) -> bool:
    """True when local ``path`` is a folder holding a store's ``store.json`` (a store a writer may replace)."""
    return (Path(path) / METADATA_FILE).is_file()


def _check_replaceable(target: Path) -> None:
    """A store may be written at ``target`` only where nothing is, or an empty folder, or a frame store."""
    if not os.path.lexists(target):
        return
    if not target.is_dir() or target.is_symlink():
        raise StoreError(f"{target}: is an existing file, not a frame store folder; refusing to replace it")
    if not is_frame_store(target) and any(target.iterdir()):
        raise StoreError(f"{target}: exists, is not empty and is not a frame store; refusing to replace it")


def _commit_gcs(staging: Path, prefix: str, metadata: dict[str, Any]) -> None:
    """Upload data files under a fresh version prefix, then ``store.json`` (the commit point), then delete
    the previous version's files and its (now stale) split."""
    try:
        old = json.loads(fsio.read_bytes(fsio.join(prefix, METADATA_FILE)))
    except Exception:
        old = None
    version = f"v-{uuid.uuid4().hex[:12]}"
    for shard in metadata["shards"]:
        fsio.upload_file(staging / shard["file"], fsio.join(prefix, version, shard["file"]))
        shard["file"] = f"{version}/{shard['file']}"
    fsio.upload_file(staging / INDEX_FILE, fsio.join(prefix, version, INDEX_FILE))
    metadata["index"] = f"{version}/{INDEX_FILE}"
    if metadata.get("vocabulary"):
        fsio.upload_file(staging / STORE_VOCABULARY_FILE, fsio.join(prefix, version, STORE_VOCABULARY_FILE))
        metadata["vocabulary"] = f"{version}/{STORE_VOCABULARY_FILE}"
    fsio.write_bytes_atomic(fsio.join(prefix, METADATA_FILE), json.dumps(metadata, indent=1, sort_keys=True).encode())
    if old is not None:
        stale = [s["file"] for s in old.get("shards", [])] + [old.get("index", INDEX_FILE), SPLIT_FILE]
        stale += [old["vocabulary"]] if old.get("vocabulary") else []
        keep = {s["file"] for s in metadata["shards"]} | {metadata["index"], metadata.get("vocabulary")}
        for rel in stale:
            if rel not in keep:
                fsio.remove(fsio.join(prefix, rel))


class FrameStore:
    """A read-only frame store (see the module docstring for the layout). Open with ``FrameStore.open``.

    Safe to hand to DataLoader workers: open files are per process and reopened lazily after a fork or
    unpickling. ``bytes_read`` counts the frame bytes this process fetched.
    """

    def __init__(
        self, path: str, metadata: dict[str, Any], index: pa.Table, *, memory_map: bool = True, max_gap_frames: int = 0
    ) -> None:
        if max_gap_frames < 0:
            raise StoreError(f"{path}: max_gap_frames must be >= 0, got {max_gap_frames}")
        self.path = path
        self.memory_map = memory_map
        self.max_gap_frames = int(max_gap_frames)
        self.metadata = metadata
        self.num_classes = int(metadata["num_classes"])
        self.rgb_dim = int(metadata.get("rgb_dim", RGB_DIM))
        self.audio_dim = int(metadata.get("audio_dim", AUDIO_DIM))
        self.feature_dim = self.rgb_dim + self.audio_dim
        self._vocabulary: Vocabulary | None | bool = False  # False: not read yet
        self.video_ids: list[str] = index.column("video_id").to_pylist()
        label_column = index.column("labels").combine_chunks()
        offsets = label_column.offsets.to_numpy()
        flat = label_column.values.to_numpy(zero_copy_only=False).astype(np.int64)
        self.labels: list[np.ndarray] = [flat[offsets[i] : offsets[i + 1]] for i in range(len(self.video_ids))]
        self.lengths: np.ndarray = index.column("length").to_numpy().astype(np.int64)
        self.shard_of: np.ndarray = index.column("shard").to_numpy().astype(np.int64)
        self.first_row: np.ndarray = index.column("first_row").to_numpy().astype(np.int64)
        self.shards: list[dict[str, Any]] = list(metadata["shards"])
        self.bytes_read = 0
        self._files: dict[int, Any] = {}
        self._views: dict[int, np.ndarray] = {}
        self._pid = os.getpid()
        self._id_to_index: dict[str, int] | None = None
        self._check()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, memory_map: bool = True, max_gap_frames: int = 0) -> FrameStore:
        """Open the store at a local folder or ``gs://bucket/prefix``.

        Local shards are memory-mapped (zero copy; the default) or, with ``memory_map=False``, read with one
        ``pread`` per run of adjacent frames (the same ranged-read path as ``gs://``). ``max_gap_frames``
        (ranged reads only): runs separated by at most that many unselected frames are fetched as one
        range, trading those gap bytes (counted in ``bytes_read``) for fewer requests; 0 = exact frames."""
        path = str(path).rstrip("/") if fsio.is_gcs(path) else str(path)
        meta_path = fsio.join(path, METADATA_FILE)
        try:
            raw = fsio.read_bytes(meta_path)
        except Exception as exc:
            raise StoreError(f"{path}: not a frame store (cannot read {METADATA_FILE}: {exc})") from exc
        try:
            metadata = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"{meta_path}: not valid JSON ({exc})") from exc
        if metadata.get("format") != FORMAT_NAME:
            raise StoreError(f"{meta_path}: field 'format' is {metadata.get('format')!r}, expected {FORMAT_NAME!r}")
        if metadata.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{meta_path}: field 'format_version' is {metadata.get('format_version')!r}; this fewframes reads {FORMAT_VERSION}"
            )
        widths = [metadata.get(name) for name in ("rgb_dim", "audio_dim", "feature_dim")]
        if not all(isinstance(w, int) and w >= 0 for w in widths) or widths[0] + widths[1] != widths[2] or not widths[2]:
            raise StoreError(
                f"{meta_path}: fields 'rgb_dim', 'audio_dim', 'feature_dim' are {widths}; expected whole numbers "
                "with rgb_dim + audio_dim = feature_dim > 0"
            )
        index_path = fsio.join(path, metadata.get("index", INDEX_FILE))
        try:
            index = pq.read_table(pa.BufferReader(fsio.read_bytes(index_path)))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{index_path}: cannot read the index ({exc})") from exc
        missing = [n for n in INDEX_SCHEMA.names if n not in index.column_names]
        if missing:
            raise StoreError(f"{index_path}: missing column(s) {', '.join(missing)}")
        return cls(path, metadata, index, memory_map=memory_map, max_gap_frames=max_gap_frames)

    def _check(self) -> None:
        n = len(self.video_ids)
        if n != self.metadata.get("num_videos"):
            raise StoreError(f"{self.path}: index has {n} videos but {METADATA_FILE} says {self.metadata.get('num_videos')}")
        if n and (self.shard_of.min() < 0 or self.shard_of.max() >= len(self.shards)):
            raise StoreError(f"{self.path}: index field 'shard' refers to a shard not listed in {METADATA_FILE}")
        if n:
            shard_frames = np.array([s["num_frames"] for s in self.shards], dtype=np.int64)
            if np.any(self.first_row + self.lengths > shard_frames[self.shard_of]) or np.any(self.first_row < 0):
                raise StoreError(f"{self.path}: index fields 'first_row'/'length' run past the end of their shard")

    # -- metadata --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.video_ids)

    def __repr__(self) -> str:
        return f"FrameStore({self.path!r}, videos={len(self)}, classes={self.num_classes})"

    @property
    def vocabulary(self) -> Vocabulary | None:
        """The class names kept with the store (``vocabulary.csv``), or None when it was ingested without one."""
        if self._vocabulary is False:
            name = self.metadata.get("vocabulary")
            if not name:
                self._vocabulary = None
            else:
                where = fsio.join(self.path, name)
                try:
                    text = fsio.read_bytes(where).decode("utf-8")
                except Exception as exc:
                    raise StoreError(f"{where}: cannot read the store's vocabulary ({exc})") from None
                try:
                    self._vocabulary = parse_vocabulary(text, where)
                except DataError as exc:
                    raise StoreError(str(exc)) from None
        return self._vocabulary or None

    @property
    def class_names(self) -> list[str] | None:
        """Every class's name ('' where the vocabulary has none), or None without a vocabulary."""
        vocabulary = self.vocabulary
        return None if vocabulary is None else vocabulary.name_list()

    @property
    def class_source(self) -> dict[str, Any]:
        """Where the class count came from (``store.json`` ``classes``): {"from": "vocabulary" | "num_classes"
        | "release" | "data", ...}. Stores written before this was recorded say "num_classes"."""
        return dict(self.metadata.get("classes") or {"from": "num_classes"})

    @property
    def labelled(self) -> bool:
        """False for a store ingested with ``--unlabelled`` (e.g. the official test set): predict only."""
        return bool((self.metadata.get("extra") or {}).get("labelled", True))

    def require_labels(self, purpose: str) -> None:
        """Refuse, with one line, to use an unlabelled store for ``purpose`` (training, evaluation, a split)."""
        if not self.labelled:
            raise StoreError(
                f"{self.path}: an unlabelled frame store (ingested with --unlabelled) cannot be used for {purpose}; "
                "it is for predict"
            )

    @property
    def num_frames(self) -> int:
        """Frames in the store."""
        return int(self.lengths.sum())

    @property
    def nbytes(self) -> int:
        """Frame bytes on disk (payload only, without Arrow framing)."""
        return int(sum(s["num_frames"] for s in self.shards)) * self.feature_dim

    def index_of(self, video_id: str) -> int:
        """The index of ``video_id`` in this store."""
        if self._id_to_index is None:
            self._id_to_index = {v: i for i, v in enumerate(self.video_ids)}
        try:
            return self._id_to_index[video_id]
        except KeyError:
            raise StoreError(f"{self.path}: no video with id {video_id!r}") from None

    def labels_multi_hot(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 [len(indices), num_classes] multi-hot labels."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.zeros((len(indices), self.num_classes), dtype=np.float32)
        for row, i in enumerate(indices):
            out[row, self.labels[int(i)]] = 1.0
        return out

    # -- frame reads -------------------------------------------------------------------------------
    def _file(self, shard: int) -> Any:
        if self._pid != os.getpid():  # forked: handles (and a GCS client) must not be shared
            self._files, self._views, self._pid = {}, {}, os.getpid()
        f = self._files.get(shard)
        if f is None:
            info = self.shards[shard]
            f = fsio.open_input_file(fsio.join(self.path, info["file"]), memory_map=self.memory_map)
            size = f.size()
            if info["data_offset"] + info["num_frames"] * self.feature_dim > size:
                raise StoreError(f"{fsio.join(self.path, info['file'])}: file is {size} bytes, shorter than {METADATA_FILE} says")
            self._files[shard] = f
            if isinstance(f, pa.MemoryMappedFile):
                f.seek(info["data_offset"])
                buffer = f.read_buffer(info["num_frames"] * self.feature_dim)  # zero copy (read_at copies)
                self._views[shard] = np.frombuffer(buffer, dtype=np.uint8).reshape(-1, self.feature_dim)
        return f

    def _rows(self, index: int, positions: np.ndarray | Sequence[int]) -> tuple[int, np.ndarray]:
        if not 0 <= index < len(self):
            raise StoreError(f"{self.path}: video index {index} out of range [0, {len(self)})")
        positions = np.asarray(positions, dtype=np.int64).ravel()
        length = int(self.lengths[index])
        if positions.size and (positions.min() < 0 or positions.max() >= length):
            bad = positions[(positions < 0) | (positions >= length)][0]
            raise StoreError(
                f"{self.path}: video {self.video_ids[index]!r} has {length} frames; position {int(bad)} is out of range"
            )
        return int(self.shard_of[index]), self.first_row[index] + positions

    def read_frames(self, index: int, positions: np.ndarray | Sequence[int]) -> np.ndarray:
        """uint8 [len(positions), feature_dim] frames ``positions`` of video ``index`` (rgb then audio), in the
        order given; reads only those frames' bytes (adjacent positions coalesce into one range)."""
        index = int(index)
        shard, rows = self._rows(index, positions)
        width = self.feature_dim
        out = np.empty((len(rows), width), dtype=np.uint8)
        if not len(rows):
            return out
        f = self._file(shard)
        view = self._views.get(shard)
        if view is not None:
            np.take(view, rows, axis=0, out=out)  # touches only the pages of the selected frames
            self.bytes_read += len(rows) * width
            return out
        # Ranged reads: a run is a stretch of ascending rows with gaps <= max_gap_frames; one read per run.
        step = np.diff(rows)
        breaks = np.flatnonzero((step < 1) | (step > 1 + self.max_gap_frames)) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [len(rows)]]).tolist()
        base = int(self.shards[shard]["data_offset"])
        for a, b in zip(starts, ends):
            first, last = int(rows[a]), int(rows[b - 1])
            count = last - first + 1
            data = f.read_at(count * width, base + first * width)
            frames = np.frombuffer(data, dtype=np.uint8).reshape(count, width)
            out[a:b] = frames[rows[a:b] - first]
            self.bytes_read += count * width
        return out

    def read_video(self, index: int) -> np.ndarray:
        """uint8 [length, feature_dim]: every frame of video ``index``."""
        return self.read_frames(index, np.arange(int(self.lengths[int(index)]), dtype=np.int64))

    def iter_videos(self, indices: Iterable[int] | None = None) -> Iterable[tuple[int, np.ndarray]]:
        """(index, all frames) for ``indices`` (default: every video), in that order."""
        for i in range(len(self)) if indices is None else indices:
            yield int(i), self.read_video(int(i))

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close open shard files (reads reopen them)."""
        self._views = {}
        for f in self._files.values():
            try:
                f.close()
            except Exception:
                pass
        self._files = {}

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"], state["_views"] = {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


def _hard_link(source: str, target: Path) -> bool:
    """Hard-link ``source`` as ``target``; False where the file system does not allow it (another device...)."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


def merge_stores(
    path: str | os.PathLike[str],
    parts: Sequence[str | os.PathLike[str]],
    *,
    overwrite: bool = True,
    num_classes: int | None = None,
    vocabulary: Vocabulary | None = None,
    classes: dict[str, Any] | None = None,
    link: bool = False,
) -> dict[str, Any]:
    """Join the stores ``parts`` (written in parallel, e.g. one per ingest worker) into one store at
    ``path``, in the order given. Shard files are copied byte for byte (no re-encoding) and renumbered;
    the indexes are concatenated. Video ids must be unique across parts; frame widths must agree, and
    ``num_classes`` too unless given (then at least each part's). ``vocabulary``/``classes``: as for
    ``FrameStoreWriter`` (default: the first part's). ``link``: hard-link local shard files instead of copying
    them where the file system allows (for parts the caller deletes afterwards, as ingest's workers' parts; a
    shard file is never written again once its store is closed). Atomic like ``FrameStoreWriter``. Returns
    the new store's metadata."""
    if not parts:
        raise StoreError(f"{path}: merge_stores needs at least one part")
    opened = [FrameStore.open(p) for p in parts]
    counts = {s.num_classes for s in opened}
    if num_classes is None and len(counts) != 1:
        raise StoreError(f"{path}: parts disagree on num_classes ({sorted(counts)})")
    if num_classes is not None and num_classes < max(counts):
        raise StoreError(f"{path}: num_classes {num_classes} is below a part's ({max(counts)})")
    widths = {(s.rgb_dim, s.audio_dim) for s in opened}
    if len(widths) != 1:
        raise StoreError(f"{path}: parts disagree on the frame widths (rgb, audio) {sorted(widths)}")
    labelled = {s.labelled for s in opened}
    if len(labelled) != 1:
        raise StoreError(f"{path}: some parts are labelled and some are not")
    extra = {} if labelled.pop() else {"labelled": False}
    rgb_dim, audio_dim = widths.pop()
    writer = FrameStoreWriter(
        path, num_classes=num_classes or counts.pop(), overwrite=overwrite, extra_metadata=extra,
        rgb_dim=rgb_dim, audio_dim=audio_dim, vocabulary=vocabulary if vocabulary is not None else opened[0].vocabulary,
        classes=classes if classes is not None else opened[0].class_source,
    )
    try:
        seen: dict[str, str] = {}
        tables = []
        for part in opened:
            for vid in part.video_ids:
                if vid in seen:
                    raise DataError(f"video {vid!r}: in both parts {seen[vid]} and {part.path}")
                seen[vid] = part.path
            shard_base = len(writer._shards)
            for shard in part.shards:
                name = shard_file_name(len(writer._shards))
                source = fsio.join(part.path, shard["file"])
                if fsio.is_gcs(source):
                    fsio.download_file(source, writer._staging / name)
                elif not (link and _hard_link(source, writer._staging / name)):
                    shutil.copyfile(source, writer._staging / name)
                writer._shards.append({**shard, "file": name})
            tables.append(
                pa.table(
                    {
                        "video_id": part.video_ids,
                        "labels": [lab.astype(np.int32) for lab in part.labels],
                        "length": part.lengths.astype(np.int32),
                        "shard": (part.shard_of + shard_base).astype(np.int32),
                        "first_row": part.first_row,
                    },
                    schema=INDEX_SCHEMA,
                )
            )
        merged = pa.concat_tables(tables)
        for name in INDEX_SCHEMA.names:
            writer._index[name] = merged.column(name).to_pylist()
        writer._ids = set(seen)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


__all__ = [
    "DEFAULT_SHARD_MAX_FRAMES",
    "FORMAT_VERSION",
    "FrameStore",
    "FrameStoreWriter",
    "INDEX_FILE",
    "METADATA_FILE",
    "is_frame_store",
    "SPLIT_FILE",
    "merge_stores",
    "shard_file_name",
]
