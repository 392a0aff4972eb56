"""The PyTorch data path: batches of quantised frames read from a ``FrameStore``.

- Frame selection happens at READ time: the dataset asks ``store.read_frames`` for the selected frames
  only (a k-frame student never pulls the other frames' bytes). A paired loader (teacher + student views
  of the same videos) reads the union of the views' frames once and slices both views from it.
- ``Batch.frames`` stay uint8 (dequantised on the device, in the model: 4x less host->device traffic).
- ``random`` selection draws from ``numpy.random.default_rng([seed, epoch, video_index, view])``: the same
  frames for the same (seed, epoch, video), whichever worker, rank or resume point reads it. ``view`` is the
  view's place in a paired loader (teacher 0, student 1); ``make_loader(..., rng_view=1)`` reads a student
  view alone with the draws a paired loader's student view gets (training from cached teacher outputs).
- Order: a pure function of (seed, epoch) (``numpy.random.default_rng([seed, epoch]).permutation``).
  Under DDP (``rank``/``world_size``) the permutation is padded by wrapping (as torch's
  DistributedSampler does; ``drop_last`` truncates instead) and global batch g is the contiguous chunk
  ``[g*B*W, (g+1)*B*W)`` of it, dealt round-robin to the W ranks, B per rank. ``skip_batches=n``
  starts the epoch at batch n (resume mid-epoch) without reading the skipped videos.
- Videos longer than ``max_frames`` (300, YouTube-8M's maximum) are cut to their first ``max_frames``
  frames before any selection.
- Padding: ``all`` batches are padded to the longest video of the batch; fixed-k views have exactly k
  slots (videos shorter than k are padded, see ``fewframes.data.selection``). Padding slots hold zero
  bytes, ``mask`` False and ``positions`` -1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fewframes.config import MAX_FRAMES
from fewframes.data.selection import PADDING_POSITION, select_frames
from fewframes.errors import DataError


@dataclass
class Batch:
    """One batch of videos as a model reads them (frames still quantised)."""

    frames: torch.Tensor  # uint8 [B, T, D] (D = the store's feature_dim, 1152 for YouTube-8M)
    mask: torch.Tensor  # bool [B, T], True = real frame
    labels: torch.Tensor  # float32 [B, C], multi-hot
    video_ids: list[str]
    positions: torch.Tensor  # int64 [B, T], the frame of the video in each slot; -1 for padding
    indices: torch.Tensor  # int64 [B], the videos' indices in the store

    def __len__(self) -> int:
        return len(self.video_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """This batch with its tensors on ``device``."""
        moved = {
            f.name: (value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value)
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """This batch with its tensors in pinned host memory (DataLoader ``pin_memory=True`` calls this)."""
        pinned = {
            f.name: (value.pin_memory() if isinstance(value, torch.Tensor) else value)
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }
        return Batch(**pinned)


@dataclass
class _View:
    """One video's slots for one view: positions/mask of every slot, frames of every slot (zeros for padding)."""

    frames: np.ndarray
    positions: np.ndarray
    mask: np.ndarray


@dataclass
class Sample:
    """What ``FrameDataset[j]`` returns: one video, one ``_View`` per view."""

    index: int
    video_id: str
    labels: np.ndarray
    views: tuple[_View, ...]


def _check_view(strategy: str, k: int | None) -> None:
    from fewframes.config import FRAME_SELECTIONS

    if strategy not in FRAME_SELECTIONS:
        raise DataError(f"--frame-selection must be one of {', '.join(FRAME_SELECTIONS)}, got {strategy!r}")
    if strategy != "all" and (k is None or int(k) < 1):
        raise DataError(f"frame selection {strategy!r} needs k >= 1, got {k}")


class FrameDataset(Dataset):
    """Videos ``indices`` of ``store`` under one or more frame-selection views.

    ``FrameDataset(store, indices, strategy, k, seed)`` has one view; ``views=[(strategy, k), ...]`` gives
    several (e.g. ``[("all", None), ("uniform", 30)]`` for a teacher and a student). ``epoch`` (or
    ``set_epoch``) feeds the ``random`` strategy's seed.
    """

    def __init__(
        self,
        store: Any,
        indices: Sequence[int] | np.ndarray,
        strategy: str = "all",
        k: int | None = None,
        seed: int = 0,
        max_frames: int = MAX_FRAMES,
        *,
        epoch: int = 0,
        views: Sequence[tuple[str, int | None]] | None = None,
        rng_view: int = 0,
    ) -> None:
        self.store = _as_store(store)
        self.indices = np.asarray(indices, dtype=np.int64).ravel()
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(self.store)):
            raise DataError(f"{self.store.path}: video indices must be in [0, {len(self.store)})")
        requested = list(views or [(strategy, k)])
        for s, k_ in requested:
            _check_view(s, k_)
        self.views = tuple((s, None if s == "all" else int(k_)) for s, k_ in requested)  # type: ignore[arg-type]
        if max_frames < 1:
            raise DataError(f"max_frames must be >= 1, got {max_frames}")
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.max_frames = int(max_frames)
        self.rng_view = int(rng_view)  # added to each view's number in the random selection's seed

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the ``random`` strategy's draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, j: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(positions, mask) per view for item ``j`` (no reading)."""
        index = int(self.indices[j])
        length = min(int(self.store.lengths[index]), self.max_frames)
        out = []
        for view_number, (strategy, k) in enumerate(self.views):
            rng = (np.random.default_rng([self.seed, self.epoch, index, self.rng_view + view_number])
                   if strategy == "random" else None)
            out.append(select_frames(strategy, length, k, rng))
        return out

    def __getitem__(self, j: int) -> Sample:
        index = int(self.indices[j])
        selections = self.select(j)
        wanted = np.unique(np.concatenate([p[m] for p, m in selections]))
        read = self.store.read_frames(index, wanted)  # only the union of the views' frames
        views = []
        for positions, mask in selections:
            frames = np.zeros((len(positions), self.store.feature_dim), dtype=np.uint8)
            frames[mask] = read[np.searchsorted(wanted, positions[mask])]
            views.append(_View(frames, positions, mask))
        return Sample(index, self.store.video_ids[index], self.store.labels[index], tuple(views))


class Collate:
    """Stacks ``Sample``s into one ``Batch`` per view (a tuple when there are several views)."""

    def __init__(self, num_classes: int, views: Sequence[tuple[str, int | None]]) -> None:
        self.num_classes = num_classes
        self.views = tuple(views)

    def __call__(self, samples: list[Sample]) -> Batch | tuple[Batch, ...]:
        labels = np.zeros((len(samples), self.num_classes), dtype=np.float32)
        for row, sample in enumerate(samples):
            labels[row, sample.labels] = 1.0
        labels_t = torch.from_numpy(labels)
        ids = [s.video_id for s in samples]
        indices = torch.tensor([s.index for s in samples], dtype=torch.int64)
        batches = []
        for v in range(len(self.views)):
            slots = max(len(s.views[v].positions) for s in samples)
            frames = np.zeros((len(samples), slots, samples[0].views[v].frames.shape[1]), dtype=np.uint8)
            mask = np.zeros((len(samples), slots), dtype=bool)
            positions = np.full((len(samples), slots), PADDING_POSITION, dtype=np.int64)
            for row, s in enumerate(samples):
                view = s.views[v]
                n = len(view.positions)
                frames[row, :n] = view.frames
                mask[row, :n] = view.mask
                positions[row, :n] = np.where(view.mask, view.positions, PADDING_POSITION)
            batches.append(
                Batch(
                    frames=torch.from_numpy(frames),
                    mask=torch.from_numpy(mask),
                    labels=labels_t if v == 0 else labels_t.clone(),
                    video_ids=list(ids),
                    positions=torch.from_numpy(positions),
                    indices=indices if v == 0 else indices.clone(),
                )
            )
        return batches[0] if len(batches) == 1 else tuple(batches)


class DeterministicBatchSampler(Sampler[list[int]]):
    """Batches of dataset positions in an order fixed by (seed, epoch), sharded by rank, resumable.

    See the module docstring for the exact rule. ``len()`` counts the batches still to come (after
    ``skip_batches``).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        skip_batches: int = 0,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
        if skip_batches < 0:
            raise DataError(f"skip_batches must be >= 0, got {skip_batches}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = drop_last
        self.skip_batches = int(skip_batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rank_order(self) -> np.ndarray:
        """This rank's dataset positions for the whole epoch, in reading order."""
        n = self.num_items
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.world_size > 1 and n:
            if self.drop_last:
                order = order[: n - n % self.world_size]
            else:
                order = np.resize(order, -(-n // self.world_size) * self.world_size)  # wrap-around padding
        return order[self.rank :: self.world_size]

    def _all_batches(self) -> list[list[int]]:
        order = self.rank_order().tolist()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._all_batches()[self.skip_batches :])

    def __len__(self) -> int:
        per_rank = len(self.rank_order())
        full = per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)
        return max(0, full - self.skip_batches)


def _as_store(store: Any) -> Any:
    if isinstance(store, (str, os.PathLike)):
        from fewframes.data.store import FrameStore

        return FrameStore.open(store)
    return store


def _loader(
    dataset: FrameDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    num_workers: int,
    drop_last: bool,
    skip_batches: int,
    rank: int,
    world_size: int,
    pin_memory: bool,
    prefetch_factor: int | None,
) -> DataLoader:
    sampler = DeterministicBatchSampler(
        len(dataset),
        batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        skip_batches=skip_batches,
    )
    extra: dict[str, Any] = {}
    if num_workers > 0 and prefetch_factor is not None:
        extra["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=Collate(dataset.store.num_classes, dataset.views),
        pin_memory=pin_memory,
        **extra,
    )


def make_loader(
    store: Any,
    indices: Sequence[int] | np.ndarray,
    *,
    strategy: str = "all",
    k: int | None = None,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    skip_batches: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    max_frames: int = MAX_FRAMES,
    prefetch_factor: int | None = None,
    rng_view: int = 0,
) -> DataLoader:
    """A DataLoader of ``Batch`` for videos ``indices`` of ``store`` (a ``FrameStore`` or its path), each
    video read through frame selection ``strategy`` with ``k`` frames (k is ignored for ``all``).
    ``rng_view=1``: the ``random`` selection draws what a paired loader's student view draws."""
    dataset = FrameDataset(store, indices, strategy, k, seed, max_frames, epoch=epoch, rng_view=rng_view)
    return _loader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        num_workers=num_workers,
        drop_last=drop_last,
        skip_batches=skip_batches,
        rank=rank,
        world_size=world_size,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
    )


def make_paired_loader(
    store: Any,
    indices: Sequence[int] | np.ndarray,
    *,
    k: int,
    student_strategy: str | None = None,
    strategy: str | None = None,
    teacher_strategy: str = "all",
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    skip_batches: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    max_frames: int = MAX_FRAMES,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """A DataLoader of ``(teacher_batch, student_batch)``: the same videos in the same order, the teacher
    view with ``teacher_strategy`` (all frames) and the student view with ``student_strategy`` (alias
    ``strategy``) and ``k``. Each video's frames are read once for both views."""
    if student_strategy is not None and strategy is not None and student_strategy != strategy:
        raise DataError(f"make_paired_loader: student_strategy={student_strategy!r} contradicts strategy={strategy!r}")
    chosen = student_strategy or strategy or "uniform"
    dataset = FrameDataset(
        store, indices, seed=seed, max_frames=max_frames, epoch=epoch, views=[(teacher_strategy, None), (chosen, k)]
    )
    return _loader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        num_workers=num_workers,
        drop_last=drop_last,
        skip_batches=skip_batches,
        rank=rank,
        world_size=world_size,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
    )


__all__ = [
    "Batch",
    "Collate",
    "DeterministicBatchSampler",
    "FrameDataset",
    "Sample",
    "make_loader",
    "make_paired_loader",
]
