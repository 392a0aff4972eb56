"""The epoch loop every training mode shares: stages, checkpoints, resume, DDP, validation, best epoch.

A run is a list of stages (one for most modes; two for serial (a): L_rep alone, then L_CE fine-tuning)
over global epochs 1..E, and a list of roles: the models whose validation GAP is tracked and whose best
epoch is saved (the teacher, the student, or both in parallel training).

Exact resume. A checkpoint (every epoch end, and every ``TrainConfig.checkpoint_every_steps`` optimizer
steps) holds the models, the stage's optimizer, scheduler and loss scaler, every rank's RNG states, the position
(epoch, batches done in it, global step), the epoch's running loss sums, the best-so-far and the history.
Batches are a pure function of (seed, epoch) and the loader skips the batches already done, so a run
killed at any point and started again with the same arguments and out_dir ends with the same weights
and metrics as one that never stopped. A finished run writes ``result.json``; calling it again returns
the saved result without training.

Order at an epoch's end: validate every role, step the scheduler, save improved best models (atomic),
then write the epoch checkpoint. A kill between two of these repeats the end of the epoch from the last
checkpoint, with the same outcome.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from fewframes import fsio
from fewframes.checkpoint import CheckpointDir, capture_rng_state, restore_rng_state
from fewframes.config import ModelConfig, StudentConfig, TrainConfig
from fewframes.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    wrap_ddp,
)
from fewframes.errors import TrainingError
from fewframes.training.results import TrainResult, load_model, save_model

RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoints"
# Rewritten at the start and after every epoch: what `fewframes run` shows of a model in training.
PROGRESS_FILE = "progress.json"
GAP_TOP_K = 20


@dataclass
class Role:
    """A model whose validation GAP is tracked each epoch and whose best epoch is saved to ``<name>.pt``."""

    name: str  # teacher | student | baseline
    model: nn.Module
    model_config: ModelConfig
    student_config: StudentConfig | None
    val_strategy: str
    val_k: int | None  # None for the all-frames teacher
    metric_prefix: str = ""  # "" for the run's main model; "teacher_" for the teacher in parallel training


@dataclass
class Stage:
    """A span of epochs trained with one objective and one optimizer over ``trainable`` parameters."""

    name: str
    epochs: int
    objective: nn.Module
    trainable: list[nn.Parameter]
    strategy: str  # the frame selection of the training batches (of the student batch when paired)
    k: int | None
    paired: bool = False  # batches are (teacher_batch, student_batch) of the same videos
    find_unused_parameters: bool = False
    before_stage: Callable[[], None] | None = None  # e.g. unfreeze the classifier for stage 2
    # Unpaired batches only: 1 reads the frames a paired loader's student view reads (random selection's
    # draws), so a student trained from cached teacher outputs sees exactly the live-teacher student's frames.
    rng_view: int = 0


@dataclass
class Run:
    """Everything the loop needs for one training run."""

    kind: str  # teacher | serial | parallel | baseline (the MLflow ``mode``-like tag and the checkpoint's)
    out_dir: Path
    roles: list[Role]
    stages: list[Stage]
    data: Any  # fewframes.training.data.TrainingData
    train_config: TrainConfig
    ctx: DistContext
    signature: dict[str, Any]
    tracker: Any = None
    progress: bool = True
    params: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int, ctx: DistContext) -> None:
    """Seed model initialisation identically on every rank (DDP also broadcasts rank 0's weights)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def seed_training_stream(seed: int, ctx: DistContext) -> None:
    """After the models are built: rank 0 keeps the single-process stream, other ranks get their own
    (different dropout masks per rank)."""
    if ctx.rank:
        torch.manual_seed(seed + 104729 * ctx.rank)


def configure_determinism(ctx: DistContext) -> None:
    """Deterministic kernels, so resumed and uninterrupted runs agree (warn-only on CUDA, where some
    kernels have no deterministic version)."""
    torch.use_deterministic_algorithms(True, warn_only=ctx.device.type == "cuda")
    # Deterministic mode also fills every torch.empty with NaN by default, which touches workspace pages the
    # kernels never use: +60 % peak memory and +33 % CPU time in the LSTMs here, for bitwise the same
    # results (benchmarks/teacher_memory.py). Only a kernel that reads memory it never wrote would care.
    torch.utils.deterministic.fill_uninitialized_memory = False
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = False


def mixed_precision_dtype(ctx: DistContext, train_config: TrainConfig) -> torch.dtype | None:
    """bf16 on CUDA when ``TrainConfig.mixed_precision`` is on; None (float32 throughout) on the CPU."""
    if ctx.device.type == "cuda" and train_config.mixed_precision:
        return torch.bfloat16
    return None


def autocast_for(ctx: DistContext, train_config: TrainConfig) -> Any:
    """bf16 autocast on CUDA when mixed precision is on; nothing on CPU."""
    dtype = mixed_precision_dtype(ctx, train_config)
    if dtype is None:
        return nullcontext()
    return torch.autocast(ctx.device.type, dtype=dtype)


def make_grad_scaler(ctx: DistContext, train_config: TrainConfig) -> torch.amp.GradScaler:
    """Loss scaling whenever autocast is on. Autocast runs cuDNN's LSTM in float16 whatever its dtype
    (PyTorch's ``_cudnn_rnn`` autocast wrapper casts to half), so the LSTM gradients need the scaling that
    float16 needs; the bf16 parts do not mind it. Disabled (a pass-through) on the CPU."""
    enabled = mixed_precision_dtype(ctx, train_config) is not None
    return torch.amp.GradScaler(ctx.device.type, enabled=enabled)


# --------------------------------------------------------------------------------------------------------
# Validation


@dataclass
class Predictions:
    """Validation predictions kept compactly: each video's top-k (class, score) and its positive classes.

    O(videos x top_k) memory instead of videos x classes, so the teacher's validation at the paper's 3,862
    classes gathers cheaply across DDP ranks. GAP@20 and mAP (as the starter code defines them) only ever
    look at each video's top 20 classes and at the positive counts, so no information they use is lost.
    """

    video_ids: list[str]
    top_classes: np.ndarray  # int32 [videos, top_k]
    top_scores: np.ndarray  # float32 [videos, top_k]
    positives: list[np.ndarray]  # per video: int32 class ids
    num_classes: int


def collect_predictions(
    model: nn.Module, batches: Iterator[Any], ctx: DistContext, train_config: TrainConfig, top_k: int = GAP_TOP_K
) -> Predictions:
    """Sigmoid scores of every validation video, compacted to the top ``top_k`` and gathered from all
    ranks: each video once (padding duplicates of a sharded loader drop out), in video-id order, so the
    figures do not depend on the number of ranks or the batch size."""
    was_training = model.training
    model.eval()
    ids: list[str] = []
    classes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    positives: list[np.ndarray] = []
    num_classes = 0
    with torch.no_grad(), autocast_for(ctx, train_config):
        for batch in batches:
            probabilities = torch.sigmoid(model(batch.frames, batch.mask).logits.float())
            num_classes = probabilities.shape[1]
            top = torch.topk(probabilities, min(top_k, num_classes), dim=1)
            classes.append(top.indices.to(torch.int32).cpu().numpy())
            scores.append(top.values.cpu().numpy())
            labels = batch.labels.cpu().numpy() > 0
            positives.extend(np.flatnonzero(row).astype(np.int32) for row in labels)
            ids.extend(str(video_id) for video_id in batch.video_ids)
    model.train(was_training)
    local = (ids, classes, scores, positives, num_classes)
    by_id: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for part_ids, part_classes, part_scores, part_positives, part_num_classes in all_gather_objects(local, ctx):
        num_classes = max(num_classes, part_num_classes)
        if not part_ids:
            continue
        flat_classes, flat_scores = np.concatenate(part_classes), np.concatenate(part_scores)
        for row, video_id in enumerate(part_ids):
            by_id.setdefault(video_id, (flat_classes[row], flat_scores[row], part_positives[row]))
    order = sorted(by_id)
    if not order:
        raise TrainingError("the validation split is empty: no video to choose the best epoch by")
    return Predictions(
        video_ids=order,
        top_classes=np.stack([by_id[i][0] for i in order]),
        top_scores=np.stack([by_id[i][1] for i in order]),
        positives=[by_id[i][2] for i in order],
        num_classes=num_classes,
    )


def validation_metrics(predictions: Predictions, chunk: int = 1024) -> dict[str, float]:
    """GAP@20 and mAP of the YouTube-8M starter code (``fewframes.metrics.MetricsAccumulator``), fed in
    dense chunks where the classes outside a video's top k score -1 (below every probability)."""
    from fewframes.metrics import MetricsAccumulator

    accumulator = MetricsAccumulator(predictions.num_classes, top_k=GAP_TOP_K)
    total = len(predictions.video_ids)
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        rows = np.arange(stop - start)[:, None]
        dense_scores = np.full((stop - start, predictions.num_classes), -1.0, dtype=np.float32)
        dense_scores[rows, predictions.top_classes[start:stop]] = predictions.top_scores[start:stop]
        dense_labels = np.zeros((stop - start, predictions.num_classes), dtype=np.float32)
        for row, video_positives in enumerate(predictions.positives[start:stop]):
            dense_labels[row, video_positives] = 1.0
        accumulator.update(dense_scores, dense_labels)
    computed = accumulator.compute()
    return {"gap": float(computed["gap"]), "map": float(computed["map"])}


# --------------------------------------------------------------------------------------------------------
# The loop


def _signature_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            return key
    return None


def _state_dicts(run: Run) -> dict[str, Any]:
    return {role.name: role.model.state_dict() for role in run.roles}


def _role_path(run: Run, role: Role) -> Path:
    return run.out_dir / f"{role.name}.pt"


def _empty_position() -> dict[str, Any]:
    return {"epoch": 0, "batches_done": 0, "global_step": 0, "loss_sums": {}, "loss_count": 0.0}


def _load_finished(run: Run) -> dict[str, Any] | None:
    path = run.out_dir / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    key = _signature_mismatch(saved.get("signature", {}), run.signature)
    if key is not None:
        raise TrainingError(
            f"{run.out_dir} holds a finished run with other settings ({key} differs); use another out_dir"
        )
    return saved


def _new_progress() -> dict[str, Any]:
    """Where the run stands in its stages, and the early-stopping count (saved in every checkpoint)."""
    return {"stage": 0, "stage_start": 0, "since_best": 0, "stage_done": False, "stages": []}


def _stage_end(run: Run, stage_index: int, stage_start: int) -> int:
    """The epoch (exclusive) at which stage ``stage_index`` ends at the latest: its own ``epochs`` after its
    start, except the last stage, which runs to the run's maximum (sum of the stages' epochs), so the epochs an
    earlier stage saved by stopping early go to the last one and every run's maximum is ``epochs``."""
    total = sum(stage.epochs for stage in run.stages)
    if stage_index == len(run.stages) - 1:
        return total
    return min(stage_start + run.stages[stage_index].epochs, total)


def run_training(run: Run) -> dict[str, TrainResult]:
    """Train ``run`` (resuming from its latest checkpoint) and return a TrainResult per role.

    Early stopping (``TrainConfig.patience`` > 0): a stage ends once ``patience`` epochs in a row brought no
    role a validation GAP above its best so far + ``min_delta``; the next stage (if any) starts with the
    count at 0. The decision depends only on the validation figures, so a resumed run decides the same.
    """
    ctx = run.ctx
    finished = _load_finished(run)
    if finished is not None:
        return _results_from_disk(run, finished)

    checkpoints = CheckpointDir(run.out_dir / CHECKPOINT_DIR)
    state = checkpoints.latest()
    if state is not None:
        key = _signature_mismatch(state["signature"], run.signature)
        if key is not None:
            raise TrainingError(
                f"{checkpoints.directory} holds a checkpoint of a run with other settings ({key} differs); "
                "use another out_dir or delete it"
            )
        for role in run.roles:
            role.model.load_state_dict(state["models"][role.name])
        position = state["position"]
        history: list[dict[str, Any]] = list(state["history"])
        best: dict[str, dict[str, Any]] = dict(state["best"])
        progress = dict(state["progress"])
    else:
        position = _empty_position()
        history = []
        best = {role.name: {"epoch": 0, "gap": -math.inf, "map": math.nan} for role in run.roles}
        progress = _new_progress()

    if ctx.is_main and run.tracker is not None and run.params:
        run.tracker.log_params(run.params)

    total_epochs = sum(stage.epochs for stage in run.stages)
    patience = run.train_config.patience
    if ctx.is_main:
        _write_progress(run, history, best, total_epochs, None)
    if progress["stage_done"]:  # the checkpoint was written as its stage ended: go on with the next one
        progress = {**progress, "stage": progress["stage"] + 1, "stage_start": position["epoch"], "since_best": 0,
                    "stage_done": False}
    while progress["stage"] < len(run.stages):
        stage_index = progress["stage"]
        stage = run.stages[stage_index]
        end = _stage_end(run, stage_index, progress["stage_start"])
        if stage.before_stage is not None:
            stage.before_stage()
        optimizer = torch.optim.Adam(
            stage.trainable, lr=run.train_config.learning_rate, weight_decay=run.train_config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=run.train_config.lr_decay)
        scaler = make_grad_scaler(ctx, run.train_config)
        if state is not None and state.get("stage") == stage_index:  # resuming inside this stage
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler.is_enabled() and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        if state is not None:
            restore_rng_state(state["rng"][ctx.rank])
        state = None  # consumed: later stages start fresh
        objective = stage.objective.to(ctx.device)
        wrapped = wrap_ddp(objective, ctx, find_unused_parameters=stage.find_unused_parameters)

        for epoch in range(position["epoch"], end):
            epoch_started = time.monotonic()
            position = _train_epoch(run, stage, progress, wrapped, optimizer, scheduler, scaler, epoch, position,
                                    checkpoints, history, best, total_epochs)
            lr_used = scheduler.get_last_lr()[0]
            record, improved = _end_epoch(run, stage, epoch, position, lr_used, best)
            scheduler.step()
            history.append(record)
            since_best = 0 if improved else progress["since_best"] + 1
            stopped_early = bool(patience) and since_best >= patience and epoch + 1 < end
            stage_done = stopped_early or epoch + 1 >= end
            progress = {**progress, "since_best": since_best, "stage_done": stage_done}
            if stage_done:
                progress["stages"] = [*progress["stages"], {
                    "stage": stage.name, "epochs_run": epoch + 1 - progress["stage_start"],
                    "max_epochs": end - progress["stage_start"], "stopped_early": stopped_early,
                }]
            position = {**_empty_position(), "epoch": epoch + 1, "global_step": position["global_step"]}
            rng = all_gather_objects(capture_rng_state(), ctx)
            if ctx.is_main:
                _write_progress(run, history, best, total_epochs, time.monotonic() - epoch_started)
                _save_checkpoint(run, checkpoints, progress, optimizer, scheduler, scaler, position, history, best,
                                 rng)
            barrier(ctx)
            if stage_done:
                break
        progress = {**progress, "stage": stage_index + 1, "stage_start": position["epoch"], "since_best": 0,
                    "stage_done": False}

    stop = {"epochs_run": len(history), "max_epochs": total_epochs,
            "stopped_early": len(history) < total_epochs, "stages": progress["stages"]}
    return _finish(run, history, best, stop)


def _train_epoch(
    run: Run,
    stage: Stage,
    progress: dict[str, Any],
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    epoch: int,
    position: dict[str, Any],
    checkpoints: CheckpointDir,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    total_epochs: int,
) -> dict[str, Any]:
    from fewframes.training.data import train_batches
    from tqdm.auto import tqdm

    ctx, config = run.ctx, run.train_config
    skip = position["batches_done"] if position["epoch"] == epoch else 0
    loss_sums: dict[str, float] = dict(position["loss_sums"]) if skip else {}
    loss_count = float(position["loss_count"]) if skip else 0.0
    global_step = int(position["global_step"])
    batches, total = train_batches(
        run.data, config, ctx, strategy=stage.strategy, k=stage.k, paired=stage.paired, epoch=epoch, skip_batches=skip,
        rng_view=stage.rng_view,
    )
    wrapped.train()
    bar = tqdm(
        batches,
        total=total,
        initial=skip,
        desc=f"{run.kind} epoch {epoch + 1}/{total_epochs} ({stage.name})",
        unit="batch",
        disable=not (run.progress and ctx.is_main),
        leave=False,
    )
    batches_done = skip
    for args in bar:
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(ctx, config):
            loss, parts = wrapped(*args)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        batches_done += 1
        global_step += 1
        values = {"loss": float(loss.detach())}
        values.update({name: float(value) for name, value in parts.items() if name != "total"})
        for name, value in values.items():
            loss_sums[name] = loss_sums.get(name, 0.0) + value
        loss_count += 1.0
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        every = config.checkpoint_every_steps
        if every and global_step % every == 0 and batches_done < total:
            mid = {"epoch": epoch, "batches_done": batches_done, "global_step": global_step,
                   "loss_sums": dict(loss_sums), "loss_count": loss_count}
            rng = all_gather_objects(capture_rng_state(), ctx)
            if ctx.is_main:
                _save_checkpoint(run, checkpoints, progress, optimizer, scheduler, scaler, mid, history, best, rng)
    bar.close()
    return {"epoch": epoch, "batches_done": batches_done, "global_step": global_step,
            "loss_sums": loss_sums, "loss_count": loss_count}


def _end_epoch(
    run: Run, stage: Stage, epoch: int, position: dict[str, Any], lr_used: float, best: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Validate every role; save each role whose GAP beat its best by more than ``min_delta`` (updating
    ``best``). The epoch's history record, and whether any role improved (early stopping's count)."""
    from fewframes.training.data import val_batches

    ctx = run.ctx
    # Each rank's per-batch mean losses, summed over ranks: with equal local batches this is the global mean.
    names = sorted(position["loss_sums"])
    reduced = all_reduce_sum([position["loss_sums"][n] for n in names] + [position["loss_count"]], ctx)
    count = max(reduced[-1], 1.0)
    record: dict[str, Any] = {"epoch": epoch + 1, "stage": stage.name, "lr": lr_used}
    improved = False
    for name, total in zip(names, reduced[:-1]):
        record["train_loss" if name == "loss" else f"train_{name}"] = total / count
    for role in run.roles:
        predictions = collect_predictions(
            role.model, val_batches(run.data, run.train_config, ctx, strategy=role.val_strategy, k=role.val_k),
            ctx, run.train_config,
        )
        metrics = validation_metrics(predictions)
        record[f"{role.metric_prefix}val_gap"] = metrics["gap"]
        record[f"{role.metric_prefix}val_map"] = metrics["map"]
        if metrics["gap"] > best[role.name]["gap"] + run.train_config.min_delta:
            improved = True
            best[role.name] = {"epoch": epoch + 1, "gap": metrics["gap"], "map": metrics["map"]}
            if ctx.is_main:
                save_model(role.model, _role_path(run, role), role.model_config, role.student_config,
                           role=role.name, metrics={"val_gap": metrics["gap"], "val_map": metrics["map"],
                                                    "epoch": float(epoch + 1)},
                           class_names=run.data.store.class_names)
    if ctx.is_main and run.tracker is not None:
        run.tracker.log_metrics({k: v for k, v in record.items() if isinstance(v, float)}, step=epoch + 1)
    return record, improved


def _write_progress(
    run: Run, history: list[dict[str, Any]], best: dict[str, Any], total_epochs: int, epoch_seconds: float | None
) -> None:
    """``PROGRESS_FILE`` in the run's folder: epochs done of at most ``total_epochs``, the last and best
    validation GAP of the run's main model, the last epoch's wall time. Read by ``fewframes run``'s display
    (a small JSON file, not the checkpoint: reading that would load every tensor)."""
    role = next((r for r in run.roles if not r.metric_prefix), run.roles[0])
    last = history[-1].get(f"{role.metric_prefix}val_gap") if history else None
    role_best = best[role.name]
    state = {
        "kind": run.kind, "epochs_done": len(history), "max_epochs": total_epochs,
        "patience": run.train_config.patience, "val_gap": last,
        "best_epoch": int(role_best["epoch"]) or None,
        "best_val_gap": None if not math.isfinite(role_best["gap"]) else float(role_best["gap"]),
        "epoch_seconds": epoch_seconds, "updated": time.time(),
    }
    fsio.write_bytes_atomic(run.out_dir / PROGRESS_FILE, json.dumps(state).encode())


def _save_checkpoint(
    run: Run,
    checkpoints: CheckpointDir,
    progress: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    position: dict[str, Any],
    history: list[dict[str, Any]],
    best: dict[str, Any],
    rng: list[dict[str, Any]],
) -> None:
    state = {
        "signature": run.signature,
        "stage": progress["stage"],  # the stage whose optimizer this holds
        "progress": progress,
        "models": _state_dicts(run),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),  # {} when loss scaling is off (CPU)
        "rng": rng,  # one state per rank
        "position": position,
        "history": history,
        "best": best,
        "saved_at": time.time(),
    }
    checkpoints.save(state, position["global_step"])


def _finish(
    run: Run, history: list[dict[str, Any]], best: dict[str, Any], stop: dict[str, Any]
) -> dict[str, TrainResult]:
    ctx = run.ctx
    if ctx.is_main:
        summary = {
            "signature": run.signature,
            "history": history,
            "best": {name: values for name, values in best.items()},
            **stop,
        }
        fsio.write_bytes_atomic(run.out_dir / RESULT_FILE, json.dumps(summary, indent=2, default=float).encode())
    barrier(ctx)
    results = _results_from_disk(run, {"history": history, "best": best, **stop})
    if ctx.is_main and run.tracker is not None:
        run.tracker.log_metrics({"epochs_run": float(stop["epochs_run"]),
                                 "stopped_early": float(stop["stopped_early"])})
        for role in run.roles:
            result = results[role.name]
            run.tracker.log_metrics(
                {f"{role.metric_prefix}best_val_gap": result.best_val_gap,
                 f"{role.metric_prefix}best_val_map": result.best_val_map,
                 f"{role.metric_prefix}best_epoch": float(result.best_epoch)}
            )
            # An MLflow 3 logged model (pyfunc, the model file as artifact: servable, nothing pickled).
            # Named by the run's model key (a parallel run's co-trained teacher: ``<key>-teacher``).
            run.tracker.log_model_file(_role_path(run, role), run.tracker.model_name(role.name, bool(role.metric_prefix)))
    return results


def _role_history(run: Run, role: Role, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not role.metric_prefix:
        return [dict(record) for record in history]
    # The teacher's own view of a parallel run: its figures under the plain names.
    own = []
    for record in history:
        entry = {key: value for key, value in record.items() if not key.startswith("val_")}
        entry["val_gap"] = record[f"{role.metric_prefix}val_gap"]
        entry["val_map"] = record[f"{role.metric_prefix}val_map"]
        own.append(entry)
    return own


def _results_from_disk(run: Run, saved: dict[str, Any]) -> dict[str, TrainResult]:
    results = {}
    for role in run.roles:
        path = _role_path(run, role)
        model = load_model(path, map_location=run.ctx.device)
        role_best = saved["best"][role.name]
        results[role.name] = TrainResult(
            best_epoch=int(role_best["epoch"]),
            best_val_gap=float(role_best["gap"]),
            best_val_map=float(role_best["map"]),
            history=_role_history(run, role, saved["history"]),
            model_path=path,
            model=model,
            model_config=role.model_config,
            student_config=role.student_config,
            epochs_run=int(saved.get("epochs_run", len(saved["history"]))),
            stopped_early=bool(saved.get("stopped_early", False)),
            stages=list(saved.get("stages", [])),
        )
    return results


__all__ = ["Predictions", "Role", "Run", "Stage", "collect_predictions", "run_training", "validation_metrics"]
