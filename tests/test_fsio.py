"""fsio on local paths and on gs:// through a real GCS emulator (gcp-storage-emulator on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from store_helpers import gcs_emulator, write_store

from fewframes import fsio
from fewframes.data.split import load_split, write_split
from fewframes.data.store import FrameStore, FrameStoreWriter
from fewframes.errors import StorageError, StoreError

BUCKET = "fewframes-test"


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with gcs_emulator(BUCKET) as url:
        yield url


def test_local_helpers(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.bin"
    fsio.write_bytes_atomic(target, b"abc")
    fsio.write_bytes_atomic(target, b"defg")
    assert fsio.read_bytes(target) == b"defg" and fsio.exists(target)
    assert os.listdir(target.parent) == ["x.bin"], "no temp file left behind"
    assert fsio.listdir(tmp_path) == ["sub"]
    assert fsio.glob(str(tmp_path / "sub" / "*.bin")) == [str(target)]
    f = fsio.open_input_file(target)
    assert bytes(f.read_at(2, 1)) == b"ef" and f.size() == 4
    with pytest.raises(StorageError, match="missing.bin"):
        fsio.read_bytes(tmp_path / "missing.bin")
    with pytest.raises(StorageError, match="missing.bin"):
        fsio.open_input_file(tmp_path / "missing.bin")
    assert fsio.join("gs://b/p/", "a", "b") == "gs://b/p/a/b" and fsio.split_gcs("gs://b/p/a") == ("b", "p/a")
    assert fsio.is_gcs("gs://b") and not fsio.is_gcs(str(tmp_path))


def test_gcs_helpers(emulator: str, tmp_path: Path) -> None:
    root = f"gs://{BUCKET}/helpers"
    fsio.write_bytes_atomic(f"{root}/a/one.txt", b"0123456789")
    fsio.write_bytes_atomic(f"{root}/a/two.txt", b"x")
    fsio.write_bytes_atomic(f"{root}/b.json", b"{}")
    assert fsio.read_bytes(f"{root}/a/one.txt") == b"0123456789"
    assert fsio.exists(f"{root}/a/one.txt") and fsio.exists(f"{root}/a") and not fsio.exists(f"{root}/zzz")
    assert fsio.listdir(root) == ["a", "b.json"]
    assert fsio.glob(f"{root}/a/*.txt") == [f"{root}/a/one.txt", f"{root}/a/two.txt"]
    f = fsio.open_input_file(f"{root}/a/one.txt")
    assert f.size() == 10 and f.read_at(3, 4) == b"456" and f.read_at(5, 8) == b"89"
    local = tmp_path / "big.bin"
    payload = np.random.default_rng(0).integers(0, 256, fsio.RESUMABLE_THRESHOLD + 1000, dtype=np.uint8).tobytes()
    local.write_bytes(payload)
    fsio.upload_file(local, f"{root}/big.bin")  # above the threshold: a chunked resumable upload
    fsio.download_file(f"{root}/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == payload
    fsio.remove(f"{root}/a")
    assert fsio.listdir(root) == ["b.json", "big.bin"]


def test_gcs_missing_bucket_and_object_are_one_line_errors(emulator: str) -> None:
    with pytest.raises(StorageError, match=r"gs://no-such-bucket/x: cannot read: bucket no-such-bucket not found"):
        fsio.read_bytes("gs://no-such-bucket/x")
    with pytest.raises(StorageError, match=rf"gs://{BUCKET}/nope: cannot open: object not found"):
        fsio.open_input_file(f"gs://{BUCKET}/nope")
    with pytest.raises(StoreError, match="not a frame store"):
        FrameStore.open(f"gs://{BUCKET}/no-store")
    with pytest.raises(StorageError, match="no object"):
        fsio.read_bytes(f"gs://{BUCKET}")


def test_missing_credentials_is_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No emulator and no Google credentials anywhere: a clear error, not a stack of google-auth text."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    monkeypatch.setattr(fsio, "_CLIENT", None)
    with pytest.raises(StorageError, match="credentials"):
        fsio.read_bytes("gs://some-bucket/x")
    monkeypatch.setattr(fsio, "_CLIENT", None)


def test_store_uploaded_to_gcs_reads_like_local(emulator: str, tmp_path: Path) -> None:
    frames = write_store(tmp_path / "store", [300, 45, 9, 300], shard_max_frames=400)
    write_split(tmp_path / "store")
    prefix = f"gs://{BUCKET}/stores/uploaded"
    fsio.upload_dir(tmp_path / "store", prefix, last=("store.json",))
    local, remote = FrameStore.open(tmp_path / "store"), FrameStore.open(prefix)
    assert remote.video_ids == local.video_ids and remote.lengths.tolist() == local.lengths.tolist()
    positions = np.arange(30) * 10
    for i in (0, 3):
        np.testing.assert_array_equal(remote.read_frames(i, positions), local.read_frames(i, positions))
        np.testing.assert_array_equal(remote.read_frames(i, positions), frames[i][positions])
    np.testing.assert_array_equal(remote.read_video(2), frames[2])
    remote.bytes_read = 0
    remote.read_frames(0, positions)
    assert remote.bytes_read == 30 * 1152
    assert load_split(prefix, "train").tolist() == load_split(tmp_path / "store", "train").tolist()


def test_writer_to_gcs_replaces_versions(emulator: str, tmp_path: Path) -> None:
    frames = write_store(tmp_path / "src", [12, 30])
    prefix = f"gs://{BUCKET}/stores/written"
    for round_, ids in enumerate((["a", "b"], ["c"])):
        with FrameStoreWriter(prefix, num_classes=7) as writer:
            for vid, video in zip(ids, frames):
                writer.add(vid, [round_], video[:, :1024], video[:, 1024:])
        store = FrameStore.open(prefix)
        assert store.video_ids == ids
        np.testing.assert_array_equal(store.read_video(0), frames[0])
    versions = [name for name in fsio.listdir(prefix) if name.startswith("v-")]
    assert len(versions) == 1, "the previous version's files are deleted after the commit"
    with pytest.raises(RuntimeError):
        with FrameStoreWriter(prefix, num_classes=7) as writer:
            writer.add("d", [0], frames[1][:, :1024], frames[1][:, 1024:])
            raise RuntimeError("interrupted")
    assert FrameStore.open(prefix).video_ids == ["c"], "a failed write leaves the committed store"
