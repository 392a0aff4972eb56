"""The training loop's view of the data: the store, the split and the per-epoch batch streams.

Everything the loop asks of STORE's loader goes through this module, so the loop itself never depends on
the loader's keyword names. Shuffling is a pure function of (seed, epoch); a resumed epoch skips the
batches it already trained on; under DDP each rank reads its shard of every global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from fewframes.config import TrainConfig
from fewframes.distributed import DistContext
from fewframes.errors import TrainingError

TEACHER_STRATEGY = "all"
TEACHER_K = None  # the k the loader gets with TEACHER_STRATEGY: ignored, every frame (up to MAX_FRAMES) is read


@dataclass
class TrainingData:
    """The opened frame store and the video indices of the training and validation splits."""

    store: Any  # fewframes.data.store.FrameStore
    store_path: str
    train_indices: np.ndarray
    val_indices: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.store.num_classes)


def open_training_data(store: Any, train_config: TrainConfig) -> TrainingData:
    """Open ``store`` (a FrameStore or a path) and load its training (seeded subset) and validation splits."""
    from fewframes.data.split import load_split
    from fewframes.data.store import FrameStore

    if isinstance(store, (str, os.PathLike)):
        store = FrameStore.open(str(store))
    store_path = str(store.path)
    train = load_split(store, "train", train_fraction=train_config.train_fraction, seed=train_config.seed)
    val = load_split(store, "validation")
    if len(train) == 0:
        raise TrainingError(
            f"frame store {store_path}: the train split is empty (train_fraction={train_config.train_fraction})"
        )
    return TrainingData(store, store_path, np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64))


def _common_loader_args(train_config: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    return {
        "num_workers": train_config.num_workers,
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "pin_memory": ctx.device.type == "cuda",
    }


def _local_batch_size(train_config: TrainConfig, ctx: DistContext) -> int:
    # TrainConfig.batch_size is the GLOBAL batch: each of world_size ranks reads its share of it.
    return max(1, train_config.batch_size // ctx.world_size)


def train_batches(
    data: TrainingData,
    train_config: TrainConfig,
    ctx: DistContext,
    *,
    strategy: str,
    k: int | None,
    paired: bool,
    epoch: int,
    skip_batches: int,
    rng_view: int = 0,
) -> tuple[Iterator[tuple[Any, ...]], int]:
    """This epoch's training batches from ``skip_batches`` on, each as the objective's argument tuple, on
    the device; and the number of batches in the whole epoch. ``rng_view=1`` (unpaired only): the frames a
    paired loader's student view reads (see ``fewframes.data.loader``)."""
    from fewframes.data.loader import make_loader, make_paired_loader

    common = dict(
        batch_size=_local_batch_size(train_config, ctx),
        shuffle=True,
        seed=train_config.seed,
        epoch=epoch,
        skip_batches=skip_batches,
        **_common_loader_args(train_config, ctx),
    )
    if paired:
        loader = make_paired_loader(data.store, data.train_indices, strategy=strategy, k=k, **common)
    else:
        loader = make_loader(data.store, data.train_indices, strategy=strategy, k=k, rng_view=rng_view, **common)
    total = skip_batches + len(loader)
    device = ctx.device

    iterator = isolated_iter(loader, device)

    def moved() -> Iterator[tuple[Any, ...]]:
        for item in iterator:
            batches = item if paired else (item,)
            yield tuple(batch.to(device, non_blocking=True) for batch in batches)

    return moved(), total


def val_batches(
    data: TrainingData, train_config: TrainConfig, ctx: DistContext, *, strategy: str, k: int | None
) -> Iterator[Any]:
    """This rank's shard of the validation split, unshuffled, on the device."""
    from fewframes.data.loader import make_loader

    loader = make_loader(
        data.store,
        data.val_indices,
        strategy=strategy,
        k=k,
        batch_size=_local_batch_size(train_config, ctx),
        shuffle=False,
        seed=train_config.seed,
        epoch=0,
        **_common_loader_args(train_config, ctx),
    )
    for batch in isolated_iter(loader, ctx.device):
        yield batch.to(ctx.device, non_blocking=True)


def isolated_iter(loader: Any, device: torch.device) -> Iterator[Any]:
    """``iter(loader)`` without touching the global RNG (torch's DataLoader draws a seed from it), so the
    dropout stream of a resumed run matches an uninterrupted one."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return iter(loader)


__all__ = ["TEACHER_K", "TEACHER_STRATEGY", "TrainingData", "open_training_data", "train_batches", "val_batches"]
