"""predict: Kaggle submission format, top-k order, frames read, both sources, atomic output, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fewframes.benchmark import read_batch
from fewframes.cli import main as cli_main
from fewframes.config import FEATURE_DIM, PRESETS, StudentConfig
from fewframes.data.store import FrameStore, FrameStoreWriter
from fewframes.errors import BenchmarkError
from fewframes.models import build_model, student_model_config
from fewframes.predict import CSV_HEADER, format_line, predict, read_predictions, top_k_pairs
from fewframes.training import save_model

TINY = PRESETS["tiny"]
CLASSES = TINY.data.classes


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine videos of 3..80 frames (some shorter than the student's k) with random quantised frames."""
    path = tmp_path_factory.mktemp("predict") / "store"
    rng = np.random.default_rng(0)
    with FrameStoreWriter(path, num_classes=CLASSES) as writer:
        for i, length in enumerate([80, 3, 45, 20, 61, 7, 30, 80, 12]):
            frames = rng.integers(0, 256, (length, FEATURE_DIM), dtype=np.uint8)
            writer.add(f"vid{i}", [i % CLASSES], frames[:, :1024], frames[:, 1024:])
    return path


@pytest.fixture(scope="module")
def student() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(student_model_config(TINY.model_config(), 6)).eval()
    model.student_config = StudentConfig(k=6)
    return model


def test_top_k_pairs_sorted_by_score_ties_by_label() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3], dtype=np.float32)
    assert [label for label, _ in top_k_pairs(scores, 3)] == [1, 3, 2]
    assert [label for label, _ in top_k_pairs(scores, 10)] == [1, 3, 2, 4, 0]  # top_k above the class count
    assert format_line("v1", scores, 2) == "v1,1 0.900000 3 0.900000"
    with pytest.raises(BenchmarkError, match="comma"):
        format_line("a,b", scores, 2)


def test_predict_from_store_writes_kaggle_format_with_the_models_scores(
    tmp_path: Path, store_path: Path, student: torch.nn.Module
) -> None:
    out = tmp_path / "predictions.csv"
    assert predict(student, store_path, out, top_k=5, batch_size=4, progress=False) == 9
    lines = out.read_text().splitlines()
    assert lines[0] == CSV_HEADER == "VideoId,LabelConfidencePairs"
    predictions = read_predictions(out)
    store = FrameStore.open(store_path)
    assert list(predictions) == store.video_ids

    # The same scores as the model on the same k frames: the student's uniform frames, short videos masked.
    frames, mask = read_batch(store, range(len(store)), StudentConfig(k=6), np.random.default_rng(0))
    with torch.inference_mode():
        scores = torch.sigmoid(student(torch.from_numpy(frames), torch.from_numpy(mask)).logits).numpy()
    for row, video_id in enumerate(store.video_ids):
        pairs = predictions[video_id]
        assert len(pairs) == 5
        assert [s for _, s in pairs] == sorted((s for _, s in pairs), reverse=True)
        expected = np.argsort(-scores[row], kind="stable")[:5]
        assert [label for label, _ in pairs] == expected.tolist()
        np.testing.assert_allclose([s for _, s in pairs], scores[row, expected], atol=1e-6)


def test_student_reads_only_its_frames(tmp_path: Path, store_path: Path, student: torch.nn.Module) -> None:
    store = FrameStore.open(store_path)
    frames, mask = read_batch(store, range(len(store)), StudentConfig(k=6), np.random.default_rng(0))
    assert store.bytes_read == sum(min(int(n), 6) for n in store.lengths) * FEATURE_DIM
    assert frames.shape == (len(store), 6, FEATURE_DIM) and mask is not None  # the 3-frame video is padded
    assert mask.sum(axis=1).tolist() == [min(int(n), 6) for n in store.lengths]


def test_predict_reads_k_frames_for_a_student_and_all_for_a_teacher(
    tmp_path: Path, store_path: Path, student: torch.nn.Module
) -> None:
    """predict's own data path, bytes counted on the open store it is given."""
    student_store = FrameStore.open(store_path)
    assert predict(student, student_store, tmp_path / "student.csv", top_k=3, batch_size=4, progress=False) == 9
    assert student_store.bytes_read == sum(min(int(n), 6) for n in student_store.lengths) * FEATURE_DIM

    torch.manual_seed(0)
    teacher = build_model(TINY.model_config()).eval()  # no StudentConfig: reads every frame
    teacher_store = FrameStore.open(store_path)
    predict(teacher, teacher_store, tmp_path / "teacher.csv", top_k=3, batch_size=4, progress=False)
    assert teacher_store.bytes_read == int(teacher_store.lengths.sum()) * FEATURE_DIM
    assert student_store.bytes_read < teacher_store.bytes_read / 4
    assert read_predictions(tmp_path / "student.csv").keys() == read_predictions(tmp_path / "teacher.csv").keys()


def test_predict_from_tfrecords_equals_predict_from_a_store(tmp_path: Path, student: torch.nn.Module) -> None:
    from fewframes.data.yt8m import Video, write_tfrecord

    rng = np.random.default_rng(1)
    videos = [
        Video(f"tf{i}", np.array([i % CLASSES]), rng.integers(0, 256, (n, 1024), dtype=np.uint8),
              rng.integers(0, 256, (n, 128), dtype=np.uint8))
        for i, n in enumerate([40, 4, 300, 17])
    ]
    write_tfrecord(tmp_path / "shard-0.tfrecord", videos)
    with FrameStoreWriter(tmp_path / "store", num_classes=CLASSES) as writer:
        for video in videos:
            writer.add_video(video)
    from_tfrecords = predict(student, tmp_path, tmp_path / "tf.csv", top_k=20, batch_size=3, progress=False)
    predict(student, tmp_path / "store", tmp_path / "store.csv", top_k=20, batch_size=3, progress=False)
    assert from_tfrecords == 4
    tf_predictions = read_predictions(tmp_path / "tf.csv")
    assert list(tf_predictions) == [v.id for v in videos]
    assert all(len(pairs) == CLASSES for pairs in tf_predictions.values())  # top 20 of 12 classes: all 12
    assert tf_predictions == read_predictions(tmp_path / "store.csv")


def test_failed_predict_leaves_existing_output_untouched(tmp_path: Path, student: torch.nn.Module) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("previous\n")
    with pytest.raises(Exception, match="no-such-store"):
        predict(student, tmp_path / "no-such-store", out, progress=False)
    with pytest.raises(BenchmarkError, match="--top-k"):
        predict(student, tmp_path, out, top_k=0, progress=False)
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temp file left behind


def test_predict_cli_with_a_saved_student(tmp_path: Path, store_path: Path, student: torch.nn.Module) -> None:
    model_file = tmp_path / "student.pt"
    save_model(student, model_file, student.config, StudentConfig(k=6), role="student")
    out = tmp_path / "cli.csv"
    code = cli_main(["predict", "--model", str(model_file), "--src", str(store_path), "--out", str(out),
                     "--top-k", "3", "--batch", "5"])
    assert code == 0
    predictions = read_predictions(out)
    assert len(predictions) == 9 and all(len(pairs) == 3 for pairs in predictions.values())
    assert cli_main(["predict", "--model", str(tmp_path / "missing.pt"), "--src", str(store_path),
                     "--out", str(out)]) == 2
