"""Which k frames a student (or a k-frame baseline) reads from a video of ``length`` real frames.

``select_frames(strategy, length, k, rng) -> (positions int64[k], mask bool[k])``. Positions index the
video's REAL frames (never padding), are strictly increasing, and each real frame appears at most once.

Exact definitions, for ``length >= k``:

- ``uniform``: ``positions[i] = i * length // k`` (i = 0..k-1): k equally spaced frames starting at the
  first. For ``length = 300`` this is the authors' 0, 10, ..., 290 at k = 30, but here over the REAL length
  (the authors' code spaced over the padded 300, so short videos fed padding).
- ``random``: k distinct positions drawn without replacement by ``rng`` (a ``numpy.random.Generator``),
  sorted. ``rng=None`` draws fresh OS entropy (not reproducible); pass a seeded Generator for that.
- ``first``: ``0..k-1``. ``last``: ``length-k..length-1``.
- ``middle``: k consecutive frames centred: start ``(length - k) // 2``.
- ``first_middle_last``: k = 3q + r. The first and last runs have the same size ``a`` and the middle run
  ``m``: r = 0 -> a = m = q; r = 1 -> the extra frame goes to the middle (m = q + 1); r = 2 -> one extra
  to the start and one to the end (a = q + 1, m = q). Runs: ``0..a-1``, ``middle`` of size m (start
  ``(length - m) // 2``), ``length-a..length-1``; they never overlap when ``length >= k``.
- ``all``: every frame, ``arange(length)``; k is ignored (may be None) and the mask is all True.

Videos shorter than k (``length < k``), every strategy except ``all``: every real frame once, in order,
then ``k - length`` padding slots with position ``-1`` and mask False. The model thus never sees a
repeated frame, and the padding is masked out exactly as for the teacher's padded batches.
"""

from __future__ import annotations

import numpy as np

from fewframes.config import FRAME_SELECTIONS
from fewframes.errors import DataError

PADDING_POSITION = -1


def _check(strategy: str, length: int, k: int | None) -> None:
    if strategy not in FRAME_SELECTIONS:
        raise DataError(f"frame selection strategy must be one of {', '.join(FRAME_SELECTIONS)}, got {strategy!r}")
    if length < 1:
        raise DataError(f"frame selection: video length must be >= 1, got {length}")
    if strategy != "all" and (k is None or k < 1):
        raise DataError(f"frame selection {strategy!r}: k must be >= 1, got {k}")


def _positions_full(strategy: str, length: int, k: int, rng: np.random.Generator | None) -> np.ndarray:
    """Positions for ``length >= k`` (int64[k], strictly increasing)."""
    if strategy == "uniform":
        return np.arange(k, dtype=np.int64) * length // k
    if strategy == "random":
        generator = rng if rng is not None else np.random.default_rng()
        return np.sort(generator.choice(length, size=k, replace=False)).astype(np.int64)
    if strategy == "first":
        return np.arange(k, dtype=np.int64)
    if strategy == "last":
        return np.arange(length - k, length, dtype=np.int64)
    if strategy == "middle":
        start = (length - k) // 2
        return np.arange(start, start + k, dtype=np.int64)
    if strategy == "first_middle_last":
        q, r = divmod(k, 3)
        edge, middle = (q + 1, q) if r == 2 else (q, q + (r == 1))
        middle_start = (length - middle) // 2
        return np.concatenate(
            [
                np.arange(edge, dtype=np.int64),
                np.arange(middle_start, middle_start + middle, dtype=np.int64),
                np.arange(length - edge, length, dtype=np.int64),
            ]
        )
    raise DataError(f"frame selection strategy {strategy!r} has no fixed-k rule")


def select_frames(
    strategy: str, length: int, k: int | None, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(positions int64[k], mask bool[k]) of the frames to read; see the module docstring for each rule.

    ``all`` returns ``length`` slots. Videos shorter than k: all real frames, then padding (-1, False).
    """
    length = int(length)
    _check(strategy, length, k)
    if strategy == "all":
        return np.arange(length, dtype=np.int64), np.ones(length, dtype=bool)
    k = int(k)  # type: ignore[arg-type]
    if length < k:
        positions = np.full(k, PADDING_POSITION, dtype=np.int64)
        positions[:length] = np.arange(length)
        return positions, np.arange(k) < length
    return _positions_full(strategy, length, k, rng), np.ones(k, dtype=bool)


def uniform_positions(lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``uniform`` for many videos at once: (positions int64[B, k], mask bool[B, k]); same rule as
    ``select_frames("uniform", ...)`` row by row, padding included."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1, 1)
    slots = np.arange(k, dtype=np.int64).reshape(1, -1)
    short = lengths < k
    positions = np.where(short, slots, slots * lengths // k)
    mask = ~short | (slots < lengths)
    return np.where(mask, positions, PADDING_POSITION), mask


__all__ = ["PADDING_POSITION", "select_frames", "uniform_positions"]
