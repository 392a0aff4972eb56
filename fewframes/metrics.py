"""YouTube-8M's evaluation metrics: GAP@k, mAP, Hit@1 and PERR, as the official starter code computes them.

The definitions follow google/youtube-8m (``eval_util.py``, ``average_precision_calculator.py``,
``mean_average_precision_calculator.py``), written here as vectorised numpy:

- Each video keeps its ``top_k`` highest-scoring classes (``numpy.argpartition``, the same call the
  official ``top_k_triplets`` makes, so the same pairs are kept even when scores tie at the cut).
- **GAP**: every kept (score, label) pair of every video is pooled and ranked by score; the result is the
  non-interpolated average precision of that list, with recall measured against *all* positive labels of
  all videos (positives that fell outside a video's top k can never be recalled).
- **mAP**: for each class, the AP of the kept pairs of that class, recall against the class's total
  positives; classes without any positive label are skipped (``filter_empty_classes=True`` in the current
  official code) and the mean is taken over the remaining classes. A class with positives but no kept
  pair has AP 0. ``per_class_ap`` reports NaN for the skipped classes.
- **Hit@1**: the fraction of videos whose highest-scoring class is a positive (``numpy.argmax``: the first
  of tied maxima, as in the official code).
- **PERR**: for a video with n positive labels, the fraction of positives among its n highest-scoring
  classes, counting only classes scored above 0 (the official code's ``predictions > 0`` test, so pass
  probabilities, not logits); a video with no labels contributes 0 and still counts in the mean.

Labels are binary: any value above 0 is a positive.

Ties. The official AP shuffles the pooled list with ``random.seed(0)`` and then sorts it stably by score,
so the order of tied pairs (and hence AP when a tie mixes positives and negatives) depends on the
accumulation order, even on the evaluation batch size. Here a tie is broken pessimistically: within equal
scores, negatives rank before positives. The value is then deterministic, independent of batching and
never above any order the official code could produce; on tie-free scores (any real model's float
outputs, almost surely) the two agree exactly. The top-k selection, Hit@1 and PERR use the same numpy
calls as the official code and match it even with ties.

Precision. Sums here are float64. With float32 labels the official code accumulates AP in float32
(``1.0 / numpy.float32`` stays float32), so it drifts from the exact value as the list grows: about 3e-7
for GAP at 1,000 videos x 3,862 classes (``benchmarks/bench_metrics.py``).

``MetricsAccumulator`` computes the same values in a stream of batches while keeping only each video's
top-k pairs and per-class positive counts: memory ``O(videos * top_k)``, never videos x classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewframes.errors import EvaluationError

DEFAULT_TOP_K = 20


def _check_inputs(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise EvaluationError(f"scores must be a (videos x classes) matrix, got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise EvaluationError(f"labels shape {labels.shape} does not match scores shape {scores.shape}")
    if scores.shape[1] < 1:
        raise EvaluationError("scores must have at least one class column")
    if not np.issubdtype(scores.dtype, np.number):
        raise EvaluationError(f"scores must be numeric, got dtype {scores.dtype}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # negating unsigned integers would wrap around
    if np.isnan(scores).any():
        raise EvaluationError("scores contain NaN")
    return scores, labels > 0


def _check_top_k(top_k: int) -> int:
    if int(top_k) != top_k or top_k < 1:
        raise EvaluationError(f"top_k must be a positive integer, got {top_k!r}")
    return int(top_k)


def top_k_pairs(scores: np.ndarray, positives: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each video's ``top_k`` highest-scoring classes, flattened.

    Returns ``(classes int64[n*k], scores [n*k], positives bool[n*k])`` with ``k = min(top_k, C)``.
    Uses ``numpy.argpartition(row, -k)[-k:]`` like the official ``top_k_triplets`` (same choice on ties).
    """
    k = min(top_k, scores.shape[1])
    classes = np.argpartition(scores, -k, axis=1)[:, -k:]
    kept_scores = np.take_along_axis(scores, classes, axis=1)
    kept_positives = np.take_along_axis(positives, classes, axis=1)
    # Floats keep their dtype (float32 model outputs: half the memory, same ranking); others become float64.
    score_dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64
    return (
        classes.reshape(-1).astype(np.int64),
        kept_scores.reshape(-1).astype(score_dtype, copy=False),
        kept_positives.reshape(-1),
    )


def _ranked_precision_at_positives(
    group: np.ndarray | None, scores: np.ndarray, positives: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rank pairs by score (descending) within each group; return (order, precision at each ranked pair).

    Ties: negatives before positives (see the module docstring). ``group`` None: one pooled list.
    """
    keys = [positives, -scores] if group is None else [positives, -scores, group]
    order = np.lexsort(keys)
    cumulative = np.cumsum(positives[order], dtype=np.int64)  # positives seen so far (exact integers)
    position = np.arange(1, order.size + 1, dtype=np.int64)
    if group is None:
        hits, rank = cumulative, position
    else:
        ranked_group = group[order]
        starts = np.flatnonzero(np.r_[True, ranked_group[1:] != ranked_group[:-1]])
        lengths = np.diff(np.r_[starts, order.size])
        hits = cumulative - np.repeat(np.r_[0, cumulative][starts], lengths)
        rank = position - np.repeat(starts, lengths)
    return order, hits / rank


def pooled_average_precision(scores: np.ndarray, positives: np.ndarray, num_positives: float) -> float:
    """Non-interpolated AP of one ranked list, recall against ``num_positives`` (the official ``ap_at_n``)."""
    if scores.size == 0 or num_positives <= 0:
        return 0.0
    order, precision = _ranked_precision_at_positives(None, scores, positives)
    return float(precision[positives[order]].sum() / num_positives)


def per_class_average_precision(
    classes: np.ndarray, scores: np.ndarray, positives: np.ndarray, positives_per_class: np.ndarray
) -> np.ndarray:
    """AP of each class over its kept pairs, recall against its total positives; NaN where it has none."""
    num_classes = positives_per_class.shape[0]
    ap = np.zeros(num_classes, dtype=np.float64)
    if scores.size:
        order, precision = _ranked_precision_at_positives(classes, scores, positives)
        ranked_classes = classes[order]
        hit = positives[order]
        ap = np.bincount(ranked_classes[hit], weights=precision[hit], minlength=num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = np.where(positives_per_class > 0, ap / np.maximum(positives_per_class, 1), np.nan)
    return ap


def _mean_over_classes_with_positives(per_class_ap: np.ndarray) -> float:
    present = per_class_ap[~np.isnan(per_class_ap)]
    return float(present.mean()) if present.size else float("nan")


def global_average_precision(scores: Any, labels: Any, top_k: int = DEFAULT_TOP_K) -> float:
    """GAP@top_k of a (videos x classes) score matrix against binary labels (YouTube-8M's GAP)."""
    scores, positives = _check_inputs(scores, labels)
    _, kept_scores, kept_positives = top_k_pairs(scores, positives, _check_top_k(top_k))
    return pooled_average_precision(kept_scores, kept_positives, float(positives.sum()))


def average_precision_per_class(scores: Any, labels: Any, top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """float64[classes]: each class's AP over the pairs that made a video's top k; NaN for classes without positives."""
    scores, positives = _check_inputs(scores, labels)
    classes, kept_scores, kept_positives = top_k_pairs(scores, positives, _check_top_k(top_k))
    return per_class_average_precision(classes, kept_scores, kept_positives, positives.sum(axis=0))


def mean_average_precision(scores: Any, labels: Any, top_k: int = DEFAULT_TOP_K) -> float:
    """mAP as the official evaluation computes it: mean AP over classes that have positives (NaN if none)."""
    return _mean_over_classes_with_positives(average_precision_per_class(scores, labels, top_k))


def _hits_at_one(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    top = np.argmax(scores, axis=1)
    return positives[np.arange(scores.shape[0]), top].astype(np.float64)


def hit_at_one(scores: Any, labels: Any) -> float:
    """Fraction of videos whose top-scoring class is a positive."""
    scores, positives = _check_inputs(scores, labels)
    if scores.shape[0] == 0:
        return 0.0
    return float(_hits_at_one(scores, positives).mean())


def _precision_at_equal_recall_per_video(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Each video's precision among its n top-scoring classes (n = its number of positives; 0 if n = 0)."""
    num_labels = positives.sum(axis=1)
    precision = np.zeros(scores.shape[0], dtype=np.float64)
    # One argpartition per distinct label count: the same call, row by row, as the official loop.
    for n in np.unique(num_labels):
        if n == 0:
            continue
        rows = np.flatnonzero(num_labels == n)
        top = np.argpartition(scores[rows], -n, axis=1)[:, -n:]
        counted = np.take_along_axis(positives[rows], top, axis=1) & (np.take_along_axis(scores[rows], top, axis=1) > 0)
        precision[rows] = counted.sum(axis=1) / n
    return precision


def precision_at_equal_recall_rate(scores: Any, labels: Any) -> float:
    """PERR: mean over videos of the precision among a video's n top-scoring classes, n = its label count."""
    scores, positives = _check_inputs(scores, labels)
    if scores.shape[0] == 0:
        return 0.0
    return float(_precision_at_equal_recall_per_video(scores, positives).mean())


class MetricsAccumulator:
    """Streams batches of (scores, labels) and computes the same metrics as the batch functions.

    Keeps each video's top-k (class, score, positive) triple, per-class positive counts and per-video
    Hit@1/PERR sums; never a full videos x classes matrix.
    """

    def __init__(self, num_classes: int, top_k: int = DEFAULT_TOP_K) -> None:
        if num_classes < 1:
            raise EvaluationError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.top_k = _check_top_k(top_k)
        self.num_videos = 0
        self._positives_per_class = np.zeros(self.num_classes, dtype=np.int64)
        self._classes: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._positives: list[np.ndarray] = []
        self._hit_sum = 0.0
        self._perr_sum = 0.0

    def update(self, scores_batch: Any, labels_batch: Any) -> None:
        """Add a batch of videos: ``scores_batch`` and ``labels_batch`` are (batch x num_classes) arrays."""
        scores, positives = _check_inputs(scores_batch, labels_batch)
        if scores.shape[1] != self.num_classes:
            raise EvaluationError(f"scores_batch has {scores.shape[1]} classes, the accumulator expects {self.num_classes}")
        if scores.shape[0] == 0:
            return
        classes, kept_scores, kept_positives = top_k_pairs(scores, positives, self.top_k)
        self._classes.append(classes.astype(np.int32))
        self._scores.append(kept_scores)
        self._positives.append(kept_positives)
        self._positives_per_class += positives.sum(axis=0)
        self._hit_sum += float(_hits_at_one(scores, positives).sum())
        self._perr_sum += float(_precision_at_equal_recall_per_video(scores, positives).sum())
        self.num_videos += scores.shape[0]

    def compute(self) -> dict[str, Any]:
        """``{"gap", "map", "hit_at_1", "perr", "per_class_ap" (float64[C], NaN without positives), "num_videos"}``."""
        if self.num_videos == 0:
            raise EvaluationError("no videos were evaluated (the accumulator is empty)")
        classes = np.concatenate(self._classes).astype(np.int64)
        scores = np.concatenate(self._scores)
        positives = np.concatenate(self._positives)
        per_class = per_class_average_precision(classes, scores, positives, self._positives_per_class)
        return {
            "gap": pooled_average_precision(scores, positives, float(self._positives_per_class.sum())),
            "map": _mean_over_classes_with_positives(per_class),
            "hit_at_1": self._hit_sum / self.num_videos,
            "perr": self._perr_sum / self.num_videos,
            "per_class_ap": per_class,
            "num_videos": self.num_videos,
        }

    def kept_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(classes int32[videos, k], scores[videos, k]): each video's kept top-k pairs, in evaluation order
        (what a paired bootstrap over videos needs; ``fewframes.stats``)."""
        if self.num_videos == 0:
            return np.zeros((0, 0), dtype=np.int32), np.zeros((0, 0), dtype=np.float32)
        width = min(self.top_k, self.num_classes)
        return (np.concatenate(self._classes).reshape(-1, width),
                np.concatenate(self._scores).reshape(-1, width))

    @property
    def positives_per_class(self) -> np.ndarray:
        """int64[num_classes]: how many evaluated videos carry each class."""
        return self._positives_per_class.copy()


__all__ = [
    "DEFAULT_TOP_K",
    "MetricsAccumulator",
    "average_precision_per_class",
    "global_average_precision",
    "hit_at_one",
    "mean_average_precision",
    "precision_at_equal_recall_rate",
]
