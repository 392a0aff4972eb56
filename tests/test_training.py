"""Every training mode learns on a tiny synthetic store: validation GAP rises above its first epoch.

A real frame store (STORE's writer, synthetic videos), the real models, losses, loader and metrics; CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewframes.config import ConfigError, StudentConfig
from fewframes.errors import TrainingError
from fewframes.training import load_model, train_baseline, train_parallel, train_student, train_teacher
from fewframes.training.__main__ import main as training_main
from training_helpers import build_tiny_store, tiny_model_config, tiny_train_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("training") / "store")


@pytest.fixture(scope="module")
def teacher(store: Path, tmp_path_factory: pytest.TempPathFactory):
    return train_teacher(
        store, tiny_model_config(), tiny_train_config(), out_dir=tmp_path_factory.mktemp("teacher"), progress=False
    )


def assert_learns(result) -> None:
    """Validation GAP after training beats the first epoch's, and the best epoch is the one saved."""
    gaps = [record["val_gap"] for record in result.history]
    assert gaps[-1] > gaps[0], gaps
    assert result.best_val_gap == max(gaps)
    assert result.history[result.best_epoch - 1]["val_gap"] == result.best_val_gap
    saved = torch.load(result.model_path, weights_only=True)
    assert saved["metrics"]["val_gap"] == result.best_val_gap


def test_teacher_learns_and_its_best_model_reloads(teacher, store: Path) -> None:
    assert_learns(teacher)
    assert [record["epoch"] for record in teacher.history] == [1, 2, 3]
    assert teacher.history[1]["lr"] == pytest.approx(teacher.history[0]["lr"] * 0.95)
    assert all(record["train_loss"] > 0 for record in teacher.history)
    reloaded = load_model(teacher.model_path)
    assert reloaded.student_config is None and reloaded.config.block_length == 10
    frames = torch.randint(0, 256, (2, 30, 1152), dtype=torch.uint8)
    teacher.model.eval()
    torch.testing.assert_close(reloaded(frames).logits, teacher.model(frames).logits)
    out_dir = teacher.model_path.parent
    assert (out_dir / "result.json").is_file() and any((out_dir / "checkpoints").glob("ckpt-*.pt"))


@pytest.mark.parametrize("loss", ["rep", "rep_ce", "rep_pred_ce"])
def test_serial_student_learns_from_the_frozen_teacher(teacher, store: Path, tmp_path: Path, loss: str) -> None:
    teacher_weights = {name: value.clone() for name, value in teacher.model.state_dict().items()}
    result = train_student(
        store, teacher.model_path, StudentConfig(k=6, loss=loss), tiny_train_config(), out_dir=tmp_path,
        progress=False,
    )
    assert_learns(result)
    history = result.history
    if loss == "rep":  # stage 1 on L_rep alone, then L_CE fine-tuning with the teacher's classifier plugged in
        assert [record["stage"] for record in history] == ["rep", "ce", "ce"]
        assert "train_ce" not in history[0] and "train_rep" not in history[1]
    else:
        assert all("train_rep" in record and "train_ce" in record for record in history)
        assert all(("train_pred" in record) == (loss == "rep_pred_ce") for record in history)
    student = load_model(result.model_path)
    assert student.student_config.k == 6 and student.config.block_length == 3
    for name, value in teacher.model.state_dict().items():  # the teacher stayed frozen
        assert torch.equal(value, teacher_weights[name]), name


def test_warm_start_control_starts_from_the_teacher_classifier_and_trains_with_ce_alone(
    teacher, store: Path, tmp_path: Path
) -> None:
    control = StudentConfig(k=6, loss="ce")
    # With a learning rate of 1e-30 nothing moves (steps far below float32's resolution of the weights), so the
    # saved student shows where it started.
    start = train_student(store, teacher.model_path, control, tiny_train_config(epochs=1, learning_rate=1e-30),
                          out_dir=tmp_path / "start", progress=False)
    start_weights = torch.load(start.model_path, weights_only=True)["state_dict"]
    for name, value in teacher.model.classifier.state_dict().items():
        assert torch.equal(start_weights[f"classifier.{name}"], value), name
    result = train_student(store, teacher.model_path, control, tiny_train_config(), out_dir=tmp_path / "trained",
                           progress=False)
    assert_learns(result)
    assert all(record["stage"] == "ce" and "train_ce" in record for record in result.history)
    assert not any(key.startswith(("train_rep", "train_pred")) for record in result.history for key in record)
    assert load_model(result.model_path).student_config.loss == "ce"
    with pytest.raises(ConfigError, match="warm-start control"):
        StudentConfig(k=6, loss="ce", mode="parallel")


def test_intermediate_matching_student_learns(teacher, store: Path, tmp_path: Path) -> None:
    config = StudentConfig(k=6, loss="rep_ce", matching="intermediate")
    result = train_student(store, teacher.model_path, config, tiny_train_config(), out_dir=tmp_path, progress=False)
    assert_learns(result)
    assert all(record["train_rep_intermediate"] > 0 for record in result.history)


def test_parallel_trains_teacher_and_student_with_one_classifier(store: Path, tmp_path: Path) -> None:
    # 5 epochs, not 3: the parallel student matches a teacher that is itself still near chance in the first
    # epochs (7 optimizer steps an epoch here), so after 3 epochs its GAP is within the epoch-to-epoch noise
    # of 49 validation videos (seed 0: 0.590, 0.579, 0.584); it learns in epochs 4-5 (0.602, 0.623).
    result = train_parallel(
        store, tiny_model_config(), StudentConfig(k=6, loss="rep_pred_ce"), tiny_train_config(epochs=5),
        out_dir=tmp_path, progress=False,
    )
    assert_learns(result.student)
    assert_learns(result.teacher)
    assert all({"teacher_val_gap", "val_gap", "train_teacher_ce", "train_student_rep"} <= set(r) for r in result.history)
    assert [r["val_gap"] for r in result.teacher.history] == [r["teacher_val_gap"] for r in result.history]
    # One classifier module served both models: the last epoch's weights agree in the two checkpoints.
    final = torch.load(sorted((tmp_path / "checkpoints").glob("ckpt-*.pt"))[-1], weights_only=True)["models"]
    for name in ("classifier.linear.weight", "classifier.linear.bias"):
        assert torch.equal(final["teacher"][name], final["student"][name])


def test_baseline_learns_from_k_frames_without_teacher(store: Path, tmp_path: Path) -> None:
    config = StudentConfig(k=6, frame_selection="first_middle_last")
    result = train_baseline(store, config, tiny_model_config(), tiny_train_config(), out_dir=tmp_path, progress=False)
    assert_learns(result)
    assert load_model(result.model_path).student_config.frame_selection == "first_middle_last"


def test_finished_run_is_returned_without_training_and_other_settings_are_refused(teacher, store: Path) -> None:
    out_dir = teacher.model_path.parent
    again = train_teacher(store, tiny_model_config(), tiny_train_config(), out_dir=out_dir, progress=False)
    assert again.history == teacher.history and again.best_epoch == teacher.best_epoch
    with pytest.raises(TrainingError, match="learning_rate|train_config"):
        train_teacher(store, tiny_model_config(), tiny_train_config(learning_rate=0.1), out_dir=out_dir, progress=False)


def test_bad_arguments_are_named(store: Path, teacher, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="num_classes"):
        train_teacher(store, tiny_model_config(num_classes=5), tiny_train_config(), out_dir=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="model_config must be a ModelConfig"):
        train_parallel(store, StudentConfig(k=6), tiny_model_config(), tiny_train_config(), out_dir=tmp_path)
    with pytest.raises(TrainingError, match="rep_stage_epochs"):
        train_student(store, teacher.model_path, StudentConfig(k=6, loss="rep"), tiny_train_config(epochs=1),
                      out_dir=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="missing.pt"):
        train_student(store, tmp_path / "missing.pt", StudentConfig(k=6), tiny_train_config(), out_dir=tmp_path)


def test_entry_point_reports_bad_json_in_one_line(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = training_main(["teacher", "--store", str(store), "--out", str(tmp_path), "--model-config", "{num_classes"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fewframes.training: error: --model-config is not valid JSON") and "\n" not in err
    code = training_main(["student", "--store", str(store), "--out", str(tmp_path), "--student-config", json.dumps({"k": 6})])
    assert code == 2 and "--teacher" in capsys.readouterr().err


def test_cuda_settings_are_decided_from_the_device_without_needing_a_gpu() -> None:
    """What a CUDA device gets (bf16 autocast, loss scaling, pinned host memory for non-blocking copies)
    is decided from ``DistContext.device`` alone; the CPU gets float32, no scaling, no pinning."""
    from fewframes.distributed import DistContext
    from fewframes.training.data import _common_loader_args
    from fewframes.training.loop import autocast_for, make_grad_scaler, mixed_precision_dtype

    cpu, cuda = DistContext(device=torch.device("cpu")), DistContext(device=torch.device("cuda", 0))
    config = tiny_train_config()
    assert mixed_precision_dtype(cuda, config) is torch.bfloat16
    assert mixed_precision_dtype(cuda, tiny_train_config(mixed_precision=False)) is None
    assert mixed_precision_dtype(cpu, config) is None
    assert _common_loader_args(config, cuda)["pin_memory"] and not _common_loader_args(config, cpu)["pin_memory"]
    assert not make_grad_scaler(cpu, config).is_enabled()
    with autocast_for(cpu, config):  # CPU: no autocast at all
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_teacher_trains_on_cuda_with_mixed_precision_and_reloads_on_cpu(store: Path, tmp_path: Path) -> None:
    result = train_teacher(store, tiny_model_config(), tiny_train_config(device="cuda", epochs=2), out_dir=tmp_path,
                           progress=False)
    assert all(torch.isfinite(torch.tensor(record["train_loss"])) for record in result.history)
    checkpoint = torch.load(sorted((tmp_path / "checkpoints").glob("ckpt-*.pt"))[-1], weights_only=True)
    assert checkpoint["scaler"]  # loss scaling was on (cuDNN's LSTM runs in float16 under autocast)
    reloaded = load_model(result.model_path)
    frames = torch.randint(0, 256, (2, 30, 1152), dtype=torch.uint8)
    assert torch.isfinite(reloaded(frames).logits).all()
