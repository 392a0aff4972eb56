"""Teacher outputs computed once: the frozen teacher's E_T and logits of every training video, stored beside
the teacher's model file and reused across epochs and by every serial student of the grid.

A serial student's teacher is frozen and in eval mode (no dropout), so its outputs on a video are a function
of the teacher's weights and the video's frames alone: the teacher reads ALL frames whatever the student's
frame selection, so E_T is per video. The losses only ever see E_T and the logits (L_rep, L_pred), so a
student trained from the cache computes the same losses as one with the live teacher, up to float rounding
(the cache's batches pad differently; padding never changes E beyond ~2e-6, docs/method.md "Models").

The file, ``teacher_outputs-<key>.pt`` beside ``teacher.pt`` (local or gs://), is a ``torch.save`` dict:
format tag, key, the store video indices of its rows (int64 [N]), ``encoding`` float32 [N, E] and ``logits``
float32 [N, C]. float32, not float16: the losses are computed in float32, and exactness needs the very
values. Size: 4·(E + C) bytes a video — 1.2 KiB at the demo's sizes (E = 256, C = 50), 31 KiB at the paper's
(E = 4096, C = 3862): about 0.6 GiB for 20,000 videos, read memory-mapped from a local file.

The key is a hash of: the teacher file's content (sha256), the frame store's identity (its metadata and
index: video ids, labels, lengths, shard layout), the cached video indices (the train split, or its
``train_fraction`` subset) and the precision (float32, or bf16 autocast on CUDA). Any change makes a new file.
Several students building the same cache at once (parallel pipeline tasks) all compute it; a local file is
published with an exclusive hard link, so the first to finish wins and everyone — a resumed run included —
trains from the one file's values. On gs:// the upload is one object (readers never see part of it); two
builders racing there can both upload, and each then reads back what the object holds.

Not cached: L_rep^I (``matching="intermediate"``) needs the teacher's per-frame intermediate outputs at the
student's frames, 300 x hidden floats a video; those students use the live teacher.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fewframes import fsio
from fewframes.checkpoint import torch_save_beside
from fewframes.config import MAX_FRAMES, TrainConfig
from fewframes.distributed import DistContext, barrier, broadcast_object
from fewframes.errors import FewframesError, TrainingError

CACHE_FORMAT = "fewframes-teacher-outputs/1"
CACHE_PREFIX = "teacher_outputs-"


@dataclass
class TeacherOutputs:
    """The teacher's E_T and logits of videos ``video_indices`` (store indices), one row a video."""

    video_indices: Tensor  # int64 [N]
    encoding: Tensor  # float32 [N, E]
    logits: Tensor  # float32 [N, C]
    path: str | None = None  # the cache file, None when kept in memory only

    def __post_init__(self) -> None:
        size = int(self.video_indices.max()) + 1 if len(self.video_indices) else 0
        self._rows = torch.full((size,), -1, dtype=torch.int64)
        self._rows[self.video_indices] = torch.arange(len(self.video_indices))

    def lookup(self, indices: Tensor, device: torch.device) -> Any:
        """The teacher's ``ModelOutput`` (logits, encoding; no intermediate) for store videos ``indices``."""
        from fewframes.models import ModelOutput

        wanted = indices.cpu()
        rows = self._rows[wanted] if not len(wanted) or int(wanted.max()) < len(self._rows) else None
        if rows is None or bool((rows < 0).any()):
            raise TrainingError(f"teacher outputs {self.path or '(in memory)'}: no row for some training videos")
        return ModelOutput(
            logits=self.logits[rows].to(device, non_blocking=True),
            encoding=self.encoding[rows].to(device, non_blocking=True),
            intermediate=None,
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a local file or gs:// object's content."""
    digest = hashlib.sha256()
    if fsio.is_gcs(path):
        digest.update(fsio.read_bytes(path))
        return digest.hexdigest()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def store_fingerprint(store: Any) -> str:
    """A hash of what identifies a frame store's content short of its frame bytes: its metadata (shard
    layout, sizes, classes) and its index (video ids, labels, lengths, where each video's frames lie)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(store.metadata, sort_keys=True, default=str).encode())
    digest.update("\n".join(store.video_ids).encode())
    for array in (store.lengths, store.shard_of, store.first_row):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    for labels in store.labels:
        digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def cache_key(teacher_sha256: str, store_id: str, video_indices: np.ndarray, precision: str) -> str:
    digest = hashlib.sha256()
    for part in (CACHE_FORMAT, teacher_sha256, store_id, precision):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(video_indices, dtype=np.int64).tobytes())
    return digest.hexdigest()[:24]


def cache_path_beside(teacher_path: str | os.PathLike[str], key: str) -> str:
    name = f"{CACHE_PREFIX}{key}.pt"
    if fsio.is_gcs(teacher_path):
        return str(teacher_path).rstrip("/").rsplit("/", 1)[0] + "/" + name
    return str(Path(teacher_path).parent / name)


def compute_teacher_outputs(
    teacher: nn.Module, store: Any, video_indices: np.ndarray, train_config: TrainConfig, ctx: DistContext
) -> tuple[Tensor, Tensor, Tensor]:
    """(video_indices, encoding, logits) of the frozen ``teacher`` on all frames of each video, float32 on
    the CPU. Videos go through in order of length (less padding), ``train_config.batch_size`` at a time, as
    in training (eval mode, no gradients, the training's autocast); the global RNG is left untouched."""
    from fewframes.data.loader import make_loader
    from fewframes.training.data import isolated_iter
    from fewframes.training.loop import autocast_for

    indices = np.asarray(video_indices, dtype=np.int64)
    lengths = np.minimum(np.asarray(store.lengths)[indices], MAX_FRAMES)
    ordered = indices[np.argsort(lengths, kind="stable")]
    loader = make_loader(store, ordered, strategy="all", batch_size=train_config.batch_size, shuffle=False,
                         seed=train_config.seed, num_workers=train_config.num_workers,
                         pin_memory=ctx.device.type == "cuda")
    was_training = teacher.training
    teacher.eval()
    encodings, logits = [], []
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), autocast_for(ctx, train_config):
        for batch in isolated_iter(loader, ctx.device):
            batch = batch.to(ctx.device, non_blocking=True)
            out = teacher(batch.frames, batch.mask)
            encodings.append(out.encoding.float().cpu())
            logits.append(out.logits.float().cpu())
    teacher.train(was_training)
    return torch.from_numpy(ordered), torch.cat(encodings), torch.cat(logits)


def _payload(key: str, video_indices: Tensor, encoding: Tensor, logits: Tensor) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "key": key, "video_indices": video_indices.contiguous(),
            "encoding": encoding.contiguous(), "logits": logits.contiguous()}


def _publish_local(path: Path, payload: dict[str, Any]) -> None:
    """Write ``path`` unless it exists: temp file beside it, then an exclusive hard link (the first builder
    wins; a loser's identical-key file is dropped). Where hard links are refused (some FUSE mounts): rename."""
    temp = torch_save_beside(payload, path)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        except OSError:
            if not path.exists():
                os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _publish(path: str, payload: dict[str, Any]) -> None:
    if fsio.is_gcs(path):
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        fsio.write_bytes_atomic(path, buffer.getvalue())
    else:
        _publish_local(Path(path), payload)


def read_teacher_outputs(path: str, key: str) -> TeacherOutputs:
    """The cache file at ``path`` (memory-mapped when local), checked against ``key``."""
    try:
        if fsio.is_gcs(path):
            payload = torch.load(io.BytesIO(fsio.read_bytes(path)), map_location="cpu", weights_only=True)
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FewframesError:
        raise
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise TrainingError(f"teacher outputs {path} cannot be read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
        raise TrainingError(f"teacher outputs {path}: not the cache expected here (format or key differ); delete it")
    return TeacherOutputs(payload["video_indices"], payload["encoding"], payload["logits"], path=path)


def teacher_outputs(
    teacher: nn.Module,
    teacher_path: str | os.PathLike[str] | None,
    data: Any,
    train_config: TrainConfig,
    ctx: DistContext,
) -> TeacherOutputs:
    """The teacher's outputs on every training video of ``data``: read from the cache file beside
    ``teacher_path`` or computed (by rank 0) and published there first. A teacher given as a model (no
    path), or a folder that cannot be written, gives outputs kept in memory for this run (each rank
    computes them), still computed once for all epochs."""
    from fewframes.training.loop import mixed_precision_dtype

    indices = np.asarray(data.train_indices, dtype=np.int64)
    path: str | None = None
    if teacher_path is not None:
        precision = "bf16" if mixed_precision_dtype(ctx, train_config) is not None else "float32"
        key = cache_key(file_sha256(teacher_path), store_fingerprint(data.store), np.sort(indices), precision)
        path = cache_path_beside(teacher_path, key)
        if ctx.is_main and not fsio.exists(path):
            computed = compute_teacher_outputs(teacher, data.store, indices, train_config, ctx)
            try:
                _publish(path, _payload(key, *computed))
            except (OSError, FewframesError) as exc:
                print(f"fewframes.training: warning: cannot write the teacher outputs cache {path} ({exc}); "
                      "keeping them in memory for this run", file=sys.stderr)
                path = None
        path = broadcast_object(path, ctx)
        barrier(ctx)
        if path is not None:
            return read_teacher_outputs(path, key)
    return TeacherOutputs(*compute_teacher_outputs(teacher, data.store, indices, train_config, ctx))


__all__ = [
    "CACHE_FORMAT",
    "TeacherOutputs",
    "cache_key",
    "compute_teacher_outputs",
    "file_sha256",
    "read_teacher_outputs",
    "store_fingerprint",
    "teacher_outputs",
]
