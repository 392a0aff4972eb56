"""Serial student epoch with the teacher's outputs cached vs with the live teacher (issue 11: target <= 0.25).

A demo-sized frame store (the demo preset's data: synthetic videos of 120-300 frames, 50 classes, 2000 videos
split 70/10/20; built once and kept under the temp directory, ``--store`` to choose) and the demo's sizes
(hidden 64, 2 layers, batch 64, lr 6e-3); an untrained teacher saved as a model file (timing does not depend
on the weights). The real ``train_student`` runs a k-frame serial (c) student for 2 epochs, once with
``cache_teacher_outputs=False`` (the frozen teacher's forward on all frames of every batch) and once with the
cache beside the teacher file (built before the rounds and timed on its own: the grid's case, where one
build serves every student and epoch). A student epoch is measured between the run's per-epoch tracker
calls, which come after each epoch's validation: epoch 2, from the end of epoch 1 to the end of epoch 2, is
one whole steady-state epoch (training, validation, checkpoint), free of set-up and of the cache's load.
Process CPU time (``time.process_time``; the machine may be shared) and wall time; the variants are
interleaved round by round; medians. Run it with ``OMP_NUM_THREADS=1``.

    OMP_NUM_THREADS=1 python benchmarks/student_epoch.py            # k=10, 2 rounds
Writes ``benchmarks/results/student_epoch_cpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fewframes.cli.benchmark import write_json
from fewframes.config import PRESETS, StudentConfig
from fewframes.distributed import DistContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_bench import demo_store, results_head  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class EpochClock:
    """A training tracker that only notes the clocks: at the start (params) and at each epoch's end."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def _mark(self) -> None:
        self.marks.append((time.process_time(), time.perf_counter()))

    def log_params(self, params: dict[str, Any]) -> None:
        self._mark()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is not None:  # per-epoch figures (the end-of-run summary has no step)
            self._mark()

    def model_name(self, role: str, secondary: bool = False) -> str:
        return role

    def log_model_file(self, model_file: Any, name: str = "model") -> None:
        pass

    def log_model_file(self, path: Any, name: str) -> None:  # the run's model, logged after the last epoch
        pass

    def epoch(self, number: int) -> tuple[float, float]:
        """(CPU s, wall s) of epoch ``number`` (1-based)."""
        (cpu0, wall0), (cpu1, wall1) = self.marks[number - 1], self.marks[number]
        return cpu1 - cpu0, wall1 - wall0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=10, help="the student's frames")
    parser.add_argument("--loss", default="rep_pred_ce", help="the distillation loss (serial)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (each: one live, one cached run)")
    parser.add_argument("--videos", type=int, default=2000, help="videos in the store (the demo's 2000)")
    parser.add_argument("--store", help="an existing frame store (default: a demo-sized one under the temp dir)")
    parser.add_argument("--out", default=str(RESULTS / "student_epoch_cpu.json"), help="JSON result path")
    args = parser.parse_args(argv)

    from fewframes.data.store import FrameStore
    from fewframes.models import build_model
    from fewframes.training import save_model, train_student
    from fewframes.training.data import open_training_data
    from fewframes.training.teacher_cache import teacher_outputs

    demo = PRESETS["demo"]
    work = Path(tempfile.mkdtemp(prefix="fewframes-student-epoch-"))
    store = FrameStore.open(demo_store(args.videos, args.store))
    model_config = demo.model_config(store.num_classes)
    teacher_file = work / "teacher" / "teacher.pt"
    torch.manual_seed(0)
    save_model(build_model(model_config), teacher_file, model_config, role="teacher")
    base = demo.train.replace(epochs=2, device="cpu")
    student_config = StudentConfig(k=args.k, loss=args.loss)
    load_before = os.getloadavg()

    data = open_training_data(store, base)
    ctx = DistContext(device=torch.device("cpu"))
    from fewframes.training import load_model

    teacher = load_model(teacher_file)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    outputs = teacher_outputs(teacher, str(teacher_file), data, base, ctx)
    build = {"cpu_s": round(time.process_time() - cpu0, 3), "wall_s": round(time.perf_counter() - wall0, 3),
             "videos": len(outputs.video_indices), "file_bytes": Path(outputs.path).stat().st_size}

    epochs: dict[str, list[tuple[float, float]]] = {"live": [], "cache": []}
    for round_number in range(args.rounds):
        for variant in ("live", "cache"):
            clock = EpochClock()
            train_student(store, teacher_file, student_config,
                          base.replace(cache_teacher_outputs=variant == "cache"),
                          out_dir=work / f"{variant}-{round_number}", tracker=clock, progress=False)
            epochs[variant].append(clock.epoch(2))
            print(f"round {round_number + 1} {variant}: epoch 2 {clock.epoch(2)[0]:.2f} CPU s, "
                  f"{clock.epoch(2)[1]:.2f} s", flush=True)

    def summary(variant: str) -> dict[str, Any]:
        cpu = [c for c, _ in epochs[variant]]
        wall = [w for _, w in epochs[variant]]
        return {"cpu_s": [round(c, 3) for c in cpu], "wall_s": [round(w, 3) for w in wall],
                "cpu_s_median": round(statistics.median(cpu), 3), "wall_s_median": round(statistics.median(wall), 3),
                "train_videos_per_cpu_s": round(len(outputs.video_indices) / statistics.median(cpu), 1)}

    live, cached = summary("live"), summary("cache")
    payload = {
        **results_head("student_epoch_cached_vs_live_teacher", "student_epoch.py", argv, load_before),
        "store": {"videos": len(store), "train_videos": len(data.train_indices),
                  "validation_videos": len(data.val_indices), "classes": store.num_classes,
                  "mean_frames": round(float(store.lengths.mean()), 1)},
        "model": {"hidden_size": model_config.hidden_size, "num_layers": model_config.num_layers,
                  "batch_size": base.batch_size, "k": args.k, "loss": args.loss},
        "what": "epoch 2 of a 2-epoch train_student run (training + validation + checkpoint), per variant",
        "live_teacher": live,
        "cached_teacher_outputs": cached,
        "cache_build": build,
        "ratio_cpu": round(cached["cpu_s_median"] / live["cpu_s_median"], 3),
        "ratio_wall": round(cached["wall_s_median"] / live["wall_s_median"], 3),
        "target": "ratio_cpu <= 0.25",
    }
    write_json(args.out, payload)
    print(f"student epoch, cache / live: CPU {payload['ratio_cpu']}, wall {payload['ratio_wall']} "
          f"(live {live['cpu_s_median']} CPU s, cache {cached['cpu_s_median']} CPU s; "
          f"cache build {build['cpu_s']} CPU s once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
