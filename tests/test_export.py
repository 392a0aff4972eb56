"""ONNX export: the exported graph reproduces the eager model's logits; bad arguments fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fewframes.config import PRESETS, StudentConfig
from fewframes.errors import BenchmarkError
from fewframes.export import export_frames, export_onnx, onnx_logits
from fewframes.models import build_model, student_model_config

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY.model_config()).eval()


def test_student_export_matches_eager_at_another_batch_size(tmp_path: Path, teacher: torch.nn.Module) -> None:
    torch.manual_seed(1)
    student = build_model(student_model_config(teacher.config, 6), classifier=teacher.classifier).eval()
    student.student_config = StudentConfig(k=6)
    result = export_onnx(student, tmp_path / "student.onnx")
    assert result.n_frames == 6  # the student's k, taken from its StudentConfig
    assert result.max_abs_diff <= 1e-4

    frames = torch.randint(0, 256, (5, 6, teacher.config.feature_dim), dtype=torch.uint8)
    with torch.inference_mode():
        eager = student(frames).logits.numpy()
    exported = onnx_logits(tmp_path / "student.onnx", frames.numpy())
    assert exported.shape == (5, teacher.config.num_classes)
    np.testing.assert_allclose(exported, eager, atol=1e-4)


def test_teacher_export_matches_eager_on_full_length_videos(tmp_path: Path, teacher: torch.nn.Module) -> None:
    result = export_onnx(teacher, tmp_path / "teacher.onnx", n_frames=45)  # 3 blocks, the last one short
    assert result.n_frames == 45 and result.max_abs_diff <= 1e-4
    assert export_frames(teacher) == 300  # a teacher's default: the YouTube-8M maximum
    frames = torch.randint(0, 256, (2, 45, teacher.config.feature_dim), dtype=torch.uint8)
    with torch.inference_mode():
        eager = teacher(frames, torch.ones(2, 45, dtype=torch.bool)).logits.numpy()
    np.testing.assert_allclose(onnx_logits(tmp_path / "teacher.onnx", frames.numpy()), eager, atol=1e-4)


def test_export_rejects_missing_model_file_and_bad_frames(tmp_path: Path, teacher: torch.nn.Module) -> None:
    with pytest.raises(BenchmarkError, match="nope.pt"):
        export_onnx(tmp_path / "nope.pt", tmp_path / "x.onnx")
    with pytest.raises(BenchmarkError, match="--frames"):
        export_onnx(teacher, tmp_path / "x.onnx", n_frames=0)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_exported_model_is_logged_to_mlflow(tmp_path: Path, teacher: torch.nn.Module) -> None:
    from mlflow.tracking import MlflowClient

    from fewframes.export import log_export
    from fewframes.tracking import Tracker

    student = build_model(student_model_config(teacher.config, 6), classifier=teacher.classifier).eval()
    result = export_onnx(student, tmp_path / "student.onnx", n_frames=6)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Tracker.start(uri, "export-test", "export") as tracker:
        log_export(tracker, result)
        run_id = tracker.run_id
    client = MlflowClient(tracking_uri=uri)
    logged = sorted(item.path for item in client.list_artifacts(run_id, "export"))
    assert logged == ["export/student.export.json", "export/student.onnx"]
    assert client.get_run(run_id).data.metrics["export_max_abs_diff"] == pytest.approx(result.max_abs_diff)
    local = client.download_artifacts(run_id, "export/student.onnx", str(tmp_path / "download"))
    frames = torch.randint(0, 256, (2, 6, teacher.config.feature_dim), dtype=torch.uint8)
    with torch.inference_mode():
        np.testing.assert_allclose(onnx_logits(local, frames.numpy()), student(frames).logits.numpy(), atol=1e-4)
