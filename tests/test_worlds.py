"""Checks of the bundled benchmark itself (issue 10, point 6): the generator's worlds.

- ``standard`` is the spec and must not move: the same seed gives the same bytes as before worlds existed.
- ``null``: labels independent of the frames; a trained model can only learn the label prior, so it scores
  about the label-prior GAP (a standard-world model trained the same way scores well above it: the check
  has the power to see a difference).
- ``redundant``: every frame shows every label of its video; a teacher reading every frame and a model
  reading k uniformly spaced frames read the same information, so their test GAPs agree within the paired
  bootstrap interval.

Real training (``fewframes.training``), tiny sizes, one thread: short videos (100-120 frames), 16-cell LSTMs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fewframes.config import ModelConfig, StudentConfig, TrainConfig
from fewframes.data.bounds import information_bounds, label_coverage, label_prior_gap
from fewframes.data.synth import ALL_LABELS, WORLDS, GenerativeModel, World
from fewframes.errors import DataError
from fewframes.metrics import global_average_precision

# The bytes of 6 videos of seed 3 (12 classes), default and short-video models, as the generator wrote them
# before worlds existed (commit 0642218, numpy 2.4.6). Regenerating them must give the same digest.
STANDARD_DIGEST = "9e4f470c142407e7dd89c04651f45f111a577a8805668f51b9caf6a0b52c5c74"
DIGEST_NUMPY = "2.4.6"

CLASSES = 8
VIDEOS = 320
SHORT = dict(min_frames=100, max_frames=120)  # the training tests' short videos (60 can be too short for 5 labels)


def _digest(world_name: str | None) -> str:
    digest = hashlib.sha256()
    for model in (GenerativeModel(), GenerativeModel(min_frames=100, max_frames=140)):
        if world_name is not None:
            model = GenerativeModel(**{**model.__dict__, "world": world_name})
        world = World(12, 3, model)
        for item in world.generate_range(0, 6):
            video = item.video
            for array in (video.labels, video.rgb, video.audio, item.frame_content, item.shot_id, item.brief_labels):
                digest.update(np.ascontiguousarray(array).tobytes())
            digest.update(video.id.encode())
    return digest.hexdigest()


def test_standard_world_is_the_generator_before_worlds():
    default, standard = _digest(None), _digest("standard")
    assert default == standard
    if np.__version__ != DIGEST_NUMPY:
        pytest.skip(f"digest recorded with numpy {DIGEST_NUMPY}; numpy {np.__version__} may draw other bytes")
    assert default == STANDARD_DIGEST


def test_unknown_world_is_a_clear_error():
    with pytest.raises(DataError, match="world must be one of standard, null, redundant"):
        GenerativeModel(world="flat")
    assert WORLDS == ("standard", "null", "redundant")


def test_null_world_keeps_the_labels_and_shows_other_content():
    standard = World(CLASSES, 1, GenerativeModel(**SHORT))
    null = World(CLASSES, 1, GenerativeModel(**SHORT, world="null"))
    unrelated = 0
    for index in range(40):
        s, n = standard.generate(index), null.generate(index)
        np.testing.assert_array_equal(s.video.labels, n.video.labels)  # same label draw
        shown = set(n.frame_content[n.frame_content >= 0].tolist())
        unrelated += not shown.issuperset(n.video.labels.tolist())
        assert set(n.brief_labels.tolist()) <= set(n.video.labels.tolist())
    assert unrelated > 30  # frames rarely happen to show all of the video's labels


def test_redundant_world_every_frame_shows_every_label():
    world = World(CLASSES, 1, GenerativeModel(**SHORT, world="redundant"))
    item = world.generate(0)
    assert np.all(item.frame_content == ALL_LABELS)
    assert label_coverage(item, np.array([5])) == 1.0
    # Frames differ only by observation noise: far closer to each other than two frames of a standard video.
    rgb = item.video.rgb.astype(np.float64)
    standard = World(CLASSES, 1, GenerativeModel(**SHORT)).generate(0).video.rgb.astype(np.float64)
    assert np.abs(rgb[0] - rgb[1]).mean() < 0.5 * np.abs(standard[0] - standard[1]).mean()


def test_label_prior_gap_is_the_gap_of_class_frequencies():
    rng = np.random.default_rng(0)
    train = (rng.random((500, 6)) < np.array([0.6, 0.4, 0.2, 0.1, 0.05, 0.02])).astype(np.float32)
    test = (rng.random((300, 6)) < np.array([0.6, 0.4, 0.2, 0.1, 0.05, 0.02])).astype(np.float32)
    prior = label_prior_gap(train, test)
    # Any per-video shuffle of the prior's ties scores about the same; far from a perfect ranking.
    frequency = train.mean(0)
    shuffled = global_average_precision(frequency + rng.random(test.shape) * 1e-9, test)
    assert abs(prior - shuffled) < 0.02
    assert prior < global_average_precision(test + 0.1 * frequency, test) - 0.2


def test_bounds_of_the_worlds():
    from fewframes.config import DataConfig

    data = DataConfig(videos=120, classes=CLASSES, seed=2, validation_fraction=0.1, test_fraction=0.5)
    standard = information_bounds(data, model=GenerativeModel(**SHORT), ks=(2, 10), selections=("uniform", "last"))
    rows = {(r["selection"], r["k"]): r for r in standard["rows"]}
    assert rows[("all", None)]["label_coverage"] == 1.0
    assert rows[("uniform", 2)]["label_coverage"] < rows[("uniform", 10)]["label_coverage"] < 1.0
    assert rows[("uniform", 2)]["oracle_gap"] < rows[("all", None)]["oracle_gap"]
    assert rows[("last", 2)]["oracle_gap"] < rows[("uniform", 2)]["oracle_gap"]
    assert standard["prior_gap"] < rows[("uniform", 2)]["oracle_gap"]
    redundant = information_bounds(data, model=GenerativeModel(**SHORT, world="redundant"), ks=(2,), selections=("last",))
    assert all(r["label_coverage"] == 1.0 for r in redundant["rows"])
    null = information_bounds(data, model=GenerativeModel(**SHORT, world="null"), ks=(2,), selections=("uniform",))
    assert null["rows"][0]["label_coverage"] < 0.7  # all frames: only labels the decoy draw shares


# -- trained models in the worlds -----------------------------------------------------------------------


def _store(path: Path, world: str, seed: int = 0) -> Path:
    from threadpoolctl import threadpool_limits

    from fewframes.data.split import write_split
    from fewframes.data.store import FrameStoreWriter

    generator = World(CLASSES, seed, GenerativeModel(**SHORT, world=world))
    with threadpool_limits(1, "blas"), FrameStoreWriter(path, num_classes=CLASSES) as writer:
        for index in range(VIDEOS):
            writer.add_video(generator.generate(index).video)
    write_split(path, validation_fraction=0.25, test_fraction=0.35)
    return path


def _test_scores(model: torch.nn.Module, store: Path, strategy: str, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    from fewframes.data.loader import make_loader
    from fewframes.data.split import load_split

    loader = make_loader(store, load_split(store, "test"), strategy=strategy, k=k, batch_size=64, shuffle=False, seed=0)
    scores, labels = [], []
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            scores.append(torch.sigmoid(model(batch.frames, batch.mask).logits).numpy())
            labels.append(batch.labels.numpy())
    return np.concatenate(scores), np.concatenate(labels)


def _train_labels(store: Path) -> np.ndarray:
    from fewframes.data.split import load_split
    from fewframes.data.store import FrameStore

    with FrameStore.open(store) as opened:
        return opened.labels_multi_hot(load_split(store, "train"))


def _bootstrap_difference(scores_a, scores_b, labels, draws: int = 400) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(draws):
        rows = rng.integers(0, len(labels), len(labels))
        differences.append(
            global_average_precision(scores_a[rows], labels[rows]) - global_average_precision(scores_b[rows], labels[rows])
        )
    return float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))


MODEL = ModelConfig(num_classes=CLASSES, hidden_size=16, num_layers=2, block_length=10, dropout=0.2)
TRAIN = TrainConfig(epochs=6, batch_size=16, learning_rate=5e-3, seed=0, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_null_world_models_score_the_label_prior(tmp_path):
    from fewframes.training import train_teacher

    gaps = {}
    for world in ("null", "standard"):
        store = _store(tmp_path / world, world)
        result = train_teacher(store, MODEL, TRAIN, out_dir=tmp_path / f"{world}-teacher", progress=False)
        scores, labels = _test_scores(result.model, store, "all", None)
        prior = label_prior_gap(_train_labels(store), labels)
        gaps[world] = (global_average_precision(scores, labels), prior)
    null_gap, null_prior = gaps["null"]
    standard_gap, standard_prior = gaps["standard"]
    # The same training in the standard world leaves the prior far behind ...
    assert standard_gap > standard_prior + 0.1, gaps
    # ... in the null world it cannot: about the prior (a model may do a little worse, by noise it fits).
    assert null_prior - 0.06 < null_gap < null_prior + 0.03, gaps


@pytest.mark.slow
def test_redundant_world_teacher_ties_uniform_k(tmp_path):
    from fewframes.training import train_baseline, train_teacher

    store = _store(tmp_path / "redundant", "redundant")
    teacher = train_teacher(store, MODEL, TRAIN, out_dir=tmp_path / "teacher", progress=False)
    teacher_scores, labels = _test_scores(teacher.model, store, "all", None)
    k = 6
    baseline = train_baseline(store, StudentConfig(k=k), MODEL, TRAIN, out_dir=tmp_path / "uniform", progress=False)
    uniform_scores, uniform_labels = _test_scores(baseline.model, store, "uniform", k)
    np.testing.assert_array_equal(labels, uniform_labels)
    low, high = _bootstrap_difference(teacher_scores, uniform_scores, labels)
    prior = label_prior_gap(_train_labels(store), labels)
    teacher_gap = global_average_precision(teacher_scores, labels)
    assert teacher_gap > prior + 0.1  # both learned something
    # k frames carry what all frames carry: the difference is 0 within the interval, or small.
    assert low <= 0.0 <= high or max(abs(low), abs(high)) < 0.03, (low, high)


def test_bounds_command_writes_json_and_refuses_an_unknown_preset(tmp_path, capsys):
    import json

    from fewframes.data.bounds import main

    out = tmp_path / "bounds.json"
    assert main(["--preset", "huge", "--out", str(out)]) == 2
    assert "--preset" in capsys.readouterr().out and not out.exists()
    assert main(["--preset", "tiny", "--ks", "6", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["preset"] == "tiny" and written["rows"][0]["selection"] == "all"
    assert {(r["selection"], r["k"]) for r in written["rows"][1:]} == {(s, 6) for s in
                                                                       ("uniform", "random", "first", "middle", "last", "first_middle_last")}


def test_synth_command_writes_the_chosen_world(tmp_path):
    import json

    from fewframes.cli import main

    out = tmp_path / "null"
    assert main(["data", "synth", "--out", str(out), "--videos", "6", "--classes", "5", "--world", "null", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["world"] == "null"
