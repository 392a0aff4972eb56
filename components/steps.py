"""What each pipeline step does, as plain functions of paths and values (no KFP here).

The KFP components in ``definitions.py`` are thin: each turns its artifacts into paths, calls one of these
functions, and writes the returned metrics/metadata back onto its KFP outputs. Keeping the work here means
the steps are importable, testable and reusable without KFP, and the component bodies stay a few lines.

Every step logs one MLflow child run (``fewframes.runs.step_run``) of the pipeline's parent run, except
the two ``plan_*`` steps: they are pure bookkeeping (the fan-out lists, checked against the store) and
log nothing.

Artifacts written here:
- a frame store (``ingest_split_step``) — a directory, as ``fewframes.data.store`` writes it;
- a model directory holding the library's self-describing model file (``model.json`` beside it says which);
- an evaluation directory: the library's metrics.json, per_class_ap.parquet, encodings.parquet and our
  ``row.json`` (the model's parameters + metrics + MLflow run ids), which benchmark and report read;
- a benchmark directory (``benchmark.json``: one row per model);
- the report (``fewframes.report``: Markdown + HTML, figures, summary.json).

Choices where the contracts were silent:
- Students trained on a fraction of the training split (the paper's Table 3) use the full-data teacher.
- A parallel-mode student trains its own teacher alongside (``train_parallel``); the pipeline's
  ``train-teacher`` output is then unused by that task, except as the record of ``teacher_run_id``.
- "Within 1% GAP of the teacher" is relative: student GAP >= teacher GAP * (1 - tolerance).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fewframes.config import (
    BASELINE_SELECTIONS,
    DISTILL_LOSSES,
    MAX_FRAMES,
    TRAINING_MODES,
    ConfigError,
    ModelConfig,
    StudentConfig,
    TrainConfig,
    env_number,
    get_preset,
)
from fewframes.errors import FewframesError, PipelineError
from fewframes.runs import TAG_MODEL_KEY, TAG_ROLE, TrackingContext, step_run

# A step that fails on bad input appends "step: message" here (when set), so `fewframes run` can show
# the one-line cause instead of KFP's "task failed".
ERROR_FILE_ENV = "FEWFRAMES_STEP_ERROR_FILE"
# `fewframes run` sets this so two parallel local tasks do not oversubscribe the CPU cores.
TORCH_THREADS_ENV = "FEWFRAMES_TORCH_THREADS"

MODEL_INFO_FILE = "model.json"
ROW_FILE = "row.json"
BENCHMARK_FILE = "benchmark.json"

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass
class StepResult:
    """What a step hands back to its KFP component: scalar metrics (KFP Metrics) and artifact metadata."""

    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def reports_errors(step: str) -> Callable[[_F], _F]:
    """Decorator: a FewframesError/ConfigError also goes to the error file named by ``ERROR_FILE_ENV``."""

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (FewframesError, ConfigError) as exc:
                error_file = os.environ.get(ERROR_FILE_ENV)
                if error_file:
                    with open(error_file, "a") as handle:
                        handle.write(f"{step}: {exc}\n")
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


def _limit_threads() -> None:
    threads = os.environ.get(TORCH_THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def tracking_context(path: str) -> TrackingContext:
    """The TrackingContext written by ``start_tracking_step`` (the ``tracking`` artifact of the DAG)."""
    file = Path(path)
    if not file.is_file():
        raise PipelineError(f"tracking artifact {path} is missing (start-tracking did not run)")
    values = json.loads(file.read_text())
    return TrackingContext(**values)


# ----------------------------------------------------------------------------------------------------------
# start-tracking
# ----------------------------------------------------------------------------------------------------------


@reports_errors("start-tracking")
def start_tracking_step(
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    pipeline_run_id: str,
    pipeline: str,
    run_name: str,
    out_path: str,
) -> str:
    """Write the tracking artifact and return the parent run's id ('' = tracking off).

    Creates the parent run when ``parent_run_id`` is empty (cluster runs), else checks and tags the given
    one (``fewframes run`` made it). Fails at once, with one line, when the tracking server is unreachable.
    """
    from fewframes.runs import TAG_PIPELINE, TAG_PIPELINE_RUN, check_tracking, start_parent_run

    if tracking_uri:
        check_tracking(tracking_uri)
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        if not parent_run_id:
            context = TrackingContext(
                uri=tracking_uri, experiment=experiment, pipeline_run_id=pipeline_run_id, pipeline=pipeline
            )
            parent_run_id = start_parent_run(context, run_name or f"{pipeline}-{pipeline_run_id}")
        else:
            try:
                parent_tags = client.get_run(parent_run_id).data.tags
            except mlflow.exceptions.MlflowException:
                raise PipelineError(f"parent_run_id {parent_run_id!r} is not a run at {tracking_uri}") from None
            # `fewframes run` tagged its parent with its own run id, the one it prints: children share it.
            pipeline_run_id = parent_tags.get(TAG_PIPELINE_RUN) or pipeline_run_id
            client.set_tag(parent_run_id, TAG_PIPELINE_RUN, pipeline_run_id)
            if pipeline:
                client.set_tag(parent_run_id, TAG_PIPELINE, pipeline)
    else:
        parent_run_id = ""
    context = TrackingContext(tracking_uri, experiment, parent_run_id, pipeline_run_id, pipeline)
    _write_json(Path(out_path), asdict(context))
    return parent_run_id


# ----------------------------------------------------------------------------------------------------------
# ingest/split
# ----------------------------------------------------------------------------------------------------------


def parse_source(source: str, default_preset: str) -> tuple[str, str]:
    """``('synth', preset)`` for '' or 'synth:<preset>', else ``('tfrecords', source)`` (path, glob, gs://)."""
    if not source:
        return "synth", default_preset
    if source.startswith("synth:"):
        preset = source.split(":", 1)[1] or default_preset
        get_preset(preset)  # a clear error for an unknown preset name
        return "synth", preset
    return "tfrecords", source


@reports_errors("ingest-split")
def ingest_split_step(
    source: str,
    store_path: str,
    *,
    preset: str,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    tracking: TrackingContext,
    num_classes: int = 0,
) -> StepResult:
    """Synthesize (``synth:<preset>`` or '') or read YouTube-8M TFRecords, write the frame store and its split.

    ``num_classes``: the label vocabulary; 0 = the synthetic preset's classes, or YouTube-8M's 3862 for
    TFRecords."""
    from fewframes.data.ingest import ingest
    from fewframes.data.split import write_split
    from fewframes.data.store import FrameStore

    kind, where = parse_source(source, preset)
    params = {
        "source": source or f"synth:{preset}",
        "preset": preset,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
        "num_classes": num_classes,
    }
    store_dir = Path(store_path)
    with step_run(tracking, "ingest-split", params=params) as tracker:
        started = time.perf_counter()
        if kind == "synth":
            from fewframes.data.synth import generate_synthetic

            # The synthetic TFRecords go beside the store and are removed once ingested.
            store_dir.parent.mkdir(parents=True, exist_ok=True)
            data = get_preset(where).data
            with tempfile.TemporaryDirectory(prefix=".synth-", dir=store_dir.parent) as tfrecord_dir:
                generate_synthetic(tfrecord_dir, data)
                ingest(os.path.join(tfrecord_dir, "*.tfrecord"), str(store_dir), num_classes=num_classes or data.classes)
        else:
            from fewframes.data.ingest import DEFAULT_NUM_CLASSES

            ingest(where, str(store_dir), num_classes=num_classes or DEFAULT_NUM_CLASSES)
        write_split(
            store_dir, validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed
        )
        store = FrameStore.open(store_dir)
        lengths = [int(n) for n in store.lengths]
        metrics = {
            "videos": float(len(store)),
            "classes": float(store.num_classes),
            "max_length": float(max(lengths)),
            "mean_length": float(sum(lengths) / len(lengths)),
            "seconds": time.perf_counter() - started,
        }
        tracker.log_metrics(metrics)
    return StepResult(
        metrics=metrics,
        metadata={"videos": len(store), "num_classes": store.num_classes, "max_length": max(lengths)},
    )


# ----------------------------------------------------------------------------------------------------------
# plan: the fan-out lists, checked against the store
# ----------------------------------------------------------------------------------------------------------


def _store_max_length(store_path: str) -> int:
    from fewframes.data.store import FrameStore

    return int(max(FrameStore.open(store_path).lengths))


def _check_ks(ks: Iterable[int], max_length: int, where: str) -> list[int]:
    checked = []
    for k in ks:
        k = int(k)
        if k < 1:
            raise PipelineError(f"ks: k must be >= 1, got {k}")
        if k > min(max_length, MAX_FRAMES):
            longest = f"the longest video ({max_length} frames) in frame store {where}" if where else (
                f"the maximum video length ({MAX_FRAMES} frames)"
            )
            raise PipelineError(f"ks: k={k} is larger than {longest}")
        checked.append(k)
    return checked


def _check_choices(name: str, values: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    values = [str(v) for v in values]
    for value in values:
        if value not in allowed:
            raise PipelineError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return values


def _fractions(train_fractions: Iterable[float]) -> list[float]:
    fractions = [float(f) for f in train_fractions]
    for fraction in fractions:
        if not 0.0 < fraction <= 1.0:
            raise PipelineError(f"train_fractions: {fraction} is not in (0, 1]")
    return fractions


def _repeat_seeds(repeat_seeds: Iterable[int] | None, seed: int) -> list[int]:
    """The extra seeds (the pipeline's own ``seed`` already trains every configuration once), in order."""
    extra: list[int] = []
    for value in repeat_seeds or []:
        value = int(value)
        if value < 0:
            raise PipelineError(f"repeat_seeds: a seed must be >= 0, got {value}")
        if value != int(seed) and value not in extra:
            extra.append(value)
    return extra


def plan_students(
    ks: list[int],
    losses: list[str],
    modes: list[str],
    intermediate_k: int = 0,
    fraction_k: int = 0,
    train_fractions: list[float] | None = None,
    repeat_seeds: list[int] | None = None,
    repeat_ks: list[int] | None = None,
    seed: int = 0,
    *,
    max_length: int = MAX_FRAMES,
    where: str = "",
) -> list[dict[str, Any]]:
    """The students to distil: modes x losses x ks (final matching), plus intermediate matching at
    ``intermediate_k`` (each mode x loss), Serial(c) on ``train_fractions`` of the data at ``fraction_k``,
    and Serial(c) again at each of ``repeat_ks`` for each of ``repeat_seeds`` (other than ``seed``), so the
    report can give mean +- spread over seeds. Every entry carries its ``seed``; ``repeat`` marks the extra
    seeds (their model keys end in ``-seed<N>``). ``max_length``: the longest video (``where`` names its
    frame store in errors)."""
    ks = _check_ks(ks, max_length, where)
    losses = _check_choices("losses", losses, DISTILL_LOSSES)
    modes = _check_choices("modes", modes, TRAINING_MODES)
    fractions = _fractions(train_fractions or [])
    extra_seeds = _repeat_seeds(repeat_seeds, seed)
    again_ks = _check_ks(repeat_ks or [], max_length, where)

    def student(
        k: int, loss: str, mode: str, matching: str = "final", fraction: float = 1.0, run_seed: int | None = None
    ) -> dict[str, Any]:
        return {"k": k, "loss": loss, "mode": mode, "matching": matching, "train_fraction": fraction,
                "seed": int(seed) if run_seed is None else run_seed, "repeat": run_seed is not None}

    plan = [student(k, loss, mode) for mode in modes for loss in losses for k in ks]
    if intermediate_k:
        (k,) = _check_ks([intermediate_k], max_length, where)
        plan += [student(k, loss, mode, "intermediate") for mode in modes for loss in losses]
    if fractions and fraction_k:
        (k,) = _check_ks([fraction_k], max_length, where)
        plan += [student(k, "rep_pred_ce", "serial", "final", f) for f in fractions if f < 1.0]
    plan += [student(k, "rep_pred_ce", "serial", run_seed=s) for s in extra_seeds for k in again_ks]
    return plan


def plan_baselines(
    ks: list[int],
    frame_selections: list[str],
    fraction_k: int = 0,
    train_fractions: list[float] | None = None,
    repeat_seeds: list[int] | None = None,
    repeat_ks: list[int] | None = None,
    seed: int = 0,
    *,
    max_length: int = MAX_FRAMES,
    where: str = "",
) -> list[dict[str, Any]]:
    """The k-frame baselines trained from scratch: frame_selections x ks, plus Uniform-k on
    ``train_fractions`` of the data at ``fraction_k`` and Uniform-k at ``repeat_ks`` for each of
    ``repeat_seeds`` (other than ``seed``); entries carry ``seed`` and ``repeat`` as in ``plan_students``."""
    ks = _check_ks(ks, max_length, where)
    selections = _check_choices("baselines", frame_selections, BASELINE_SELECTIONS)
    fractions = _fractions(train_fractions or [])
    extra_seeds = _repeat_seeds(repeat_seeds, seed)
    again_ks = _check_ks(repeat_ks or [], max_length, where)

    def baseline(k: int, selection: str, fraction: float = 1.0, run_seed: int | None = None) -> dict[str, Any]:
        return {"k": k, "frame_selection": selection, "train_fraction": fraction,
                "seed": int(seed) if run_seed is None else run_seed, "repeat": run_seed is not None}

    plan = [baseline(k, s) for s in selections for k in ks]
    if fractions and fraction_k:
        (k,) = _check_ks([fraction_k], max_length, where)
        plan += [baseline(k, "uniform", f) for f in fractions if f < 1.0]
    plan += [baseline(k, "uniform", run_seed=s) for s in extra_seeds for k in again_ks]
    return plan


@reports_errors("plan-students")
def plan_students_step(store_path: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """``plan_students`` checked against the frame store's longest video."""
    return plan_students(*args, max_length=_store_max_length(store_path), where=store_path, **kwargs)


@reports_errors("plan-baselines")
def plan_baselines_step(store_path: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """``plan_baselines`` checked against the frame store's longest video."""
    return plan_baselines(*args, max_length=_store_max_length(store_path), where=store_path, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------


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


def model_key(role: str, k: int = 0, **spec: Any) -> str:
    """One readable name per model of a pipeline run (the join key of evaluate, benchmark and report)."""
    fraction = float(spec.get("train_fraction", 1.0))
    suffix = "" if fraction >= 1.0 else f"-frac{fraction:g}"
    if spec.get("repeat"):  # an extra seed of a configuration the pipeline's own seed also trains
        suffix += f"-seed{int(spec['seed'])}"
    if role == "teacher":
        return "teacher" + suffix
    if role == "student":
        return f"student-{spec['mode']}-{spec['loss']}-{spec.get('matching', 'final')}-k{k}{suffix}"
    return f"baseline-{spec['frame_selection']}-k{k}{suffix}"


def model_params(
    role: str,
    k: int | None = None,
    frame_selection: str = "",
    loss: str = "",
    mode: str = "",
    matching: str = "",
    train_fraction: float = 1.0,
    teacher_run_id: str = "",
    seed: int | str = "",
) -> dict[str, Any]:
    """The same parameter names on every run about a model (``fewframes.runs.MODEL_PARAMS``)."""
    return {
        "role": role,
        "k": "" if k is None else int(k),
        "frame_selection": frame_selection,
        "loss": loss,
        "mode": mode,
        "matching": matching,
        "train_fraction": float(train_fraction),
        "teacher_run_id": teacher_run_id,
        "seed": seed,
    }


def _write_model_info(model_dir: Path, model_file: Path, info: dict[str, Any]) -> dict[str, Any]:
    info = {**info, "model_file": os.path.relpath(model_file, model_dir)}
    _write_json(model_dir / MODEL_INFO_FILE, info)
    return info


def read_model_info(model_dir: str | os.PathLike[str], what: str = "model") -> dict[str, Any]:
    """The ``model.json`` a training step left in its model directory; a clear error when it is missing."""
    path = Path(model_dir) / MODEL_INFO_FILE
    if not path.is_file():
        raise PipelineError(f"{what} artifact {model_dir} is missing or incomplete (no {MODEL_INFO_FILE})")
    info = json.loads(path.read_text())
    if not (Path(model_dir) / info["model_file"]).is_file():
        raise PipelineError(f"{what} artifact {model_dir} is missing its model file {info['model_file']}")
    return info


def _write_json(path: Path, payload: Any) -> None:
    """Atomic JSON write (``fsio.write_bytes_atomic``: a unique temp name beside it, then rename)."""
    _atomic_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


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
    with step_run(tracking, step, run_name, params=params, tags=tags) as tracker:
        run_id = getattr(tracker, "run_id", "") or ""
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


# ----------------------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------------------

# The metric names of evaluate's metrics.json that become MLflow/KFP metrics under our names.
EVALUATION_METRICS = ("gap", "map", "hit_at_1", "perr")


@reports_errors("evaluate")
def evaluate_step(store_path: str, model_dir: str, out_dir: str, tracking: TrackingContext) -> StepResult:
    """GAP@20, mAP, Hit@1, PERR (and per-class AP, encodings) of one model on the test split."""
    from fewframes.data.store import FrameStore
    from fewframes.evaluation import evaluate
    from fewframes.training import load_model

    _limit_threads()
    info = read_model_info(model_dir)
    model = load_model(Path(model_dir) / info["model_file"])
    store = FrameStore.open(store_path)
    role = info["role"]
    strategy = "all" if role == "teacher" else info["frame_selection"]
    k = None if role == "teacher" else int(info["k"])
    params = {name: info.get(name, "") for name in model_params("teacher")}
    params["model_run_id"] = info.get("mlflow_run_id", "")
    tags = {TAG_ROLE: role, TAG_MODEL_KEY: info["model_key"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with step_run(tracking, "evaluate", f"evaluate {info['model_key']}", params=params, tags=tags) as tracker:
        results = evaluate(model, store, split="test", strategy=strategy, k=k, out_dir=out)
        metrics = {name: float(results[name]) for name in EVALUATION_METRICS if name in results}
        tracker.log_metrics(metrics)
        for name in ("metrics.json", "per_class_ap.parquet"):
            if (out / name).exists():
                tracker.log_artifact(out / name)
        run_id = getattr(tracker, "run_id", "") or ""
    row = {**info, **metrics, "evaluate_run_id": run_id}
    _write_json(out / ROW_FILE, row)
    return StepResult(metrics=metrics, metadata={"model_key": info["model_key"], "evaluate_run_id": run_id})


def read_row(evaluation_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(evaluation_dir) / ROW_FILE
    if not path.is_file():
        raise PipelineError(f"evaluation artifact {evaluation_dir} is missing {ROW_FILE}")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------------------
# benchmark
# ----------------------------------------------------------------------------------------------------------


# Benchmark sizes: small enough that the local demo stays quick, large enough for stable medians.
BENCHMARK_BATCH = 32
BENCHMARK_VIDEOS = 64
BENCHMARK_LATENCY_VIDEOS = 10

# fewframes.benchmark row field -> our metric name.
BENCHMARK_METRICS = {
    "params": "num_parameters",
    "gflops_per_video": "gflops",
    "latency_ms_p50": "latency_ms_p50",
    "latency_ms_p95": "latency_ms_p95",
    "throughput_videos_s": "throughput_videos_s",
    "e2e_latency_ms_p50": "e2e_latency_ms_p50",
}


def _benchmark_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@reports_errors("benchmark")
def benchmark_step(
    store_path: str,
    model_dirs: list[str],
    evaluation_dirs: list[str],
    out_dir: str,
    tracking: TrackingContext,
    device: str = "auto",
) -> StepResult:
    """Parameters, FLOPs, latency and throughput of every model (``fewframes.benchmark``), on the same
    videos; the figures also land on each model's evaluate run so one MLflow row holds GAP and cost."""
    from fewframes.benchmark import add_ratios, benchmark_models, describe_machine, log_benchmark
    from fewframes.runs import log_metrics_to_run

    _limit_threads()
    evaluate_runs = {}
    for evaluation_dir in evaluation_dirs:
        row = read_row(evaluation_dir)
        evaluate_runs[row["model_key"]] = row.get("evaluate_run_id", "")
    infos = {}
    for model_dir in model_dirs:
        info = read_model_info(model_dir)
        infos[info["model_key"]] = (info, str(Path(model_dir) / info["model_file"]))
    run_device = _benchmark_device(device)
    with step_run(tracking, "benchmark", params={"models": len(infos), "device": run_device}) as tracker:
        raw = add_ratios(benchmark_models(
            {key: path for key, (_, path) in infos.items()},
            store_path,
            device=run_device,
            batch_size=BENCHMARK_BATCH,
            n_videos=BENCHMARK_VIDEOS,
            latency_videos=BENCHMARK_LATENCY_VIDEOS,
        ))
        rows = []
        summary: dict[str, float] = {}
        for bench in raw:
            key = bench["name"]
            figures = {ours: float(bench[theirs]) for theirs, ours in BENCHMARK_METRICS.items() if bench.get(theirs) is not None}
            rows.append({"model_key": key, "role": infos[key][0]["role"], **figures, "raw": bench})
            log_metrics_to_run(tracking.uri, evaluate_runs.get(key, ""), figures)
            summary[f"{key}.latency_ms_p50"] = figures["latency_ms_p50"]
            summary[f"{key}.gflops"] = figures["gflops"]
        out = Path(out_dir)
        _write_json(out / BENCHMARK_FILE, {"machine": describe_machine(run_device), "rows": rows})
        # Every figure of every model (end to end, bytes read, ratios to the teacher) on the benchmark run.
        log_benchmark(tracker, raw, out / BENCHMARK_FILE)
    return StepResult(metrics=summary, metadata={"models": len(rows), "device": run_device})


# ----------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------


def report_rows(evaluation_dirs: list[str], benchmark_dir: str | None) -> list[dict[str, Any]]:
    """Every evaluated model's row (with its ``evaluation_dir``), joined with its benchmark figures (and the
    end-to-end throughput); teacher first, then by GAP."""
    rows = [{**read_row(d), "evaluation_dir": str(d)} for d in evaluation_dirs]
    if benchmark_dir and (Path(benchmark_dir) / BENCHMARK_FILE).is_file():
        payload = json.loads((Path(benchmark_dir) / BENCHMARK_FILE).read_text())
        bench = {r["model_key"]: r for r in payload["rows"]}
        for row in rows:
            extra = bench.get(row["model_key"], {})
            row.update({k: v for k, v in extra.items() if k not in row and k != "raw"})
            raw = extra.get("raw") or {}
            if raw.get("e2e_throughput_videos_s") is not None:
                row.setdefault("e2e_throughput_videos_s", float(raw["e2e_throughput_videos_s"]))
    rows.sort(key=lambda r: (r["role"] != "teacher", -float(r.get("gap") or 0.0)))
    return rows


def benchmark_machine(benchmark_dir: str | None) -> dict[str, Any]:
    """The machine the benchmark step measured on ({} when there is no benchmark)."""
    path = Path(benchmark_dir) / BENCHMARK_FILE if benchmark_dir else None
    return json.loads(path.read_text()).get("machine", {}) if path is not None and path.is_file() else {}


def _parent_run_info(tracking: TrackingContext) -> dict[str, Any]:
    """The pipeline run's parameters as its parent MLflow run recorded them ({} when not recorded)."""
    if not tracking.enabled or not tracking.parent_run_id:
        return {}
    import mlflow

    import ast

    run = mlflow.MlflowClient(tracking_uri=tracking.uri).get_run(tracking.parent_run_id)
    arguments: dict[str, Any] = {}
    for name, value in run.data.params.items():
        # Parameters were logged as str(value) (fewframes.runs._clean_params): literal_eval reads them back,
        # quotes, True/False and all; anything else (a plain string such as a path) stays as it is.
        try:
            arguments[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            arguments[name] = value
    info: dict[str, Any] = {"pipeline": tracking.pipeline, "run_id": tracking.pipeline_run_id}
    if arguments:
        info["arguments"] = arguments
        info["preset"] = arguments.get("preset", "")
    return info


@reports_errors("report")
def report_step(
    evaluation_dirs: list[str],
    benchmark_dir: str | None,
    markdown_path: str,
    html_path: str,
    tracking: TrackingContext,
    tolerance: float = 0.01,
) -> StepResult:
    """The paper's tables, figures and claims for this run (``fewframes.report``), as Markdown (figures
    embedded) and HTML; the report's files go beside them and to the report step's MLflow run."""
    from fewframes.report import build_report, embedded_markdown, grid_ks, training_histories

    rows = report_rows(evaluation_dirs, benchmark_dir)
    run_info = _parent_run_info(tracking)
    intermediate_k, fraction_k = grid_ks(run_info.get("arguments", {}))
    markdown_file, html_file = Path(markdown_path), Path(html_path)
    report = build_report(
        rows, html_file.parent, tolerance=tolerance, histories=training_histories(tracking.uri, rows),
        machine=benchmark_machine(benchmark_dir), run_info=run_info, intermediate_k=intermediate_k,
        fraction_k=fraction_k,
    )
    _atomic_text(markdown_file, embedded_markdown(report))
    if report.html != html_file:
        _atomic_text(html_file, report.html.read_text())

    summary = report.summary
    verdicts = [c["verdict"] for c in summary["claims"]]
    metrics = {
        "models": float(len(rows)),
        "claims_hold": float(verdicts.count("holds")),
        "claims_fail": float(verdicts.count("does not hold")),
        "claims_not_measured": float(verdicts.count("not measured")),
    }
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    if teacher is not None:
        metrics["teacher_gap"] = float(teacher["gap"])
    recommended = summary["recommended"]
    if recommended is not None:
        metrics["recommended_k"] = float(recommended["k"])
        metrics["recommended_gap"] = float(recommended["gap"])
    with step_run(tracking, "report", params={"tolerance": tolerance}) as tracker:
        tracker.log_metrics(metrics)
        for path in [report.markdown, report.html, report.folder / "summary.json", *report.figures]:
            tracker.log_artifact(path)
    return StepResult(
        metrics=metrics,
        metadata={"recommended": recommended["model_key"] if recommended else "",
                  "figures": [p.name for p in report.figures]},
    )


def _atomic_text(path: Path, text: str) -> None:
    """``fsio.write_bytes_atomic``: the temp file gets a unique name and is removed if the write fails."""
    from fewframes.fsio import write_bytes_atomic

    write_bytes_atomic(path, text.encode())
