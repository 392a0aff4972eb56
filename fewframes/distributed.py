"""Distributed data parallel (DDP) under ``torchrun``: detect the launch, pick the device, reduce results.

``torchrun`` (``python -m torch.distributed.run``) sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; the
training functions call :func:`setup_distributed` which, when ``WORLD_SIZE > 1``, joins the process group
(NCCL on GPUs, gloo on CPU) through the ``env://`` rendezvous torchrun prepared. Without those variables
everything runs as one process and every helper here is a cheap no-op, so the same code path serves a
laptop, a single GPU and a multi-GPU pod. Only rank 0 writes files (checkpoints, models, tracking).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from fewframes.config import ConfigError

_T = TypeVar("_T")


@dataclass
class DistContext:
    """Where this process stands in a (possibly one-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False  # True when setup_distributed created the process group (and must destroy it)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, models and tracking records."""
        return self.rank == 0


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → this process's GPU when CUDA is available, else the CPU; ``"cpu"``/``"cuda"`` as asked."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"TrainConfig.device is {preference!r} but no CUDA GPU is available")
        if preference == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(preference)
    raise ConfigError(f"TrainConfig.device must be auto, cpu or cuda, got {preference!r}")


def setup_distributed(device_preference: str = "auto") -> DistContext:
    """Read torchrun's environment, choose the device and join the process group when there are peers."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size <= 1:
        return DistContext(device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns_group = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        owns_group = True
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        backend=dist.get_backend(),
        owns_group=owns_group,
    )


def teardown_distributed(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        ctx.owns_group = False


def wrap_ddp(module: torch.nn.Module, ctx: DistContext, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """Wrap ``module`` in DistributedDataParallel when there are peers; return it unchanged otherwise."""
    if not ctx.is_distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a few floats over all ranks (float64, so sums of per-rank loss totals stay exact enough)."""
    if not ctx.is_distributed:
        return list(values)
    device = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def all_gather_objects(obj: _T, ctx: DistContext) -> list[_T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: _T, ctx: DistContext, src: int = 0) -> _T:
    """Rank ``src``'s ``obj`` on every rank."""
    if not ctx.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in one process)."""
    if ctx.is_distributed:
        dist.barrier()


__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "resolve_device",
    "setup_distributed",
    "teardown_distributed",
    "wrap_ddp",
]
