"""The YouTube-8M frame-level TFRecord layer: schema round trip, quantisation, validation errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fewframes.data.yt8m import (
    ReadStats,
    Video,
    dequantize,
    list_shards,
    quantize,
    read_tfrecords,
    serialize_video,
    write_tfrecord,
)
from fewframes.errors import DataError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _video(rng: np.random.Generator, index: int, frames: int = 7, labels: tuple[int, ...] = (1, 4)) -> Video:
    return Video(
        id=f"vid{index}",
        labels=np.asarray(labels, dtype=np.int64),
        rgb=rng.integers(0, 256, size=(frames, 1024), dtype=np.uint8),
        audio=rng.integers(0, 256, size=(frames, 128), dtype=np.uint8),
    )


def _example(
    *,
    id_key: str | None = "id",
    labels: list[int] | None = (3,),
    rgb_frames: list[bytes] | None = None,
    audio_frames: list[bytes] | None = None,
) -> bytes:
    """A SequenceExample built field by field with tensorflow, to make good and bad records."""
    import tensorflow as tf

    example = tf.train.SequenceExample()
    if id_key is not None:
        example.context.feature[id_key].bytes_list.value.append(b"abcd")
    if labels is not None:
        example.context.feature["labels"].int64_list.value.extend(labels)
    for name, frames in (("rgb", rgb_frames), ("audio", audio_frames)):
        if frames is None:
            continue
        feature_list = example.feature_lists.feature_list[name]
        for frame in frames:
            feature_list.feature.add().bytes_list.value.append(frame)
    return example.SerializeToString()


def _write_raw(path: Path, records: list[bytes]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def _frames(n: int, width: int) -> list[bytes]:
    return [bytes([i % 256]) * width for i in range(n)]


def test_quantize_dequantize_follow_the_official_formulas() -> None:
    q = np.arange(256, dtype=np.uint8)
    x = dequantize(q)
    np.testing.assert_allclose(x, q.astype(np.float64) * 4.0 / 255.0 + (4.0 / 512.0 - 2.0), rtol=0, atol=1e-6)
    assert np.array_equal(quantize(x), q)  # dequantised values quantise back to themselves
    assert quantize(np.array([-5.0, -2.0, 0.0, 2.0, 7.0])).tolist() == [0, 0, 128, 255, 255]


def test_round_trip_schema_and_dequantised_values(tmp_path: Path) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    videos = [_video(rng, i, frames=5 + i) for i in range(4)]
    shard = tmp_path / "train0000.tfrecord"
    assert write_tfrecord(shard, videos) == 4
    assert sorted(os.listdir(tmp_path)) == ["train0000.tfrecord"]  # no temp file left behind

    # The raw record has exactly the official schema.
    raw = next(iter(tf.data.TFRecordDataset(str(shard)))).numpy()
    example = tf.train.SequenceExample.FromString(raw)
    assert set(example.context.feature) == {"id", "labels"}
    assert set(example.feature_lists.feature_list) == {"rgb", "audio"}
    assert len(example.feature_lists.feature_list["rgb"].feature[0].bytes_list.value[0]) == 1024
    assert len(example.feature_lists.feature_list["audio"].feature[0].bytes_list.value[0]) == 128

    back = list(read_tfrecords(shard, num_classes=10))
    assert back == videos
    # Dequantised through tensorflow's own decoding equals the formula on our arrays.
    decoded = tf.io.decode_raw(example.feature_lists.feature_list["rgb"].feature[0].bytes_list.value[0], tf.uint8)
    tf_values = tf.cast(decoded, tf.float32).numpy() * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)
    np.testing.assert_allclose(dequantize(back[0].rgb[0]), tf_values, atol=1e-6)


def test_2017_video_id_key_and_empty_labels_are_read(tmp_path: Path) -> None:
    shard = tmp_path / "old.tfrecord"
    _write_raw(shard, [_example(id_key="video_id", labels=[], rgb_frames=_frames(3, 1024), audio_frames=_frames(3, 128))])
    (video,) = read_tfrecords(shard)
    assert video.id == "abcd" and video.labels.size == 0 and video.rgb.shape == (3, 1024)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (dict(id_key=None, rgb_frames=_frames(2, 1024), audio_frames=_frames(2, 128)), "missing context feature 'id'"),
        (dict(labels=None, rgb_frames=_frames(2, 1024), audio_frames=_frames(2, 128)), "missing context feature 'labels'"),
        (dict(audio_frames=_frames(2, 128)), "missing feature list 'rgb'"),
        (dict(rgb_frames=_frames(2, 1024)), "missing feature list 'audio'"),
        (dict(rgb_frames=_frames(1, 1024) + [b"x" * 1000], audio_frames=_frames(2, 128)), "'rgb' frame 1 has 1000 bytes"),
        (dict(rgb_frames=_frames(2, 1024), audio_frames=_frames(2, 127)), "'audio' frame 0 has 127 bytes"),
        (dict(rgb_frames=_frames(3, 1024), audio_frames=_frames(2, 128)), "'rgb' has 3 frames but 'audio' has 2"),
        (dict(rgb_frames=[], audio_frames=[]), "0 frames, expected 1 to 300"),
        (dict(rgb_frames=_frames(301, 1024), audio_frames=_frames(301, 128)), "301 frames, expected 1 to 300"),
        (dict(labels=[2, 10], rgb_frames=_frames(2, 1024), audio_frames=_frames(2, 128)), "label 10 out of range [0, 10)"),
        (dict(labels=[-1], rgb_frames=_frames(2, 1024), audio_frames=_frames(2, 128)), "label -1 out of range"),
    ],
)
def test_invalid_record_names_shard_and_record_index(tmp_path: Path, record: dict, expected: str) -> None:
    good = _example(rgb_frames=_frames(2, 1024), audio_frames=_frames(2, 128))
    shard = tmp_path / "bad.tfrecord"
    _write_raw(shard, [good, good, _example(**record), good])
    with pytest.raises(DataError) as info:
        list(read_tfrecords(shard, num_classes=10))
    message = str(info.value)
    assert f"{shard} record 2" in message and expected in message

    stats = ReadStats()
    videos = list(read_tfrecords(shard, num_classes=10, skip_invalid=True, stats=stats))
    assert len(videos) == 3 and stats.records == 3 and stats.invalid == 1
    assert expected in stats.invalid_reasons[0]


def test_corrupt_record_is_a_data_error_naming_shard_and_record(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shard = tmp_path / "train0001.tfrecord"
    write_tfrecord(shard, [_video(rng, i, frames=4) for i in range(5)])
    data = bytearray(shard.read_bytes())
    record_size = len(serialize_video(_video(rng, 0, frames=4))) + 16  # length, 2 CRCs
    data[3 * record_size + 100] ^= 0xFF  # a byte inside record 3's payload
    shard.write_bytes(bytes(data))

    with pytest.raises(DataError, match=rf"{shard} record 3 at byte offset {3 * record_size}: corrupt record"):
        list(read_tfrecords(shard))
    stats = ReadStats()
    assert len(list(read_tfrecords(shard, skip_invalid=True, stats=stats))) == 3
    assert stats.invalid == 1 and stats.truncated_shards == 1


def test_not_a_sequence_example_and_missing_paths(tmp_path: Path) -> None:
    shard = tmp_path / "junk.tfrecord"
    _write_raw(shard, [b"\xff\xff\xff not a protobuf"])
    with pytest.raises(DataError, match=rf"{shard} record 0: not a tf.train.SequenceExample"):
        list(read_tfrecords(shard))
    with pytest.raises(DataError, match="no TFRecord shards match"):
        list_shards(tmp_path / "nothing-*.tfrecord")


def test_write_is_atomic_when_a_video_is_bad(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    shard = tmp_path / "keep.tfrecord"
    write_tfrecord(shard, [_video(rng, 0)])
    before = shard.read_bytes()
    bad = Video(id="bad", labels=np.array([1]), rgb=np.zeros((3, 1024), np.uint8), audio=np.zeros((2, 128), np.uint8))
    with pytest.raises(DataError, match="3 rgb frames but 2 audio frames"):
        write_tfrecord(shard, [_video(rng, 1), bad])
    assert shard.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.tfrecord"]


def test_directory_and_glob_list_shards_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for i in (1, 0):
        write_tfrecord(tmp_path / f"train000{i}.tfrecord", [_video(rng, i)])
    assert [Path(p).name for p in list_shards(tmp_path)] == ["train0000.tfrecord", "train0001.tfrecord"]
    assert [v.id for v in read_tfrecords(str(tmp_path / "train*.tfrecord"))] == ["vid0", "vid1"]
