"""``fewframes data download`` against a fake YouTube-8M mirror served by http.server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fewframes.cli import main
from fewframes.data.download import download, local_name, select_files
from fewframes.data.yt8m import Video, read_tfrecords, write_tfrecord
from fewframes.errors import DataError

REMOTE_NAMES = ["trainaa.tfrecord", "trainab.tfrecord", "trainAA.tfrecord"]


class _MirrorHandler(SimpleHTTPRequestHandler):
    """Static files plus single ``Range: bytes=N-`` requests (as the real mirrors honour); logs paths."""

    requests: list[tuple[str, str | None]]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.requests.append((self.path, self.headers.get("Range")))
        range_header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not range_header or not path.is_file():
            return super().do_GET()
        start = int(range_header.removeprefix("bytes=").rstrip("-"))
        data = path.read_bytes()[start:]
        self.send_response(206)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/{path.stat().st_size}")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path, list]]:
    """A fake mirror: 3 small real shards of split ``train`` and their md5 download plan."""
    root = tmp_path / "mirror"
    shard_dir = root / "2" / "frame" / "train"
    plan_dir = root / "2" / "download_plans"
    plan_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    checksums = {}
    for i, name in enumerate(REMOTE_NAMES):
        videos = [
            Video(f"{i}-{j}", np.array([j]), rng.integers(0, 256, (40, 1024), np.uint8), rng.integers(0, 256, (40, 128), np.uint8))
            for j in range(3)
        ]
        write_tfrecord(shard_dir / name, videos)
        checksums[name] = hashlib.md5((shard_dir / name).read_bytes()).hexdigest()
    (plan_dir / "frame_train.json").write_text(json.dumps({"files": checksums}))
    requests: list = []
    handler = type("Handler", (_MirrorHandler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    finally:
        server.shutdown()
        server.server_close()


def test_local_names_follow_the_official_renaming() -> None:
    assert local_name("trainaa.tfrecord") == "train0000.tfrecord"
    assert local_name("trainab.tfrecord") == "train0001.tfrecord"
    assert local_name("validateAA.tfrecord") == "validate1638.tfrecord"  # 26 * 62 + 26
    assert local_name("test99.tfrecord") == "test3843.tfrecord"  # the last of 62 * 62


def test_download_verifies_and_a_rerun_skips_verified_files(mirror, tmp_path: Path, capsys) -> None:
    url, root, requests = mirror
    out = tmp_path / "yt8m"
    assert main(["data", "download", "--out", str(out), "--shards", "2", "--mirror", url, "--quiet"]) == 0
    assert "2 downloaded" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["2_frame_train_download_plan.json", "train0000.tfrecord", "train0001.tfrecord"]
    assert (out / "train0001.tfrecord").read_bytes() == (root / "2/frame/train/trainab.tfrecord").read_bytes()
    assert [v.id for v in read_tfrecords(out)] == ["0-0", "0-1", "0-2", "1-0", "1-1", "1-2"]

    requests.clear()
    summary = download(out, shards=2, mirror=url, progress=False)
    assert summary.skipped_verified == 2 and summary.downloaded == 0 and requests == []  # plan cached too


def test_partial_download_is_continued_with_a_range_request(mirror, tmp_path: Path) -> None:
    url, root, requests = mirror
    out = tmp_path / "yt8m"
    out.mkdir()
    whole = (root / "2/frame/train/trainaa.tfrecord").read_bytes()
    (out / "train0000.tfrecord.part").write_bytes(whole[:1000])
    summary = download(out, shards=1, mirror=url, progress=False)
    assert summary.downloaded == 1 and summary.bytes_downloaded == len(whole) - 1000
    assert ("/2/frame/train/trainaa.tfrecord", "bytes=1000-") in requests
    assert (out / "train0000.tfrecord").read_bytes() == whole
    assert not (out / "train0000.tfrecord.part").exists()


def test_checksum_mismatch_is_an_error_and_removes_the_file(mirror, tmp_path: Path, capsys) -> None:
    url, root, _ = mirror
    plan = root / "2/download_plans/frame_train.json"
    files = json.loads(plan.read_text())["files"]
    files["trainab.tfrecord"] = "0" * 32
    plan.write_text(json.dumps({"files": files}))
    out = tmp_path / "yt8m"
    assert main(["data", "download", "--out", str(out), "--mirror", url, "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "train0001.tfrecord: md5" in error and "does not match" in error
    names = sorted(p.name for p in out.iterdir())
    assert "train0001.tfrecord" not in names and not any(n.endswith(".part") for n in names)
    assert {"train0000.tfrecord", "train1638.tfrecord"} <= set(names)  # the good files are kept


def test_sha256_plan_and_fraction_selection(mirror, tmp_path: Path) -> None:
    url, root, _ = mirror
    plan = root / "2/download_plans/frame_train.json"
    files = {n: hashlib.sha256((root / "2/frame/train" / n).read_bytes()).hexdigest() for n in REMOTE_NAMES}
    plan.write_text(json.dumps({"files": files}))
    ways = 2
    expected = sorted(
        local_name(n) for n in REMOTE_NAMES if int(hashlib.md5(n.encode()).hexdigest(), 16) % ways == 0
    )
    assert expected == ["train1638.tfrecord"]  # 1 of the 3 names hashes to 0 mod 2
    assert sorted(local_name(n) for n in select_files(files, fraction=1 / ways)) == expected
    summary = download(tmp_path / "yt8m", fraction=0.5, mirror=url, progress=False)
    assert sorted(summary.files) == expected and summary.downloaded == len(expected)


def test_missing_plan_and_bad_arguments(mirror, tmp_path: Path) -> None:
    url, _, _ = mirror
    with pytest.raises(DataError, match=r"frame_validate.json: HTTP 404"):
        download(tmp_path / "v", split="validate", mirror=url, progress=False)
    with pytest.raises(DataError, match="--fraction must be in"):
        download(tmp_path / "x", fraction=1.5, mirror=url, progress=False)
    with pytest.raises(DataError, match="--split must be one of"):
        download(tmp_path / "y", split="dev", mirror=url, progress=False)
