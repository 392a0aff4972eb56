"""train-teacher, gather-teachers, distill-student, train-baseline: one model each (in this process or under
torchrun), and the teachers of a run gathered into one artifact for the students."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fewframes.config import ModelConfig, StudentConfig, TrainConfig, data_widths, env_number, get_preset
from fewframes.errors import PipelineError
from fewframes.runs import TAG_MODEL_KEY, TAG_ROLE, TrackingContext, step_run

from .common import (
    MODEL_INFO_FILE,
    WARM_START,
    WARM_START_LOSS,
    StepResult,
    _write_json,
    _limit_threads,
    _write_model_info,
    model_key,
    model_params,
    read_model_info,
    reports_errors,
)


@dataclass(frozen=True)
class Sizes:
    """The model and training settings every training step receives as pipeline parameters.

    ``preset`` (a name; '' = the library's defaults) supplies every setting that is not a pipeline parameter
    (learning-rate decay, dropout, classifier, ...); the fields here override it. ``max_epochs`` is
    ``TrainConfig.epochs``, the most a stage trains; ``patience`` > 0 stops a stage earlier (early stopping on
    validation GAP, the same rule for every model). ``family`` ('' = the preset's) is ``ModelConfig.family``.
    """

    hidden_size: int
    num_layers: int
    teacher_block_length: int
    max_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    device: str = "auto"
    patience: int = 0
    family: str = ""
    preset: str = ""

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Sizes:
        """The fields picked by name from a step's (or the pipeline's) parameters, e.g. its ``locals()``: the
        components and the DAG name each parameter once, in their KFP signatures."""
        return cls(**{name: parameters[name] for name in SIZES_PARAMETERS})

    def model_config(self, num_classes: int, widths: dict[str, int] | None = None) -> ModelConfig:
        """The teacher's ModelConfig for a store of ``num_classes`` classes; ``widths``: its frame widths as
        ``ModelConfig`` fields (``fewframes.config.data_widths``; none for YouTube-8M's)."""
        base = get_preset(self.preset).model_config(num_classes) if self.preset else ModelConfig(num_classes)
        changes: dict[str, Any] = {"hidden_size": self.hidden_size, "num_layers": self.num_layers,
                                   "block_length": self.teacher_block_length, **(widths or {})}
        if self.family:
            changes["family"] = self.family
        return base.replace(**changes)

    def train_config(self, train_fraction: float = 1.0) -> TrainConfig:
        base = get_preset(self.preset).train if self.preset else TrainConfig()
        return base.replace(
            epochs=self.max_epochs,
            patience=self.patience,
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
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }


# The pipeline parameters a training step turns into its Sizes (each also a parameter of the pipeline).
SIZES_PARAMETERS: tuple[str, ...] = tuple(field.name for field in fields(Sizes))


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
    its MLflow run id and the metrics logged. Either way the model's MLflow run (a top-level run of the
    experiment, tied to the pipeline run by tags: ``fewframes.runs``) is created here."""
    launch = training_launch()
    from fewframes.run_results import log_split, model_run_name

    params = {**params, "family": configs["model"].family}  # a model's run says which encoder it has
    # The model's own run: top-level in the experiment (one row per model in the runs table), readable name.
    with step_run(tracking, step, model_run_name(params), params=params, tags=tags, system_metrics=True,
                  nested=False) as tracker:
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
def train_teacher_step(
    store_path: str,
    model_dir: str,
    sizes: Sizes,
    tracking: TrackingContext,
    train_fraction: float = 1.0,
    repeat: bool = False,
) -> StepResult:
    """Train a teacher on all frames (L_CE) of ``train_fraction`` of the training split, with ``sizes.seed``;
    best epoch by validation GAP."""
    from fewframes.data.store import FrameStore
    from fewframes.training import train_teacher

    _limit_threads()
    store = FrameStore.open(store_path)
    out = Path(model_dir)
    fraction = float(train_fraction)
    model_config = sizes.model_config(store.num_classes, data_widths(store.rgb_dim, store.audio_dim))
    train_config = sizes.train_config(fraction)
    key = model_key("teacher", train_fraction=fraction, seed=sizes.seed, repeat=repeat)
    described = model_params("teacher", frame_selection="all", train_fraction=fraction, seed=sizes.seed,
                             family=model_config.family)
    result, run_id, metrics = _train(
        "train-teacher", "teacher", key, store_path, model_dir,
        {"model": model_config, "train": train_config},
        {**described, **sizes.params()}, {TAG_ROLE: "teacher", TAG_MODEL_KEY: key}, tracking,
        lambda tracker: train_teacher(store, model_config, train_config, out_dir=out, tracker=tracker),
    )
    info = _write_model_info(out, Path(result.model_path), {**described, "model_key": key, "mlflow_run_id": run_id})
    return StepResult(metrics=metrics, metadata=info)


# The index of a teachers artifact (``gather_teachers_step``): one entry per teacher, its folder inside.
TEACHERS_FILE = "teachers.json"


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows it (a local run: no copy), else a copy."""
    import shutil

    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@reports_errors("gather-teachers")
def gather_teachers_step(teacher_dirs: list[str], out_dir: str) -> StepResult:
    """Put every trained teacher in one artifact (a folder per teacher and the index ``teachers.json``), so a
    student task inside the students' fan-out can take the teacher of its own seed and data fraction: KFP
    cannot hand a task inside one ParallelFor an item of another ParallelFor's outputs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []
    for teacher_dir in teacher_dirs:
        info = read_model_info(teacher_dir, "teacher")
        key = str(info["model_key"])
        target = out / key
        if key in (entry["model_key"] for entry in index):
            raise PipelineError(f"gather-teachers: two teachers are named {key}")
        if target.exists():  # `fewframes run --resume` runs a cut-short (or changed) task again in its folder
            shutil.rmtree(target)
        # The model file and what describes it; not the training checkpoints (optimizer state: large).
        for name in (MODEL_INFO_FILE, info["model_file"], "result.json"):
            source = Path(teacher_dir) / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(str(source), str(target / name))
        index.append({"model_key": key, "seed": int(info["seed"]), "train_fraction": float(info["train_fraction"]),
                      "dir": key})
    _write_json(out / TEACHERS_FILE, index)
    return StepResult(metrics={"teachers": float(len(index))}, metadata={"teachers": [e["model_key"] for e in index]})


def resolve_teacher(teachers_dir: str | os.PathLike[str], seed: int, train_fraction: float = 1.0) -> Path:
    """The model folder of the teacher trained with ``seed`` on ``train_fraction`` of the data, from a teachers
    artifact (``gather_teachers_step``); a single teacher's model folder is taken as it is."""
    folder = Path(teachers_dir)
    if (folder / MODEL_INFO_FILE).is_file() or not (folder / TEACHERS_FILE).is_file():
        read_model_info(folder, "teacher")  # a clear error when neither a model nor a teachers artifact
        return folder
    index = json.loads((folder / TEACHERS_FILE).read_text())
    for entry in index:
        if int(entry["seed"]) == int(seed) and abs(float(entry["train_fraction"]) - float(train_fraction)) < 1e-9:
            return folder / entry["dir"]
    have = ", ".join(f"seed {e['seed']} fraction {float(e['train_fraction']):g}" for e in index) or "none"
    raise PipelineError(
        f"teachers artifact {teachers_dir} has no teacher for seed {seed} on train fraction {float(train_fraction):g} "
        f"(it has: {have})"
    )


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
    """Distil a k-frame student from the teacher of its own seed and data fraction (serial), or alongside a
    new teacher (parallel). ``teacher_dir``: a teachers artifact (``gather_teachers_step``) or one teacher's
    model folder. ``loss`` ``WARM_START_LOSS`` is the warm-start control (role ``control``): the student starts
    from the teacher's classifier and trains with L_CE alone."""
    from fewframes.data.store import FrameStore
    from fewframes.training import train_parallel, train_student

    _limit_threads()
    k, fraction = int(k), float(train_fraction)
    role, control = ("control", WARM_START) if loss == WARM_START_LOSS else ("student", "")
    if control and mode != "serial":
        raise PipelineError(f"the warm-start control (loss {WARM_START_LOSS!r}) trains in serial mode, got mode {mode!r}")
    teacher_info: dict[str, Any] = {}
    if mode == "serial":
        teacher_folder = resolve_teacher(teacher_dir, sizes.seed, fraction)
        teacher_info = read_model_info(teacher_folder, "teacher")
        teacher_path = teacher_folder / teacher_info["model_file"]
    teacher_run_id = teacher_info.get("mlflow_run_id", "")
    student_config = StudentConfig(k=k, frame_selection="uniform", loss=loss, mode=mode, matching=matching)
    store = FrameStore.open(store_path)
    model_config = sizes.model_config(store.num_classes, data_widths(store.rgb_dim, store.audio_dim))
    train_config = sizes.train_config(fraction)
    key = model_key(role, k, loss=loss, mode=mode, matching=matching, train_fraction=fraction, seed=sizes.seed,
                    repeat=repeat, control=control)
    described = model_params(role, k, "uniform", loss, mode, matching, fraction, teacher_run_id, seed=sizes.seed,
                             family=model_config.family, control=control)
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
        {**described, **sizes.params()}, {TAG_ROLE: role, TAG_MODEL_KEY: key}, tracking, train, extra,
    )
    info = _write_model_info(out, Path(result.model_path), {
        **described, "model_key": key, "mlflow_run_id": run_id, "teacher_key": teacher_info.get("model_key", ""),
    })
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
    model_config = sizes.model_config(store.num_classes, data_widths(store.rgb_dim, store.audio_dim))
    train_config = sizes.train_config(float(train_fraction))
    key = model_key("baseline", k, frame_selection=frame_selection, train_fraction=float(train_fraction),
                    seed=sizes.seed, repeat=repeat)
    described = model_params("baseline", k, frame_selection, train_fraction=train_fraction, seed=sizes.seed,
                             family=model_config.family)
    out = Path(model_dir)
    result, run_id, metrics = _train(
        "train-baseline", "baseline", key, store_path, model_dir,
        {"model": model_config, "train": train_config, "student": student_config},
        {**described, **sizes.params()}, {TAG_ROLE: "baseline", TAG_MODEL_KEY: key}, tracking,
        lambda tracker: train_baseline(store, student_config, model_config, train_config, out_dir=out, tracker=tracker),
    )
    info = _write_model_info(out, Path(result.model_path), {**described, "model_key": key, "mlflow_run_id": run_id})
    return StepResult(metrics=metrics, metadata=info)
