"""fewframes.data.tfrecord against TensorFlow itself: the same record bytes, the same messages, the same
corruption found; frame lists decoded in one numpy step only when every frame is canonical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fewframes.data import tfrecord
from fewframes.data.yt8m import Video, parse_video, serialize_video, write_tfrecord

tf = pytest.importorskip("tensorflow")


def _video(rng: np.random.Generator, frames: int = 5, video_id: str = "vid") -> Video:
    return Video(video_id, np.array([4, 1]), rng.integers(0, 256, (frames, 1024), np.uint8),
                 rng.integers(0, 256, (frames, 128), np.uint8))


def _tf_example(video: Video) -> bytes:
    example = tf.train.SequenceExample()
    example.context.feature["id"].bytes_list.value.append(video.id.encode())
    example.context.feature["labels"].int64_list.value.extend(int(x) for x in video.labels)
    for name, frames in (("rgb", video.rgb), ("audio", video.audio)):
        for row in frames:
            example.feature_lists.feature_list[name].feature.add().bytes_list.value.append(row.tobytes())
    return example.SerializeToString()


@pytest.mark.parametrize("frames", [1, 7, 300])
def test_serialised_videos_are_the_messages_tensorflow_builds(frames: int) -> None:
    video = _video(np.random.default_rng(frames), frames)
    ours = tf.train.SequenceExample.FromString(serialize_video(video))
    assert ours == tf.train.SequenceExample.FromString(_tf_example(video))
    assert parse_video(_tf_example(video)) == video  # TensorFlow's bytes through our parser (fast path)


def test_shards_are_byte_for_byte_what_tensorflows_writer_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    videos = [_video(rng, 3 + i, f"v{i}") for i in range(4)]
    ours = tmp_path / "ours.tfrecord"
    write_tfrecord(ours, videos)
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for video in videos:
            writer.write(serialize_video(video))
    assert ours.read_bytes() == theirs.read_bytes()
    records = [record for _, record in tfrecord.read_records(theirs.read_bytes())]
    assert records == [r.numpy() for r in tf.data.TFRecordDataset(str(theirs))]


@pytest.mark.parametrize("where, expected", [(3, "corrupted record at"), (20, "corrupted record at")])
def test_a_flipped_byte_is_found_where_tensorflow_finds_it(tmp_path: Path, where: int, expected: str) -> None:
    shard = tmp_path / "s.tfrecord"
    write_tfrecord(shard, [_video(np.random.default_rng(1), 2, f"v{i}") for i in range(2)])
    data = bytearray(shard.read_bytes())
    data[where] ^= 0xFF  # 3: the length header, 20: the first record's data
    with pytest.raises(tfrecord.CorruptRecord, match=expected):
        list(tfrecord.read_records(bytes(data)))
    shard.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(shard)))


def test_a_record_cut_inside_its_data_is_truncated_and_a_cut_header_ends_quietly() -> None:
    whole = tfrecord.frame_record(b"x" * 100) + tfrecord.frame_record(b"y" * 10)
    first = len(tfrecord.frame_record(b"x" * 100))
    with pytest.raises(tfrecord.CorruptRecord, match=f"truncated record at {first}"):
        list(tfrecord.read_records(whole[:-3]))
    assert [r for _, r in tfrecord.read_records(whole[: first + 5])] == [b"x" * 100]  # the caller sees 5 bytes left


def test_only_canonical_frame_lists_take_the_numpy_step() -> None:
    frames = np.arange(3 * 128, dtype=np.uint8).reshape(3, 128) % 251
    encoded = tfrecord.encode_frame_list(frames)
    assert np.array_equal(tfrecord.frame_rows(encoded, 128), frames)
    assert tfrecord.frame_rows(encoded, 1024) is None  # another width
    feature_list = tf.train.FeatureList()
    for row in frames:
        feature_list.feature.add().bytes_list.value.append(row.tobytes())
    feature_list.feature[1].bytes_list.value.append(b"\0" * 128)  # a frame with two values
    assert tfrecord.frame_rows(feature_list.SerializeToString(), 128) is None
    assert tfrecord.frame_rows(b"", 128).shape == (0, 128)


def test_feature_lists_are_found_in_place_only_when_the_layout_is_plain() -> None:
    video = _video(np.random.default_rng(5), 4)
    record = serialize_video(video)
    found = tfrecord.feature_list_bytes(record)
    parsed = tf.train.SequenceExample.FromString(record)
    assert set(found) == {"rgb", "audio"}
    for name in found:
        assert bytes(found[name]) == parsed.feature_lists.feature_list[name].SerializeToString()
    # The feature_lists field twice (protobuf merges the two): left to the parser, which still reads it.
    example = tf.train.SequenceExample.FromString(record)
    rgb_only, audio_only = tf.train.SequenceExample(), tf.train.SequenceExample()
    rgb_only.feature_lists.feature_list["rgb"].CopyFrom(example.feature_lists.feature_list["rgb"])
    audio_only.context.CopyFrom(example.context)
    audio_only.feature_lists.feature_list["audio"].CopyFrom(example.feature_lists.feature_list["audio"])
    split = audio_only.SerializeToString() + rgb_only.SerializeToString()
    assert tfrecord.feature_list_bytes(split) is None
    assert parse_video(split) == video
    assert tfrecord.feature_list_bytes(b"\x08\x01") is None  # an unknown varint field
