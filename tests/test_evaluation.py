"""fewframes.evaluation: metrics, per-class AP and encodings of a real tiny model, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fewframes.config import FEATURE_DIM, PRESETS
from fewframes.errors import EvaluationError
from fewframes.evaluation import (
    ENCODINGS_FILE,
    METRICS_FILE,
    PER_CLASS_AP_FILE,
    PREDICTIONS_FILE,
    evaluate_batches,
    read_encodings,
    read_predictions,
)
from fewframes.metrics import (
    average_precision_per_class,
    global_average_precision,
    hit_at_one,
    mean_average_precision,
    precision_at_equal_recall_rate,
)
from fewframes.models import build_model

NUM_CLASSES = PRESETS["tiny"].data.classes


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(PRESETS["tiny"].model_config(block_length=5))


def random_batches(videos: int = 37, batch_size: int = 8, frames: int = 12, seed: int = 0) -> list[SimpleNamespace]:
    """Batches shaped like fewframes.data.loader.Batch: uint8 frames, padding mask, multi-hot labels."""
    rng = np.random.default_rng(seed)
    batches = []
    for start in range(0, videos, batch_size):
        size = min(batch_size, videos - start)
        lengths = rng.integers(3, frames + 1, size=size)
        mask = np.arange(frames)[None, :] < lengths[:, None]
        labels = (rng.random((size, NUM_CLASSES)) < 0.2).astype(np.float32)
        labels[np.arange(size), rng.integers(0, NUM_CLASSES, size=size)] = 1.0
        batches.append(
            SimpleNamespace(
                frames=torch.from_numpy(rng.integers(0, 256, size=(size, frames, FEATURE_DIM), dtype=np.uint8)),
                mask=torch.from_numpy(mask),
                labels=torch.from_numpy(labels),
                video_ids=[f"vid{start + i:03d}" for i in range(size)],
            )
        )
    return batches


def reference_outputs(model: torch.nn.Module, batches: list[SimpleNamespace]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    model.eval()
    with torch.no_grad():
        outputs = [model(b.frames, b.mask) for b in batches]
    scores = torch.sigmoid(torch.cat([o.logits for o in outputs])).numpy()
    encodings = torch.cat([o.encoding for o in outputs]).numpy()
    labels = torch.cat([b.labels for b in batches]).numpy()
    return scores, labels, encodings


def test_evaluate_batches_metrics_files_and_encodings(tmp_path: Path) -> None:
    model = tiny_model()
    model.train()
    batches = random_batches()
    out = tmp_path / "eval"
    result = evaluate_batches(
        model, batches, num_classes=NUM_CLASSES, strategy="uniform", k=6, sample_encodings=20, out_dir=out, progress=False
    )
    assert model.training  # mode restored
    scores, labels, encodings = reference_outputs(model, batches)
    assert result.num_videos == 37
    assert result.gap == pytest.approx(global_average_precision(scores, labels), abs=1e-9)
    assert result.map == pytest.approx(mean_average_precision(scores, labels), abs=1e-9)
    assert result.hit_at_1 == pytest.approx(hit_at_one(scores, labels), abs=1e-9)
    assert result.perr == pytest.approx(precision_at_equal_recall_rate(scores, labels), abs=1e-9)
    assert result["gap"] == result.gap and "map" in result

    assert sorted(p.name for p in out.iterdir()) == sorted([METRICS_FILE, PER_CLASS_AP_FILE, ENCODINGS_FILE, PREDICTIONS_FILE])
    written = json.loads((out / METRICS_FILE).read_text())
    assert written["gap"] == pytest.approx(result.gap) and written["num_videos"] == 37
    assert written["strategy"] == "uniform" and written["k"] == 6 and written["num_classes"] == NUM_CLASSES

    per_class = pq.read_table(out / PER_CLASS_AP_FILE).to_pydict()
    assert per_class["class"] == list(range(NUM_CLASSES))
    expected_ap = average_precision_per_class(scores, labels)
    got_ap = np.array([np.nan if v is None else v for v in per_class["ap"]])
    np.testing.assert_allclose(got_ap, expected_ap, atol=1e-9)
    assert per_class["num_positives"] == (labels > 0).sum(axis=0).tolist()

    ids, sampled_labels, sampled = read_encodings(out / ENCODINGS_FILE)
    assert ids == [f"vid{i:03d}" for i in range(20)]  # the first 20 videos, in order, across batch edges
    np.testing.assert_allclose(sampled, encodings[:20], atol=1e-5)
    assert [row.tolist() for row in sampled_labels] == [np.flatnonzero(row).tolist() for row in labels[:20]]
    schema = pq.read_schema(out / ENCODINGS_FILE)
    encoding_type = schema.field("encoding").type
    assert pa.types.is_list(encoding_type) and encoding_type.value_type == pa.float32()

    # predictions.parquet: every video's top-20 pairs (by descending score) and label ids; GAP and mAP
    # recomputed from it equal the evaluation's.
    predictions = read_predictions(out / PREDICTIONS_FILE)
    assert predictions.video_ids == [f"vid{i:03d}" for i in range(37)]
    top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    assert predictions.classes.tolist() == top.tolist()
    np.testing.assert_array_equal(predictions.scores, np.take_along_axis(scores, top, axis=1))
    assert [row.tolist() for row in predictions.labels] == [np.flatnonzero(row).tolist() for row in labels]
    assert predictions.gap() == pytest.approx(result.gap, abs=1e-12)
    assert predictions.map() == pytest.approx(result.map, abs=1e-12)
    schema = pq.read_schema(out / PREDICTIONS_FILE)
    assert [schema.field(n).type.value_type for n in ("classes", "scores", "labels")] == [pa.int32(), pa.float32(), pa.int32()]


def test_runs_in_inference_mode(tmp_path: Path) -> None:
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_model()

        def forward(self, frames: torch.Tensor, mask: torch.Tensor):
            seen.append((torch.is_inference_mode_enabled(), self.training))
            return self.inner(frames, mask)

    evaluate_batches(Probe(), random_batches(videos=10), num_classes=NUM_CLASSES, sample_encodings=0, progress=False)
    assert seen and all(inference and not training for inference, training in seen)


def test_rewriting_keeps_no_temp_files_and_replaces_old_results(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / METRICS_FILE).write_text('{"gap": -1}')
    evaluate_batches(tiny_model(), random_batches(videos=9), num_classes=NUM_CLASSES, out_dir=out, progress=False)
    assert json.loads((out / METRICS_FILE).read_text())["gap"] >= 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_class_count_mismatch_is_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match=f"store has {NUM_CLASSES + 1} classes"):
        evaluate_batches(tiny_model(), random_batches(videos=4), num_classes=NUM_CLASSES + 1, progress=False)


def test_no_batches_is_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match="no batches"):
        evaluate_batches(tiny_model(), [], num_classes=NUM_CLASSES, progress=False)


# ---------------------------------------------------------------------------------------------------------
# evaluate() on a real frame store, with the real loader and split
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 random videos of 4..30 frames, 12 classes, half of them in the test split."""
    from fewframes.config import AUDIO_DIM, RGB_DIM
    from fewframes.data.split import write_split
    from fewframes.data.store import FrameStoreWriter

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("store") / "tiny"
    with FrameStoreWriter(path, num_classes=NUM_CLASSES) as writer:
        for i in range(40):
            length = int(rng.integers(4, 31))
            labels = rng.choice(NUM_CLASSES, size=int(rng.integers(1, 4)), replace=False)
            rgb = rng.integers(0, 256, size=(length, RGB_DIM), dtype=np.uint8)
            audio = rng.integers(0, 256, size=(length, AUDIO_DIM), dtype=np.uint8)
            writer.add(f"video{i:02d}", labels, rgb, audio)
    write_split(path, validation_fraction=0.1, test_fraction=0.5)
    return path


def direct_scores(model: torch.nn.Module, store, indices: np.ndarray, strategy: str, k: int | None):
    """Scores, labels and encodings video by video, without the loader (an independent path)."""
    from fewframes.data.selection import select_frames

    model.eval()
    scores, encodings = [], []
    with torch.no_grad():
        for index in indices:
            positions, mask = select_frames(strategy, int(store.lengths[index]), k)
            frames = np.zeros((len(positions), FEATURE_DIM), dtype=np.uint8)
            frames[mask] = store.read_frames(index, positions[mask])
            output = model(torch.from_numpy(frames)[None], torch.from_numpy(mask)[None])
            scores.append(torch.sigmoid(output.logits)[0].numpy())
            encodings.append(output.encoding[0].numpy())
    labels = store.labels_multi_hot(indices)
    return np.stack(scores), np.asarray(labels, dtype=np.float32), np.stack(encodings)


@pytest.mark.parametrize(("strategy", "k"), [("all", None), ("uniform", 6)])
def test_evaluate_teacher_and_student_on_a_real_store(tiny_store: Path, tmp_path: Path, strategy: str, k) -> None:
    from fewframes.data.split import load_split
    from fewframes.data.store import FrameStore
    from fewframes.evaluation import evaluate

    model = tiny_model(seed=1)
    out = tmp_path / "evaluation"
    result = evaluate(
        model, tiny_store, "test", strategy=strategy, k=k, batch_size=7, sample_encodings=5, out_dir=out, progress=False
    )
    store = FrameStore.open(tiny_store)
    indices = load_split(tiny_store, "test")
    scores, labels, encodings = direct_scores(model, store, indices, strategy, k)
    assert result.num_videos == len(indices) > 10
    assert result.gap == pytest.approx(global_average_precision(scores, labels), abs=1e-6)
    assert result.map == pytest.approx(mean_average_precision(scores, labels), abs=1e-6)
    assert result.hit_at_1 == pytest.approx(hit_at_one(scores, labels), abs=1e-6)
    assert result.perr == pytest.approx(precision_at_equal_recall_rate(scores, labels), abs=1e-6)
    assert result.encoding_video_ids == [store.video_ids[i] for i in indices[:5]]
    np.testing.assert_allclose(result.encodings, encodings[:5], atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == sorted([METRICS_FILE, PER_CLASS_AP_FILE, ENCODINGS_FILE, PREDICTIONS_FILE])
    written = json.loads((out / METRICS_FILE).read_text())
    assert written["strategy"] == strategy and written["k"] == k and written["split"] == "test"


def test_evaluate_needs_k_for_a_student(tiny_store: Path) -> None:
    from fewframes.evaluation import evaluate

    with pytest.raises(EvaluationError, match="needs k"):
        evaluate(tiny_model(), tiny_store, strategy="uniform", progress=False)
    with pytest.raises(EvaluationError, match="strategy must be one of"):
        evaluate(tiny_model(), tiny_store, strategy="every-other", progress=False)


def test_device_errors_are_clear() -> None:
    from fewframes.evaluation import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EvaluationError, match="device must be"):
        resolve_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(EvaluationError, match="CUDA is not available"):
            evaluate_batches(tiny_model(), random_batches(videos=2), num_classes=NUM_CLASSES, device="cuda", progress=False)


def _write_encodings(path: Path, ids: list[str], labels: list[list[int]], encodings: np.ndarray) -> Path:
    from fewframes.evaluation import EvaluationResult, encodings_table

    result = EvaluationResult(
        gap=0.0, map=0.0, hit_at_1=0.0, perr=0.0, per_class_ap=np.zeros(1), positives_per_class=np.zeros(1, np.int64),
        num_videos=len(ids), split="test", strategy="all", k=None, encoding_video_ids=ids,
        encoding_labels=[np.asarray(v, dtype=np.int64) for v in labels], encodings=encodings.astype(np.float32),
    )  # fmt: skip
    pq.write_table(encodings_table(result), path)
    return path


def test_encoding_tsne_tells_a_matching_student_from_an_unrelated_one(tmp_path: Path) -> None:
    from fewframes.evaluation import encoding_tsne, plot_encoding_tsne

    rng = np.random.default_rng(0)
    videos, size = 40, 16
    classes = rng.integers(0, 6, size=videos)
    centres = rng.normal(scale=4.0, size=(6, size))
    teacher = centres[classes] + rng.normal(size=(videos, size))
    ids = [f"v{i}" for i in range(videos)]
    labels = [[int(c), 7] for c in classes]
    teacher_file = _write_encodings(tmp_path / "teacher.parquet", ids, labels, teacher)
    close = _write_encodings(tmp_path / "close.parquet", ids[::-1], labels[::-1], (teacher + 0.05 * rng.normal(size=teacher.shape))[::-1])
    unrelated = _write_encodings(tmp_path / "far.parquet", ids, labels, rng.normal(scale=4.0, size=teacher.shape))

    matched = encoding_tsne(teacher_file, close, num_classes=5, perplexity=10)
    random_student = encoding_tsne(teacher_file, unrelated, num_classes=5, perplexity=10)
    assert matched.classes[0] == 7 and len(matched.classes) == 5  # label 7 is on every video: the top class
    assert len(matched.video_ids) == videos and matched.teacher_xy.shape == (videos, 2)
    assert matched.mean_cosine > 0.99 > random_student.mean_cosine
    assert matched.pair_distance_ratio < 0.2 < random_student.pair_distance_ratio
    figure = plot_encoding_tsne(matched)
    figure.savefig(tmp_path / "figure3.png")
    assert (tmp_path / "figure3.png").stat().st_size > 0

    wrong_size = _write_encodings(tmp_path / "wrong.parquet", ids, labels, np.zeros((videos, 3)))
    with pytest.raises(EvaluationError, match="share the teacher's E"):
        encoding_tsne(teacher_file, wrong_size)
