"""The claims a run is checked against, each with its comparisons, intervals and a three-way verdict
(``fewframes.stats.VERDICT_RULE``), and the recommended student.

Sanity claims first (a run whose teacher is no skyline, or whose distillation is only a warm start, cannot
support the paper's claims), then the paper's. Each claim is a set of paired comparisons d = A - B of test
GAP@20 (seed means), fixed here before any run:

- ``teacher_skyline``: teacher - every baseline (every selection, every k, all the data) > 0.
- ``distillation_beats_warm_start``: every serial student (each loss, final matching) - the warm-start
  control at its k > 0.
- ``uniform_best_baseline``: Uniform-k - every other selection, at every k, > 0.
- ``students_beat_uniform``: every teacher-student variant - Uniform-k at its k > 0.
- ``k30_within_tolerance``: Serial (c) at k=30 (the paper's final method) - teacher > -tolerance x teacher GAP.
- ``serial_vs_parallel``: |serial - parallel| < tolerance x teacher GAP for every (loss, k) run in both modes.
- ``intermediate_no_gain``: final - intermediate matching > -tolerance x teacher GAP for every variant.
- ``margin_grows``: (Serial (c) - Uniform-k) at each training-data fraction - the same at the next larger
  fraction > 0 (the margin grows at every step as the data shrinks).

A claim whose models are not in the run is "not measured", never guessed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fewframes.config import BASELINE_SELECTIONS, DISTILL_LOSSES, TRAINING_MODES
from fewframes.report.configs import (
    BASELINE_NAMES,
    LOSS_LETTERS,
    WARM_START,
    Config,
    Grid,
    _fraction,
    fmt_interval,
)
from fewframes.report.intervals import Intervals
from fewframes.stats import EQUIVALENT, FAILS, GREATER, HOLDS, INCONCLUSIVE, Interval, judge

NOT_MEASURED = "not measured"
# The paper's k for the "within 1 %" claim, intermediate matching (Table 2), less data (Table 3), Figure 2.
PAPER_K = 30


@dataclass
class Part:
    """One comparison of a claim: d = A - B (or a contrast), its interval and its verdict."""

    label: str
    estimate: float | None
    interval: Interval | None
    verdict: str = INCONCLUSIVE
    # The Bonferroni interval that decides "does not hold" when the claim has several parts (else None).
    refute: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {"label": self.label, "estimate": self.estimate, "verdict": self.verdict,
                "low": None if interval is None else interval.low, "high": None if interval is None else interval.high,
                "refute_interval": None if self.refute is None else list(self.refute)}

    def text(self) -> str:
        low, high = (None, None) if self.interval is None else (self.interval.low, self.interval.high)
        value = "–" if self.estimate is None else f"{self.estimate:+.4f}"
        return f"{self.label}: {value} {fmt_interval(low, high) if low is not None else '(no interval)'}"


@dataclass
class Claim:
    key: str
    claim: str
    verdict: str
    evidence: str
    family: str = ""
    kind: str = GREATER
    margin: float = 0.0
    parts: list[Part] = field(default_factory=list)

    def deciding(self) -> Part | None:
        """The part the verdict rests on: the first that does not hold, else the weakest (lowest bound)."""
        if not self.parts:
            return None
        failing = [p for p in self.parts if p.verdict == FAILS]
        if failing:
            return failing[0]
        inconclusive = [p for p in self.parts if p.verdict == INCONCLUSIVE]
        if inconclusive:
            return inconclusive[0]
        bounded = [p for p in self.parts if p.interval is not None]
        if self.kind == EQUIVALENT:
            return max(bounded, key=lambda p: max(abs(p.interval.low), abs(p.interval.high)), default=self.parts[0])
        return min(bounded, key=lambda p: p.interval.low, default=self.parts[0])

    def as_dict(self) -> dict[str, Any]:
        deciding = self.deciding()
        return {
            "key": self.key, "claim": self.claim, "verdict": self.verdict, "evidence": self.evidence,
            "family": self.family, "kind": self.kind, "margin": self.margin,
            "estimate": None if deciding is None else deciding.estimate,
            "interval": None if deciding is None or deciding.interval is None else
            {"low": deciding.interval.low, "high": deciding.interval.high, "level": deciding.interval.level,
             "part": deciding.label},
            "parts": [p.as_dict() for p in self.parts],
        }


def _mean_gap(config: Config | None) -> float | None:
    return None if config is None else config.mean("gap")


Comparison = tuple[str, list[tuple[float, Config | None]]]  # label, contrast terms


def decide(key: str, text: str, grid: Grid, intervals: Intervals, comparisons: list[Comparison], *,
           kind: str = GREATER, margin: float = 0.0, missing: str = "", note: str = "") -> Claim:
    """The claim's parts, their intervals and the verdict by the rule; "not measured" without comparisons."""
    comparisons = [(label, terms) for label, terms in comparisons if all(c is not None for _, c in terms)]
    if not comparisons:
        return Claim(key, text, NOT_MEASURED, missing, grid.family, kind, margin)
    parts = []
    for label, terms in comparisons:
        interval = intervals.contrast(terms)
        estimate = interval.estimate if interval is not None else sum(w * (_mean_gap(c) or 0.0) for w, c in terms)
        parts.append(Part(label, estimate, interval))
    verdict, part_verdicts = judge([p.interval for p in parts], kind=kind, margin=margin)
    for part, part_verdict in zip(parts, part_verdicts):
        part.verdict = part_verdict
        if part.interval is not None and len(parts) > 1:
            part.refute = part.interval.at_level(1.0 - (1.0 - part.interval.level) / len(parts))
    counts = {v: part_verdicts.count(v) for v in (HOLDS, INCONCLUSIVE, FAILS)}
    rule = (f"d > {margin:+.4f}" if kind == GREATER else f"|d| < {margin:.4f}")
    evidence = (f"{len(parts)} comparison(s), rule {rule}: {counts[HOLDS]} hold, {counts[INCONCLUSIVE]} "
                f"inconclusive, {counts[FAILS]} do not hold")
    claim = Claim(key, text, verdict, "", grid.family, kind, margin, parts)
    deciding = claim.deciding()
    if deciding is not None:
        evidence += f"; {'deciding' if verdict != HOLDS else 'weakest'}: {deciding.text()}"
    others = [p.text() for p in parts if p.verdict != HOLDS and p is not deciding]
    if others:
        evidence += "; also not holding: " + "; ".join(others[:6]) + (" …" if len(others) > 6 else "")
    if any(p.interval is None for p in parts):
        evidence += "; no per-video predictions for some models (no interval: inconclusive)"
    claim.evidence = evidence + (f"; {note}" if note else "")
    return claim


# ----------------------------------------------------------------------------------------------------------
# the claims
# ----------------------------------------------------------------------------------------------------------


def claim_teacher_skyline(grid: Grid, intervals: Intervals) -> Claim:
    teacher = grid.teacher()
    comparisons = [(f"Teacher − {BASELINE_NAMES[s]} k={k}", [(1.0, teacher), (-1.0, grid.baseline(s, k))])
                   for k in grid.ks() for s in BASELINE_SELECTIONS if grid.baseline(s, k) is not None]
    return decide("teacher_skyline", "the teacher beats every k-frame model trained without it (every baseline, "
                  "every selection, at every k)", grid, intervals, comparisons,
                  missing="no teacher or no baseline in this run")


def claim_distillation_beats_warm_start(grid: Grid, intervals: Intervals) -> Claim:
    comparisons = []
    for k in grid.ks():
        control = grid.control(WARM_START, k)
        for loss in DISTILL_LOSSES:
            student = grid.student("serial", loss, k)
            if student is not None and control is not None:
                comparisons.append((f"Serial {LOSS_LETTERS[loss]} − warm start k={k}", [(1.0, student), (-1.0, control)]))
    return decide("distillation_beats_warm_start", "distillation beats the warm-start control (every serial "
                  "student vs the student started from the teacher's classifier and trained with L_CE only, at "
                  "its k)", grid, intervals, comparisons, missing="no warm-start control with a serial student")


def claim_uniform_best(grid: Grid, intervals: Intervals) -> Claim:
    comparisons = [(f"Uniform-k − {BASELINE_NAMES[s]} k={k}", [(1.0, grid.baseline("uniform", k)),
                                                                 (-1.0, grid.baseline(s, k))])
                   for k in grid.ks() for s in BASELINE_SELECTIONS if s != "uniform"]
    return decide("uniform_best_baseline", "Uniform-k is the best baseline (at every k)", grid, intervals,
                  comparisons, missing="no k with Uniform-k and another baseline")


def claim_students_beat_uniform(grid: Grid, intervals: Intervals) -> Claim:
    comparisons = []
    for mode, loss in grid.variants():
        for k in grid.ks():
            student = grid.student(mode, loss, k)
            if student is not None:
                comparisons.append((f"{student.name} − Uniform-k k={k}", [(1.0, student), (-1.0, grid.baseline("uniform", k))]))
    return decide("students_beat_uniform", "every teacher–student variant beats Uniform-k at the same k", grid,
                  intervals, comparisons, missing="no student with a Uniform-k baseline at its k")


def _teacher_margin(grid: Grid, tolerance: float) -> float | None:
    gap = _mean_gap(grid.teacher())
    return None if gap is None else tolerance * gap


def claim_k30_close(grid: Grid, intervals: Intervals, tolerance: float, k: int = PAPER_K) -> Claim:
    text = f"the k={k} student (Serial (c)) is within {tolerance:.0%} GAP of the teacher"
    bound = _teacher_margin(grid, tolerance)
    student = grid.student("serial", "rep_pred_ce", k)
    if bound is None or student is None:
        return Claim("k30_within_tolerance", text, NOT_MEASURED, f"no teacher or no Serial (c) student at k={k}",
                     grid.family, GREATER)
    others = [c for c in grid.students() if c.k == k and c is not student and c.mean("gap") is not None]
    note = ("other k=%d students (not part of the verdict): " % k + ", ".join(
        f"{c.name} {c.mean('gap') - _mean_gap(grid.teacher()):+.4f}" for c in others)) if others else ""
    return decide("k30_within_tolerance", text, grid, intervals,
                  [(f"Serial (c) k={k} − Teacher", [(1.0, student), (-1.0, grid.teacher())])],
                  margin=-bound, note=note)


def claim_serial_parallel(grid: Grid, intervals: Intervals, tolerance: float) -> Claim:
    text = "serial ≈ parallel training"
    bound = _teacher_margin(grid, tolerance)
    comparisons = [(f"Serial − Parallel {LOSS_LETTERS[loss]} k={k}",
                    [(1.0, grid.student("serial", loss, k)), (-1.0, grid.student("parallel", loss, k))])
                   for loss in DISTILL_LOSSES for k in grid.ks()]
    if bound is None:
        return Claim("serial_vs_parallel", text, NOT_MEASURED, "no teacher in this run", grid.family, EQUIVALENT)
    return decide("serial_vs_parallel", text, grid, intervals, comparisons, kind=EQUIVALENT, margin=bound,
                  missing="no (loss, k) with both a serial and a parallel student")


def claim_intermediate(grid: Grid, intervals: Intervals, tolerance: float, k: int) -> Claim:
    text = f"intermediate matching gives no gain over final matching (k={k})"
    bound = _teacher_margin(grid, tolerance)
    comparisons = [(f"{mode.capitalize()} {LOSS_LETTERS[loss]}: final − intermediate",
                    [(1.0, grid.student(mode, loss, k)), (-1.0, grid.student(mode, loss, k, "intermediate"))])
                   for mode in TRAINING_MODES for loss in DISTILL_LOSSES]
    if bound is None:
        return Claim("intermediate_no_gain", text, NOT_MEASURED, "no teacher in this run", grid.family, GREATER)
    return decide("intermediate_no_gain", text, grid, intervals, comparisons, margin=-bound,
                  missing=f"no variant with both matchings at k={k}")


def claim_margin_grows(grid: Grid, intervals: Intervals, k: int) -> Claim:
    text = f"the student's margin over Uniform-k grows as training data shrinks (Serial (c), k={k})"
    pairs = [(f, grid.student("serial", "rep_pred_ce", k, fraction=f), grid.baseline("uniform", k, f))
             for f in grid.fractions(k)]
    pairs = [(f, s, u) for f, s, u in pairs if s is not None and u is not None]
    comparisons = [(f"margin at {small:.0%} − margin at {large:.0%}", [(1.0, s1), (-1.0, u1), (-1.0, s2), (1.0, u2)])
                   for (small, s1, u1), (large, s2, u2) in zip(pairs, pairs[1:])]
    margins = ", ".join(f"{f:.0%}: {_mean_gap(s) - _mean_gap(u):+.4f}" for f, s, u in pairs
                        if _mean_gap(s) is not None and _mean_gap(u) is not None)
    return decide("margin_grows", text, grid, intervals, comparisons,
                  missing=f"fewer than two data fractions with both models at k={k}",
                  note=f"margin Serial (c) − Uniform-k by training data: {margins}" if margins else "")


CLAIM_ORDER = ("teacher_skyline", "distillation_beats_warm_start", "uniform_best_baseline", "students_beat_uniform",
               "k30_within_tolerance", "serial_vs_parallel", "intermediate_no_gain", "margin_grows")


def all_claims(grid: Grid, intervals: Intervals, tolerance: float, intermediate_k: int, fraction_k: int) -> list[Claim]:
    """The sanity claims, then the paper's, for one family."""
    return [
        claim_teacher_skyline(grid, intervals),
        claim_distillation_beats_warm_start(grid, intervals),
        claim_uniform_best(grid, intervals),
        claim_students_beat_uniform(grid, intervals),
        claim_k30_close(grid, intervals, tolerance),
        claim_serial_parallel(grid, intervals, tolerance),
        claim_intermediate(grid, intervals, tolerance, intermediate_k),
        claim_margin_grows(grid, intervals, fraction_k),
    ]


# ----------------------------------------------------------------------------------------------------------
# the recommended student
# ----------------------------------------------------------------------------------------------------------


def recommend_student(rows: list[dict[str, Any]], tolerance: float = 0.01) -> dict[str, Any] | None:
    """The smallest-k student (final matching, full data) whose GAP is within ``tolerance`` (relative) of the
    teacher's; ties go to the higher GAP. None when there is no teacher row or no student qualifies."""
    teachers = [r for r in rows if r["role"] == "teacher" and r.get("gap") is not None]
    if not teachers:
        return None
    threshold = float(teachers[0]["gap"]) * (1.0 - tolerance)
    candidates = [
        r
        for r in rows
        if r["role"] == "student"
        and (r.get("matching") or "final") == "final"
        and _fraction(r) >= 1.0
        and r.get("gap") is not None
        and float(r["gap"]) >= threshold
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda r: (int(r["k"]), -float(r["gap"])))


def cost(config: Config | None, name: str) -> float | None:
    """A per-model figure (benchmark) of the configuration's own-seed run."""
    if config is None:
        return None
    value = config.first().get(name)
    return None if value in (None, "") else float(value)


def recommendation(grid: Grid, tolerance: float) -> dict[str, Any] | None:
    """``recommend_student`` over configurations (seed means), with the chosen one's speed-up."""
    teacher = grid.teacher()
    if teacher is None:
        return None
    rows = [{"role": "teacher", "gap": teacher.mean("gap")}]
    by_id = {}
    for config in grid.students():
        rows.append({"role": "student", "k": config.k, "gap": config.mean("gap"), "matching": "final",
                     "train_fraction": 1.0, "config": id(config)})
        by_id[id(config)] = config
    chosen = recommend_student(rows, tolerance)
    if chosen is None:
        return None
    config = by_id[chosen["config"]]
    result: dict[str, Any] = {
        "model_key": config.first().get("model_key", ""), "name": config.name, "k": config.k,
        "family": config.family, "mode": config.mode, "loss": config.loss, "gap": config.mean("gap"),
        "map": config.mean("map"), "seeds": config.n, "teacher_gap": teacher.mean("gap"), "tolerance": tolerance,
    }
    ratio: Callable[[str], float | None] = lambda name: (  # noqa: E731
        None if cost(config, name) is None or not cost(teacher, name) else cost(config, name) / cost(teacher, name))
    result["flops_ratio"], result["latency_ratio"] = ratio("gflops"), ratio("latency_ms_p50")
    s, t = cost(config, "e2e_throughput_videos_s"), cost(teacher, "e2e_throughput_videos_s")
    result["speedup_e2e"] = None if not s or not t else s / t
    s, t = cost(config, "throughput_videos_s"), cost(teacher, "throughput_videos_s")
    result["speedup_model"] = None if not s or not t else s / t
    return result


def seed_noise(grid: Grid) -> str:
    """How much GAP moves with the seed alone ('' if no configuration ran with several seeds)."""
    repeated = sorted((c for c in grid.configs.values() if c.spread("gap") is not None), key=lambda c: c.label)
    if not repeated:
        return ""
    spreads = [c.spread("gap") for c in repeated]
    listed = ", ".join(f"{c.label}: {c.spread('gap'):.4f} (n={c.n})" for c in repeated)
    return (f"Seed noise: the sample standard deviation of GAP over seeds is {listed}; mean "
            f"{statistics.fmean(spreads):.4f}.")
