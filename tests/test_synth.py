"""The synthetic YouTube-8M generator: the statistics docs/synthetic_data.md promises, and determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from fewframes.config import PRESETS, DataConfig
from fewframes.data.synth import BACKGROUND, SYNTH_PRESETS, TITLE, GenerativeModel, World, generate_synthetic
from fewframes.data.yt8m import dequantize, read_tfrecords


def _runs(content: np.ndarray) -> list[tuple[int, int]]:
    """(value, length) of each maximal run of equal values."""
    change = np.flatnonzero(np.diff(content)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(content)]]))
    return [(int(content[s]), int(n)) for s, n in zip(starts, lengths)]


def test_documented_statistics_on_a_small_world() -> None:
    world = World(num_classes=30, seed=5)
    items = list(world.generate_range(0, 200))
    lengths = np.array([it.video.num_frames for it in items])
    assert lengths.min() >= 120 and lengths.max() <= 300
    assert 195 <= lengths.mean() <= 225  # Uniform{120..300}: mean 210

    label_counts = np.array([len(it.video.labels) for it in items])
    assert label_counts.min() >= 1 and label_counts.max() <= 5
    assert 2.8 <= label_counts.mean() <= 3.2

    # Zipf-like: class frequencies fall with class id, roughly as a power law.
    frequency = np.bincount(np.concatenate([it.video.labels for it in items]), minlength=30)
    assert frequency[:5].sum() > 3 * frequency[-5:].sum()
    slope = np.polyfit(np.log(np.arange(1, 31)), np.log(frequency + 1), 1)[0]
    assert -1.5 < slope < -0.3

    # Topics co-occur: most label pairs of a video share a topic (chance would be about 1 / topics).
    same = [world.topic_of[a] == world.topic_of[b] for it in items for a in it.video.labels for b in it.video.labels if a < b]
    assert np.mean(same) > 0.6 > 2 / world.num_topics

    for it in items:
        content = it.frame_content
        assert set(np.unique(content[content >= 0]).tolist()) == set(it.video.labels.tolist())  # every label visible
        runs = _runs(content)
        assert runs[-1][0] == TITLE and 2 <= runs[-1][1] <= 12  # outro
        assert len(np.unique(it.shot_id)) >= 5  # shots, not one long run
        assert all(np.all(np.diff(np.flatnonzero(it.shot_id == shot)) == 1) for shot in np.unique(it.shot_id))
        assert all(len(np.unique(content[it.shot_id == shot])) == 1 for shot in np.unique(it.shot_id))
        for label in it.brief_labels:  # a brief label is one short shot
            label_runs = [n for value, n in runs if value == label]
            assert sum(label_runs) <= 6
    brief_fraction = sum(len(it.brief_labels) for it in items) / (label_counts - 1).sum()
    assert 0.2 < brief_fraction < 0.4  # brief_p = 0.3 of the non-main labels
    background = np.mean([np.mean(it.frame_content == BACKGROUND) for it in items])
    assert 0.05 < background < 0.3


def test_features_are_quantised_like_youtube8m_and_not_one_frame_separable() -> None:
    world = World(num_classes=12, seed=0)
    items = list(world.generate_range(0, 60))
    rgb = dequantize(np.concatenate([it.video.rgb for it in items]))
    assert 0.4 < rgb.std() < 0.6 and abs(rgb.mean()) < 0.05
    assert np.mean(np.abs(rgb) >= 1.99) < 0.001  # the -2..2 range is rarely clipped
    # Oracle with the true prototypes: one frame is informative but far from decisive.
    back = np.linalg.pinv(world.rgb_projection)
    hits = []
    for it in items:
        latent = dequantize(it.video.rgb) @ back
        nearest = ((latent[:, None, :] - world.prototypes[None]) ** 2).sum(-1).argmin(1)
        shown = it.frame_content >= 0
        hits.append(nearest[shown] == it.frame_content[shown])
    accuracy = np.concatenate(hits).mean()
    assert 1 / 12 * 3 < accuracy < 0.95


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_seed_gives_byte_identical_shards_and_other_seed_differs(tmp_path: Path) -> None:
    data = DataConfig(videos=12, classes=6, seed=7)
    generate_synthetic(tmp_path / "a", data, shards=3, progress=False)
    generate_synthetic(tmp_path / "b", data, shards=3, progress=False)
    generate_synthetic(tmp_path / "c", data.replace(seed=8), shards=3, progress=False)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a")["synth-00000-of-00003.tfrecord"] != _digests(tmp_path / "c")["synth-00000-of-00003.tfrecord"]
    # A video does not depend on the shard count.
    generate_synthetic(tmp_path / "d", data, shards=1, progress=False)
    assert list(read_tfrecords(tmp_path / "a")) == list(read_tfrecords(tmp_path / "d"))


def test_tiny_preset_files_and_manifest(tiny_tfrecords: Path) -> None:
    manifest = json.loads((tiny_tfrecords / "manifest.json").read_text())
    tiny = PRESETS["tiny"].data
    assert manifest["videos"] == tiny.videos and manifest["classes"] == tiny.classes
    videos = list(read_tfrecords(tiny_tfrecords, num_classes=tiny.classes))
    assert len(videos) == tiny.videos
    assert len({v.id for v in videos}) == tiny.videos
    assert sum(v.num_frames for v in videos) == manifest["frames"]
    counts = np.bincount(np.concatenate([v.labels for v in videos]), minlength=tiny.classes)
    assert counts.tolist() == [manifest["label_counts"][str(c)] for c in range(tiny.classes)]
    assert manifest["model"] == json.loads(json.dumps(GenerativeModel().__dict__))


def test_bench_preset_has_full_length_videos() -> None:
    bench = SYNTH_PRESETS["bench"]
    world = World(bench.data.classes, bench.data.seed, GenerativeModel(fixed_frames=bench.fixed_frames))
    assert {world.generate(i).video.num_frames for i in range(3)} == {300}
