"""fsio on local paths and on gs:// through a real GCS emulator (gcp-storage-emulator on 127.0.0.1)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from store_helpers import gcs_emulator, write_store

from fewframes import fsio
from fewframes.data.split import load_split, write_split
from fewframes.data.store import FrameStore, FrameStoreWriter
from fewframes.errors import StorageError, StoreError

BUCKET = "fewframes-test"
EMULATOR_LOGGER = "gcp_storage_emulator.server"


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
    assert fsio.join("gs://b/p/", "a", "b") == "gs://b/p/a/b" and fsio.split_gcs("gs://bkt/p/a") == ("bkt", "p/a")
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


def _upload_requests(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The upload requests the emulator served, as "METHOD uploadType STATUS" (its own request log)."""
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if record.name == EMULATOR_LOGGER and " /upload/" in message:
            method, url, _, status = message.strip('"').replace('" ', " ").split()[:4]
            found.append(f"{method} {url.split('uploadType=')[1].split('&')[0]} {status}")
    caplog.clear()
    return found


def test_uploads_above_the_threshold_are_chunked_resumable(
    emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=EMULATOR_LOGGER)
    monkeypatch.setenv(fsio.RESUMABLE_THRESHOLD_ENV, str(300 * 1024))  # the real setting, lowered
    monkeypatch.setenv(fsio.RESUMABLE_CHUNK_SIZE_ENV, str(256 * 1024))
    rng = np.random.default_rng(1)
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(rng.integers(0, 256, 600 * 1024, dtype=np.uint8).tobytes())
    small.write_bytes(rng.integers(0, 256, 100 * 1024, dtype=np.uint8).tobytes())
    root = f"gs://{BUCKET}/resumable"
    caplog.clear()

    fsio.upload_file(big, f"{root}/big.bin")  # 600 KiB in chunks of 256 KiB: one session, three PUTs
    assert _upload_requests(caplog) == [
        "POST resumable 200", "PUT resumable 308", "PUT resumable 308", "PUT resumable 200"
    ]
    fsio.upload_file(small, f"{root}/small.bin")
    assert _upload_requests(caplog) == ["POST multipart 200"]
    fsio.write_bytes_atomic(f"{root}/written.bin", big.read_bytes())  # in-memory writes take the same path
    assert _upload_requests(caplog)[0] == "POST resumable 200"
    fsio.upload_file(small, f"{root}/forced.bin", threshold=0, chunk_size=256 * 1024)  # per call
    assert _upload_requests(caplog) == ["POST resumable 200", "PUT resumable 200"]
    for name, local in (("big.bin", big), ("small.bin", small), ("written.bin", big), ("forced.bin", small)):
        assert fsio.read_bytes(f"{root}/{name}") == local.read_bytes()

    monkeypatch.setenv(fsio.RESUMABLE_CHUNK_SIZE_ENV, "1000")
    with pytest.raises(StorageError, match=rf"\${fsio.RESUMABLE_CHUNK_SIZE_ENV}: must be a positive multiple"):
        fsio.upload_file(big, f"{root}/bad.bin")
    monkeypatch.setenv(fsio.RESUMABLE_THRESHOLD_ENV, "lots")
    with pytest.raises(StorageError, match=rf"\${fsio.RESUMABLE_THRESHOLD_ENV}: expected a number of bytes"):
        fsio.upload_file(big, f"{root}/bad.bin")
    assert not fsio.exists(f"{root}/bad.bin")


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_staged_output_file_publishes_whole_or_nothing(
    where: str, emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    out = str(tmp_path / "out" / "p.csv") if where == "local" else f"gs://{BUCKET}/staged/{where}/p.csv"
    with fsio.staged_output_file(out) as local:
        local.write_bytes(b"first")
        assert not fsio.exists(out), "nothing visible before the block ends"
    assert fsio.read_bytes(out) == b"first"
    with pytest.raises(RuntimeError):
        with fsio.staged_output_file(out) as local:
            local.write_bytes(b"second, interrupted")
            raise RuntimeError("interrupted")
    assert fsio.read_bytes(out) == b"first", "a failed write keeps the previous content"
    with fsio.local_input_file(out) as copy:
        assert copy.read_bytes() == b"first"
    leftovers = os.listdir(temp) + (os.listdir(tmp_path / "out") if where == "local" else [])
    assert sorted(leftovers) == (["p.csv"] if where == "local" else []), "no temp file left behind"


def test_download_dir_mirrors_a_prefix(emulator: str, tmp_path: Path) -> None:
    root = f"gs://{BUCKET}/mirror"
    for rel, data in (("a.txt", b"a"), ("sub/b.txt", b"bb"), ("sub/deeper/c.txt", b"ccc")):
        fsio.write_bytes_atomic(f"{root}/{rel}", data)
    assert fsio.download_dir(root, tmp_path / "copy") == ["a.txt", "sub/b.txt", "sub/deeper/c.txt"]
    assert (tmp_path / "copy" / "sub" / "deeper" / "c.txt").read_bytes() == b"ccc"
    assert fsio.download_dir(f"gs://{BUCKET}/nothing-here", tmp_path / "empty") == []
    with pytest.raises(StorageError, match="bucket no-such-bucket not found"):
        fsio.download_dir("gs://no-such-bucket/x", tmp_path / "none")


def test_directory_mirror_follows_a_folder_while_it_is_written(emulator: str, tmp_path: Path) -> None:
    import time

    local, prefix = tmp_path / "run", f"gs://{BUCKET}/mirrored"
    (local / "checkpoints").mkdir(parents=True)
    (local / "checkpoints" / "ckpt-1.pt").write_bytes(b"one")
    fsio.upload_dir(local, prefix)  # as if an earlier attempt had left it there (and it was downloaded)

    def wait_for(condition: Any) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "the mirror did not catch up within 20 s"
            time.sleep(0.05)

    with fsio.DirectoryMirror(local, prefix, interval_s=0.1, last=("result.json",)):
        (local / "checkpoints" / "ckpt-2.pt").write_bytes(b"two")
        (local / "checkpoints" / ".ckpt-3.pt.tmp").write_bytes(b"half")  # a temp file: never uploaded
        wait_for(lambda: fsio.exists(f"{prefix}/checkpoints/ckpt-2.pt"))  # while the block still runs
        (local / "checkpoints" / "ckpt-1.pt").unlink()  # pruned: its object goes too
        wait_for(lambda: not fsio.exists(f"{prefix}/checkpoints/ckpt-1.pt"))
        (local / "model.pt").write_bytes(b"best")
        (local / "result.json").write_bytes(b"{}")
    assert fsio.listdir(f"{prefix}/checkpoints") == ["ckpt-2.pt"]
    assert fsio.read_bytes(f"{prefix}/model.pt") == b"best" and fsio.read_bytes(f"{prefix}/result.json") == b"{}"

    with pytest.raises(RuntimeError):  # a failed block still leaves what it wrote on GCS
        with fsio.DirectoryMirror(local, prefix, interval_s=60):
            (local / "checkpoints" / "ckpt-4.pt").write_bytes(b"four")
            raise RuntimeError("training failed")
    assert fsio.read_bytes(f"{prefix}/checkpoints/ckpt-4.pt") == b"four"
