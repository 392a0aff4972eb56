"""The frame store: round trip, frame-sparse reads (counted bytes), atomic writer, merge, bad input."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from store_helpers import random_video, write_store

from fewframes.config import FEATURE_DIM
from fewframes.data.store import FrameStore, FrameStoreWriter, merge_stores
from fewframes.errors import DataError, StoreError

LENGTHS = [300, 120, 7, 1, 250, 299, 60, 300]


@pytest.fixture()
def store_and_frames(tmp_path: Path) -> tuple[FrameStore, list[np.ndarray]]:
    frames = write_store(tmp_path / "store", LENGTHS, shard_max_frames=700)
    return FrameStore.open(tmp_path / "store"), frames


def test_round_trip_metadata_and_frames(store_and_frames: tuple[FrameStore, list[np.ndarray]]) -> None:
    store, frames = store_and_frames
    assert len(store) == len(LENGTHS)
    assert store.video_ids == [f"vid{i:04d}" for i in range(len(LENGTHS))]
    assert store.lengths.tolist() == LENGTHS and store.lengths.dtype == np.int64
    assert store.num_classes == 7
    assert all(1 <= len(lab) <= 3 and lab.max() < 7 for lab in store.labels)
    assert store.nbytes == sum(LENGTHS) * FEATURE_DIM
    assert len(store.shards) > 1, "shard_max_frames=700 must split these videos over several shards"
    for i, expected in enumerate(frames):
        got = store.read_video(i)
        assert got.dtype == np.uint8 and got.shape == (LENGTHS[i], FEATURE_DIM)
        np.testing.assert_array_equal(got, expected)
    meta = json.loads((Path(store.path) / "store.json").read_text())
    assert meta["format_version"] == 1 and meta["num_frames"] == sum(LENGTHS)


def test_read_frames_returns_requested_order(store_and_frames: tuple[FrameStore, list[np.ndarray]]) -> None:
    store, frames = store_and_frames
    positions = np.array([5, 0, 299, 6, 7, 8, 5])
    np.testing.assert_array_equal(store.read_frames(0, positions), frames[0][positions])
    assert store.read_frames(0, np.array([], dtype=np.int64)).shape == (0, FEATURE_DIM)


def test_sparse_read_counts_only_selected_bytes(store_and_frames: tuple[FrameStore, list[np.ndarray]]) -> None:
    store, _ = store_and_frames
    k_positions = np.arange(30) * 10
    store.bytes_read = 0
    store.read_frames(0, k_positions)
    sparse = store.bytes_read
    store.bytes_read = 0
    store.read_video(0)
    full = store.bytes_read
    assert sparse == 30 * FEATURE_DIM and full == 300 * FEATURE_DIM
    assert sparse * 10 == full


def test_sparse_read_through_a_counting_file(store_and_frames: tuple[FrameStore, list[np.ndarray]]) -> None:
    """The generic ranged-read path (as used for gs://) fetches only the selected frames' bytes, measured by
    a wrapper around the real file, not by the store's own counter."""
    store, frames = store_and_frames

    class CountingFile:
        def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
            self.inner, self.bytes, self.calls = inner, 0, 0

        def size(self) -> int:
            return self.inner.size()

        def read_at(self, nbytes: int, offset: int) -> bytes:
            data = bytes(self.inner.read_at(nbytes, offset))
            self.bytes += len(data)
            self.calls += 1
            return data

        def close(self) -> None:
            self.inner.close()

    shard = int(store.shard_of[0])
    store._file(shard)
    counting = CountingFile(store._files[shard])
    store._files[shard], store._views = counting, {}
    positions = np.array([0, 1, 2, 100, 200, 201])
    np.testing.assert_array_equal(store.read_frames(0, positions), frames[0][positions])
    assert counting.bytes == 6 * FEATURE_DIM
    assert counting.calls == 3, "adjacent frames coalesce into one ranged read"


def test_out_of_range_reads_name_the_video(store_and_frames: tuple[FrameStore, list[np.ndarray]]) -> None:
    store, _ = store_and_frames
    with pytest.raises(StoreError, match="vid0002.*7 frames.*position 7"):
        store.read_frames(2, [0, 7])
    with pytest.raises(StoreError, match="index 99"):
        store.read_frames(99, [0])


def test_pickled_store_reopens_lazily(store_and_frames: tuple[FrameStore, list[np.ndarray]]) -> None:
    store, frames = store_and_frames
    store.read_frames(1, [0])
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read_frames(1, [3, 4]), frames[1][[3, 4]])


def test_exception_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "store"
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="boom"):
        with FrameStoreWriter(target, num_classes=3, shard_max_frames=10) as writer:
            for i in range(5):
                writer.add(f"v{i}", [0], *random_video(rng, 8))
            raise RuntimeError("boom")
    assert not target.exists()
    assert os.listdir(tmp_path) == [], "the temp folder is removed too"


def test_failed_write_keeps_existing_store(tmp_path: Path) -> None:
    target = tmp_path / "store"
    frames = write_store(target, [5, 6])
    rng = np.random.default_rng(1)
    with pytest.raises(DataError, match="duplicate"):
        with FrameStoreWriter(target, num_classes=7) as writer:
            writer.add("x", [0], *random_video(rng, 4))
            writer.add("x", [0], *random_video(rng, 4))
    store = FrameStore.open(target)
    assert store.video_ids == ["vid0000", "vid0001"]
    np.testing.assert_array_equal(store.read_video(1), frames[1])
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_successful_rewrite_replaces_store(tmp_path: Path) -> None:
    target = tmp_path / "store"
    write_store(target, [5, 6])
    write_store(target, [9], id_prefix="new")
    store = FrameStore.open(target)
    assert store.video_ids == ["new0000"] and store.lengths.tolist() == [9]
    with pytest.raises(StoreError, match="already exists"):
        FrameStoreWriter(target, num_classes=7, overwrite=False)


@pytest.mark.parametrize(
    "rgb_shape, audio_shape, dtype, labels, match",
    [
        ((4, 1000), (4, 128), np.uint8, [0], "rgb must be"),
        ((4, 1024), (3, 128), np.uint8, [0], "3 audio frames"),
        ((4, 1024), (4, 128), np.float32, [0], "uint8"),
        ((0, 1024), (0, 128), np.uint8, [0], "no frames"),
        ((4, 1024), (4, 128), np.uint8, [7], "labels must be in"),
    ],
)
def test_bad_video_is_rejected_naming_it(tmp_path: Path, rgb_shape, audio_shape, dtype, labels, match) -> None:  # type: ignore[no-untyped-def]
    writer = FrameStoreWriter(tmp_path / "s", num_classes=7)
    with pytest.raises(DataError, match=match) as info:
        writer.add("bad-video", labels, np.zeros(rgb_shape, dtype), np.zeros(audio_shape, dtype))
    assert "bad-video" in str(info.value)
    writer.abort()


def test_open_rejects_missing_or_damaged_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a frame store"):
        FrameStore.open(tmp_path / "nothing")
    write_store(tmp_path / "s", [4, 5])
    meta_path = tmp_path / "s" / "store.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(StoreError, match="format_version"):
        FrameStore.open(tmp_path / "s")
    meta["shards"][0]["num_frames"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="past the end"):
        FrameStore.open(tmp_path / "s")


def test_merge_stores_joins_parts(tmp_path: Path) -> None:
    a = write_store(tmp_path / "a", [10, 20, 30], shard_max_frames=25, id_prefix="a")
    b = write_store(tmp_path / "b", [5, 300], seed=1, id_prefix="b")
    merge_stores(tmp_path / "m", [tmp_path / "a", tmp_path / "b"])
    merged = FrameStore.open(tmp_path / "m")
    assert merged.video_ids == ["a0000", "a0001", "a0002", "b0000", "b0001"]
    for i, expected in enumerate(a + b):
        np.testing.assert_array_equal(merged.read_video(i), expected)
    with pytest.raises(DataError, match="in both parts"):
        merge_stores(tmp_path / "m2", [tmp_path / "a", tmp_path / "a"])
    assert not (tmp_path / "m2").exists()


def test_merge_stores_can_link_the_parts_shards(tmp_path: Path) -> None:
    # ingest's workers: the parts' shard files become the store's by hard link (no copy of the bytes).
    a = write_store(tmp_path / "a", [10, 20, 30], shard_max_frames=25, id_prefix="a")
    b = write_store(tmp_path / "b", [5, 300], seed=1, id_prefix="b")
    merge_stores(tmp_path / "m", [tmp_path / "a", tmp_path / "b"], link=True)
    merged = FrameStore.open(tmp_path / "m")
    for i, expected in enumerate(a + b):
        np.testing.assert_array_equal(merged.read_video(i), expected)
    parts = [FrameStore.open(tmp_path / p) for p in "ab"]
    part_files = [tmp_path / p / s["file"] for p, part in zip("ab", parts) for s in part.shards]
    merged_files = [tmp_path / "m" / s["file"] for s in merged.shards]
    assert [f.stat().st_ino for f in merged_files] == [f.stat().st_ino for f in part_files]


@pytest.mark.parametrize("max_gap_frames, expected_frames, expected_reads", [(0, 4, 4), (1, 6, 2), (200, 101, 1)])
def test_ranged_reads_and_gap_coalescing(
    store_and_frames: tuple[FrameStore, list[np.ndarray]], max_gap_frames: int, expected_frames: int, expected_reads: int
) -> None:
    """The pread/gs:// path: exact frames by default; ``max_gap_frames`` merges near runs into one range."""
    store, frames = store_and_frames
    ranged = FrameStore.open(store.path, memory_map=False, max_gap_frames=max_gap_frames)
    shard = int(ranged.shard_of[0])
    inner = ranged._file(shard)
    calls = []
    ranged._files[shard] = type("Spy", (), {"read_at": lambda self, n, o: calls.append(n) or inner.read_at(n, o)})()
    positions = np.array([0, 2, 4, 100])
    np.testing.assert_array_equal(ranged.read_frames(0, positions), frames[0][positions])
    assert ranged.bytes_read == expected_frames * FEATURE_DIM == sum(calls)
    assert len(calls) == expected_reads
