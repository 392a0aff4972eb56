"""Paths that may be local or ``gs://bucket/key``: one small API for both.

Local files are read through ``pyarrow.memory_map`` (zero copy); ``gs://`` objects through
google-cloud-storage ranged downloads (``GcsRandomAccessFile.read_at`` fetches exactly the bytes asked
for, so a frame-sparse read stays frame-sparse over the network). ``google.cloud.storage`` is imported
inside the functions that use it.

With ``STORAGE_EMULATOR_HOST`` set (a local GCS emulator), the client uses anonymous credentials and the
project ``$GOOGLE_CLOUD_PROJECT`` (default ``fewframes-local``). Otherwise the ambient Google credentials.
Every failure (missing bucket, object, or credentials) raises ``StorageError`` with one line naming the
path.

Writers that produce a file (predictions, ONNX, JSON, model files) go through :func:`staged_output_file`:
a local temp file, then a rename (local) or an upload (gs://, resumable above :func:`resumable_threshold`),
so a reader sees the old content or the new, never a part, and no temp file is left either way. Readers
that need a filesystem path use :func:`local_input_file`; whole folders move with :func:`upload_dir`
(commit marker last) and :func:`download_dir`; a folder being written (a training run's checkpoints)
follows to GCS with :class:`DirectoryMirror`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from fewframes.config import env_number
from fewframes.errors import FewframesError, StorageError

GCS_SCHEME = "gs://"
# Above this size uploads are resumable and sent in chunks (a multiple of 256 KiB, as GCS requires): an
# interrupted chunk is retried alone instead of the whole file. Both can be set per process through the
# environment (e.g. a lower threshold on a flaky link, or in tests) or per call.
RESUMABLE_THRESHOLD = 8 * 1024 * 1024
RESUMABLE_CHUNK_SIZE = 32 * 1024 * 1024
RESUMABLE_THRESHOLD_ENV = "FEWFRAMES_GCS_RESUMABLE_THRESHOLD"
RESUMABLE_CHUNK_SIZE_ENV = "FEWFRAMES_GCS_CHUNK_SIZE"
_CHUNK_GRANULARITY = 256 * 1024


def is_gcs(path: str | os.PathLike[str]) -> bool:
    """True for ``gs://`` paths."""
    return str(path).startswith(GCS_SCHEME)


def split_gcs(path: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    if not is_gcs(path):
        raise StorageError(f"{path}: not a gs:// path")
    rest = str(path)[len(GCS_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{path}: gs:// path has no bucket name")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise StorageError(
            f"{path}: malformed bucket name {bucket!r} (3-63 characters: lowercase letters, digits, '-', '_', '.'; "
            "starting and ending with a letter or digit)"
        )
    return bucket, key


# GCS bucket naming rules (https://cloud.google.com/storage/docs/buckets#naming); dotted names may be longer
# (up to 222, each part up to 63), which this simple rule also accepts when they are dotted.
_BUCKET_NAME = re.compile(r"^(?=.{3,222}$)[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$")


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts with ``/`` for gs:// and ``os.path.join`` for local paths."""
    if is_gcs(base):
        out = str(base).rstrip("/")
        for part in parts:
            out = f"{out}/{part.strip('/')}"
        return out
    return os.path.join(os.fspath(base), *parts)


_CLIENT: Any = None
_CLIENT_PID: int | None = None


def gcs_client() -> Any:
    """A cached ``google.cloud.storage.Client`` (one per process: clients must not cross a fork)."""
    global _CLIENT, _CLIENT_PID
    if _CLIENT is not None and _CLIENT_PID == os.getpid():
        return _CLIENT
    from google.cloud import storage

    try:
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                project=os.environ.get("GOOGLE_CLOUD_PROJECT", "fewframes-local"),
                credentials=AnonymousCredentials(),
            )
        else:
            client = storage.Client()
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
        raise StorageError(f"gs://: no usable Google Cloud credentials ({_first_line(exc)})") from exc
    _CLIENT, _CLIENT_PID = client, os.getpid()
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _gcs_error(path: str, exc: BaseException, action: str) -> StorageError:
    """Turn a google-cloud-storage exception into one line naming the path."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        bucket, _ = split_gcs(path)
        try:
            bucket_exists = gcs_client().bucket(bucket).exists()
        except Exception:
            bucket_exists = True
        what = "object not found" if bucket_exists else f"bucket {bucket} not found"
        return StorageError(f"{path}: cannot {action}: {what}")
    if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
        return StorageError(f"{path}: cannot {action}: permission denied ({_first_line(exc)})")
    return StorageError(f"{path}: cannot {action}: {_first_line(exc)}")


def _blob(path: str) -> Any:
    bucket, key = split_gcs(path)
    if not key:
        raise StorageError(f"{path}: gs:// path names a bucket but no object")
    return gcs_client().bucket(bucket).blob(key)


class GcsRandomAccessFile(io.RawIOBase):
    """A read-only, seekable file over one GCS object; every read is one ranged GET of exactly the bytes
    asked for (no read-ahead), so callers that coalesce ranges control the traffic."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._blob = _blob(path)
        try:
            self._blob.reload()
        except Exception as exc:
            raise _gcs_error(path, exc, "open") from exc
        self._size = int(self._blob.size)
        self._pos = 0

    def size(self) -> int:
        """Object size in bytes."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read_at(self, nbytes: int, offset: int) -> bytes:
        """``nbytes`` bytes from ``offset`` (fewer at the end of the object); one ranged request."""
        end = min(offset + nbytes, self._size)
        if end <= offset:
            return b""
        try:
            return self._blob.download_as_bytes(start=offset, end=end - 1, checksum=None)
        except Exception as exc:
            raise _gcs_error(self.path, exc, f"read bytes {offset}-{end - 1}") from exc

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        data = self.read_at(size, self._pos)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def open_input_file(path: str | os.PathLike[str], *, memory_map: bool = True) -> Any:
    """A random-access readable file with ``read_at(nbytes, offset)``, ``size()`` and ``close()``.

    Local: a ``pyarrow.MemoryMappedFile`` (zero copy), or with ``memory_map=False`` a ``pyarrow.OSFile``
    (one ``pread`` per ``read_at``). gs://: a ``GcsRandomAccessFile``.
    """
    if is_gcs(path):
        return GcsRandomAccessFile(str(path))
    try:
        return pa.memory_map(os.fspath(path), "r") if memory_map else pa.OSFile(os.fspath(path), "r")
    except FileNotFoundError as exc:
        raise StorageError(f"{path}: file not found") from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot open: {_first_line(exc)}") from exc


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole content of a local file or gs:// object."""
    if is_gcs(path):
        blob = _blob(str(path))
        try:
            return blob.download_as_bytes()
        except Exception as exc:
            raise _gcs_error(str(path), exc, "read") from exc
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise StorageError(f"{path}: file not found") from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {_first_line(exc)}") from exc


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` so that readers see the old content or the new, never a part.

    Local: through :func:`staged_output_file` (temp file beside it, fsync, rename). gs://: one object upload
    (resumable above :func:`resumable_threshold`; GCS objects appear whole).
    """
    if is_gcs(path):
        _upload_stream(io.BytesIO(data), len(data), str(path), "write")
        return
    with staged_output_file(path) as temp:
        temp.write_bytes(data)


def exists(path: str | os.PathLike[str]) -> bool:
    """True if a local file/folder or a gs:// object (or a gs:// "folder" prefix with objects) exists."""
    if is_gcs(path):
        bucket_name, key = split_gcs(str(path))
        client = gcs_client()
        try:
            if not key:
                return client.bucket(bucket_name).exists()
            if client.bucket(bucket_name).blob(key).exists():
                return True
            prefix = key.rstrip("/") + "/"
            return any(True for _ in client.list_blobs(bucket_name, prefix=prefix, max_results=1))
        except Exception as exc:
            raise _gcs_error(str(path), exc, "check") from exc
    return os.path.exists(path)


def listdir(path: str | os.PathLike[str]) -> list[str]:
    """Names (not paths) directly under a local folder or a gs:// prefix, sorted."""
    if is_gcs(path):
        bucket_name, key = split_gcs(str(path))
        prefix = key.rstrip("/") + "/" if key else ""
        try:
            blobs = gcs_client().list_blobs(bucket_name, prefix=prefix, delimiter="/")
            names = [b.name[len(prefix) :] for b in blobs]
            names += [p[len(prefix) :].rstrip("/") for p in blobs.prefixes]
        except Exception as exc:
            raise _gcs_error(str(path), exc, "list") from exc
        return sorted(n for n in names if n)
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError as exc:
        raise StorageError(f"{path}: folder not found") from exc


def glob(pattern: str | os.PathLike[str]) -> list[str]:
    """Paths matching a shell pattern (``*``, ``?``, ``[..]`` in the last part) locally or on gs://."""
    pattern = str(pattern)
    if is_gcs(pattern):
        bucket_name, key = split_gcs(pattern)
        # List from the longest prefix without wildcards, then match the rest.
        literal = key
        for i, ch in enumerate(key):
            if ch in "*?[":
                literal = key[:i]
                break
        try:
            names = [b.name for b in gcs_client().list_blobs(bucket_name, prefix=literal)]
        except Exception as exc:
            raise _gcs_error(pattern, exc, "list") from exc
        return sorted(f"{GCS_SCHEME}{bucket_name}/{n}" for n in names if fnmatch.fnmatchcase(n, key))
    import glob as _glob

    return sorted(_glob.glob(pattern))


def makedirs(path: str | os.PathLike[str]) -> None:
    """Create a local folder (with parents); a no-op for gs:// (prefixes need no creation)."""
    if not is_gcs(path):
        os.makedirs(path, exist_ok=True)


def resumable_threshold() -> int:
    """Uploads larger than this many bytes are resumable: ``$FEWFRAMES_GCS_RESUMABLE_THRESHOLD`` or 8 MiB."""
    return env_number(RESUMABLE_THRESHOLD_ENV, RESUMABLE_THRESHOLD, StorageError, what="a number of bytes")


def resumable_chunk_size() -> int:
    """Bytes per request of a resumable upload: ``$FEWFRAMES_GCS_CHUNK_SIZE`` or 32 MiB (a multiple of 256 KiB)."""
    value = env_number(RESUMABLE_CHUNK_SIZE_ENV, RESUMABLE_CHUNK_SIZE, StorageError, what="a number of bytes")
    return _checked_chunk_size(value, f"${RESUMABLE_CHUNK_SIZE_ENV}")


def _checked_chunk_size(value: int, source: str) -> int:
    """``value`` if GCS accepts it as a resumable upload's chunk size; ``source`` names where it came from."""
    if value <= 0 or value % _CHUNK_GRANULARITY:
        raise StorageError(f"{source}: must be a positive multiple of 262144 (256 KiB), got {value}")
    return value


def _upload_stream(
    stream: Any,
    size: int,
    gcs_path: str,
    action: str,
    *,
    threshold: int | None = None,
    chunk_size: int | None = None,
) -> None:
    """One object from ``stream``: a single request up to the threshold, a chunked resumable upload above.

    The object appears whole when the last request completes, so readers never see part of it."""
    blob = _blob(gcs_path)
    threshold = resumable_threshold() if threshold is None else threshold
    resumable = size > threshold
    if resumable:
        blob.chunk_size = resumable_chunk_size() if chunk_size is None else chunk_size
    try:
        # size=None: google-cloud-storage sends anything it knows to be <= 8 MiB as one multipart
        # request whatever the chunk size; an unknown size always takes the resumable protocol.
        blob.upload_from_file(stream, size=None if resumable else size)
    except Exception as exc:
        raise _gcs_error(gcs_path, exc, action) from exc


def upload_file(
    local_path: str | os.PathLike[str],
    gcs_path: str,
    *,
    threshold: int | None = None,
    chunk_size: int | None = None,
) -> None:
    """Upload one local file; above ``threshold`` bytes (default :func:`resumable_threshold`) it goes as
    a chunked resumable upload of ``chunk_size`` bytes per request (default :func:`resumable_chunk_size`)."""
    if chunk_size is not None:
        _checked_chunk_size(chunk_size, f"{gcs_path}: chunk_size")
    try:
        handle = open(local_path, "rb")
    except OSError as exc:
        raise StorageError(f"{local_path}: cannot read: {_first_line(exc)}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        _upload_stream(handle, size, gcs_path, "upload", threshold=threshold, chunk_size=chunk_size)


def download_file(gcs_path: str, local_path: str | os.PathLike[str]) -> None:
    """Download one object to a local file atomically (temp name in the same folder, then rename)."""
    blob = _blob(gcs_path)
    target = Path(local_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(target)
    try:
        blob.download_to_filename(os.fspath(tmp))
        os.replace(tmp, target)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise _gcs_error(gcs_path, exc, "download") from exc


def download_dir(gcs_prefix: str, local_dir: str | os.PathLike[str]) -> list[str]:
    """Download every object under ``gcs_prefix`` into ``local_dir`` (same relative names); returns the
    relative names (none when the prefix holds nothing)."""
    bucket_name, key = split_gcs(gcs_prefix)
    prefix = key.rstrip("/") + "/" if key else ""
    try:
        names = [b.name[len(prefix) :] for b in gcs_client().list_blobs(bucket_name, prefix=prefix)]
    except Exception as exc:
        raise _gcs_error(gcs_prefix, exc, "list") from exc
    names = sorted(n for n in names if n and not n.endswith("/"))
    for rel in names:
        download_file(join(gcs_prefix, rel), Path(local_dir) / rel)
    return names


def _temp_beside(target: Path) -> Path:
    """A fresh temp name in ``target``'s folder; the leading ``.`` keeps it out of :class:`DirectoryMirror`."""
    return target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")


def _object_name(path: str | os.PathLike[str]) -> str:
    """The last part of a gs:// path: the name its local staged copy gets."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] or "object"


@contextlib.contextmanager
def staged_output_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a local path to write; when the block ends without an error it becomes ``path``.

    Local ``path``: the temp file is beside it and is renamed over it (atomic). ``gs://``: the temp file is
    in a fresh local temp folder and is uploaded (resumable above the threshold; the object appears whole);
    the folder is removed either way. On an error nothing is published and the temp file is removed.
    """
    if is_gcs(path):
        _blob(str(path))  # a gs:// path that names no object fails before any work is done
        staging = Path(local_temp_dir("fewframes-out-"))
        try:
            local = staging / _object_name(path)
            yield local
            if not local.exists():
                raise StorageError(f"{path}: nothing was written to upload")
            upload_file(local, str(path))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(target)
    try:
        yield temp
        if not temp.exists():
            raise StorageError(f"{path}: nothing was written")
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


@contextlib.contextmanager
def local_input_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a local file with the content of ``path``: the file itself, or for ``gs://`` a downloaded copy
    in a fresh temp folder that is removed when the block ends (for readers that need a filesystem path)."""
    if not is_gcs(path):
        if not os.path.isfile(path):
            raise StorageError(f"{path}: file not found")
        yield Path(path)
        return
    staging = Path(local_temp_dir("fewframes-in-"))
    try:
        local = staging / _object_name(path)
        download_file(str(path), local)
        yield local
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _markers_last(names: list[str], last: tuple[str, ...]) -> list[str]:
    """``names`` in upload order: the commit markers among them (``last``, in that order) after all others."""
    return [name for name in names if name not in last] + [name for name in last if name in names]


def upload_dir(local_dir: str | os.PathLike[str], gcs_prefix: str, *, last: tuple[str, ...] = ()) -> list[str]:
    """Upload every file under ``local_dir`` to ``gcs_prefix``; the relative names in ``last`` go after all
    others (a commit marker, e.g. a store's metadata, so readers never see a half-uploaded folder)."""
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    rels = [p.relative_to(local_dir).as_posix() for p in files]
    order = _markers_last(rels, last)
    for rel in order:
        upload_file(Path(local_dir) / rel, join(gcs_prefix, rel))
    return [join(gcs_prefix, r) for r in order]


SYNC_SECONDS_ENV = "FEWFRAMES_GCS_SYNC_SECONDS"
SYNC_SECONDS = 30.0


def sync_seconds() -> float:
    """Seconds between the passes of a :class:`DirectoryMirror`: ``$FEWFRAMES_GCS_SYNC_SECONDS`` or 30."""
    return env_number(SYNC_SECONDS_ENV, SYNC_SECONDS, StorageError, kind=float, what="seconds", positive=True)


class DirectoryMirror:
    """Keep a ``gs://`` prefix a copy of a local folder while a process writes into it.

    Used as a context manager: a background thread uploads new and changed files every ``interval_s``
    seconds (default :func:`sync_seconds`), so a process killed without warning (a preempted node) leaves
    on GCS what it had written up to the last pass; leaving the block makes a last pass. Only whole files are
    uploaded: the writers in this library write a temp file whose name starts with ``.`` and rename it into
    place, and such names are skipped. In each pass the names in ``last`` go after all others (a commit
    marker). Files that disappear locally (e.g. pruned checkpoints) are removed from the prefix after the
    new ones are uploaded; only objects this mirror uploaded, or that were there when it started, are ever
    removed. The files present when it starts are taken as already uploaded (they came from the prefix).
    """

    def __init__(
        self,
        local_dir: str | os.PathLike[str],
        gcs_prefix: str,
        *,
        interval_s: float | None = None,
        last: tuple[str, ...] = (),
    ) -> None:
        split_gcs(gcs_prefix)
        self.local_dir = Path(local_dir)
        self.gcs_prefix = gcs_prefix
        self.interval_s = sync_seconds() if interval_s is None else interval_s
        self.last = last
        self._uploaded = self._local_files()  # relative name -> (size, mtime_ns) as last uploaded
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _local_files(self) -> dict[str, tuple[int, int]]:
        found = {}
        for path in self.local_dir.rglob("*"):
            rel = path.relative_to(self.local_dir)
            if any(part.startswith(".") for part in rel.parts):
                continue  # a temp file on its way to its final name
            try:
                info = path.stat()
            except FileNotFoundError:
                continue  # removed since the listing (a pruned checkpoint)
            if stat.S_ISREG(info.st_mode):  # from the same stat: no second system call per file
                found[rel.as_posix()] = (info.st_size, info.st_mtime_ns)
        return found

    def sync(self) -> list[str]:
        """One pass: upload new and changed files (``last`` after the others), then remove the objects of
        files that are gone. Returns the names uploaded."""
        with self._lock:
            local = self._local_files()
            changed = sorted(rel for rel, signature in local.items() if self._uploaded.get(rel) != signature)
            order = _markers_last(changed, self.last)
            uploaded = []
            for rel in order:
                try:
                    upload_file(self.local_dir / rel, join(self.gcs_prefix, rel))
                except StorageError:
                    if (self.local_dir / rel).exists():
                        raise
                    continue  # removed between the listing and the upload
                self._uploaded[rel] = local[rel]
                uploaded.append(rel)
            for rel in sorted(set(self._uploaded) - set(local)):
                remove(join(self.gcs_prefix, rel))
                del self._uploaded[rel]
            return uploaded

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except FewframesError:
                pass  # e.g. a network blip: the next pass, or the last one on exit, tries again

    def __enter__(self) -> "DirectoryMirror":
        self._thread = threading.Thread(target=self._run, name="fewframes-gcs-mirror", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None:
            self.sync()
            return
        try:
            self.sync()  # keep what the failed work wrote (checkpoints), so running it again resumes
        except FewframesError:
            pass  # the original error is the one to report


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a local file/folder tree or every gs:// object under a prefix (missing is fine)."""
    if is_gcs(path):
        bucket_name, key = split_gcs(str(path))
        client = gcs_client()
        try:
            for blob in list(client.list_blobs(bucket_name, prefix=key)):
                if blob.name == key or blob.name.startswith(key.rstrip("/") + "/"):
                    blob.delete()
        except Exception as exc:
            raise _gcs_error(str(path), exc, "remove") from exc
        return
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def local_temp_dir(prefix: str = "fewframes-") -> str:
    """A fresh local temp folder (for staging a gs:// write)."""
    return tempfile.mkdtemp(prefix=prefix)


# ----------------------------------------------------------------------------------------------------------
# Output checks: run before any work, so a bad --out is one line at the start, not after the computation
# ----------------------------------------------------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def _check_parent_writable(path: Path, flag: str) -> None:
    """The folder that will hold ``path`` (or its nearest existing ancestor) is a writable folder."""
    ancestor = _nearest_existing(path.absolute().parent)
    if not ancestor.is_dir():
        raise StorageError(f"{flag} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only_fs(ancestor) else "permission denied"
        raise StorageError(f"{flag} {path}: cannot write in {ancestor} ({why})")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_output_file(path: str | os.PathLike[str], flag: str = "--out", *, inputs: tuple[Any, ...] = ()) -> None:
    """Fail now, with one line naming ``flag``, if a FILE cannot be written at ``path``: it is a folder, its
    folder is a file or not writable, it is one of ``inputs`` (never overwrite what is being read), or (gs://)
    the bucket name is malformed. An existing file is fine (it is replaced atomically)."""
    if is_gcs(path):
        _blob(str(path))
        _refuse_inputs(str(path), flag, inputs)
        return
    target = Path(path)
    if target.is_dir():
        raise StorageError(f"{flag} {path}: is a folder, expected a file name")
    _refuse_inputs(str(path), flag, inputs)
    _check_parent_writable(target, flag)


def check_output_dir(
    path: str | os.PathLike[str], flag: str = "--out", *, inputs: tuple[Any, ...] = (), may_replace: Any = None
) -> None:
    """Fail now if a FOLDER cannot be written at ``path``: an existing file is there (never replaced by a
    folder), a non-empty folder that ``may_replace(path)`` does not accept, a parent that is a file or not
    writable, one of ``inputs`` at or under it, or a malformed gs:// bucket name."""
    if is_gcs(path):
        split_gcs(str(path))
        _refuse_inputs(str(path), flag, inputs, folder=True)
        return
    target = Path(path)
    if os.path.lexists(target) and not target.is_dir():
        raise StorageError(f"{flag} {path}: is an existing file, not a folder (refusing to replace it)")
    _refuse_inputs(str(path), flag, inputs, folder=True)
    if target.is_dir():
        if may_replace is not None and any(target.iterdir()) and not may_replace(target):
            raise StorageError(f"{flag} {path}: folder exists and is not empty (refusing to replace it)")
        if not os.access(target, os.W_OK | os.X_OK):
            why = "read-only file system" if _read_only_fs(target) else "permission denied"
            raise StorageError(f"{flag} {path}: cannot write in it ({why})")
    _check_parent_writable(target, flag)


def _refuse_inputs(out: str, flag: str, inputs: tuple[Any, ...], folder: bool = False) -> None:
    """``out`` must not be (or, for a folder, hold) any of ``inputs``."""
    def norm(p: str) -> str:
        return p.rstrip("/") if is_gcs(p) else os.path.realpath(p)

    target = norm(out)
    for item in inputs:
        if item is None:
            continue
        source = norm(os.fspath(item))
        if source == target or (folder and source.startswith(target.rstrip("/") + "/")):
            raise StorageError(f"{flag} {out}: is also an input ({item}); refusing to overwrite it")


_WRITE_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG", "EROFS"}


@contextlib.contextmanager
def output_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Name output ``path`` in an ``OSError`` raised inside the block that names no file (pyarrow's and
    torch's writers say "No space left on device" without one) or names one of its temp files; other
    errors pass unchanged. The result is a ``StorageError`` "PATH: CAUSE" (see ``describe_os_error``)."""
    import errno as errno_names

    from fewframes.errors import describe_os_error, user_path

    try:
        yield
    except OSError as exc:
        if isinstance(exc, ConnectionError) or type(exc).__module__.startswith(("requests", "urllib3")):
            raise
        name = errno_names.errorcode.get(exc.errno or -1, "")
        target = str(path)
        named = exc.filename is not None and user_path(os.fsdecode(exc.filename)).startswith(target.rstrip("/"))
        if exc.filename is None and name in _WRITE_ERRNOS or named:
            cause = describe_os_error(OSError(exc.errno, exc.strerror)) if exc.errno else str(exc)
            raise StorageError(f"{target}: {cause}") from exc
        raise


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Temporaries that killed writes left beside local output ``path``: ``.NAME.tmp-XXXXXXXX`` (a store or
    file being written), ``.NAME.old-XXXXXXXX`` (a replaced store not yet removed) and ``.NAME.parts-XXXXXXXX``
    (parallel ingest). Only a process killed without cleanup leaves them: a write in progress has its own
    random name, but two writers of one output at once are not supported anyway."""
    if is_gcs(path):
        return []
    target = Path(path).absolute()
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:tmp|old|parts)-[0-9a-f]{{8}}$")
    try:
        return sorted(p for p in target.parent.iterdir() if pattern.match(p.name))
    except OSError:
        return []


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove :func:`stale_temporaries` of ``path``; return what was removed. An ``.old-`` copy is kept when
    nothing is at ``path`` (a kill between the two renames of a replacement): it is then moved back."""
    removed = []
    target = Path(path).absolute()
    for stale in stale_temporaries(path):
        if ".old-" in stale.name and not os.path.lexists(target):
            os.replace(stale, target)  # the previous output, put back where it was
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


__all__ = [
    "DirectoryMirror",
    "GcsRandomAccessFile",
    "check_output_dir",
    "check_output_file",
    "download_dir",
    "download_file",
    "exists",
    "gcs_client",
    "glob",
    "is_gcs",
    "join",
    "listdir",
    "local_input_file",
    "local_temp_dir",
    "makedirs",
    "output_errors",
    "open_input_file",
    "read_bytes",
    "remove",
    "remove_stale_temporaries",
    "resumable_chunk_size",
    "resumable_threshold",
    "split_gcs",
    "stale_temporaries",
    "staged_output_file",
    "sync_seconds",
    "upload_dir",
    "upload_file",
    "write_bytes_atomic",
]
