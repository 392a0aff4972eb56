"""The PyTorch data path: batch shapes/masks/labels, read-time selection, determinism, resume, DDP shards."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from store_helpers import write_store

from fewframes.data.loader import Batch, DeterministicBatchSampler, FrameDataset, make_loader, make_paired_loader
from fewframes.data.selection import select_frames
from fewframes.data.store import FrameStore
from fewframes.errors import DataError

LENGTHS = [300, 40, 5, 120, 300, 1, 77, 200, 16, 250, 3, 90]


@pytest.fixture(scope="module")
def store_frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[FrameStore, list[np.ndarray]]:
    path = tmp_path_factory.mktemp("loader") / "store"
    frames = write_store(path, LENGTHS, shard_max_frames=500)
    return FrameStore.open(path), frames


def _ids(loader) -> list[str]:  # type: ignore[no-untyped-def]
    return [vid for batch in loader for vid in batch.video_ids]


def test_all_frames_batches(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, frames = store_frames
    indices = np.arange(len(store))
    batches = list(make_loader(store, indices, strategy="all", batch_size=4, shuffle=False, seed=0))
    assert [len(b) for b in batches] == [4, 4, 4]
    first = batches[0]
    assert isinstance(first, Batch)
    assert first.frames.dtype == torch.uint8 and first.frames.shape == (4, 300, 1152)  # T = longest in batch
    assert first.mask.dtype == torch.bool and first.mask.sum(1).tolist() == LENGTHS[:4]
    assert first.positions.dtype == torch.int64
    assert first.labels.dtype == torch.float32 and first.labels.shape == (4, store.num_classes)
    for row in range(4):
        n = LENGTHS[row]
        np.testing.assert_array_equal(first.frames[row, :n].numpy(), frames[row])
        assert first.frames[row, n:].sum() == 0 and first.positions[row, n:].eq(-1).all()
        assert first.positions[row, :n].tolist() == list(range(n))
        assert torch.nonzero(first.labels[row]).ravel().tolist() == sorted(store.labels[row].tolist())
    assert batches[1].frames.shape[1] == max(LENGTHS[4:8])
    assert first.video_ids == store.video_ids[:4] and first.indices.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("strategy", ["uniform", "random", "first", "middle", "last", "first_middle_last"])
def test_k_frame_batches_read_only_k_frames(store_frames, strategy: str) -> None:  # type: ignore[no-untyped-def]
    store, frames = store_frames
    k = 10
    store.bytes_read = 0
    loader = make_loader(store, np.arange(len(store)), strategy=strategy, k=k, batch_size=5, shuffle=False, seed=3)
    real = 0
    for batch in loader:
        assert batch.frames.shape == (len(batch), k, 1152) and batch.mask.shape == (len(batch), k)
        for row, index in enumerate(batch.indices.tolist()):
            mask = batch.mask[row].numpy()
            positions = batch.positions[row].numpy()
            assert mask.sum() == min(k, LENGTHS[index]) and np.all(positions[~mask] == -1)
            np.testing.assert_array_equal(batch.frames[row].numpy()[mask], frames[index][positions[mask]])
            real += int(mask.sum())
    assert store.bytes_read == real * 1152, "only the selected frames are read"
    assert store.bytes_read < 0.1 * store.nbytes


def test_uniform_matches_select_frames(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_frames
    batch = next(iter(make_loader(store, [0, 3], strategy="uniform", k=6, batch_size=2, shuffle=False, seed=0)))
    for row, index in enumerate([0, 3]):
        assert batch.positions[row].tolist() == select_frames("uniform", LENGTHS[index], 6)[0].tolist()


def test_random_selection_is_deterministic_per_seed_epoch_video(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_frames

    def positions(seed: int, epoch: int, indices, batch_size: int = 3, shuffle: bool = False) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
        loader = make_loader(
            store, indices, strategy="random", k=8, batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=epoch
        )
        return {vid: b.positions[r].tolist() for b in loader for r, vid in enumerate(b.video_ids)}

    base = positions(0, 0, [0, 3, 4, 9])
    assert base == positions(0, 0, [9, 4, 3, 0], batch_size=1, shuffle=True), "independent of order and batching"
    assert base != positions(0, 1, [0, 3, 4, 9]) and base != positions(1, 0, [0, 3, 4, 9])
    two_workers = make_loader(store, [0, 3, 4, 9], strategy="random", k=8, batch_size=1, shuffle=False, seed=0, num_workers=2)
    assert {b.video_ids[0]: b.positions[0].tolist() for b in two_workers} == base


def test_shuffle_is_deterministic_and_resume_skips(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_frames
    indices = np.arange(len(store))
    common = dict(strategy="uniform", k=4, batch_size=5, shuffle=True, seed=11)
    epoch0 = _ids(make_loader(store, indices, epoch=0, **common))
    assert epoch0 == _ids(make_loader(store, indices, epoch=0, **common))
    assert epoch0 != _ids(make_loader(store, indices, epoch=1, **common))
    assert sorted(epoch0) == sorted(store.video_ids)
    resumed = make_loader(store, indices, epoch=0, skip_batches=1, **common)
    assert len(resumed) == 2
    assert _ids(resumed) == epoch0[5:]
    store.bytes_read = 0
    list(make_loader(store, indices, epoch=0, skip_batches=3, **common))
    assert store.bytes_read == 0, "skipped batches are not read"


def test_rank_sharding_covers_each_global_batch() -> None:
    full = DeterministicBatchSampler(11, 4, shuffle=True, seed=5, epoch=2)
    order = full.rank_order()
    ranks = [DeterministicBatchSampler(11, 2, shuffle=True, seed=5, epoch=2, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    per_rank = [list(s) for s in ranks]
    padded = np.resize(order, 12)
    for g in range(3):
        global_batch = sorted(per_rank[0][g] + per_rank[1][g])
        assert global_batch == sorted(padded[g * 4 : (g + 1) * 4].tolist())
    dropped = [DeterministicBatchSampler(11, 2, shuffle=True, seed=5, rank=r, world_size=2, drop_last=True) for r in range(2)]
    assert all(len(s) == 2 and all(len(b) == 2 for b in s) for s in dropped)


def test_paired_loader_views_of_same_videos(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, frames = store_frames
    store.bytes_read = 0
    loader = make_paired_loader(
        store, np.arange(len(store)), student_strategy="uniform", k=6, batch_size=4, shuffle=True, seed=2
    )
    seen = 0
    for teacher, student in loader:
        assert teacher.video_ids == student.video_ids
        assert torch.equal(teacher.labels, student.labels)
        assert student.frames.shape[1] == 6 and teacher.frames.shape[1] == max(LENGTHS[i] for i in teacher.indices.tolist())
        for row in range(len(teacher)):
            mask = student.mask[row]
            pos = student.positions[row][mask]
            assert torch.equal(student.frames[row][mask], teacher.frames[row][pos])  # the same frames
        seen += len(teacher)
    assert seen == len(store)
    assert store.bytes_read == store.nbytes, "each video read once for both views"
    alias = make_paired_loader(store, [0], strategy="first", k=3, batch_size=1, shuffle=False, seed=0)
    assert next(iter(alias))[1].positions.tolist() == [[0, 1, 2]]


def test_batch_to_and_pin(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_frames
    batch = next(iter(make_loader(store, [1, 2], strategy="first", k=3, batch_size=2, shuffle=False, seed=0)))
    moved = batch.to("cpu", non_blocking=True)
    assert torch.equal(moved.frames, batch.frames) and moved.video_ids == batch.video_ids
    if torch.cuda.is_available():  # pinning needs a CUDA runtime
        assert batch.pin_memory().frames.is_pinned()


def test_loader_opens_path_and_rejects_bad_arguments(store_frames) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_frames
    loader = make_loader(store.path, [0], strategy="last", k=2, batch_size=1, shuffle=False, seed=0)
    assert next(iter(loader)).positions.tolist() == [[298, 299]]
    with pytest.raises(DataError, match="needs k"):
        FrameDataset(store, [0], "uniform", None, 0)
    with pytest.raises(DataError, match="frame-selection"):
        FrameDataset(store, [0], "sparse", 3, 0)
    with pytest.raises(DataError, match="video indices"):
        FrameDataset(store, [len(store)], "all", None, 0)
    with pytest.raises(DataError, match="rank"):
        DeterministicBatchSampler(4, 2, shuffle=False, rank=2, world_size=2)
