"""fewframes.stats: the paired bootstrap over test videos (against a hand-computed case, every resample of 3
videos, and a brute-force loop over the same resamples with fewframes.metrics), how seeds combine, and the
verdict rule on constructed intervals (each of the three verdicts, for each kind of claim)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fewframes.metrics import global_average_precision, mean_average_precision
from fewframes.stats import (
    EQUIVALENT,
    FAILS,
    GREATER,
    HOLDS,
    INCONCLUSIVE,
    Interval,
    PairedBootstrap,
    Side,
    VideoPredictions,
    combine,
    contrast_interval,
    counts_of,
    judge,
    resample_indices,
    resampled_gap,
    resampled_map,
    verdict,
)


def predictions_of(scores: np.ndarray, labels: np.ndarray, top_k: int = 20, prefix: str = "v") -> VideoPredictions:
    """A model's kept pairs from a dense (videos x classes) score matrix, as evaluate keeps them."""
    k = min(top_k, scores.shape[1])
    classes = np.argpartition(scores, -k, axis=1)[:, -k:]
    return VideoPredictions([f"{prefix}{i}" for i in range(scores.shape[0])], classes,
                            np.take_along_axis(scores, classes, axis=1), [np.flatnonzero(r) for r in labels])


def random_model(rng: np.random.Generator, videos: int, classes: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.random((videos, classes)) < 0.1
    labels[np.arange(videos), rng.integers(0, classes, videos)] = True
    scores = rng.random((videos, classes)) + signal * labels
    scores[:, :3] = np.round(scores[:, :3], 1)  # some ties, which the tie rule must handle as metrics does
    return scores.astype(np.float32), labels


def test_gap_of_a_resample_by_hand():
    # Video a: classes 0 (score .9, label) and 1 (.3, no label); video b: classes 0 (.5, no) and 1 (.8, label).
    # Pooled by score: a0 .9 (+), b1 .8 (+), b0 .5 (-), a1 .3 (-): GAP = (1/1 + 2/2) / 2 = 1.
    # Resample {a, b, b}: a0 (+), b1 (+), b1 (+), b0, b0, a1: GAP = (1 + 1 + 1) / 3 = 1.
    # Resample {b, b}: b1 (+), b1 (+), b0, b0: 1. Resample {a, a} with a's label 1 added (a1 now +):
    predictions = VideoPredictions(["a", "b"], [[0, 1], [0, 1]], [[0.9, 0.3], [0.5, 0.8]], [[0], [1]])
    counts = np.array([[1, 1], [1, 2], [0, 2], [2, 0]])
    assert resampled_gap(predictions, counts).tolist() == [1.0, 1.0, 1.0, 1.0]
    # Now b's label is class 0 (score .5) instead: ranked a0 (+) .9, b1 (-) .8, b0 (+) .5, a1 (-) .3.
    # {a, b}: (1/1 + 2/3) / 2 = 5/6. {a, b, b}: a0 +, b1 -, b1 -, b0 +, b0 +: (1 + 2/4 + 3/5) / 3 = 0.7.
    # {a, a}: a0 +, a0 +, a1 -, a1 -: (1 + 1) / 2 = 1.
    predictions = VideoPredictions(["a", "b"], [[0, 1], [0, 1]], [[0.9, 0.3], [0.5, 0.8]], [[0], [0]])
    np.testing.assert_allclose(resampled_gap(predictions, np.array([[1, 1], [1, 2], [2, 0]])), [5 / 6, 0.7, 1.0])


def test_every_resample_of_three_videos_matches_metrics():
    rng = np.random.default_rng(0)
    scores, labels = random_model(rng, 3, 8, 0.3)
    predictions = predictions_of(scores, labels, top_k=5)
    resamples = np.array(list(itertools.product(range(3), repeat=3)))  # all 27 equally likely resamples
    counts = counts_of(resamples, 3)
    expected_gap = [global_average_precision(scores[r], labels[r], top_k=5) for r in resamples]
    expected_map = [mean_average_precision(scores[r], labels[r], top_k=5) for r in resamples]
    np.testing.assert_allclose(resampled_gap(predictions, counts), expected_gap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(resampled_map(predictions, counts), expected_map, rtol=0, atol=1e-12)


def test_bootstrap_equals_a_brute_force_loop_with_the_same_rng():
    rng = np.random.default_rng(1)
    scores_a, labels = random_model(rng, 40, 30, 0.4)
    scores_b = (rng.random(scores_a.shape) + 0.2 * labels).astype(np.float32)
    boot = PairedBootstrap(resamples=60, seed=7)
    boot.add("a", predictions_of(scores_a, labels))
    boot.add("b", predictions_of(scores_b, labels))
    interval = boot.contrast([(1.0, boot.side(["a"])), (-1.0, boot.side(["b"]))])

    brute = np.array([global_average_precision(scores_a[i], labels[i]) - global_average_precision(scores_b[i], labels[i])
                      for i in resample_indices(40, 60, 7)])
    np.testing.assert_allclose(interval.replicates, brute, rtol=0, atol=1e-12)
    assert interval.estimate == pytest.approx(global_average_precision(scores_a, labels)
                                              - global_average_precision(scores_b, labels), abs=1e-12)
    assert [interval.low, interval.high] == pytest.approx([np.quantile(brute, 0.025), np.quantile(brute, 0.975)], abs=1e-12)
    assert interval.low < interval.estimate < interval.high


def test_models_are_paired_by_video_id_not_by_row_order():
    rng = np.random.default_rng(2)
    scores, labels = random_model(rng, 25, 12, 0.5)
    model = predictions_of(scores, labels)
    shuffled = rng.permutation(25)
    same_model_reordered = VideoPredictions([model.video_ids[i] for i in shuffled], model.classes[shuffled],
                                            model.scores[shuffled], [model.labels[i] for i in shuffled])
    boot = PairedBootstrap(resamples=50)
    boot.add("a", model)
    boot.add("b", same_model_reordered)
    interval = boot.contrast([(1.0, boot.side(["a"])), (-1.0, boot.side(["b"]))])
    assert interval.estimate == 0.0 and interval.low == 0.0 and interval.high == 0.0  # paired: no noise at all
    other_videos = predictions_of(scores, labels, prefix="w")
    with pytest.raises(ValueError, match="same test videos"):
        boot.add("c", other_videos)


def test_seeds_are_averaged_and_resampled_per_side():
    # Two seeds on side a with constant values 0.5 and 0.7 on every video resample, one seed 0.55 on side b:
    # the estimate is the difference of the seed means; each replicate's side a is the mean of two seeds
    # drawn with replacement (0.5, 0.6 or 0.7), so the interval spans the seed spread.
    resamples = 400
    a = Side(np.array([0.5, 0.7]), np.stack([np.full(resamples, 0.5), np.full(resamples, 0.7)]))
    b = Side(np.array([0.55]), np.full((1, resamples), 0.55))
    interval = contrast_interval([(1.0, a), (-1.0, b)], seed=3)
    assert interval.estimate == pytest.approx(0.05)
    assert set(np.round(interval.replicates, 10)) == {-0.05, 0.05, 0.15}
    assert interval.low == pytest.approx(-0.05) and interval.high == pytest.approx(0.15)
    again = contrast_interval([(1.0, a), (-1.0, b)], seed=3)
    np.testing.assert_array_equal(again.replicates, interval.replicates)  # seeded: repeatable


@pytest.mark.parametrize("low, high, margin, expected", [
    (0.01, 0.03, 0.0, HOLDS),  # superiority: entirely above 0
    (-0.03, -0.01, 0.0, FAILS),  # entirely below: the other model is better
    (-0.01, 0.02, 0.0, INCONCLUSIVE),
    (-0.005, 0.01, -0.008, HOLDS),  # non-inferiority "within 0.008": entirely above -0.008
    (-0.03, -0.01, -0.008, FAILS),
    (-0.01, 0.01, -0.008, INCONCLUSIVE),
])
def test_verdict_of_a_greater_claim(low, high, margin, expected):
    assert verdict(low, high, kind=GREATER, margin=margin) == expected


@pytest.mark.parametrize("low, high, expected", [
    (-0.004, 0.006, HOLDS),  # inside (-0.008, 0.008)
    (0.009, 0.02, FAILS),  # entirely outside, above
    (-0.03, -0.01, FAILS),  # entirely outside, below
    (-0.004, 0.012, INCONCLUSIVE),  # straddles the margin
])
def test_verdict_of_an_equivalence_claim(low, high, expected):
    assert verdict(low, high, kind=EQUIVALENT, margin=0.008) == expected


def test_claim_of_several_parts():
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([HOLDS, INCONCLUSIVE, FAILS]) == FAILS

    def interval(values):
        values = np.asarray(values, dtype=float)
        return Interval(float(values.mean()), float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975)),
                        0.95, values.size, values)

    grid = np.linspace(0, 1, 1001)
    above, straddles = interval(0.01 + 0.01 * grid), interval(-0.01 + 0.02 * grid)
    # Below 0 at 95 % but not at the Bonferroni level of 2 parts (97.5 %): its 2 % most extreme replicates
    # reach above 0, so one of two parts does not refute the claim by chance.
    barely_below = interval(np.r_[-0.02 + 0.0195 * grid[:981], np.full(20, 0.001)])
    assert barely_below.high < 0 < barely_below.at_level(0.975)[1]
    assert judge([above, above]) == (HOLDS, [HOLDS, HOLDS])
    assert judge([above, straddles]) == (INCONCLUSIVE, [HOLDS, INCONCLUSIVE])
    assert judge([above, barely_below]) == (INCONCLUSIVE, [HOLDS, INCONCLUSIVE])
    assert judge([barely_below]) == (FAILS, [FAILS])  # alone, its 95 % interval decides
    assert judge([above, interval(-0.03 + 0.01 * grid)]) == (FAILS, [HOLDS, FAILS])
