"""The run's models grouped into configurations (rows that differ only in their seed), their names, and the
number formats the tables use.

A row is one evaluated model (``fewframes.components.steps.report_rows``): ``role`` (teacher | student |
baseline | control), ``family`` (the model family, default ``hrnn``), ``k``, ``frame_selection``, ``loss``,
``mode``, ``matching``, ``train_fraction``, ``control`` (warm_start | teacher_on_k, for role control),
``seed``, ``model_key`` and the metrics.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fewframes.config import DISTILL_LOSSES

DEFAULT_FAMILY = "hrnn"
WARM_START, TEACHER_ON_K = "warm_start", "teacher_on_k"
BASELINE_NAMES = {
    "uniform": "Uniform-k",
    "random": "Random-k",
    "first": "First-k",
    "middle": "Middle-k",
    "last": "Last-k",
    "first_middle_last": "First-Middle-Last-k",
}
LOSS_NAMES = {"rep": "L_rep", "rep_ce": "L_rep+L_CE", "rep_pred_ce": "L_rep+L_pred+L_CE"}
LOSS_LETTERS = {"rep": "(a)", "rep_ce": "(b)", "rep_pred_ce": "(c)"}
CONTROL_NAMES = {WARM_START: "Warm-start control", TEACHER_ON_K: "Teacher on k frames"}
FAMILY_NAMES = {"hrnn": "hierarchical LSTM", "netvlad": "NetVLAD", "nextvlad": "NeXtVLAD"}


def _fraction(row: dict[str, Any]) -> float:
    value = row.get("train_fraction", 1.0)
    return 1.0 if value in (None, "") else float(value)


def _k(row: dict[str, Any]) -> int | None:
    value = row.get("k")
    return None if value in (None, "") else int(value)


def family_of(row: dict[str, Any]) -> str:
    return str(row.get("family") or DEFAULT_FAMILY)


def config_of(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a model is, without its seed:
    (family, role, control, k, frame_selection, loss, mode, matching, train_fraction)."""
    role, family = row["role"], family_of(row)
    if role == "teacher":
        return (family, "teacher", "", None, "all", "", "", "", _fraction(row))
    if role == "baseline":
        return (family, "baseline", "", _k(row), row.get("frame_selection", ""), "", "", "", _fraction(row))
    if role == "control":
        return (family, "control", row.get("control", ""), _k(row), row.get("frame_selection") or "uniform",
                "", "", "", _fraction(row))
    return (family, "student", "", _k(row), "uniform", row.get("loss", ""), row.get("mode", ""),
            row.get("matching") or "final", _fraction(row))


@dataclass
class Config:
    """One configuration and its runs (one per seed)."""

    family: str
    role: str
    control: str
    k: int | None
    frame_selection: str
    loss: str
    mode: str
    matching: str
    train_fraction: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def seeds(self) -> list[Any]:
        return [r.get("seed", "") for r in self.rows]

    @property
    def model_keys(self) -> list[str]:
        return [str(r.get("model_key", "")) for r in self.rows]

    def values(self, metric: str) -> list[float]:
        return [float(r[metric]) for r in self.rows if r.get(metric) not in (None, "")]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def spread(self, metric: str) -> float | None:
        """Sample standard deviation over seeds (None with fewer than 2)."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else None

    def first(self) -> dict[str, Any]:
        """The run of the pipeline's own seed (the one not marked as a repeat), for per-model facts."""
        plain = [r for r in self.rows if "-seed" not in str(r.get("model_key", ""))]
        return (plain or self.rows)[0]

    @property
    def name(self) -> str:
        if self.role == "teacher":
            return "Teacher-Skyline"
        if self.role == "baseline":
            return BASELINE_NAMES.get(self.frame_selection, self.frame_selection)
        if self.role == "control":
            return CONTROL_NAMES.get(self.control, self.control or "control")
        name = f"{self.mode.capitalize()} {LOSS_LETTERS.get(self.loss, '')}, {LOSS_NAMES.get(self.loss, self.loss)}"
        return name + (" (intermediate)" if self.matching == "intermediate" else "")

    @property
    def label(self) -> str:
        """The name with its k (and data fraction when reduced): what a figure legend or a claim part says."""
        text = self.name + (f" k={self.k}" if self.k is not None else "")
        return text + (f" ({self.train_fraction:.0%} data)" if self.train_fraction < 1.0 else "")


def group_configs(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], Config]:
    configs: dict[tuple[Any, ...], Config] = {}
    for row in rows:
        key = config_of(row)
        if key not in configs:
            configs[key] = Config(*key)
        configs[key].rows.append(row)
    return configs


def families(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The model families of a run, the default one first."""
    found = {family_of(r) for r in rows}
    return sorted(found, key=lambda f: (f != DEFAULT_FAMILY, f))


class Grid:
    """Look-ups into one family's configurations by what the paper's tables ask for."""

    def __init__(self, rows: list[dict[str, Any]], family: str | None = None) -> None:
        self.family = family if family is not None else (families(rows) or [DEFAULT_FAMILY])[0]
        self.rows = [r for r in rows if family_of(r) == self.family]
        self.configs = group_configs(self.rows)

    def _get(self, role: str, control: str, k: int | None, selection: str, loss: str = "", mode: str = "",
             matching: str = "", fraction: float = 1.0) -> Config | None:
        return self.configs.get((self.family, role, control, k, selection, loss, mode, matching, fraction))

    def teacher(self, fraction: float = 1.0) -> Config | None:
        return self._get("teacher", "", None, "all", fraction=fraction)

    def baseline(self, selection: str, k: int, fraction: float = 1.0) -> Config | None:
        return self._get("baseline", "", k, selection, fraction=fraction)

    def student(self, mode: str, loss: str, k: int, matching: str = "final", fraction: float = 1.0) -> Config | None:
        return self._get("student", "", k, "uniform", loss, mode, matching, fraction)

    def control(self, kind: str, k: int, fraction: float = 1.0, selection: str = "uniform") -> Config | None:
        return self._get("control", kind, k, selection, fraction=fraction)

    def ks(self) -> list[int]:
        return sorted({c.k for c in self.configs.values() if c.k is not None and c.train_fraction >= 1.0
                       and c.matching in ("", "final")})

    def present(self, role: str) -> list[Config]:
        return [c for c in self.configs.values() if c.role == role]

    def students(self, matching: str = "final", fraction: float = 1.0) -> list[Config]:
        return [c for c in self.present("student") if c.matching == matching and c.train_fraction == fraction]

    def variants(self) -> list[tuple[str, str]]:
        """(mode, loss) pairs with final-matching full-data students, in the paper's order."""
        found = {(c.mode, c.loss) for c in self.students()}
        order = [(m, loss) for m in ("parallel", "serial") for loss in DISTILL_LOSSES]
        return [v for v in order if v in found] + sorted(found - set(order))

    def fractions(self, k: int) -> list[float]:
        """The training-data fractions run at ``k`` (below 1), then 1."""
        found = {c.train_fraction for c in self.configs.values() if c.k == k and c.train_fraction < 1.0}
        return sorted(found) + [1.0]


# ----------------------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_config(config: Config | None, metric: str, digits: int = 4) -> str:
    """'0.6123' for one seed, '0.6123 ± 0.0041 (n=3)' for several, '–' when not run."""
    if config is None or config.mean(metric) is None:
        return "–"
    text = fmt(config.mean(metric), digits)
    spread = config.spread(metric)
    if spread is not None:
        text += f" ± {spread:.{digits}f} (n={len(config.values(metric))})"
    return text


def fmt_cost(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_interval(low: float | None, high: float | None, digits: int = 4) -> str:
    if low is None or high is None:
        return "–"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"
