"""Errors that the CLI turns into one line naming the file, field or flag, and a non-zero exit."""

from __future__ import annotations

import os
import re


class FewframesError(Exception):
    """Base class: the message is complete and fit to show a user as one line."""


class DataError(FewframesError):
    """Bad input data: a TFRecord shard, a record, a frame store. The message names the file and record."""


class StoreError(DataError):
    """A frame store is missing, incomplete or inconsistent."""


class TrackingError(FewframesError):
    """The MLflow tracking server is unreachable or refused a call."""


class PipelineError(FewframesError):
    """A pipeline parameter, artifact or KFP host is wrong."""


class ModelError(FewframesError):
    """A model's input tensors or checkpoint do not fit its configuration. The message names the tensor."""


class TrainingError(FewframesError):
    """A training run's arguments, teacher or output folder do not fit (e.g. resuming with other settings)."""


class EvaluationError(FewframesError):
    """Scores, labels or a model's outputs do not fit the evaluation data. The message names the array."""


class BenchmarkError(FewframesError):
    """A benchmark, export or predict argument (model file, source, flag) is wrong. The message names it."""


class StorageError(FewframesError):
    """A local or gs:// path cannot be read or written (missing bucket, object or credentials). Names the path."""


# What an OSError means for the user, by errno; the CLI prints "PATH: CAUSE" (docs/faults.md).
_OS_CAUSES = {
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EROFS": "read-only file system",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EISDIR": "is a folder, expected a file",
    "ENOSPC": "no space left on the device",
    "EDQUOT": "disk quota exceeded",
    "ENOENT": "no such file or folder",
    "EEXIST": "already exists",
    "ENOTEMPTY": "folder is not empty",
    "EMFILE": "too many open files",
    "ENAMETOOLONG": "file name too long",
    "EXDEV": "cannot rename across file systems",
}
# The temporary names the library writes beside an output (fsio, the store writer, ingest, checkpoints);
# an error on one of them is reported on the output the user named.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:tmp|old|parts)-[0-9a-f]{8}$|^\.(?P<ckpt>.+?)\.[^.]+\.tmp$")


def user_path(path: str) -> str:
    """``path`` with a library temp name (``.NAME.tmp-1a2b3c4d``) replaced by the output it stands for."""
    folder, _, name = str(path).rpartition("/")
    match = _TEMP_NAME.match(name)
    if match is None:
        return str(path)
    real = match.group("name") or match.group("ckpt")
    return f"{folder}/{real}" if folder else real


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: the path it concerns (the user's output, not a temp name) and the cause."""
    import errno as _errno

    if isinstance(exc, ConnectionError) or isinstance(exc, TimeoutError):
        return f"network error: {exc.strerror or exc}"
    name = _errno.errorcode.get(exc.errno or -1, "")
    cause = _OS_CAUSES.get(name) or (exc.strerror or str(exc) or type(exc).__name__).strip().splitlines()[0]
    where = [user_path(os.fsdecode(f)) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{' -> '.join(where)}: {cause}" if where else cause


def describe_io_message(text: str) -> str:
    """One line for another library's I/O error text of the form ``PATH; Cause`` (TensorFlow's file
    system): the user's path and the cause in the words :func:`describe_os_error` uses."""
    import errno as _errno

    first = text.strip().splitlines()[0] if text.strip() else text
    path, sep, cause = first.rpartition("; ")
    if not sep:
        return first
    by_strerror = {os.strerror(getattr(_errno, name)): words for name, words in _OS_CAUSES.items() if hasattr(_errno, name)}
    return f"{user_path(path)}: {by_strerror.get(cause.strip(), cause.strip())}"
