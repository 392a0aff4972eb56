"""fewframes.metrics against a faithful port of YouTube-8M's official evaluation code, and by hand."""

from __future__ import annotations

import heapq
import numbers
import random

import numpy
import numpy as np
import pytest

from fewframes.errors import EvaluationError
from fewframes.metrics import (
    MetricsAccumulator,
    average_precision_per_class,
    global_average_precision,
    hit_at_one,
    mean_average_precision,
    precision_at_equal_recall_rate,
)

# ---------------------------------------------------------------------------------------------------
# Reference: a port of google/youtube-8m's evaluation (master), numpy only, kept line for line so it can be
# compared with the source. Only Python-2 idioms and the TensorFlow import were dropped.
# ---------------------------------------------------------------------------------------------------


class RefAveragePrecisionCalculator:
    """google/youtube-8m average_precision_calculator.py: AveragePrecisionCalculator (non-interpolated)."""

    def __init__(self, top_n=None):
        self._top_n = top_n
        self._total_positives = 0
        self._heap = []

    @property
    def heap_size(self):
        return len(self._heap)

    @property
    def num_accumulated_positives(self):
        return self._total_positives

    def accumulate(self, predictions, actuals, num_positives=None):
        # average_precision_calculator.py: AveragePrecisionCalculator.accumulate
        if len(predictions) != len(actuals):
            raise ValueError("the shape of predictions and actuals does not match.")
        if num_positives is not None:
            if not isinstance(num_positives, numbers.Number) or num_positives < 0:
                raise ValueError("'num_positives' was provided but it wan't a nonzero number.")
        if num_positives is not None:
            self._total_positives += num_positives
        else:
            self._total_positives += numpy.size(numpy.where(numpy.array(actuals) > 0))
        topk = self._top_n
        heap = self._heap
        for i in range(numpy.size(predictions)):
            if topk is None or len(heap) < topk:
                heapq.heappush(heap, (predictions[i], actuals[i]))
            else:
                if predictions[i] > heap[0][0]:
                    heapq.heappop(heap)
                    heapq.heappush(heap, (predictions[i], actuals[i]))

    def peek_ap_at_n(self):
        # average_precision_calculator.py: AveragePrecisionCalculator.peek_ap_at_n
        if self.heap_size <= 0:
            return 0
        predlists = numpy.array(list(zip(*self._heap)))
        return self.ap_at_n(predlists[0], predlists[1], n=self._top_n, total_num_positives=self._total_positives)

    @staticmethod
    def ap_at_n(predictions, actuals, n=20, total_num_positives=None):
        # average_precision_calculator.py: AveragePrecisionCalculator.ap_at_n
        if len(predictions) != len(actuals):
            raise ValueError("the shape of predictions and actuals does not match.")
        ap = 0.0
        predictions = numpy.array(predictions)
        actuals = numpy.array(actuals)
        predictions, actuals = RefAveragePrecisionCalculator._shuffle(predictions, actuals)
        sortidx = sorted(range(len(predictions)), key=lambda k: predictions[k], reverse=True)
        if total_num_positives is None:
            numpos = numpy.size(numpy.where(actuals > 0))
        else:
            numpos = total_num_positives
        if numpos == 0:
            return 0
        if n is not None:
            numpos = min(numpos, n)
        delta_recall = 1.0 / numpos
        poscount = 0.0
        r = len(sortidx)
        if n is not None:
            r = min(r, n)
        for i in range(r):
            if actuals[sortidx[i]] > 0:
                poscount += 1
                ap += poscount / (i + 1) * delta_recall
        return ap

    @staticmethod
    def _shuffle(predictions, actuals):
        # average_precision_calculator.py: AveragePrecisionCalculator._shuffle
        random.seed(0)
        suffidx = random.sample(range(len(predictions)), len(predictions))
        return predictions[suffidx], actuals[suffidx]


class RefMeanAveragePrecisionCalculator:
    """google/youtube-8m mean_average_precision_calculator.py (filter_empty_classes=True, the default)."""

    def __init__(self, num_class, filter_empty_classes=True):
        self._ap_calculators = [RefAveragePrecisionCalculator() for _ in range(num_class)]
        self._num_class = num_class
        self._filter_empty_classes = filter_empty_classes

    def accumulate(self, predictions, actuals, num_positives=None):
        if not num_positives:
            num_positives = [None for _ in range(self._num_class)]
        for i in range(self._num_class):
            self._ap_calculators[i].accumulate(predictions[i], actuals[i], num_positives[i])

    def peek_map_at_n(self):
        aps = []
        for i in range(self._num_class):
            if not self._filter_empty_classes or self._ap_calculators[i].num_accumulated_positives > 0:
                aps.append(self._ap_calculators[i].peek_ap_at_n())
        return aps


def ref_flatten(lists):
    # eval_util.py: flatten
    return [item for sublist in lists for item in sublist]


def ref_calculate_hit_at_one(predictions, actuals):
    # eval_util.py: calculate_hit_at_one
    top_prediction = numpy.argmax(predictions, 1)
    hits = actuals[numpy.arange(actuals.shape[0]), top_prediction]
    return numpy.average(hits)


def ref_calculate_precision_at_equal_recall_rate(predictions, actuals):
    # eval_util.py: calculate_precision_at_equal_recall_rate
    aggregated_precision = 0.0
    num_videos = actuals.shape[0]
    for row in numpy.arange(num_videos):
        num_labels = int(numpy.sum(actuals[row]))
        top_indices = numpy.argpartition(predictions[row], -num_labels)[-num_labels:]
        item_precision = 0.0
        for label_index in top_indices:
            if predictions[row][label_index] > 0:
                item_precision += actuals[row][label_index]
        item_precision /= top_indices.size
        aggregated_precision += item_precision
    aggregated_precision /= num_videos
    return aggregated_precision


def ref_top_k_triplets(predictions, labels, k=20):
    # eval_util.py: top_k_triplets
    m = len(predictions)
    k = min(k, m)
    indices = numpy.argpartition(predictions, -k)[-k:]
    return [(index, predictions[index], labels[index]) for index in indices]


def ref_top_k_by_class(predictions, labels, k=20):
    # eval_util.py: top_k_by_class
    k = min(k, predictions.shape[1])
    num_classes = predictions.shape[1]
    prediction_triplets = []
    for video_index in range(predictions.shape[0]):
        prediction_triplets.extend(ref_top_k_triplets(predictions[video_index], labels[video_index], k))
    out_predictions = [[] for _ in range(num_classes)]
    out_labels = [[] for _ in range(num_classes)]
    for triplet in prediction_triplets:
        out_predictions[triplet[0]].append(triplet[1])
        out_labels[triplet[0]].append(triplet[2])
    out_true_positives = [numpy.sum(labels[:, i]) for i in range(num_classes)]
    return out_predictions, out_labels, out_true_positives


def ref_calculate_gap(predictions, actuals, top_k=20):
    # eval_util.py: calculate_gap
    gap_calculator = RefAveragePrecisionCalculator()
    sparse_predictions, sparse_labels, num_positives = ref_top_k_by_class(predictions, actuals, top_k)
    gap_calculator.accumulate(ref_flatten(sparse_predictions), ref_flatten(sparse_labels), sum(num_positives))
    return gap_calculator.peek_ap_at_n()


class RefEvaluationMetrics:
    """eval_util.py: EvaluationMetrics (accumulate per batch, get); mAP = numpy.mean(aps) as utils.AddEpochSummary."""

    def __init__(self, num_class, top_k):
        self.sum_hit_at_one = 0.0
        self.sum_perr = 0.0
        self.map_calculator = RefMeanAveragePrecisionCalculator(num_class)
        self.global_ap_calculator = RefAveragePrecisionCalculator()
        self.top_k = top_k
        self.num_examples = 0

    def accumulate(self, predictions, labels):
        batch_size = labels.shape[0]
        mean_hit_at_one = ref_calculate_hit_at_one(predictions, labels)
        mean_perr = ref_calculate_precision_at_equal_recall_rate(predictions, labels)
        sparse_predictions, sparse_labels, num_positives = ref_top_k_by_class(predictions, labels, self.top_k)
        self.map_calculator.accumulate(sparse_predictions, sparse_labels, num_positives)
        self.global_ap_calculator.accumulate(
            ref_flatten(sparse_predictions), ref_flatten(sparse_labels), sum(num_positives)
        )
        self.num_examples += batch_size
        self.sum_hit_at_one += mean_hit_at_one * batch_size
        self.sum_perr += mean_perr * batch_size

    def get(self):
        aps = self.map_calculator.peek_map_at_n()
        return {
            "hit_at_1": self.sum_hit_at_one / self.num_examples,
            "perr": self.sum_perr / self.num_examples,
            "map": numpy.mean(aps),
            "gap": self.global_ap_calculator.peek_ap_at_n(),
        }


def ref_per_class_ap(predictions, labels, top_k):
    """The official per-class APs, placed at their class index (NaN where the official code skips the class)."""
    sparse_predictions, sparse_labels, num_positives = ref_top_k_by_class(predictions, labels, top_k)
    out = np.full(predictions.shape[1], np.nan)
    for c in range(predictions.shape[1]):
        calculator = RefAveragePrecisionCalculator()
        calculator.accumulate(sparse_predictions[c], sparse_labels[c], num_positives[c])
        if calculator.num_accumulated_positives > 0:
            out[c] = calculator.peek_ap_at_n()
    return out


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def random_data(seed: int, videos: int = 60, classes: int = 30, *, empty_classes: int = 3, tie_free: bool = True):
    rng = np.random.default_rng(seed)
    if tie_free:
        # A permutation of distinct values: no two scores are equal anywhere.
        scores = (rng.permutation(videos * classes).reshape(videos, classes) + 1.0) / (videos * classes + 1.0)
    else:
        scores = np.round(rng.random((videos, classes)) * 8) / 8
    labels = (rng.random((videos, classes)) < 0.12).astype(np.float32)
    labels[:, rng.choice(classes, size=empty_classes, replace=False)] = 0.0  # classes nobody carries
    labels[0] = 0.0  # a video without labels
    return scores.astype(np.float32), labels


def label_pure_ties(seed: int, videos: int = 50, classes: int = 25):
    """Many equal scores, but a score level never holds both a positive and a negative: AP is order-free."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((videos, classes)) < 0.15).astype(np.float32)
    levels = rng.integers(0, 5, size=(videos, classes))
    scores = np.where(labels > 0, (2 * levels + 1) / 10.0, (2 * levels) / 10.0 + 0.05)
    return scores.astype(np.float32), labels


SEEDS = (0, 1, 2, 3, 4)


# ---------------------------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("top_k", (1, 5, 20))
def test_metrics_equal_official_code_on_tie_free_data(seed: int, top_k: int) -> None:
    scores, labels = random_data(seed)
    assert global_average_precision(scores, labels, top_k) == pytest.approx(ref_calculate_gap(scores, labels, top_k), abs=1e-6)
    ref = RefEvaluationMetrics(scores.shape[1], top_k)
    ref.accumulate(scores, labels)
    expected = ref.get()
    assert mean_average_precision(scores, labels, top_k) == pytest.approx(expected["map"], abs=1e-6)
    assert hit_at_one(scores, labels) == pytest.approx(expected["hit_at_1"], abs=1e-6)
    assert precision_at_equal_recall_rate(scores, labels) == pytest.approx(expected["perr"], abs=1e-6)
    np.testing.assert_allclose(
        average_precision_per_class(scores, labels, top_k), ref_per_class_ap(scores, labels, top_k), atol=1e-6
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_larger_than_class_count(seed: int) -> None:
    scores, labels = random_data(seed, videos=40, classes=7, empty_classes=1)
    for top_k in (7, 20, 100):
        assert global_average_precision(scores, labels, top_k) == pytest.approx(
            ref_calculate_gap(scores, labels, top_k), abs=1e-6
        )
        np.testing.assert_allclose(
            average_precision_per_class(scores, labels, top_k), ref_per_class_ap(scores, labels, top_k), atol=1e-6
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_ties_that_do_not_mix_labels_equal_official_code(seed: int) -> None:
    # Ties at every top-k cut (argpartition picks the same pairs as the official code) and in the ranking.
    scores, labels = label_pure_ties(seed)
    for top_k in (3, 20):
        assert global_average_precision(scores, labels, top_k) == pytest.approx(
            ref_calculate_gap(scores, labels, top_k), abs=1e-6
        )
        np.testing.assert_allclose(
            average_precision_per_class(scores, labels, top_k), ref_per_class_ap(scores, labels, top_k), atol=1e-6
        )
    assert hit_at_one(scores, labels) == pytest.approx(ref_calculate_hit_at_one(scores, labels), abs=1e-6)
    assert precision_at_equal_recall_rate(scores, labels) == pytest.approx(
        ref_calculate_precision_at_equal_recall_rate(scores, labels), abs=1e-6
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_mixed_ties_pessimistic_ap_and_exact_hit_and_perr(seed: int) -> None:
    # Where a tie mixes positives and negatives the official order is a seeded shuffle; ours ranks the
    # negatives first, so our AP is never above the official one. Hit@1 and PERR use the same numpy calls.
    scores, labels = random_data(seed, tie_free=False)
    assert global_average_precision(scores, labels, 20) <= ref_calculate_gap(scores, labels, 20) + 1e-9
    ours = average_precision_per_class(scores, labels, 20)
    official = ref_per_class_ap(scores, labels, 20)
    assert np.array_equal(np.isnan(ours), np.isnan(official))
    assert np.all(ours[~np.isnan(ours)] <= official[~np.isnan(official)] + 1e-9)
    assert hit_at_one(scores, labels) == pytest.approx(ref_calculate_hit_at_one(scores, labels), abs=1e-6)
    assert precision_at_equal_recall_rate(scores, labels) == pytest.approx(
        ref_calculate_precision_at_equal_recall_rate(scores, labels), abs=1e-6
    )


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_streaming_equals_batch_and_official_streaming(seed: int) -> None:
    scores, labels = random_data(seed, videos=97)
    accumulator = MetricsAccumulator(scores.shape[1], top_k=20)
    ref = RefEvaluationMetrics(scores.shape[1], 20)
    for start in range(0, scores.shape[0], 16):  # uneven last batch
        accumulator.update(scores[start : start + 16], labels[start : start + 16])
        ref.accumulate(scores[start : start + 16], labels[start : start + 16])
    result = accumulator.compute()
    assert result["num_videos"] == scores.shape[0]
    assert result["gap"] == pytest.approx(global_average_precision(scores, labels), abs=1e-12)
    assert result["map"] == pytest.approx(mean_average_precision(scores, labels), abs=1e-12)
    assert result["hit_at_1"] == pytest.approx(hit_at_one(scores, labels), abs=1e-12)
    assert result["perr"] == pytest.approx(precision_at_equal_recall_rate(scores, labels), abs=1e-12)
    np.testing.assert_allclose(result["per_class_ap"], average_precision_per_class(scores, labels), atol=1e-12)
    expected = ref.get()
    for name in ("gap", "map", "hit_at_1", "perr"):
        assert result[name] == pytest.approx(expected[name], abs=1e-6), name


def test_streaming_is_independent_of_batching_even_with_ties() -> None:
    scores, labels = random_data(7, tie_free=False)
    results = []
    for batch in (1, 7, 60):
        accumulator = MetricsAccumulator(scores.shape[1])
        for start in range(0, scores.shape[0], batch):
            accumulator.update(scores[start : start + batch], labels[start : start + batch])
        results.append(accumulator.compute())
    for result in results[1:]:
        for name in ("gap", "map", "hit_at_1", "perr"):
            assert result[name] == pytest.approx(results[0][name], abs=1e-12)


def test_accumulator_keeps_only_top_k_pairs() -> None:
    scores, labels = random_data(0, videos=50, classes=30)
    accumulator = MetricsAccumulator(30, top_k=4)
    accumulator.update(scores, labels)
    kept = sum(part.size for part in accumulator._scores)
    assert kept == 50 * 4
    np.testing.assert_array_equal(accumulator.positives_per_class, (labels > 0).sum(axis=0))


# ---------------------------------------------------------------------------------------------------
# By hand
# ---------------------------------------------------------------------------------------------------


def test_hand_computed_small_case() -> None:
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.2]])
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    # Top 2 of each video, pooled: 0.9(+) 0.8(-) 0.7(+) 0.5(-); 3 positives in all (0.1 fell outside).
    assert global_average_precision(scores, labels, top_k=2) == pytest.approx((1 / 1 + 2 / 3) / 3)
    # Class 0: 0.9(+) 0.8(-) -> 1; class 1: 0.7(+) 0.5(-) -> 1; class 2: positive never kept -> 0.
    np.testing.assert_allclose(average_precision_per_class(scores, labels, top_k=2), [1.0, 1.0, 0.0])
    assert mean_average_precision(scores, labels, top_k=2) == pytest.approx(2 / 3)
    assert hit_at_one(scores, labels) == pytest.approx(0.5)
    # Video 0 has 2 labels, its top 2 hold one; video 1 has 1 label, its top 1 is a negative.
    assert precision_at_equal_recall_rate(scores, labels) == pytest.approx(0.25)
    # With all classes kept, class 2's positive is found at rank 4 of the pooled list.
    assert global_average_precision(scores, labels, top_k=3) == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)


def test_hand_computed_empty_class_and_unlabelled_video() -> None:
    scores = np.array([[0.2, 0.8], [0.6, 0.4]])
    labels = np.array([[0, 1], [0, 0]])
    per_class = average_precision_per_class(scores, labels)
    assert np.isnan(per_class[0]) and per_class[1] == pytest.approx(1.0)
    assert mean_average_precision(scores, labels) == pytest.approx(1.0)  # class 0 skipped
    assert precision_at_equal_recall_rate(scores, labels) == pytest.approx(0.5)  # the unlabelled video counts 0


def test_hand_computed_tie_ranks_negative_first() -> None:
    assert global_average_precision([[0.5, 0.5]], [[0, 1]]) == pytest.approx(0.5)
    assert global_average_precision([[0.5, 0.5]], [[1, 1]]) == pytest.approx(1.0)


def test_perr_counts_only_positive_scores_like_the_official_code() -> None:
    assert precision_at_equal_recall_rate([[-1.0, -2.0]], [[1, 0]]) == 0.0
    assert hit_at_one([[-1.0, -2.0]], [[1, 0]]) == 1.0


def test_no_positives_at_all() -> None:
    scores, labels = np.array([[0.3, 0.7]]), np.zeros((1, 2))
    assert global_average_precision(scores, labels) == 0.0
    assert np.isnan(mean_average_precision(scores, labels))


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(EvaluationError, match="labels shape"):
        global_average_precision(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(EvaluationError, match="matrix"):
        hit_at_one(np.zeros(3), np.zeros(3))
    with pytest.raises(EvaluationError, match="top_k"):
        mean_average_precision(np.zeros((2, 3)), np.zeros((2, 3)), top_k=0)
    with pytest.raises(EvaluationError, match="NaN"):
        global_average_precision(np.full((1, 2), np.nan), np.zeros((1, 2)))
    accumulator = MetricsAccumulator(3)
    with pytest.raises(EvaluationError, match="expects 3"):
        accumulator.update(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(EvaluationError, match="empty"):
        accumulator.compute()


def test_integer_scores_rank_like_floats() -> None:
    scores = np.array([[3, 1, 2], [0, 5, 4]], dtype=np.uint8)
    labels = np.array([[0, 1, 1], [1, 0, 1]])
    assert global_average_precision(scores, labels) == pytest.approx(
        global_average_precision(scores.astype(np.float32), labels)
    )
