"""The training modes of the paper: teacher, serial students (a)/(b)/(c), parallel training, baselines.

How the classifier is shared (the paper: "the classifier's parameters are SHARED between teacher and
student; serial: the student plugs in the teacher's trained classifier"):

- Serial (a) ``loss="rep"``: the student starts with a copy of the teacher's trained classifier. Stage 1
  (``StudentConfig.rep_stage_epochs``, default half of the epochs) trains the student's encoder on L_rep
  alone, the classifier frozen; validation GAP in stage 1 is the student encoder with the teacher's
  classifier plugged in. Stage 2 (the remaining epochs) fine-tunes encoder + classifier with L_CE, with a
  fresh Adam at the initial learning rate.
- Serial (b)/(c): the student's classifier is initialised from the teacher's trained classifier and
  fine-tuned with the student's loss; the teacher (and its own classifier) stay frozen, so the teacher's
  outputs that the student matches never drift.
- Parallel: ONE classifier module held by both models; the teacher's L_CE and (for (b)/(c)) the
  student's L_CE both train it, the matching terms move the student's encoder only. Parallel (a) has no
  second stage: the student's encoder learns from L_rep while the shared classifier learns from the
  teacher (the student is evaluated with it).
- Warm-start control ``loss="ce"`` (serial only): the student starts with a copy of the teacher's trained
  classifier, as (a)/(b)/(c) do, and trains encoder + classifier with L_CE alone; the teacher's outputs are
  never computed. Distillation has to beat this, not only the from-scratch baselines.
- Baselines: a hierarchical model of the student's size trained from scratch with L_CE on k frames chosen
  by ``StudentConfig.frame_selection``; no teacher.

Every function takes ``store`` as a FrameStore or a path (local or ``gs://``) and ``out_dir`` as a local folder
or a ``gs://`` prefix (staged locally and mirrored there while it trains; see ``_run_training``), trains on the ``train`` split (a seeded
``TrainConfig.train_fraction`` subset) and keeps the epoch with the best ``validation`` GAP. Under
``torchrun`` each detects ``WORLD_SIZE``/``RANK``, joins the process group and shards the data;
``TrainConfig.batch_size`` is the global batch.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from torch import nn

from fewframes import fsio
from fewframes.config import CONTROL_LOSSES, ConfigError, ModelConfig, StudentConfig, TrainConfig
from fewframes.distributed import DistContext, barrier, broadcast_object, setup_distributed, teardown_distributed
from fewframes.errors import TrainingError
from fewframes.training.data import TEACHER_K, TEACHER_STRATEGY, TrainingData, open_training_data
from fewframes.training.loop import (
    RESULT_FILE,
    Role,
    Run,
    Stage,
    configure_determinism,
    run_training,
    seed_everything,
    seed_training_stream,
)
from fewframes.training.objectives import (
    CachedTeacherDistillObjective,
    CrossEntropyObjective,
    ParallelObjective,
    SerialDistillObjective,
)
from fewframes.training.results import ParallelResult, TrainResult, load_model
from fewframes.training.teacher_cache import teacher_outputs

# TrainConfig fields that do not change what a run computes, so a resume may change them.
_NOT_IN_SIGNATURE = ("num_workers", "device", "checkpoint_every_steps")


def _signature(kind: str, ctx: DistContext, **configs: Any) -> dict[str, Any]:
    signature: dict[str, Any] = {"kind": kind, "world_size": ctx.world_size}
    for name, config in configs.items():
        if config is None:
            signature[name] = None
        elif hasattr(config, "to_dict"):
            values = config.to_dict()
            if isinstance(config, TrainConfig):
                values = {k: v for k, v in values.items() if k not in _NOT_IN_SIGNATURE}
            signature[name] = values
        else:
            signature[name] = config
    return signature


def _common_params(train_config: TrainConfig, model_config: ModelConfig, **extra: Any) -> dict[str, Any]:
    params = {
        "train_fraction": train_config.train_fraction,
        "family": model_config.family,
        "classifier": model_config.classifier,
        "hidden_size": model_config.hidden_size,
        "num_layers": model_config.num_layers,
        "epochs": train_config.epochs,
        "patience": train_config.patience,
        "min_delta": train_config.min_delta,
        "batch_size": train_config.batch_size,
        "learning_rate": train_config.learning_rate,
        "lr_decay": train_config.lr_decay,
        "weight_decay": train_config.weight_decay,
        "dropout": model_config.dropout,
        "seed": train_config.seed,
    }
    params.update({key: value for key, value in extra.items() if value is not None})
    return params


def _student_params(student_config: StudentConfig) -> dict[str, Any]:
    return {
        "k": student_config.k,
        "frame_selection": student_config.frame_selection,
        "loss": student_config.loss,
        "mode": student_config.mode,
        "matching": student_config.matching,
        "pred_distance": student_config.pred_distance,
        "rep_weight": student_config.rep_weight,
        "pred_weight": student_config.pred_weight,
        "ce_weight": student_config.ce_weight,
    }


def _check_types(function: str, **values: tuple[Any, type]) -> None:
    """Catch swapped positional configs early, with the argument's name."""
    for name, (value, expected) in values.items():
        if not isinstance(value, expected):
            raise TrainingError(
                f"{function}: {name} must be a {expected.__name__}, got {type(value).__name__} "
                "(check the argument order)"
            )


def _check_num_classes(model_config: ModelConfig, data: TrainingData) -> None:
    """The model's classes and frame width are the store's (one line naming both otherwise)."""
    if model_config.num_classes != data.num_classes:
        raise TrainingError(
            f"ModelConfig.num_classes is {model_config.num_classes} but the frame store {data.store_path} "
            f"has {data.num_classes} classes"
        )
    if model_config.feature_dim != data.store.feature_dim:
        raise TrainingError(
            f"ModelConfig.feature_dim is {model_config.feature_dim} but the frame store {data.store_path} holds "
            f"frames of {data.store.feature_dim} bytes (rgb {data.store.rgb_dim} + audio {data.store.audio_dim})"
        )


def _student_model_config(model_config: ModelConfig, student_config: StudentConfig) -> ModelConfig:
    from fewframes.models import student_model_config

    return student_model_config(model_config, student_config.k, student_config.block_length)


def _prepare(train_config: TrainConfig) -> DistContext:
    ctx = setup_distributed(train_config.device)
    configure_determinism(ctx)
    seed_everything(train_config.seed, ctx)
    return ctx


def _out(out_dir: str | os.PathLike[str], ctx: DistContext) -> Path:
    """The local folder the run writes: ``out_dir`` itself, or for ``gs://`` a local staging folder (one for
    all ranks) holding what an earlier attempt left there (result.json, checkpoints), so it resumes."""
    if fsio.is_gcs(out_dir):
        staging = broadcast_object(fsio.local_temp_dir("fewframes-train-") if ctx.is_main else None, ctx)
        if ctx.is_main:
            try:
                fsio.download_dir(str(out_dir), staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)  # no half-downloaded checkpoints left in /tmp
                raise
        barrier(ctx)
        return Path(staging)
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_training(run: Run, out_dir: str | os.PathLike[str]) -> dict[str, TrainResult]:
    """``run_training``; for a ``gs://`` out_dir, rank 0 mirrors the staging folder to it while training
    (checkpoints and best models reach GCS as they are written, so a killed run resumes from there) and
    once more at the end (result.json last), then the staging folder is removed."""
    if not fsio.is_gcs(out_dir):
        return run_training(run)
    target, ctx = str(out_dir), run.ctx
    mirror = fsio.DirectoryMirror(run.out_dir, target, last=(RESULT_FILE,)) if ctx.is_main else contextlib.nullcontext()
    try:
        with mirror:
            results = run_training(run)
            barrier(ctx)  # every rank has loaded its results from the staging folder
    except TrainingError as exc:  # e.g. "holds a checkpoint of a run with other settings": name the gs:// folder
        raise TrainingError(str(exc).replace(str(run.out_dir), target)) from None
    finally:
        if ctx.is_main:
            shutil.rmtree(run.out_dir, ignore_errors=True)
    for result in results.values():
        result.model_path = fsio.join(target, Path(result.model_path).name)
    return results


def train_teacher(
    store: Any,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    tracker: Any = None,
    progress: bool = True,
) -> TrainResult:
    """Train the teacher on all frames with L_CE; the best epoch by validation GAP is saved to ``teacher.pt``."""
    from fewframes.models import build_model

    _check_types("train_teacher", model_config=(model_config, ModelConfig), train_config=(train_config, TrainConfig))
    ctx = _prepare(train_config)
    try:
        data = open_training_data(store, train_config)
        _check_num_classes(model_config, data)
        teacher = build_model(model_config).to(ctx.device)
        seed_training_stream(train_config.seed, ctx)
        role = Role("teacher", teacher, model_config, None, TEACHER_STRATEGY, TEACHER_K)
        stage = Stage(
            "ce", train_config.epochs, CrossEntropyObjective(teacher), list(teacher.parameters()),
            TEACHER_STRATEGY, TEACHER_K,
        )
        run = Run(
            kind="teacher", out_dir=_out(out_dir, ctx), roles=[role], stages=[stage], data=data,
            train_config=train_config, ctx=ctx, tracker=tracker, progress=progress,
            signature=_signature("teacher", ctx, model_config=model_config, train_config=train_config),
            params=_common_params(train_config, model_config, frame_selection="all",
                                  block_length=model_config.block_length),
        )
        return _run_training(run, out_dir)["teacher"]
    finally:
        teardown_distributed(ctx)


def _load_teacher(teacher: nn.Module | str | os.PathLike[str], model_config: ModelConfig | None) -> tuple[nn.Module, ModelConfig, str | None]:
    """The teacher as a model, its ModelConfig, and a fingerprint of where it came from (for resume checks)."""
    if isinstance(teacher, (str, os.PathLike)):
        loaded = load_model(teacher)  # one read of the file (a download for gs://); it attaches the ModelConfig
        config = loaded.model_config
        if model_config is not None and model_config != config:
            raise TrainingError(f"model_config does not match the teacher file {teacher}'s ModelConfig")
        return loaded, config, (str(teacher) if fsio.is_gcs(teacher) else str(Path(teacher).resolve()))
    config = model_config or getattr(teacher, "config", None)
    if config is None:
        raise TrainingError("train_student: pass model_config with a teacher given as a model")
    return teacher, config, None


def train_student(
    store: Any,
    teacher: nn.Module | str | os.PathLike[str],
    student_config: StudentConfig,
    train_config: TrainConfig,
    *,
    model_config: ModelConfig | None = None,
    out_dir: str | os.PathLike[str],
    tracker: Any = None,
    progress: bool = True,
    teacher_run_id: str | None = None,
) -> TrainResult:
    """Serial distillation: a student on k frames learns from a frozen, trained teacher (file or model).

    ``student_config.loss`` picks (a) "rep" (two stages), (b) "rep_ce" or (c) "rep_pred_ce", or the
    warm-start control "ce" (the teacher's classifier copied in, L_CE alone, no teacher outputs);
    ``student_config.matching="intermediate"`` adds L_rep^I. The best epoch is saved to ``student.pt``.
    """
    from fewframes.models import build_model

    _check_types("train_student", student_config=(student_config, StudentConfig),
                 train_config=(train_config, TrainConfig))
    if student_config.mode != "serial":
        raise TrainingError(
            f"train_student trains serial students; StudentConfig.mode is {student_config.mode!r} (use train_parallel)"
        )
    ctx = _prepare(train_config)
    try:
        data = open_training_data(store, train_config)
        teacher_model, teacher_config, teacher_source = _load_teacher(teacher, model_config)
        _check_num_classes(teacher_config, data)
        teacher_model = teacher_model.to(ctx.device)
        student_config_model = _student_model_config(teacher_config, student_config)
        # The student plugs in (a copy of) the teacher's trained classifier.
        student = build_model(student_config_model, classifier=copy.deepcopy(teacher_model.classifier)).to(ctx.device)
        seed_training_stream(train_config.seed, ctx)
        k, strategy = student_config.k, student_config.frame_selection
        role = Role("student", student, student_config_model, student_config, strategy, k)

        # Final matching reads the teacher's E_T and logits from a cache computed once (teacher_cache), built
        # when the distillation stage starts (a finished run never builds it); L_rep^I needs the live teacher.
        cached = train_config.cache_teacher_outputs and student_config.matching == "final"

        def distill_stage(variant: str, epochs: int, trainable: list[nn.Parameter],
                          before: Callable[[], None] | None = None) -> Stage:
            if not cached:
                objective = SerialDistillObjective(student, copy.deepcopy(teacher_model), student_config, variant)
                return Stage(variant, epochs, objective, trainable, strategy, k, paired=True, before_stage=before)
            cached_objective = CachedTeacherDistillObjective(student, None, student_config, variant)

            def load_outputs() -> None:
                if before is not None:
                    before()
                if cached_objective.outputs is None:
                    cached_objective.outputs = teacher_outputs(teacher_model, teacher_source, data, train_config, ctx)

            return Stage(variant, epochs, cached_objective, trainable, strategy, k, before_stage=load_outputs,
                         rng_view=1)

        if student_config.loss in CONTROL_LOSSES:  # the warm-start control: L_CE alone, no teacher outputs
            stages = [Stage("ce", train_config.epochs, CrossEntropyObjective(student), list(student.parameters()),
                            strategy, k, rng_view=1)]
        elif student_config.loss == "rep":
            try:
                stage1_epochs, stage2_epochs = student_config.rep_stages(train_config.epochs)
            except ConfigError as exc:
                raise TrainingError(str(exc)) from None

            def freeze_classifier() -> None:
                student.classifier.requires_grad_(False)

            def unfreeze_classifier() -> None:
                student.classifier.requires_grad_(True)

            stages = [
                distill_stage("rep", stage1_epochs, list(student.encoder.parameters()), freeze_classifier),
                Stage("ce", stage2_epochs, CrossEntropyObjective(student), list(student.parameters()),
                      strategy, k, before_stage=unfreeze_classifier),
            ]
        else:
            stages = [distill_stage(student_config.loss, train_config.epochs, list(student.parameters()))]
        run = Run(
            kind="serial", out_dir=_out(out_dir, ctx), roles=[role], stages=stages, data=data,
            train_config=train_config, ctx=ctx, tracker=tracker, progress=progress,
            signature=_signature("serial", ctx, model_config=teacher_config, student_config=student_config,
                                 train_config=train_config, teacher=teacher_source),
            params=_common_params(train_config, teacher_config, teacher_run_id=teacher_run_id,
                                  block_length=student_config_model.block_length,
                                  teacher_outputs=None if student_config.loss in CONTROL_LOSSES
                                  else ("cache" if cached else "live"),
                                  **_student_params(student_config)),
        )
        return _run_training(run, out_dir)["student"]
    finally:
        teardown_distributed(ctx)


def train_parallel(
    store: Any,
    model_config: ModelConfig,
    student_config: StudentConfig,
    train_config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    tracker: Any = None,
    progress: bool = True,
) -> ParallelResult:
    """Train teacher and student jointly (one optimizer step updates both, the classifier shared).

    Each epoch records the student's ``val_gap``/``val_map`` and the teacher's ``teacher_val_gap``/
    ``teacher_val_map`` (the report's Figure 2). Each model's best epoch is saved: ``teacher.pt``, ``student.pt``.
    """
    from fewframes.models import build_model

    _check_types("train_parallel", model_config=(model_config, ModelConfig),
                 student_config=(student_config, StudentConfig), train_config=(train_config, TrainConfig))
    student_config = student_config if student_config.mode == "parallel" else student_config.replace(mode="parallel")
    ctx = _prepare(train_config)
    try:
        data = open_training_data(store, train_config)
        _check_num_classes(model_config, data)
        teacher = build_model(model_config).to(ctx.device)
        student_config_model = _student_model_config(model_config, student_config)
        student = build_model(student_config_model, classifier=teacher.classifier).to(ctx.device)  # shared
        seed_training_stream(train_config.seed, ctx)
        k, strategy = student_config.k, student_config.frame_selection
        roles = [
            Role("teacher", teacher, model_config, None, TEACHER_STRATEGY, TEACHER_K, metric_prefix="teacher_"),
            Role("student", student, student_config_model, student_config, strategy, k),
        ]
        objective = ParallelObjective(teacher, student, student_config)
        parameters = list({id(p): p for p in objective.parameters()}.values())
        stage = Stage(f"parallel_{student_config.loss}", train_config.epochs, objective, parameters, strategy, k,
                      paired=True)
        run = Run(
            kind="parallel", out_dir=_out(out_dir, ctx), roles=roles, stages=[stage], data=data,
            train_config=train_config, ctx=ctx, tracker=tracker, progress=progress,
            signature=_signature("parallel", ctx, model_config=model_config, student_config=student_config,
                                 train_config=train_config),
            params=_common_params(train_config, model_config, block_length=student_config_model.block_length, **_student_params(student_config)),
        )
        results = _run_training(run, out_dir)
        history = [dict(record) for record in results["student"].history]
        return ParallelResult(teacher=results["teacher"], student=results["student"], history=history)
    finally:
        teardown_distributed(ctx)


def train_baseline(
    store: Any,
    student_config: StudentConfig,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    tracker: Any = None,
    progress: bool = True,
) -> TrainResult:
    """A model of the student's family and size trained from scratch with L_CE on k frames chosen by
    ``student_config.frame_selection`` (Uniform-k, Random-k, First-k, ...); no teacher. Saved to ``baseline.pt``."""
    from fewframes.models import build_model

    _check_types("train_baseline", student_config=(student_config, StudentConfig),
                 model_config=(model_config, ModelConfig), train_config=(train_config, TrainConfig))
    ctx = _prepare(train_config)
    try:
        data = open_training_data(store, train_config)
        _check_num_classes(model_config, data)
        baseline_config = _student_model_config(model_config, student_config)
        model = build_model(baseline_config).to(ctx.device)
        seed_training_stream(train_config.seed, ctx)
        k, strategy = student_config.k, student_config.frame_selection
        role = Role("baseline", model, baseline_config, student_config, strategy, k)
        stage = Stage("ce", train_config.epochs, CrossEntropyObjective(model), list(model.parameters()), strategy, k)
        run = Run(
            kind="baseline", out_dir=_out(out_dir, ctx), roles=[role], stages=[stage], data=data,
            train_config=train_config, ctx=ctx, tracker=tracker, progress=progress,
            signature=_signature("baseline", ctx, model_config=model_config, student_config=student_config,
                                 train_config=train_config),
            params=_common_params(train_config, model_config, k=k, frame_selection=strategy,
                                  block_length=baseline_config.block_length),
        )
        return _run_training(run, out_dir)["baseline"]
    finally:
        teardown_distributed(ctx)


__all__ = ["train_baseline", "train_parallel", "train_student", "train_teacher"]
