"""Information bounds of the bundled benchmark, from the generator alone, before any model is trained.

For a data set (``DataConfig`` + ``GenerativeModel``) and one of its splits, per frame selection and k:

- **label coverage**: the fraction of a video's labels shown by at least one of the selected frames,
  averaged over videos (1.0 for every frame in the standard world: every label is visible somewhere). A
  model reading those frames cannot know a label none of them shows, except through co-occurrence.
- **oracle GAP@20 / mAP**: an oracle that knows the world's prototypes and projection maps each selected
  frame's dequantised rgb back to the latent space (pseudo-inverse of the rgb projection), scores every
  class by a Gaussian posterior around the class prototypes (the generator's total per-dimension noise
  variance, uniform class prior) and scores a video's classes by the mean posterior over the selected frames
  (a soft vote; a noisy-OR saturates over 200 frames). Frames come from the pipeline's own
  ``select_frames``. A trained model is not bound by it exactly (it learns class priors and co-occurrence the
  oracle ignores), but the gap between the all-frames and the k-frame oracle is how much the frames hold
  that k of them do not.
- **label-prior GAP** (the floor): every video scored by the training split's class frequencies, ties
  between videos broken at random (averaged over draws): what a model that learned nothing from the frames
  scores.

The videos are the split's videos of the data set the pipeline writes (ids ``synth-s<seed>-<index>``, split
by ``fewframes.data.split.assign_splits``), regenerated from their seeds: no store or TFRecord is read.
``benchmarks/synth_oracle.py`` and the report call this module; ``docs/synthetic_data.md`` ("Calibration")
quotes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fewframes.config import BASELINE_SELECTIONS, DataConfig
from fewframes.data.selection import select_frames
from fewframes.data.split import assign_splits
from fewframes.data.synth import ALL_LABELS, GenerativeModel, SynthVideo, World, video_id
from fewframes.data.yt8m import dequantize
from fewframes.metrics import global_average_precision, mean_average_precision

DEFAULT_KS: tuple[int, ...] = (6, 10, 15, 20, 30)
PRIOR_DRAWS = 20  # random tie-break draws averaged for the label-prior GAP


def frame_log_posteriors(world: World, rgb: np.ndarray) -> np.ndarray:
    """float64[n, C]: the oracle's log posterior of each class for each frame (uniform prior over classes)."""
    m = world.model
    variance = m.instance_noise**2 + m.style_noise**2 + m.shot_noise**2 + m.frame_noise**2
    latent = dequantize(rgb).astype(np.float64) @ _pinv(world)
    distances = ((latent[:, None, :] - world.prototypes[None]) ** 2).sum(-1)
    logits = -distances / (2 * variance)
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def _pinv(world: World) -> np.ndarray:
    cached = getattr(world, "_rgb_pinv", None)
    if cached is None:
        cached = np.linalg.pinv(world.rgb_projection.astype(np.float64))
        world._rgb_pinv = cached  # type: ignore[attr-defined]
    return cached


def video_scores(log_posteriors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Soft vote over the chosen frames: the expected fraction of them that show each class."""
    return np.exp(log_posteriors[positions]).mean(axis=0)


def label_coverage(item: SynthVideo, positions: np.ndarray) -> float:
    """Fraction of the video's labels shown by at least one frame at ``positions`` (padding -1 ignored)."""
    labels = item.video.labels
    if len(labels) == 0:
        return 1.0
    shown = item.frame_content[positions[positions >= 0]]
    if np.any(shown == ALL_LABELS):
        return 1.0
    return float(np.isin(labels, shown).mean())


def label_prior_gap(train_labels: np.ndarray, test_labels: np.ndarray, seed: int = 0, draws: int = PRIOR_DRAWS) -> float:
    """GAP@20 of scoring every test video by the training videos' class frequencies (multi-hot inputs).

    Every video gets the same scores, so the pooled ranking is one big tie within each class; the official
    GAP breaks ties by a shuffle, ``fewframes.metrics`` puts negatives first (the worst case). A model that
    learned only the prior still varies a little from video to video, which breaks the ties at random: the
    floor is the mean over ``draws`` random tie-breaks (a jitter far below the gaps between class frequencies).
    """
    frequency = np.asarray(train_labels, dtype=np.float64).mean(axis=0)
    test = np.asarray(test_labels)
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(draws):
        jitter = rng.random(test.shape) * 1e-9
        gaps.append(global_average_precision(frequency[None, :] + jitter, test))
    return float(np.mean(gaps))


def split_indices(data: DataConfig, split: str) -> np.ndarray:
    """The generator indices of ``split``'s videos in the data set ``data`` (as the pipeline splits it)."""
    ids = [video_id(data.seed, i) for i in range(data.videos)]
    return np.flatnonzero(assign_splits(ids, data.validation_fraction, data.test_fraction) == split)


def information_bounds(
    data: DataConfig,
    *,
    model: GenerativeModel | None = None,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    selections: Sequence[str] = BASELINE_SELECTIONS,
    max_videos: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Label coverage and oracle GAP/mAP per (selection, k), plus every frame and the label prior.

    Returns ``{"rows": [{"selection", "k", "label_coverage", "oracle_gap", "oracle_map"}, ...],
    "prior_gap", "single_frame_accuracy", "videos", ...}``; the first row is ``selection="all"``, ``k=None``.
    ``max_videos`` caps the split's videos (the first ones) for a quicker estimate; ``seed`` draws Random-k.
    """
    from threadpoolctl import threadpool_limits  # installed with scikit-learn (as the generator uses it)

    world = World(data.classes, data.seed, model)
    indices = split_indices(data, split)
    if max_videos is not None:
        indices = indices[:max_videos]
    if len(indices) == 0:
        raise ValueError(f"split {split!r} of {data.videos} videos is empty")
    train = split_indices(data, "train")
    rng = np.random.default_rng(seed)
    with threadpool_limits(1, "blas"):
        items = [world.generate(int(i)) for i in indices]
        train_labels = np.zeros((len(train), data.classes), dtype=np.float32)
        for row, i in enumerate(train):
            train_labels[row, world.sample_labels(_label_stream(data.seed, int(i)))] = 1
        posteriors = [frame_log_posteriors(world, item.video.rgb) for item in items]
    labels = np.zeros((len(items), data.classes), dtype=np.float32)
    hits = []
    for row, (item, log_p) in enumerate(zip(items, posteriors)):
        labels[row, item.video.labels] = 1
        shown = item.frame_content >= 0
        hits.append(log_p.argmax(1)[shown] == item.frame_content[shown])

    def row_for(selection: str, k: int | None) -> dict[str, Any]:
        scores, coverage = [], []
        for item, log_p in zip(items, posteriors):
            positions, mask = select_frames(selection, item.video.num_frames, k, rng)
            positions = positions[mask]
            scores.append(video_scores(log_p, positions))
            coverage.append(label_coverage(item, positions))
        stacked = np.stack(scores)
        return {
            "selection": selection,
            "k": k,
            "label_coverage": round(float(np.mean(coverage)), 4),
            "oracle_gap": round(global_average_precision(stacked, labels), 4),
            "oracle_map": round(mean_average_precision(stacked, labels), 4),
        }

    rows = [row_for("all", None)] + [row_for(s, k) for s in selections for k in ks]
    frame_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    return {
        "what": "information bounds from the generator (no training): label coverage and oracle GAP@20/mAP "
        "per frame selection and k, and the label-prior GAP (docs/synthetic_data.md)",
        "data": data.to_dict(),
        "world": (model or GenerativeModel()).world,
        "split": split,
        "videos": len(items),
        "random_seed": seed,
        "prior_gap": round(label_prior_gap(train_labels, labels), 4),
        "single_frame_accuracy": round(float(frame_hits.mean()), 4) if frame_hits.size else None,
        "rows": rows,
    }


def _label_stream(seed: int, index: int) -> np.random.Generator:
    # A video's labels are the first draws of its own stream (World.generate): regenerating only them is
    # exact and skips the frames.
    return np.random.default_rng(np.random.SeedSequence([seed, 1, index]))


def write_bounds(bounds: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``bounds`` as JSON at ``path`` (temp file, then rename); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".tmp")
    temp.write_text(json.dumps(bounds, indent=2) + "\n")
    temp.replace(target)
    return target


def bounds_for_table(bounds: dict[str, Any]) -> dict[tuple[str, int | None], dict[str, Any]]:
    """The rows keyed by (selection, k), for a report placing them beside Table 1."""
    return {(row["selection"], row["k"]): row for row in bounds["rows"]}


__all__ = [
    "DEFAULT_KS",
    "bounds_for_table",
    "frame_log_posteriors",
    "information_bounds",
    "label_coverage",
    "label_prior_gap",
    "split_indices",
    "video_scores",
    "write_bounds",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fewframes.data.bounds --preset report --out bounds.json``: the bounds of a preset's data."""
    import argparse

    from fewframes.config import get_preset
    from fewframes.data.synth import WORLDS

    parser = argparse.ArgumentParser(prog="python -m fewframes.data.bounds", description=main.__doc__)
    parser.add_argument("--preset", default="report", help="the data of this preset (default: report)")
    parser.add_argument("--world", choices=WORLDS, default="standard")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="test")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        data = get_preset(args.preset).data
    except ValueError as error:
        print(f"error: {error}")
        return 2
    bounds = information_bounds(data, model=GenerativeModel(world=args.world), split=args.split, ks=args.ks)
    bounds["preset"] = args.preset
    write_bounds(bounds, args.out)
    for row in bounds["rows"]:
        print(f"{row['selection']:>18} {str(row['k'] or 'all'):>4}  coverage {row['label_coverage']:.3f}  oracle GAP {row['oracle_gap']:.3f}")
    print(f"label-prior GAP {bounds['prior_gap']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
