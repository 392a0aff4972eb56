"""Ingest (TFRecords -> frame store), inspect, and the ``fewframes data`` CLI around them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fewframes.cli import main
from fewframes.config import PRESETS
from fewframes.data.ingest import ingest
from fewframes.data.store import FrameStore
from fewframes.data.yt8m import Video, read_tfrecords, serialize_video

TINY_CLASSES = PRESETS["tiny"].data.classes


def _with_bad_shard(tiny: Path, target: Path, *, corrupt: bool = False) -> Path:
    """A copy of the tiny set plus a third shard whose record 1 is invalid (bad label, or corrupt bytes)."""
    import tensorflow as tf

    shutil.copytree(tiny, target)
    rng = np.random.default_rng(0)
    good = [
        Video(f"extra{i}", np.array([1]), rng.integers(0, 256, (5, 1024), np.uint8), rng.integers(0, 256, (5, 128), np.uint8))
        for i in range(3)
    ]
    bad_label = Video("bad", np.array([TINY_CLASSES + 3]), good[0].rgb, good[0].audio)
    records = [serialize_video(good[0]), serialize_video(good[1] if corrupt else bad_label), serialize_video(good[2])]
    shard = target / "synth-00002-of-00002.tfrecord"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    if corrupt:
        data = bytearray(shard.read_bytes())
        data[len(records[0]) + 16 + 40] ^= 0xFF  # inside record 1's payload
        shard.write_bytes(bytes(data))
    return shard


def test_ingest_cli_writes_a_store_equal_to_the_tfrecords(tiny_tfrecords: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "store"
    code = main(["data", "ingest", "--src", str(tiny_tfrecords), "--out", str(out), "--num-classes", str(TINY_CLASSES), "--quiet", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    videos = list(read_tfrecords(tiny_tfrecords))
    assert summary["videos"] == len(videos) == PRESETS["tiny"].data.videos
    assert summary["frames"] == sum(v.num_frames for v in videos)
    assert summary["classes_seen"] == len(np.unique(np.concatenate([v.labels for v in videos])))
    assert summary["invalid_skipped"] == 0
    assert summary["bytes_written"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

    store = FrameStore.open(out)
    assert store.video_ids == [v.id for v in videos] and store.num_classes == TINY_CLASSES
    for i in (0, 57, len(videos) - 1):
        assert np.array_equal(store.labels[i], videos[i].labels)
        positions = np.array([0, 3, videos[i].num_frames - 1])
        expected = np.concatenate([videos[i].rgb, videos[i].audio], axis=1)[positions]
        assert np.array_equal(store.read_frames(i, positions), expected)


def test_invalid_record_fails_ingest_and_leaves_no_store(tiny_tfrecords: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    shard = _with_bad_shard(tiny_tfrecords, src)
    out = tmp_path / "store"
    code = main(["data", "ingest", "--src", str(src), "--out", str(out), "--num-classes", str(TINY_CLASSES), "--quiet"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"{shard} record 1" in error and "out of range" in error
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no store, no temp folder

    # An existing store at --out survives a failed re-ingest untouched.
    ingest(str(tiny_tfrecords), str(out), num_classes=TINY_CLASSES, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["data", "ingest", "--src", str(src), "--out", str(out), "--num-classes", str(TINY_CLASSES), "--quiet"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["src", "store"]


def test_skip_invalid_counts_bad_and_corrupt_records(tiny_tfrecords: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _with_bad_shard(tiny_tfrecords, src)
    summary = ingest(str(src), str(tmp_path / "a"), num_classes=TINY_CLASSES, skip_invalid=True, progress=False)
    assert summary.invalid_skipped == 1 and summary.videos == PRESETS["tiny"].data.videos + 2
    assert "out of range" in summary.invalid_reasons[0]

    corrupt_src = tmp_path / "corrupt"
    _with_bad_shard(tiny_tfrecords, corrupt_src, corrupt=True)
    summary = ingest(str(corrupt_src), str(tmp_path / "b"), num_classes=TINY_CLASSES, skip_invalid=True, progress=False)
    # The corrupt record ends what can be read of its shard: record 0 kept, records 1 (corrupt) and 2 lost.
    assert summary.invalid_skipped == 1 and summary.truncated_shards == 1
    assert summary.videos == PRESETS["tiny"].data.videos + 1
    assert "corrupt record" in summary.invalid_reasons[0]


def test_skip_invalid_through_the_cli_prints_the_count_and_the_record(tiny_tfrecords: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    shard = _with_bad_shard(tiny_tfrecords, src)
    base = ["data", "ingest", "--src", str(src), "--num-classes", str(TINY_CLASSES), "--quiet", "--skip-invalid"]
    assert main([*base, "--out", str(tmp_path / "text")]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^invalid skipped 1$", text, re.MULTILINE), text
    assert f"  skipped: {shard} record 1 (video 'bad'): label {TINY_CLASSES + 3} out of range" in text
    assert re.search(rf"^videos +{PRESETS['tiny'].data.videos + 2}$", text, re.MULTILINE)

    assert main([*base, "--out", str(tmp_path / "json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["invalid_skipped"] == 1 and summary["videos"] == PRESETS["tiny"].data.videos + 2
    assert summary["invalid_reasons"] == [f"{shard} record 1 (video 'bad'): label {TINY_CLASSES + 3} out of range [0, {TINY_CLASSES})"]
    assert FrameStore.open(tmp_path / "json").video_ids[-2:] == ["extra0", "extra2"]


@pytest.mark.slow
def test_parallel_ingest_equals_serial_and_cleans_up_on_failure(tiny_tfrecords: Path, tmp_path: Path) -> None:
    serial = ingest(str(tiny_tfrecords), str(tmp_path / "serial"), num_classes=TINY_CLASSES, progress=False)
    parallel = ingest(str(tiny_tfrecords), str(tmp_path / "parallel"), num_classes=TINY_CLASSES, workers=2, progress=False)
    assert (parallel.videos, parallel.frames, parallel.classes_seen) == (serial.videos, serial.frames, serial.classes_seen)
    a, b = FrameStore.open(tmp_path / "serial"), FrameStore.open(tmp_path / "parallel")
    assert a.video_ids == b.video_ids and np.array_equal(a.lengths, b.lengths)
    assert np.array_equal(a.read_frames(100, [0, 50, 100]), b.read_frames(100, [0, 50, 100]))

    src = tmp_path / "src"
    _with_bad_shard(tiny_tfrecords, src)
    with pytest.raises(Exception, match="record 1"):
        ingest(str(src), str(tmp_path / "failed"), num_classes=TINY_CLASSES, workers=2, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["parallel", "serial", "src"]


def test_inspect_json_on_tfrecords_and_store(tiny_tfrecords: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "inspect", str(tiny_tfrecords), "--json"]) == 0
    from_tfrecords = json.loads(capsys.readouterr().out)
    ingest(str(tiny_tfrecords), str(tmp_path / "store"), num_classes=TINY_CLASSES, progress=False)
    assert main(["data", "inspect", str(tmp_path / "store"), "--json"]) == 0
    from_store = json.loads(capsys.readouterr().out)

    videos = list(read_tfrecords(tiny_tfrecords))
    for report in (from_tfrecords, from_store):
        assert {"videos", "frames", "label_counts", "classes_seen", "length_histogram", "bytes"} <= set(report)
        assert report["videos"] == len(videos)
        assert report["frames"] == sum(v.num_frames for v in videos)
        assert sum(report["length_histogram"].values()) == len(videos)
        counts = np.bincount(np.concatenate([v.labels for v in videos]), minlength=TINY_CLASSES)
        assert report["label_counts"] == {str(c): int(n) for c, n in enumerate(counts) if n}
    assert from_tfrecords["kind"] == "tfrecord" and from_tfrecords["invalid"] == 0
    assert from_store["kind"] == "frame_store" and from_store["num_classes"] == TINY_CLASSES

    assert main(["data", "inspect", str(tiny_tfrecords)]) == 0
    text = capsys.readouterr().out
    assert "frame-length histogram" in text and f"videos {len(videos)}" in text


def test_inspect_label_counts_count_videos_not_label_mentions(tmp_path: Path, capsys) -> None:
    from fewframes.data.yt8m import write_tfrecord

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, 1152), np.uint8)
    repeated = Video("twice", np.array([2, 2, 5]), frames[:, :1024], frames[:, 1024:])  # 2 listed twice
    plain = Video("once", np.array([2]), frames[:, :1024], frames[:, 1024:])
    write_tfrecord(tmp_path / "a.tfrecord", [repeated, plain])
    ingest(str(tmp_path / "a.tfrecord"), str(tmp_path / "store"), num_classes=6, progress=False)
    for path in (tmp_path / "a.tfrecord", tmp_path / "store"):
        assert main(["data", "inspect", str(path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["label_counts"] == {"2": 2, "5": 1} and report["classes_seen"] == 2, path


def test_inspect_counts_invalid_records(tiny_tfrecords: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    _with_bad_shard(tiny_tfrecords, src)
    assert main(["data", "inspect", str(src), "--json", "--num-classes", str(TINY_CLASSES)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["invalid"] == 1 and "record 1" in report["invalid_reasons"][0]


def test_synth_and_split_through_the_cli(tmp_path: Path, capsys) -> None:
    tf_dir, store = tmp_path / "tf", tmp_path / "store"
    assert main(["data", "synth", "--out", str(tf_dir), "--videos", "20", "--classes", "5", "--seed", "4", "--shards", "2", "--quiet"]) == 0
    assert "wrote 20 videos" in capsys.readouterr().out
    assert sorted(p.name for p in tf_dir.iterdir()) == ["manifest.json", "synth-00000-of-00002.tfrecord", "synth-00001-of-00002.tfrecord"]
    assert main(["data", "ingest", "--src", str(tf_dir / "*.tfrecord"), "--out", str(store), "--num-classes", "5", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["data", "split", str(store), "--validation-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] + summary["validation"] + summary["test"] == 20


def test_bad_flags_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--videos", "0", "--quiet"]) == 2
    assert "--videos must be >= 1" in capsys.readouterr().err
    assert main(["data", "ingest", "--src", str(tmp_path / "none*.tfrecord"), "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "no TFRecord shards match" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_console_script_runs_inspect(tiny_tfrecords: Path) -> None:
    script = Path(sys.executable).parent / "fewframes"
    result = subprocess.run(
        [str(script), "data", "inspect", str(tiny_tfrecords / "synth-00000-of-00002.tfrecord"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "tfrecord" and report["videos"] == PRESETS["tiny"].data.videos // 2


def test_ingest_and_inspect_on_gcs_emulator(tmp_path: Path, capsys) -> None:
    """gs:// end to end against a real GCS API server (gcp-storage-emulator on 127.0.0.1)."""
    from store_helpers import gcs_emulator

    from fewframes import fsio
    from fewframes.config import DataConfig
    from fewframes.data.synth import generate_synthetic

    local = tmp_path / "tf"
    generate_synthetic(local, DataConfig(videos=12, classes=4, seed=1), shards=2, progress=False)
    with gcs_emulator("yt8m"):
        for shard in sorted(local.glob("*.tfrecord")):
            fsio.upload_file(shard, f"gs://yt8m/frames/{shard.name}")
        code = main(["data", "ingest", "--src", "gs://yt8m/frames", "--out", "gs://yt8m/store", "--num-classes", "4", "--quiet", "--json"])
        assert code == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["videos"] == 12 and summary["shards"] == 2 and summary["bytes_written"] > 12 * 120 * 1152
        assert main(["data", "inspect", "gs://yt8m/store", "--json"]) == 0
        from_store = json.loads(capsys.readouterr().out)
        assert main(["data", "inspect", "gs://yt8m/frames/*.tfrecord", "--json"]) == 0
        from_tfrecords = json.loads(capsys.readouterr().out)
        store = FrameStore.open("gs://yt8m/store")
        first = next(iter(read_tfrecords(local)))
        assert np.array_equal(store.read_frames(0, [0, 1]), np.concatenate([first.rgb, first.audio], axis=1)[:2])

        # A record failing validation in the last shard: one-line error, nothing at all under the target.
        bad = _with_bad_shard(local, tmp_path / "bad")
        fsio.upload_file(bad, f"gs://yt8m/frames/{bad.name}")
        failed = main(["data", "ingest", "--src", "gs://yt8m/frames", "--out", "gs://yt8m/failed", "--num-classes", "4", "--quiet"])
        error = capsys.readouterr().err.strip()
        assert failed == 2 and error.count("\n") == 0 and f"gs://yt8m/frames/{bad.name} record 1" in error
        assert fsio.glob("gs://yt8m/failed*") == []
    assert from_store["kind"] == "frame_store" and from_tfrecords["kind"] == "tfrecord"
    assert from_store["videos"] == from_tfrecords["videos"] == 12
    assert from_store["label_counts"] == from_tfrecords["label_counts"]
