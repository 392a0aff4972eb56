"""plan-students / plan-baselines: the fan-out lists of the DAG, checked against the frame store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fewframes.config import BASELINE_SELECTIONS, DISTILL_LOSSES, MAX_FRAMES, TRAINING_MODES
from fewframes.errors import PipelineError

from .common import reports_errors


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
