"""plan-teachers / plan-students / plan-baselines / plan-teacher-on-k: the fan-out lists of the DAG, checked
against the frame store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fewframes.config import BASELINE_SELECTIONS, DISTILL_LOSSES, MAX_FRAMES, TRAINING_MODES
from fewframes.errors import PipelineError

from .common import CONTROLS, TEACHER_ON_K, WARM_START, WARM_START_LOSS, reports_errors


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


def _controls(controls: Iterable[str] | None) -> list[str]:
    return _check_choices("controls", controls or [], CONTROLS)


def _again_ks(repeat_ks: Iterable[int] | None, ks: list[int], max_length: int, where: str) -> list[int]:
    """The ks the extra seeds cover: ``repeat_ks``, or every k of ``ks`` when it is empty."""
    return _check_ks(repeat_ks, max_length, where) if repeat_ks else list(ks)


def _repeats(
    repeat_seeds: Iterable[int] | None, repeat_ks: Iterable[int] | None, seed: int, ks: list[int],
    max_length: int, where: str,
) -> list[tuple[int, int]]:
    """``(k, extra seed)`` of every repeated run: each extra seed (``_repeat_seeds``) at each k it covers
    (``_again_ks``), seed-major. Both lists are checked even when the other is empty."""
    extra_seeds = _repeat_seeds(repeat_seeds, seed)
    again_ks = _again_ks(repeat_ks, ks, max_length, where)
    return [(k, s) for s in extra_seeds for k in again_ks]


def _seeded(seed: int, run_seed: int | None) -> dict[str, Any]:
    """A plan entry's ``seed`` and ``repeat``: the pipeline's own ``seed``, or ``run_seed`` (an extra seed)."""
    return {"seed": int(seed) if run_seed is None else run_seed, "repeat": run_seed is not None}


def plan_teachers(
    fraction_k: int = 0,
    train_fractions: list[float] | None = None,
    repeat_seeds: list[int] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The teachers to train: one on all the training data for ``seed`` and for each of ``repeat_seeds``
    (each student distils from the teacher of its own seed), and one for ``seed`` on each reduced fraction of
    ``train_fractions`` when ``fraction_k`` is set (Table 3: the teacher sees only what its students see)."""
    fractions = _fractions(train_fractions or [])
    extra_seeds = _repeat_seeds(repeat_seeds, seed)
    plan = [{"role": "teacher", "seed": int(seed), "train_fraction": 1.0, "repeat": False}]
    plan += [{"role": "teacher", "seed": s, "train_fraction": 1.0, "repeat": True} for s in extra_seeds]
    if fraction_k:
        plan += [{"role": "teacher", "seed": int(seed), "train_fraction": f, "repeat": False}
                 for f in fractions if f < 1.0]
    return plan


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
    controls: list[str] | None = None,
    *,
    max_length: int = MAX_FRAMES,
    where: str = "",
) -> list[dict[str, Any]]:
    """The students to distil: modes x losses x ks (final matching), plus intermediate matching at
    ``intermediate_k`` (each mode x loss), Serial(c) on ``train_fractions`` of the data at ``fraction_k``,
    and Serial(c) again at each of ``repeat_ks`` (empty: every k) for each of ``repeat_seeds`` (other than
    ``seed``), so the report can give mean +- spread over seeds. With ``warm_start`` in ``controls``, the
    warm-start control (role ``control``: the student warm-started from its teacher's classifier, L_CE only,
    loss ``WARM_START_LOSS``) at every k and again for the extra seeds at ``repeat_ks``. Every entry carries
    its ``role`` and ``seed``; ``repeat`` marks the extra seeds (their model keys end in ``-seed<N>``); a
    student distils from the teacher of its own seed and train fraction (``plan_teachers``).
    ``max_length``: the longest video (``where`` names its frame store in errors)."""
    ks = _check_ks(ks, max_length, where)
    losses = _check_choices("losses", losses, DISTILL_LOSSES)
    modes = _check_choices("modes", modes, TRAINING_MODES)
    fractions = _fractions(train_fractions or [])
    repeats = _repeats(repeat_seeds, repeat_ks, seed, ks, max_length, where)
    warm_start = WARM_START in _controls(controls)

    def student(
        k: int, loss: str, mode: str, matching: str = "final", fraction: float = 1.0, run_seed: int | None = None
    ) -> dict[str, Any]:
        control = loss == WARM_START_LOSS
        return {"role": "control" if control else "student", "control": WARM_START if control else "",
                "k": k, "loss": loss, "mode": mode, "matching": matching, "train_fraction": fraction,
                **_seeded(seed, run_seed)}

    plan = [student(k, loss, mode) for mode in modes for loss in losses for k in ks]
    if intermediate_k:
        (k,) = _check_ks([intermediate_k], max_length, where)
        plan += [student(k, loss, mode, "intermediate") for mode in modes for loss in losses]
    if fractions and fraction_k:
        (k,) = _check_ks([fraction_k], max_length, where)
        plan += [student(k, "rep_pred_ce", "serial", "final", f) for f in fractions if f < 1.0]
    plan += [student(k, "rep_pred_ce", "serial", run_seed=s) for k, s in repeats]
    if warm_start:
        plan += [student(k, WARM_START_LOSS, "serial") for k in ks]
        plan += [student(k, WARM_START_LOSS, "serial", run_seed=s) for k, s in repeats]
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
    ``train_fractions`` of the data at ``fraction_k`` and Uniform-k at ``repeat_ks`` (empty: every k) for
    each of ``repeat_seeds`` (other than ``seed``); entries carry ``seed`` and ``repeat`` as in
    ``plan_students``."""
    ks = _check_ks(ks, max_length, where)
    selections = _check_choices("baselines", frame_selections, BASELINE_SELECTIONS)
    fractions = _fractions(train_fractions or [])
    repeats = _repeats(repeat_seeds, repeat_ks, seed, ks, max_length, where)

    def baseline(k: int, selection: str, fraction: float = 1.0, run_seed: int | None = None) -> dict[str, Any]:
        return {"role": "baseline", "k": k, "frame_selection": selection, "train_fraction": fraction,
                **_seeded(seed, run_seed)}

    plan = [baseline(k, s) for s in selections for k in ks]
    if fractions and fraction_k:
        (k,) = _check_ks([fraction_k], max_length, where)
        plan += [baseline(k, "uniform", f) for f in fractions if f < 1.0]
    plan += [baseline(k, "uniform", run_seed=s) for k, s in repeats]
    return plan


def plan_teacher_on_k(
    ks: list[int],
    repeat_seeds: list[int] | None = None,
    repeat_ks: list[int] | None = None,
    seed: int = 0,
    controls: list[str] | None = None,
    *,
    max_length: int = MAX_FRAMES,
    where: str = "",
) -> list[dict[str, Any]]:
    """The teacher-on-k control (role ``control``, no training): the all-data teacher of ``seed`` fed k
    uniformly spaced frames at every k, and each extra seed's teacher at ``repeat_ks`` (empty: every k);
    empty unless ``teacher_on_k`` is in ``controls``."""
    ks = _check_ks(ks, max_length, where)
    repeats = _repeats(repeat_seeds, repeat_ks, seed, ks, max_length, where)
    if TEACHER_ON_K not in _controls(controls):
        return []

    def entry(k: int, run_seed: int | None = None) -> dict[str, Any]:
        return {"role": "control", "control": TEACHER_ON_K, "k": k, "frame_selection": "uniform",
                "train_fraction": 1.0, **_seeded(seed, run_seed)}

    return [entry(k) for k in ks] + [entry(k, s) for k, s in repeats]


@reports_errors("plan-teachers")
def plan_teachers_step(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """``plan_teachers`` (one line on bad input)."""
    return plan_teachers(*args, **kwargs)


@reports_errors("plan-students")
def plan_students_step(store_path: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """``plan_students`` checked against the frame store's longest video."""
    return plan_students(*args, max_length=_store_max_length(store_path), where=store_path, **kwargs)


@reports_errors("plan-baselines")
def plan_baselines_step(store_path: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """``plan_baselines`` checked against the frame store's longest video."""
    return plan_baselines(*args, max_length=_store_max_length(store_path), where=store_path, **kwargs)


@reports_errors("plan-teacher-on-k")
def plan_teacher_on_k_step(store_path: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """``plan_teacher_on_k`` checked against the frame store's longest video."""
    return plan_teacher_on_k(*args, max_length=_store_max_length(store_path), where=store_path, **kwargs)
