"""DistributedDataParallel with gloo: ``torchrun --nproc_per_node 2`` on the CPU trains what one process
trains with the same seed and the same global batch.

Both runs are real ``python -m fewframes.training`` processes (one intra-op thread each) on a real frame
store: 48 training videos, global batch 8 (4 per rank), 2 epochs = 12 optimizer steps; dropout 0.

Why these tolerances. The two runs see the same videos in the same global batches (the loader deals each
global batch to the ranks), start from the same weights and take the same optimizer steps; with dropout 0
nothing random differs (with dropout, rank 1 draws its own masks, so the runs would differ by design).
What remains is float32 rounding: a batch mean over 8 videos versus the all-reduced average of two means
over 4, and LSTMs run on batches of other shapes. That is ~1e-7 relative per step; Adam divides by the
root of tiny second moments, which amplifies it on the weights (measured after 12 steps, weights up to
1.06: parallel teacher 3.7e-6, parallel student 1.6e-5; a two-stage serial (a) student, 6.2e-6). Hence:
- weights: absolute 1e-4 (6x the largest difference measured; with DDP's gradient averaging switched
  off, i.e. each rank training on its own half, the teacher's weights differ by 7e-2);
- per-epoch training losses: relative 1e-5 (measured <= 2e-7);
- validation GAP and mAP: 1e-6. They are rank statistics of scores that differ by ~1e-6, so they come
  out equal unless two of the 120 validation predictions are within that of each other (then one swap
  would move GAP by ~0.02, not a little: a looser tolerance would not help).
The same figures are in docs/method.md (Training).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training_helpers import (
    SMALL_BATCH,
    SMALL_VIDEOS,
    build_tiny_store,
    run_training_process,
    tiny_model_config,
    training_command,
)

WEIGHTS_ATOL = 1e-4
LOSS_RTOL = 1e-5
METRIC_ATOL = 1e-6


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("ddp") / "store", videos=SMALL_VIDEOS)


def train_config() -> dict:
    return {"epochs": 2, "batch_size": SMALL_BATCH, "learning_rate": 5e-3, "seed": 0, "device": "cpu"}


def model_config() -> dict:
    return tiny_model_config(dropout=0.0).to_dict()


def single_and_two_process_runs(mode: str, store: Path, tmp_path: Path, **configs) -> tuple[Path, Path]:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_training_process(training_command(mode, store, single, **configs))
    run_training_process(training_command(mode, store, ddp, processes=2, **configs))
    assert json.loads((ddp / "result.json").read_text())["signature"]["world_size"] == 2
    return single, ddp


def assert_match(single: Path, ddp: Path, model_files: list[str]) -> None:
    one = json.loads((single / "result.json").read_text())
    two = json.loads((ddp / "result.json").read_text())
    assert len(one["history"]) == len(two["history"]) == 2
    for record_one, record_two in zip(one["history"], two["history"]):
        assert record_one.keys() == record_two.keys()
        for key, value in record_one.items():
            if key.startswith("train_"):
                assert record_two[key] == pytest.approx(value, rel=LOSS_RTOL), key
            elif key.endswith(("val_gap", "val_map")):
                assert record_two[key] == pytest.approx(value, abs=METRIC_ATOL), key
            else:
                assert record_two[key] == value, key
    assert {name: best["epoch"] for name, best in one["best"].items()} == {
        name: best["epoch"] for name, best in two["best"].items()
    }
    for model_file in model_files:
        weights_one = torch.load(single / model_file, weights_only=True)["state_dict"]
        weights_two = torch.load(ddp / model_file, weights_only=True)["state_dict"]
        for name, tensor in weights_one.items():
            torch.testing.assert_close(weights_two[name], tensor, atol=WEIGHTS_ATOL, rtol=0, msg=name)


def test_parallel_training_on_two_gloo_processes_matches_one_process(store: Path, tmp_path: Path) -> None:
    single, ddp = single_and_two_process_runs(
        "parallel", store, tmp_path, model_config=model_config(), train_config=train_config(),
        student_config={"k": 6, "loss": "rep_pred_ce"},
    )
    assert_match(single, ddp, ["teacher.pt", "student.pt"])


def test_serial_student_from_cached_teacher_outputs_on_two_gloo_processes_matches_one_process(
    store: Path, tmp_path: Path
) -> None:
    """Under torchrun rank 0 builds the teacher-outputs cache beside the teacher file while rank 1 waits, then
    both read it; each run gets its own copy of the teacher, so each builds its own cache."""
    import shutil

    from fewframes.config import TrainConfig
    from fewframes.training import train_teacher
    from fewframes.training.teacher_cache import CACHE_PREFIX

    teacher = train_teacher(store, tiny_model_config(dropout=0.0), TrainConfig.from_dict({**train_config(), "epochs": 1}),
                            out_dir=tmp_path / "teacher", progress=False)
    copies = {}
    for name in ("single", "ddp"):
        (tmp_path / f"teacher-{name}").mkdir()
        copies[name] = str(shutil.copy(teacher.model_path, tmp_path / f"teacher-{name}" / "teacher.pt"))
    student = {"k": 6, "loss": "rep_pred_ce"}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_training_process(training_command("student", store, single, teacher=copies["single"],
                                          student_config=student, train_config=train_config()))
    run_training_process(training_command("student", store, ddp, processes=2, teacher=copies["ddp"],
                                          student_config=student, train_config=train_config()))
    for name in ("single", "ddp"):
        assert len(list((tmp_path / f"teacher-{name}").glob(f"{CACHE_PREFIX}*.pt"))) == 1
    assert_match(single, ddp, ["student.pt"])


# ----------------------------------------------------------------------------------------------------------
# The pipeline's training step on several processes (issue 7's multi-GPU path, with gloo on the CPU)


def test_teacher_step_trains_on_two_gloo_processes_and_its_model_loads_and_evaluates(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_server: str
) -> None:
    """``train_teacher_step`` launches torchrun itself (``FEWFRAMES_CPU_PROCESSES=2``: 2 gloo processes, the
    CPU stand-in for one process per GPU); rank 0 logs into the step's MLflow run."""
    import mlflow

    from fewframes.components.steps import CPU_PROCESSES_ENV, Sizes, read_model_info, train_teacher_step
    from fewframes.evaluation import evaluate
    from fewframes.runs import TrackingContext, start_parent_run
    from fewframes.training import load_model

    monkeypatch.setenv(CPU_PROCESSES_ENV, "2")
    experiment = f"ddp-step-{tmp_path.name}"
    context = TrackingContext(uri=mlflow_server, experiment=experiment, pipeline_run_id="ddp-test", pipeline="distill")
    context = TrackingContext(mlflow_server, experiment, start_parent_run(context, "pipeline"), "ddp-test", "distill")
    sizes = Sizes(hidden_size=16, num_layers=2, teacher_block_length=10, max_epochs=1, batch_size=SMALL_BATCH,
                  learning_rate=5e-3, seed=0)
    model_dir = tmp_path / "teacher"
    step = train_teacher_step(str(store), str(model_dir), sizes, context)

    assert json.loads((model_dir / "result.json").read_text())["signature"]["world_size"] == 2
    info = read_model_info(model_dir, "teacher")
    model = load_model(model_dir / info["model_file"])
    assert model.student_config is None and model.config.hidden_size == 16
    # Evaluated on its own (another batch size, one process), the model scores what training reported.
    evaluated = evaluate(model, store, "validation", batch_size=16, progress=False)
    assert evaluated.gap == pytest.approx(step.metrics["best_val_gap"], abs=METRIC_ATOL)

    run = mlflow.MlflowClient(tracking_uri=mlflow_server).get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    # The model's own run: top-level (one row per model in the runs table), tied to the pipeline run by a tag.
    assert run.data.tags["fewframes.parent_run_id"] == context.parent_run_id
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["role"] == "teacher" and run.data.params["hidden_size"] == "16"
    assert {"train_loss", "val_gap", "best_val_gap"} <= set(run.data.metrics)  # rank 0's and the step's
    (output,) = run.outputs.model_outputs  # rank 0 logged the model as an MLflow 3 logged model of this run
    assert mlflow.MlflowClient(tracking_uri=mlflow_server).get_logged_model(output.model_id).name == "teacher"
    assert any(d.dataset.name.endswith(":train") for d in run.inputs.dataset_inputs)  # the step's train split


def test_gpu_count_without_visible_gpus_is_a_one_line_error(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fewframes.components.steps import GPUS_ENV, Sizes, train_teacher_step
    from fewframes.errors import PipelineError
    from fewframes.runs import TrackingContext

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    monkeypatch.setenv(GPUS_ENV, "2")
    sizes = Sizes(hidden_size=16, num_layers=2, teacher_block_length=10, max_epochs=1, batch_size=8, learning_rate=5e-3,
                  seed=0)
    with pytest.raises(PipelineError, match=r"^FEWFRAMES_GPUS=2 but this task sees \d CUDA GPU\(s\)$"):
        train_teacher_step(str(store), str(tmp_path / "teacher"), sizes, TrackingContext())
    assert not (tmp_path / "teacher").exists()
