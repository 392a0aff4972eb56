"""Metrics benchmark: ``fewframes.metrics`` against the official YouTube-8M evaluation code (our numpy port).

Two measurements, on random sigmoid-like float32 scores for YouTube-8M's 3862 classes
with about 3 labels per video:

1. Agreement and speed against the official code: the same ``--ref-videos`` videos in batches through
   ``MetricsAccumulator`` and through the port of ``eval_util.EvaluationMetrics`` in
   ``tests/test_metrics.py``; max abs difference of GAP, mAP, Hit@1, PERR and seconds each.
2. Streaming throughput at scale: ``--videos`` videos through ``MetricsAccumulator`` in batches of
   ``--batch`` (score generation excluded from the timing), the bytes it keeps, and the time extrapolated
   to the paper's 1,652,167 test videos.

Writes ``benchmarks/results/metrics_cpu.json`` with the machine described and the command.

    python benchmarks/bench_metrics.py                 # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fewframes.benchmark import describe_machine
from fewframes.cli.benchmark import write_json
from fewframes.metrics import MetricsAccumulator

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_TEST_VIDEOS = 1_652_167
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def make_batch(rng: np.random.Generator, videos: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((videos, classes), dtype=np.float32)
    counts = rng.integers(1, 6, size=videos)
    for row, count in enumerate(counts):
        labels[row, rng.choice(classes, size=count, replace=False)] = 1.0
    # Informative but noisy scores: positives shifted up, so metrics land in a realistic middle range.
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(size=(videos, classes)) - 3.0 + 3.0 * labels)))
    return scores.astype(np.float32), labels  # float32, like model outputs


def streamed(batches: list[tuple[np.ndarray, np.ndarray]], classes: int) -> tuple[dict[str, Any], float, int]:
    accumulator = MetricsAccumulator(classes, top_k=20)
    started = time.perf_counter()
    for scores, labels in batches:
        accumulator.update(scores, labels)
    result = accumulator.compute()
    kept = sum(a.nbytes for part in (accumulator._classes, accumulator._scores, accumulator._positives) for a in part)
    return result, time.perf_counter() - started, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=3862)
    parser.add_argument("--ref-videos", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "metrics_cpu.json"))
    args = parser.parse_args(argv)
    from test_metrics import RefEvaluationMetrics

    rng = np.random.default_rng(args.seed)
    ref_batches = [make_batch(rng, min(args.batch, args.ref_videos - s), args.classes) for s in range(0, args.ref_videos, args.batch)]
    ours, ours_s, _ = streamed(ref_batches, args.classes)
    official = RefEvaluationMetrics(args.classes, 20)
    started = time.perf_counter()
    for scores, labels in ref_batches:
        official.accumulate(scores, labels)
    expected = official.get()
    official_s = time.perf_counter() - started
    differences = {name: abs(float(ours[name]) - float(expected[name])) for name in ("gap", "map", "hit_at_1", "perr")}

    # Scores are generated batch by batch (not timed) so memory stays one batch, as in a real evaluation.
    accumulator = MetricsAccumulator(args.classes, top_k=20)
    total_s = 0.0
    for start in range(0, args.videos, args.batch):
        scores, labels = make_batch(rng, min(args.batch, args.videos - start), args.classes)
        started = time.perf_counter()
        accumulator.update(scores, labels)
        total_s += time.perf_counter() - started
    started = time.perf_counter()
    result = accumulator.compute()
    compute_s = time.perf_counter() - started
    total_s += compute_s
    total_kept = sum(
        a.nbytes for part in (accumulator._classes, accumulator._scores, accumulator._positives) for a in part
    )
    per_video_s = total_s / args.videos
    payload = {
        "benchmark": "metrics",
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": describe_machine("cpu"),
        "classes": args.classes,
        "top_k": 20,
        "against_official": {
            "videos": args.ref_videos,
            "ours": {k: float(ours[k]) for k in ("gap", "map", "hit_at_1", "perr")},
            "official": {k: float(expected[k]) for k in ("gap", "map", "hit_at_1", "perr")},
            "max_abs_difference": max(differences.values()),
            "abs_difference": differences,
            "ours_seconds": round(ours_s, 4),
            "official_seconds": round(official_s, 4),
            "speedup": round(official_s / ours_s, 1),
        },
        "streaming": {
            "videos": args.videos,
            "batch": args.batch,
            "seconds": round(total_s, 3),
            "compute_seconds": round(compute_s, 3),
            "videos_per_second": round(args.videos / total_s),
            "kept_bytes": total_kept,
            "kept_bytes_per_video": round(total_kept / args.videos, 1),
            "dense_matrix_bytes_avoided": args.videos * args.classes * 4 * 2,
            "extrapolated_paper_test_seconds": round(per_video_s * PAPER_TEST_VIDEOS, 1),
            "extrapolated_paper_test_kept_gib": round(total_kept / args.videos * PAPER_TEST_VIDEOS / 2**30, 2),
            "gap": float(result["gap"]),
            "map": float(result["map"]),
        },
    }
    write_json(args.out, payload)
    print(
        f"vs official ({args.ref_videos} videos): max |diff| {payload['against_official']['max_abs_difference']:.2e}, "
        f"ours {ours_s:.3f}s, official {official_s:.2f}s ({payload['against_official']['speedup']}x)\n"
        f"streaming {args.videos} videos x {args.classes} classes: {total_s:.2f}s "
        f"({payload['streaming']['videos_per_second']} videos/s), keeps {payload['streaming']['kept_bytes_per_video']} B/video; "
        f"paper test set ~{payload['streaming']['extrapolated_paper_test_seconds']}s\n-> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
