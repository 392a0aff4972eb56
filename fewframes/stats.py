"""Paired bootstrap intervals over test videos, and the three-way verdict rule the report's claims use.

Every model of a run is evaluated on the same test videos, so a difference between two models is measured
on paired data: resampling the *videos* with replacement (the same resample for every model) and
recomputing each model's GAP@20 (and mAP) on it gives the distribution of the difference that the finite
test set allows. Each model's per-video top-20 (class, score) pairs and label ids (``predictions.parquet``
of its evaluation) are all that GAP and mAP need.

How the resamples are computed (vectorised, exact). A resample is a vector of counts ``c`` (how often each
video is drawn). The pooled ranked list of a resample holds each pair of video v ``c[v]`` times; copies of
a pair tie, and the ranking rule of ``fewframes.metrics`` (ties: negatives before positives) puts them next
to each other. So the pairs are sorted once, by (-score, positive), and a positive pair of weight ``w``
with ``W`` pairs and ``H`` positives (weighted) before it contributes the precisions of its ``w`` copies:
sum_{t=1..w} (H + t) / (W + t) = w - (W - H) * (Harmonic(W + w) - Harmonic(W)). GAP = the sum over positive
pairs / the resample's positives (``c @ labels per video``); per-class AP the same within each class.
The full sample (every count 1) gives exactly ``fewframes.metrics``' GAP and mAP.

How seeds combine (a configuration run with several seeds). Each bootstrap replicate draws one video
resample (shared by every model and every seed) and, for each side of a comparison independently, draws
that side's seeds with replacement; the side's value in the replicate is the mean GAP of the drawn seeds on
the drawn videos. The point estimate is the difference of the seed means on all test videos. So the
interval covers both the choice of test videos and the training seed (with 3 seeds the seed part is coarse:
a bootstrap over 3 values; with 1 seed it is the video bootstrap alone). Seeds are not paired across sides
(a baseline's seed s has nothing in common with a student's seed s).

The verdict rule (written before any run; ``VERDICT_RULE`` is printed in the report). A claim is a
statement about a difference d (e.g. student GAP - Uniform-k GAP) with a margin m:

- ``greater`` (superiority when m = 0; non-inferiority "A within x of B" is d = A - B, m = -x;
  "no gain of B over A by more than x" is d = A - B, m = -x): **holds** if the 95 % interval of d lies
  entirely above m (low > m); **does not hold** if it lies entirely below m (high < m); **inconclusive**
  otherwise.
- ``equivalent`` ("A about equal to B within x"): **holds** if the interval lies inside (-x, x); **does not
  hold** if it lies entirely outside (low > x or high < -x); **inconclusive** otherwise.
- A claim made of several comparisons (e.g. "at every k"): **holds** if every part holds; **does not hold**
  if any part does not hold; **inconclusive** otherwise. "Holds" needs every part at 95 % (an
  intersection-union test needs no correction); "does not hold" judges each part with a Bonferroni interval
  at level 1 - 0.05 / (number of parts), so one part out of many does not refute a claim by chance.

numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
GREATER, EQUIVALENT = "greater", "equivalent"
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
# Resamples computed at once: bounds the [chunk x pairs] float64 work arrays (~10 MB at 600 videos x 20 pairs).
_CHUNK = 100

VERDICT_RULE = (
    "Every difference a claim uses is a paired bootstrap over the test videos (B resamples, seeded; the same "
    "video resample for every model; a configuration's seeds are resampled too and averaged). A claim "
    "\"d > m\" (superiority: m = 0; \"within x\": m = -x) **holds** if the 95 % interval of d lies entirely "
    "above m, **does not hold** if it lies entirely below m, and is **inconclusive** otherwise. A claim "
    "\"|d| < x\" (about equal) holds if the interval lies inside (-x, x), does not hold if it lies entirely "
    "outside, and is inconclusive otherwise. A claim of several comparisons holds if every part holds, does "
    "not hold if any part does not hold (each part then judged with a Bonferroni interval at level "
    "1 - 0.05 / parts), and is inconclusive otherwise. The rule was fixed before the run; margins are set "
    "from the claim's wording, never from the numbers."
)


# ----------------------------------------------------------------------------------------------------------
# per-video predictions
# ----------------------------------------------------------------------------------------------------------


@dataclass
class VideoPredictions:
    """One model's kept top-k pairs per test video and each video's label count.

    ``classes`` int[n, k], ``scores`` float[n, k] (a video's k highest-scoring classes), ``positive``
    bool[n, k] (the class is one of the video's labels), ``num_labels`` int[n], ``labels`` the label ids of
    each video (for per-class positives, mAP).
    """

    video_ids: list[str]
    classes: np.ndarray
    scores: np.ndarray
    labels: list[np.ndarray]
    positive: np.ndarray = field(init=False)
    num_labels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.classes = np.asarray(self.classes, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.classes.shape != self.scores.shape or self.classes.ndim != 2:
            raise ValueError(f"classes {self.classes.shape} and scores {self.scores.shape} must be equal [videos, k]")
        if len(self.video_ids) != self.classes.shape[0] or len(self.labels) != self.classes.shape[0]:
            raise ValueError("video_ids, labels and the rows of classes must have the same length")
        self.labels = [np.unique(np.asarray(v, dtype=np.int64)) for v in self.labels]
        self.num_labels = np.array([v.size for v in self.labels], dtype=np.int64)
        self.positive = np.array([np.isin(row, labels) for row, labels in zip(self.classes, self.labels)],
                                 dtype=bool).reshape(self.classes.shape)

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    def aligned(self, video_ids: Sequence[str]) -> VideoPredictions:
        """The same predictions in the order of ``video_ids`` (which must be exactly this model's videos)."""
        if list(video_ids) == self.video_ids:
            return self
        where = {v: i for i, v in enumerate(self.video_ids)}
        if len(where) != len(video_ids) or any(v not in where for v in video_ids):
            raise ValueError("the two models were not evaluated on the same test videos")
        order = np.array([where[v] for v in video_ids], dtype=np.int64)
        return VideoPredictions(list(video_ids), self.classes[order], self.scores[order],
                                [self.labels[i] for i in order])

    def gap(self) -> float:
        """GAP@k on all videos (equals ``fewframes.metrics.global_average_precision`` on the full matrix)."""
        return float(resampled_gap(self, np.ones((1, self.num_videos), dtype=np.int64))[0])

    def map(self) -> float:
        return float(resampled_map(self, np.ones((1, self.num_videos), dtype=np.int64))[0])


# ----------------------------------------------------------------------------------------------------------
# resamples
# ----------------------------------------------------------------------------------------------------------


def resample_indices(num_videos: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """int64[resamples, num_videos]: the videos drawn with replacement by each resample (seeded)."""
    if num_videos < 1 or resamples < 1:
        raise ValueError(f"need at least one video and one resample, got {num_videos} and {resamples}")
    return np.random.default_rng(seed).integers(0, num_videos, size=(resamples, num_videos))


def counts_of(indices: np.ndarray, num_videos: int) -> np.ndarray:
    """int64[resamples, num_videos]: how often each video is drawn by each row of ``indices``."""
    rows = indices.shape[0]
    flat = (indices + np.arange(rows)[:, None] * num_videos).reshape(-1)
    return np.bincount(flat, minlength=rows * num_videos).reshape(rows, num_videos)


def _harmonic(n: int) -> np.ndarray:
    """H[0..n]: H[m] = 1 + 1/2 + ... + 1/m."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))])


def _precision_sums(order: np.ndarray, video_of_pair: np.ndarray, positive: np.ndarray, starts: np.ndarray,
                    counts: np.ndarray) -> np.ndarray:
    """float64[resamples, groups]: per group (one list ranked on its own), the sum of the precisions at each
    positive copy, for pairs already ranked by ``order`` (group, -score, negatives first)."""
    ranked_video = video_of_pair[order]
    ranked_positive = positive[order]
    hit_rank = np.flatnonzero(ranked_positive)  # only positive pairs contribute
    lengths = np.diff(np.r_[starts, order.size])
    group_of_rank = np.repeat(np.arange(starts.size), lengths)
    hit_group = group_of_rank[hit_rank]
    hit_starts = np.flatnonzero(np.r_[True, hit_group[1:] != hit_group[:-1]]) if hit_rank.size else hit_rank
    harmonic = _harmonic(int(counts.sum(axis=1).max()) * int(np.bincount(video_of_pair).max()) + 1)
    out = np.zeros((counts.shape[0], starts.size), dtype=np.float64)
    if hit_rank.size == 0:
        return out
    for begin in range(0, counts.shape[0], _CHUNK):
        chunk = counts[begin:begin + _CHUNK]
        cum_all = np.cumsum(chunk[:, ranked_video], axis=1)  # [chunk, pairs]
        before_group = np.where(starts > 0, cum_all[:, np.maximum(starts - 1, 0)], 0)  # [chunk, groups]
        weight = chunk[:, ranked_video[hit_rank]]  # [chunk, positive pairs]
        cum_hit = np.cumsum(weight, axis=1)
        hit_before_group = np.where(hit_starts > 0, cum_hit[:, np.maximum(hit_starts - 1, 0)], 0)
        hit_lengths = np.diff(np.r_[hit_starts, hit_rank.size])
        # pairs and positives ranked before each positive pair, within its group
        seen = cum_all[:, hit_rank] - weight - before_group[:, hit_group]
        hits = cum_hit - weight - np.repeat(hit_before_group, hit_lengths, axis=1)
        contribution = weight - (seen - hits) * (harmonic[seen + weight] - harmonic[seen])
        out[begin:begin + _CHUNK, hit_group[hit_starts]] = np.add.reduceat(contribution, hit_starts, axis=1)
    return out


def resampled_gap(predictions: VideoPredictions, counts: np.ndarray) -> np.ndarray:
    """float64[resamples]: GAP of ``predictions`` on each resample (a row of video counts)."""
    n, k = predictions.classes.shape
    scores = predictions.scores.reshape(-1)
    positive = predictions.positive.reshape(-1)
    order = np.lexsort([positive, -scores])  # -score, then negatives before positives (metrics' tie rule)
    video_of_pair = np.repeat(np.arange(n), k)
    sums = _precision_sums(order, video_of_pair, positive, np.array([0]), counts)[:, 0]
    total = counts @ predictions.num_labels
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, sums / np.maximum(total, 1), 0.0)


def resampled_map(predictions: VideoPredictions, counts: np.ndarray) -> np.ndarray:
    """float64[resamples]: mAP (mean AP over the classes with positives in the resample)."""
    n, k = predictions.classes.shape
    classes = predictions.classes.reshape(-1)
    scores = predictions.scores.reshape(-1)
    positive = predictions.positive.reshape(-1)
    order = np.lexsort([positive, -scores, classes])
    ranked_classes = classes[order]
    starts = np.flatnonzero(np.r_[True, ranked_classes[1:] != ranked_classes[:-1]])
    group_class = ranked_classes[starts]
    video_of_pair = np.repeat(np.arange(n), k)
    sums = _precision_sums(order, video_of_pair, positive, starts, counts)  # [B, classes with a kept pair]
    # Positives of every class in each resample (classes never kept still count: their AP is 0).
    label_classes = np.concatenate(predictions.labels + [np.zeros(0, np.int64)])
    num_classes = int(max(label_classes.max(initial=-1), classes.max(initial=-1))) + 1
    label_video = np.repeat(np.arange(n), predictions.num_labels)
    indicator = np.zeros((n, num_classes), dtype=np.float64)
    indicator[label_video, label_classes] = 1.0
    class_positives = counts @ indicator  # [B, C]
    ap_sums = np.zeros_like(class_positives)
    ap_sums[:, group_class] = sums
    present = class_positives > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = np.where(present, ap_sums / np.maximum(class_positives, 1), 0.0)
    classes_present = present.sum(axis=1)
    return np.where(classes_present > 0, ap.sum(axis=1) / np.maximum(classes_present, 1), np.nan)


# ----------------------------------------------------------------------------------------------------------
# intervals of contrasts between configurations
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Interval:
    """A point estimate of a difference and its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    # The replicates (kept to widen the interval for a Bonferroni "does not hold" test).
    replicates: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def at_level(self, level: float) -> tuple[float, float]:
        tail = (1.0 - level) / 2.0
        return float(np.quantile(self.replicates, tail)), float(np.quantile(self.replicates, 1.0 - tail))

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "resamples": self.resamples}


@dataclass
class Side:
    """One configuration in a contrast: its per-seed full-sample values and per-seed resampled values."""

    values: np.ndarray  # float[seeds]: each seed's metric on all test videos
    replicates: np.ndarray  # float[seeds, resamples]: each seed's metric on each video resample

    @property
    def seeds(self) -> int:
        return int(self.values.size)


class PairedBootstrap:
    """The video resamples shared by every model of one run, and each model's metric on them (cached).

    ``add(name, predictions)`` registers a model (its videos are put in the order of the first model's);
    ``side(names)`` gives a configuration (its seeds' model names); ``contrast`` the interval of a weighted
    sum of configurations (``[(+1, a), (-1, b)]`` for a - b).
    """

    def __init__(self, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, metric: str = "gap") -> None:
        if metric not in ("gap", "map"):
            raise ValueError(f"metric must be gap or map, got {metric!r}")
        self.resamples, self.seed, self.metric = int(resamples), int(seed), metric
        self.video_ids: list[str] | None = None
        self.counts: np.ndarray | None = None
        self._values: dict[str, tuple[float, np.ndarray]] = {}

    def add(self, name: str, predictions: VideoPredictions) -> None:
        if self.video_ids is None:
            self.video_ids = list(predictions.video_ids)
            self.counts = counts_of(resample_indices(len(self.video_ids), self.resamples, self.seed),
                                    len(self.video_ids))
        predictions = predictions.aligned(self.video_ids)
        compute = resampled_gap if self.metric == "gap" else resampled_map
        full = float(compute(predictions, np.ones((1, predictions.num_videos), dtype=np.int64))[0])
        self._values[name] = (full, compute(predictions, self.counts))

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def side(self, names: Sequence[str]) -> Side:
        missing = [n for n in names if n not in self._values]
        if missing or not names:
            raise KeyError(f"no predictions for {missing or 'an empty configuration'}")
        return Side(np.array([self._values[n][0] for n in names]), np.stack([self._values[n][1] for n in names]))

    def contrast(self, terms: Sequence[tuple[float, Side]], level: float = DEFAULT_LEVEL) -> Interval:
        return contrast_interval(terms, level=level, seed=self.seed)


def contrast_interval(terms: Sequence[tuple[float, Side]], level: float = DEFAULT_LEVEL,
                      seed: int = DEFAULT_SEED) -> Interval:
    """The interval of sum(weight x side mean) over the shared video resamples, each side's seeds resampled
    with replacement (independently per side; seeded). All sides must hold the same resamples."""
    if not terms:
        raise ValueError("a contrast needs at least one term")
    resamples = terms[0][1].replicates.shape[1]
    rng = np.random.default_rng([seed, 1])  # the seed draws: their own stream, repeatable per contrast
    estimate = 0.0
    replicates = np.zeros(resamples, dtype=np.float64)
    for weight, side in terms:
        if side.replicates.shape[1] != resamples:
            raise ValueError("the sides of a contrast were resampled differently")
        estimate += weight * float(side.values.mean())
        if side.seeds == 1:
            replicates += weight * side.replicates[0]
        else:
            drawn = rng.integers(0, side.seeds, size=(resamples, side.seeds))  # [B, seeds]
            replicates += weight * side.replicates[drawn, np.arange(resamples)[:, None]].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return Interval(estimate, float(np.quantile(replicates, tail)), float(np.quantile(replicates, 1.0 - tail)),
                    level, resamples, replicates)


# ----------------------------------------------------------------------------------------------------------
# verdicts
# ----------------------------------------------------------------------------------------------------------


def verdict(low: float, high: float, *, kind: str = GREATER, margin: float = 0.0,
            refute: tuple[float, float] | None = None) -> str:
    """The three-way verdict of one comparison from its interval (``VERDICT_RULE``).

    ``kind`` ``greater``: the claim is d > margin; ``equivalent``: |d| < margin (margin > 0).
    ``refute``: the (wider) interval that decides "does not hold" (default: the same interval).
    """
    if any(math.isnan(v) for v in (low, high)):
        return INCONCLUSIVE
    r_low, r_high = refute if refute is not None else (low, high)
    if kind == GREATER:
        if low > margin:
            return HOLDS
        if r_high < margin:
            return FAILS
        return INCONCLUSIVE
    if kind == EQUIVALENT:
        if margin <= 0:
            raise ValueError(f"an equivalence margin must be > 0, got {margin}")
        if -margin < low and high < margin:
            return HOLDS
        if r_low > margin or r_high < -margin:
            return FAILS
        return INCONCLUSIVE
    raise ValueError(f"kind must be {GREATER!r} or {EQUIVALENT!r}, got {kind!r}")


def combine(verdicts: Sequence[str]) -> str:
    """A claim of several parts: holds if every part holds, does not hold if any does not, else inconclusive."""
    if not verdicts:
        raise ValueError("a claim needs at least one part")
    if any(v == FAILS for v in verdicts):
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def judge(intervals: Sequence[Interval | None], *, kind: str = GREATER, margin: float = 0.0) -> tuple[str, list[str]]:
    """(claim verdict, part verdicts) of a claim whose parts are ``intervals`` (``VERDICT_RULE``: "does not
    hold" with a Bonferroni interval at level 1 - (1 - level) / parts). A part without an interval (None:
    nothing to resample) is inconclusive."""
    parts = []
    for interval in intervals:
        if interval is None:
            parts.append(INCONCLUSIVE)
            continue
        wide = interval.at_level(1.0 - (1.0 - interval.level) / len(intervals)) if len(intervals) > 1 else None
        parts.append(verdict(interval.low, interval.high, kind=kind, margin=margin, refute=wide))
    return combine(parts), parts


__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "EQUIVALENT",
    "FAILS",
    "GREATER",
    "HOLDS",
    "INCONCLUSIVE",
    "Interval",
    "PairedBootstrap",
    "Side",
    "VERDICTS",
    "VERDICT_RULE",
    "VideoPredictions",
    "combine",
    "contrast_interval",
    "counts_of",
    "judge",
    "resample_indices",
    "resampled_gap",
    "resampled_map",
    "verdict",
]
