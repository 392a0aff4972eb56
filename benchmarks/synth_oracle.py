"""Calibration of the synthetic data: what an *oracle* that knows the world's prototypes can read from it.

No model is trained. The oracle is ``fewframes.data.bounds``'s (the report's information bounds call
it too; ``fewframes.data.bounds.information_bounds`` adds label coverage and the split's videos). It maps each frame's dequantised rgb back to the latent space (pseudo-inverse
of the world's rgb projection), scores every class of every frame by a Gaussian posterior around the
class prototypes (the generator's total per-dimension noise variance), and scores a video's classes by
the mean posterior over the frames it is shown (a soft vote; a noisy-OR saturates over 200 frames). Frames are chosen with the pipeline's own
``fewframes.data.selection.select_frames``; GAP@20 / mAP with ``fewframes.metrics``. This is the
"Calibration" section of docs/synthetic_data.md, reproducible:

    python benchmarks/synth_oracle.py                       # demo world (50 classes), 400 videos
    python benchmarks/synth_oracle.py --classes 12 --videos 200 --out /tmp/tiny_oracle.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from fewframes.config import PRESETS
from fewframes.data.bounds import frame_log_posteriors, video_scores
from fewframes.data.selection import select_frames
from fewframes.data.synth import World
from fewframes.metrics import global_average_precision, mean_average_precision

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = ("uniform", "middle", "first_middle_last", "first", "last", "random")


def run(classes: int, videos: int, seed: int, ks: list[int]) -> dict[str, Any]:
    world = World(classes, seed)
    labels = np.zeros((videos, classes), dtype=np.float32)
    posteriors, lengths, hits = [], [], []
    with threadpool_limits(1, "blas"):
        for i, item in enumerate(tqdm(world.generate_range(0, videos), total=videos, desc="oracle", unit="video")):
            labels[i, item.video.labels] = 1
            log_p = frame_log_posteriors(world, item.video.rgb)
            posteriors.append(log_p)
            lengths.append(item.video.num_frames)
            shown = item.frame_content >= 0
            hits.append(log_p.argmax(1)[shown] == item.frame_content[shown])
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {"single_frame_accuracy": round(float(np.concatenate(hits).mean()), 4)}
    all_scores = np.stack([video_scores(p, np.arange(n)) for p, n in zip(posteriors, lengths)])
    results["all"] = {"gap": round(global_average_precision(all_scores, labels), 4), "map": round(mean_average_precision(all_scores, labels), 4)}
    for strategy in STRATEGIES:
        for k in ks:
            scores = np.stack([video_scores(p, select_frames(strategy, n, k, rng)[0]) for p, n in zip(posteriors, lengths)])
            results[f"{strategy}_{k}"] = {
                "gap": round(global_average_precision(scores, labels), 4),
                "map": round(mean_average_precision(scores, labels), 4),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=PRESETS["demo"].data.classes)
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ks", type=int, nargs="+", default=[6, 10, 30])
    parser.add_argument("--out", type=Path, default=RESULTS / "synth_oracle.json")
    args = parser.parse_args()
    report = {
        "what": "oracle (true prototypes, no training) GAP@20/mAP on synthetic data, by frame selection and k",
        "command": "python benchmarks/synth_oracle.py " + " ".join(
            f"--{k} {v}" for k, v in (("classes", args.classes), ("videos", args.videos), ("seed", args.seed))
        ),
        "machine": {"platform": platform.platform(), "cpu_cores": os.cpu_count(), "numpy": np.__version__},
        "classes": args.classes,
        "videos": args.videos,
        "seed": args.seed,
        "results": run(args.classes, args.videos, args.seed, args.ks),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temp = args.out.with_name(args.out.name + ".tmp")
    temp.write_text(json.dumps(report, indent=2) + "\n")
    temp.replace(args.out)
    print(json.dumps(report["results"], indent=1))


if __name__ == "__main__":
    main()
