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


def test_export_cli_logs_onnx_and_an_unpickled_logged_model_to_an_mlflow_server(
    tmp_path: Path, teacher: torch.nn.Module, mlflow_server: str
) -> None:
    """``fewframes export --tracking-uri``: the ONNX file, its facts, and the model as an MLflow 3 logged model
    (the serving pyfunc, "model from code": nothing pickled), all loadable and answering as the eager model."""
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from fewframes.cli import main as cli_main
    from fewframes.serving import videos_frame
    from fewframes.training import save_model

    torch.manual_seed(2)
    student = build_model(student_model_config(teacher.config, 6), classifier=teacher.classifier).eval()
    save_model(student, tmp_path / "student.pt", student.config, StudentConfig(k=6), role="student")
    onnx_file = tmp_path / "out" / "student.onnx"
    assert cli_main(["export", "--model", str(tmp_path / "student.pt"), "--out", str(onnx_file),
                     "--tracking-uri", mlflow_server, "--experiment", "export-cli"]) == 0

    client = MlflowClient(tracking_uri=mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("export-cli").experiment_id])
    assert run.info.run_name == "export-student" and run.info.status == "FINISHED"
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "export")) == [
        "export/student.export.json", "export/student.onnx"]
    assert run.data.metrics["export_max_abs_diff"] <= 1e-4

    frames = torch.randint(0, 256, (4, 6, teacher.config.feature_dim), dtype=torch.uint8)
    with torch.inference_mode():
        eager = student(frames).logits.numpy()
    downloaded = client.download_artifacts(run.info.run_id, "export/student.onnx", str(tmp_path / "download"))
    np.testing.assert_allclose(onnx_logits(downloaded, frames.numpy()), eager, atol=1e-4)

    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "student" and logged.source_run_id == run.info.run_id
    folder = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, dst_path=str(tmp_path / "m"))
    mlmodel = (Path(folder) / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel and "signature:" in mlmodel
    assert not list(Path(folder).rglob("*.pkl"))  # nothing pickled
    answer = mlflow.pyfunc.load_model(folder).predict(videos_frame([(f"v{i}", frames[i].numpy()) for i in range(4)]))
    expected = torch.sigmoid(torch.from_numpy(eager))
    for row, video_scores in enumerate(expected):
        top = torch.argsort(video_scores, descending=True)[: len(answer["labels"][row])]
        assert list(answer["labels"][row]) == top.tolist()
        np.testing.assert_allclose(answer["scores"][row], video_scores[top].numpy(), atol=1e-5)

    assert cli_main(["export", "--model", str(tmp_path / "student.pt"), "--out", str(tmp_path / "x.onnx"),
                     "--frames", "0"]) == 2
    assert not (tmp_path / "x.onnx").exists()
