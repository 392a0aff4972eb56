"""Atomic checkpoints and RNG capture, so a killed training run resumes exactly where it stopped.

Files are written under a temporary name in the destination directory, flushed to disk, then renamed
over the final name (``os.replace`` is atomic on POSIX), so a reader never sees half a file and a kill
never destroys the previous checkpoint. Checkpoints are named by their global step
(``ckpt-00000012.pt``); the newest ``keep`` are kept, and :meth:`CheckpointDir.latest` returns the newest
one that loads, skipping a damaged file rather than failing the resume.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

_CKPT_PATTERN = re.compile(r"^ckpt-(\d+)\.pt$")


def torch_save_beside(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a fresh temp file in ``path``'s folder (created if needed), flushed to disk; returns the
    temp file, which the caller publishes (rename, link) or removes. Removed here if the write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Path(tmp_name)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    temp = torch_save_beside(obj, path)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def capture_rng_state() -> dict[str, Any]:
    """The process's torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain types.

    Plain types keep checkpoints loadable with ``torch.load(weights_only=True)``.
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": _to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    return value


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(item) for item in value)
    return value


class CheckpointDir:
    """The checkpoints of one training run: ``<directory>/ckpt-<global step>.pt``."""

    def __init__(self, directory: str | os.PathLike[str], keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = max(1, keep)

    def path_for(self, global_step: int) -> Path:
        return self.directory / f"ckpt-{global_step:08d}.pt"

    def steps(self) -> list[int]:
        """Global steps that have a checkpoint file, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = _CKPT_PATTERN.match(entry.name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, state: dict[str, Any], global_step: int) -> Path:
        """Write ``state`` atomically as the checkpoint of ``global_step``; prune the oldest beyond ``keep``
        and the temp files of writes a kill interrupted (one writer per directory, so none is in progress)."""
        path = atomic_torch_save(state, self.path_for(global_step))
        for old_step in self.steps()[: -self.keep]:
            self.path_for(old_step).unlink(missing_ok=True)
        for stale in self.directory.glob(".ckpt-*.tmp"):
            stale.unlink(missing_ok=True)
        return path

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads, or None when there is none."""
        for step in reversed(self.steps()):
            try:
                return torch.load(self.path_for(step), map_location="cpu", weights_only=True)
            except (OSError, RuntimeError, EOFError, ValueError):
                continue  # a damaged file (e.g. a disk that lied about fsync): fall back to the one before
        return None


__all__ = [
    "CheckpointDir",
    "atomic_torch_save",
    "capture_rng_state",
    "restore_rng_state",
    "torch_save_beside",
]
