"""Frame selection: every strategy, exact definitions, short videos and k > length."""

from __future__ import annotations

import numpy as np
import pytest

from fewframes.config import FRAME_SELECTIONS
from fewframes.data.selection import PADDING_POSITION, select_frames, uniform_positions
from fewframes.errors import DataError

FIXED_K = [s for s in FRAME_SELECTIONS if s != "all"]


def test_uniform_is_i_times_length_over_k() -> None:
    positions, mask = select_frames("uniform", 300, 30)
    assert positions.tolist() == list(range(0, 300, 10))  # the authors' 0, 10, ..., 290 at length 300
    assert mask.all()
    positions, _ = select_frames("uniform", 100, 6)
    assert positions.tolist() == [0, 16, 33, 50, 66, 83]


def test_first_middle_last_and_runs() -> None:
    assert select_frames("first", 50, 4)[0].tolist() == [0, 1, 2, 3]
    assert select_frames("last", 50, 4)[0].tolist() == [46, 47, 48, 49]
    assert select_frames("middle", 50, 4)[0].tolist() == [23, 24, 25, 26]
    # k = 3q: q each; k = 3q+1: the extra to the middle; k = 3q+2: one extra to each end.
    assert select_frames("first_middle_last", 30, 6)[0].tolist() == [0, 1, 14, 15, 28, 29]
    assert select_frames("first_middle_last", 30, 7)[0].tolist() == [0, 1, 13, 14, 15, 28, 29]
    assert select_frames("first_middle_last", 30, 8)[0].tolist() == [0, 1, 2, 14, 15, 27, 28, 29]


@pytest.mark.parametrize("strategy", FIXED_K)
@pytest.mark.parametrize("length", [1, 2, 5, 29, 30, 31, 97, 300])
@pytest.mark.parametrize("k", [1, 3, 6, 10, 30])
def test_fixed_k_strategies_are_valid(strategy: str, length: int, k: int) -> None:
    positions, mask = select_frames(strategy, length, k, np.random.default_rng(0))
    assert positions.dtype == np.int64 and mask.dtype == bool
    assert positions.shape == mask.shape == (k,)
    real = positions[mask]
    assert len(real) == min(k, length)
    assert np.all(np.diff(real) > 0), "real positions strictly increasing: no repeated frame"
    assert real.min() >= 0 and real.max() < length
    if length < k:  # every real frame once, then padding
        assert real.tolist() == list(range(length))
        assert mask.tolist() == [True] * length + [False] * (k - length)
        assert np.all(positions[~mask] == PADDING_POSITION)
    else:
        assert mask.all()
    if strategy == "last" and length >= k:
        assert real.max() == length - 1  # the last REAL frame, never padding


def test_all_ignores_k() -> None:
    for k in (None, 3, 500):
        positions, mask = select_frames("all", 17, k)
        assert positions.tolist() == list(range(17)) and mask.all()


def test_random_is_seeded_sorted_without_replacement() -> None:
    a, _ = select_frames("random", 300, 30, np.random.default_rng(7))
    b, _ = select_frames("random", 300, 30, np.random.default_rng(7))
    c, _ = select_frames("random", 300, 30, np.random.default_rng(8))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 30
    # Over many draws every frame is reachable (not a fixed subset).
    rng = np.random.default_rng(0)
    seen = np.zeros(40, dtype=bool)
    for _ in range(50):
        seen[select_frames("random", 40, 5, rng)[0]] = True
    assert seen.all()


def test_uniform_positions_matches_rowwise() -> None:
    lengths = np.array([1, 5, 6, 7, 29, 30, 31, 300])
    positions, mask = uniform_positions(lengths, 6)
    for row, length in enumerate(lengths):
        p, m = select_frames("uniform", int(length), 6)
        assert positions[row].tolist() == p.tolist() and mask[row].tolist() == m.tolist()


@pytest.mark.parametrize(
    "args, field",
    [(("nearest", 10, 3), "strategy"), (("uniform", 0, 3), "length"), (("uniform", 10, 0), "k"), (("first", 10, None), "k")],
)
def test_bad_arguments_name_the_field(args: tuple, field: str) -> None:
    with pytest.raises(DataError, match=field):
        select_frames(*args)
