"""train-teacher, distill-student, train-baseline: one model each, in this process or under torchrun."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewframes.config import ModelConfig, StudentConfig, TrainConfig, env_number
from fewframes.errors import PipelineError
from fewframes.runs import TAG_MODEL_KEY, TAG_ROLE, TrackingContext, step_run

from .common import (
    StepResult,
    _limit_threads,
    _write_model_info,
    model_key,
    model_params,
    read_model_info,
    reports_errors,
)


@dataclass(frozen=True)
class Sizes:
    """The model and training settings every training step receives as pipeline parameters."""

    hidden_size: int
    num_layers: int
    teacher_block_length: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    device: str = "auto"

    def model_config(self, num_classes: int) -> ModelConfig:
        return ModelConfig(
            num_classes=num_classes,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            block_length=self.teacher_block_length,
        )

    def train_config(self, train_fraction: float = 1.0) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            device=self.device,
            train_fraction=train_fraction,
        )

    def params(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "teacher_block_length": self.teacher_block_length,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }


def _training_metrics(result: Any) -> dict[str, float]:
    return {"best_val_gap": float(result.best_val_gap), "best_epoch": float(result.best_epoch)}


# Set on GPU tasks by the pipeline (``fewframes.pipelines.dag.apply_gpu``): with more than one GPU the
# training steps launch ``torchrun`` with one process per GPU (NCCL).
GPUS_ENV = "FEWFRAMES_GPUS"
# The CPU counterpart, set by hand (tests, CPU-only pods): this many gloo processes on the CPU. Explicit,
# so a GPU task whose GPUs are not visible fails instead of quietly training on its CPU.
CPU_PROCESSES_ENV = "FEWFRAMES_CPU_PROCESSES"


@dataclass
class _Trained:
    """The facts of a training run the steps use (a TrainResult, or the summary torchrun printed)."""

    best_epoch: int
    best_val_gap: float
    model_path: str


@dataclass(frozen=True)
class TrainingLaunch:
    """How a training step runs: ``processes`` > 1 means under torchrun, on ``device``."""

    processes: int
    device: str | None  # "cuda" or "cpu" for torchrun's processes; None: the step's own TrainConfig.device


def training_launch() -> TrainingLaunch:
    """One process per GPU of the task (``FEWFRAMES_GPUS``), or ``FEWFRAMES_CPU_PROCESSES`` gloo processes
    on the CPU; one process (in this one) otherwise."""
    gpus, cpu_processes = env_number(GPUS_ENV, 0, PipelineError), env_number(CPU_PROCESSES_ENV, 0, PipelineError)
    if gpus and cpu_processes:
        raise PipelineError(f"set {GPUS_ENV} or {CPU_PROCESSES_ENV}, not both")
    if gpus > 1:
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible < gpus:
            raise PipelineError(f"{GPUS_ENV}={gpus} but this task sees {visible} CUDA GPU(s)")
        return TrainingLaunch(gpus, "cuda")
    if cpu_processes > 1:
        return TrainingLaunch(cpu_processes, "cpu")
    return TrainingLaunch(1, None)


def _torchrun_training(
    mode: str,
    launch: TrainingLaunch,
    store_path: str,
    out_dir: str,
    configs: dict[str, dict[str, Any]],
    tracking: TrackingContext,
    run_name: str,
    run_id: str,
    extra: list[str],
) -> _Trained:
    """Train under ``torchrun --standalone --nproc_per_node=N -m fewframes.training``; rank 0 logs into the
    step's MLflow run ``run_id`` (created by the caller, so params, tags and status are the same as
    in-process training)."""
    import subprocess
    import sys

    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={launch.processes}",
        "-m", "fewframes.training", mode, "--store", store_path, "--out", out_dir, "--no-progress",
        "--run-name", run_name, *extra,
    ]
    for flag, values in configs.items():
        command += [flag, json.dumps(values)]
    if tracking.enabled and run_id:
        command += ["--tracking-uri", tracking.uri, "--experiment", tracking.experiment,
                    "--parent-run-id", tracking.parent_run_id, "--run-id", run_id]
    where = f"{launch.processes} {'GPUs' if launch.device == 'cuda' else 'CPU processes'}"
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        lines = (finished.stderr or finished.stdout).strip().splitlines()
        # Prefer the entry point's own one-line error over torchrun's traceback summary.
        ours = [line for line in lines if line.startswith("fewframes.training: error:")]
        cause = ours[0] if ours else (lines[-1] if lines else f"exit code {finished.returncode}")
        raise PipelineError(f"torchrun {mode} on {where} failed: {cause}")
    try:
        summary = json.loads(finished.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise PipelineError(f"torchrun {mode} on {where} printed no result summary") from None
    if mode == "parallel":
        summary = summary["student"]
    return _Trained(int(summary["best_epoch"]), float(summary["best_val_gap"]), str(summary["model_path"]))


def _train(
    step: str,
    mode: str,
    run_name: str,
    store_path: str,
    model_dir: str,
    configs: dict[str, Any],
    params: dict[str, Any],
    tags: dict[str, str],
    tracking: TrackingContext,
    train: Callable[[Any], Any],
    extra: list[str] | None = None,
) -> tuple[Any, str, dict[str, float]]:
    """Run one training step in this process, or under torchrun (``training_launch``); returns the result,
    its MLflow run id and the metrics logged. Either way the step's MLflow child run is created here."""
    launch = training_launch()
    from fewframes.run_results import log_split

    params = {**params, "family": configs["model"].family}  # a model's run says which encoder it has
    with step_run(tracking, step, run_name, params=params, tags=tags, system_metrics=True) as tracker:
        run_id = getattr(tracker, "run_id", "") or ""
        train_config = configs["train"]
        log_split(tracker, store_path, "train", "training", train_fraction=train_config.train_fraction,
                  seed=train_config.seed)
        if launch.processes > 1:
            train_config = configs["train"]
            if launch.device is not None:
                train_config = train_config.replace(device=launch.device)
            flags = {"--model-config": configs["model"].to_dict(), "--train-config": train_config.to_dict()}
            if configs.get("student") is not None:
                flags["--student-config"] = configs["student"].to_dict()
            result = _torchrun_training(mode, launch, store_path, model_dir, flags, tracking, run_name, run_id,
                                        extra or [])
        else:
            result = train(tracker)
        metrics = _training_metrics(result)
        tracker.log_metrics(metrics)
        return result, run_id, metrics


@reports_errors("train-teacher")
def train_teacher_step(store_path: str, model_dir: str, sizes: Sizes, tracking: TrackingContext) -> StepResult:
    """Train the teacher on all frames (L_CE); best epoch by validation GAP."""
    from fewframes.data.store import FrameStore
    from fewframes.training import train_teacher

    _limit_threads()
    store = FrameStore.open(store_path)
    out = Path(model_dir)
    model_config, train_config = sizes.model_config(store.num_classes), sizes.train_config()
    described = model_params("teacher", frame_selection="all", seed=sizes.seed)
    result, run_id, metrics = _train(
        "train-teacher", "teacher", "train-teacher", store_path, model_dir,
        {"model": model_config, "train": train_config},
        {**described, **sizes.params()}, {TAG_ROLE: "teacher", TAG_MODEL_KEY: "teacher"}, tracking,
        lambda tracker: train_teacher(store, model_config, train_config, out_dir=out, tracker=tracker),
    )
    info = _write_model_info(
        out, Path(result.model_path), {**described, "model_key": "teacher", "mlflow_run_id": run_id}
    )
    return StepResult(metrics=metrics, metadata=info)


@reports_errors("distill-student")
def distill_student_step(
    store_path: str,
    teacher_dir: str,
    model_dir: str,
    *,
    k: int,
    loss: str,
    mode: str,
    matching: str,
    train_fraction: float,
    sizes: Sizes,
    tracking: TrackingContext,
    repeat: bool = False,
) -> StepResult:
    """Distil a k-frame student from the teacher artifact (serial) or alongside a new teacher (parallel)."""
    from fewframes.data.store import FrameStore
    from fewframes.training import train_parallel, train_student

    _limit_threads()
    teacher_info = read_model_info(teacher_dir, "teacher")
    teacher_path = Path(teacher_dir) / teacher_info["model_file"]
    teacher_run_id = teacher_info.get("mlflow_run_id", "")
    k = int(k)
    student_config = StudentConfig(k=k, frame_selection="uniform", loss=loss, mode=mode, matching=matching)
    store = FrameStore.open(store_path)
    model_config = sizes.model_config(store.num_classes)
    train_config = sizes.train_config(float(train_fraction))
    key = model_key("student", k, loss=loss, mode=mode, matching=matching, train_fraction=float(train_fraction),
                    seed=sizes.seed, repeat=repeat)
    described = model_params("student", k, "uniform", loss, mode, matching, train_fraction,
                             teacher_run_id if mode == "serial" else "", seed=sizes.seed)
    out = Path(model_dir)

    def train(tracker: Any) -> Any:
        if mode == "parallel":
            return train_parallel(store, model_config, student_config, train_config, out_dir=out, tracker=tracker).student
        return train_student(
            store, teacher_path, student_config, train_config, model_config=model_config, out_dir=out,
            tracker=tracker, teacher_run_id=teacher_run_id or None,
        )

    extra = [] if mode == "parallel" else ["--teacher", str(teacher_path)] + (
        ["--teacher-run-id", teacher_run_id] if teacher_run_id else []
    )
    result, run_id, metrics = _train(
        "distill-student", "parallel" if mode == "parallel" else "student", key, store_path, model_dir,
        {"model": model_config, "train": train_config, "student": student_config},
        {**described, **sizes.params()}, {TAG_ROLE: "student", TAG_MODEL_KEY: key}, tracking, train, extra,
    )
    info = _write_model_info(out, Path(result.model_path), {**described, "model_key": key, "mlflow_run_id": run_id})
    return StepResult(metrics=metrics, metadata=info)


@reports_errors("train-baseline")
def train_baseline_step(
    store_path: str,
    model_dir: str,
    *,
    k: int,
    frame_selection: str,
    train_fraction: float,
    sizes: Sizes,
    tracking: TrackingContext,
    repeat: bool = False,
) -> StepResult:
    """Train a k-frame model from scratch, no teacher (Uniform-k, Random-k, First-k, ...)."""
    from fewframes.data.store import FrameStore
    from fewframes.training import train_baseline

    _limit_threads()
    k = int(k)
    store = FrameStore.open(store_path)
    student_config = StudentConfig(k=k, frame_selection=frame_selection)
    model_config = sizes.model_config(store.num_classes)
    train_config = sizes.train_config(float(train_fraction))
    key = model_key("baseline", k, frame_selection=frame_selection, train_fraction=float(train_fraction),
                    seed=sizes.seed, repeat=repeat)
    described = model_params("baseline", k, frame_selection, train_fraction=train_fraction, seed=sizes.seed)
    out = Path(model_dir)
    result, run_id, metrics = _train(
        "train-baseline", "baseline", key, store_path, model_dir,
        {"model": model_config, "train": train_config, "student": student_config},
        {**described, **sizes.params()}, {TAG_ROLE: "baseline", TAG_MODEL_KEY: key}, tracking,
        lambda tracker: train_baseline(store, student_config, model_config, train_config, out_dir=out, tracker=tracker),
    )
    info = _write_model_info(out, Path(result.model_path), {**described, "model_key": key, "mlflow_run_id": run_id})
    return StepResult(metrics=metrics, metadata=info)
