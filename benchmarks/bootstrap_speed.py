"""Paired bootstrap benchmark: ``fewframes.stats`` at the report's scale.

``--models`` models on the same ``--videos`` test videos (``--classes`` classes, each video's top 20 pairs
kept, about 3 labels a video), ``--resamples`` video resamples: the seconds to resample each model's GAP@20
(and mAP) once, and then ``--contrasts`` paired differences between configurations of 3 seeds each (seeds
resampled too), as the report computes its claims. Also checks the full-sample GAP/mAP against
``fewframes.metrics`` on the dense matrices.

Writes ``benchmarks/results/bootstrap_cpu.json`` with the machine described and the command.

    OMP_NUM_THREADS=1 python benchmarks/bootstrap_speed.py      # about a minute on 2 CPU cores
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
from fewframes.metrics import global_average_precision, mean_average_precision
from fewframes.stats import PairedBootstrap, VideoPredictions

RESULTS = Path(__file__).resolve().parent / "results"


def model_predictions(rng: np.random.Generator, labels: np.ndarray, signal: float) -> tuple[VideoPredictions, np.ndarray]:
    videos, classes = labels.shape
    scores = (rng.random((videos, classes)) + signal * labels).astype(np.float32)
    top = np.argpartition(scores, -20, axis=1)[:, -20:]
    kept = VideoPredictions([f"v{i}" for i in range(videos)], top, np.take_along_axis(scores, top, axis=1),
                            [np.flatnonzero(row) for row in labels])
    return kept, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=90)
    parser.add_argument("--videos", type=int, default=600)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--contrasts", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS / "bootstrap_cpu.json"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    labels = np.zeros((args.videos, args.classes), dtype=bool)
    labels[np.arange(args.videos), rng.integers(0, args.classes, args.videos)] = True
    labels |= rng.random(labels.shape) < 2.0 / args.classes
    models = [model_predictions(rng, labels, signal) for signal in rng.uniform(0.2, 1.0, args.models)]

    worst = 0.0
    for kept, scores in models[:3]:
        worst = max(worst, abs(kept.gap() - global_average_precision(scores, labels)),
                    abs(kept.map() - mean_average_precision(scores, labels)))

    results: dict[str, Any] = {}
    for metric in ("gap", "map"):
        boot = PairedBootstrap(resamples=args.resamples, seed=0, metric=metric)
        started = time.perf_counter()
        for index, (kept, _) in enumerate(models):
            boot.add(f"m{index}", kept)
        seconds = time.perf_counter() - started
        results[metric] = {"seconds_all_models": round(seconds, 2), "seconds_per_model": round(seconds / args.models, 4)}
        if metric == "gap":
            configs = [[f"m{i}" for i in range(j, j + 3)] for j in range(0, args.models - 2, 3)]
            started = time.perf_counter()
            for c in range(args.contrasts):
                a, b = configs[c % len(configs)], configs[(c * 7 + 1) % len(configs)]
                boot.contrast([(1.0, boot.side(a)), (-1.0, boot.side(b))])
            results[metric]["seconds_contrasts"] = round(time.perf_counter() - started, 3)

    payload = {
        "what": "fewframes.stats paired bootstrap: each model's GAP@20 / mAP on every video resample once, then "
        "paired contrasts between 3-seed configurations",
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": describe_machine("cpu"),
        "models": args.models, "videos": args.videos, "classes": args.classes, "top_k": 20,
        "resamples": args.resamples, "contrasts": args.contrasts,
        "max_abs_diff_full_sample_vs_metrics": worst,
        **results,
    }
    write_json(args.out, payload)
    print(payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
