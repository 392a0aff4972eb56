"""Inference benchmark: teacher vs k-frame students, model-only and end to end from a frame store.

Builds (once, cached) a bench frame store of synthetic YouTube-8M videos of exactly 300 frames each
(``fewframes.data.synth`` with every video 300 frames long), builds an untrained teacher and students (untrained weights time
the same as trained ones), and measures side by side, interleaved over rounds:

- parameters, FLOPs per video (analytic, cross-checked by the executed-matmul counter);
- model-only latency (batch 1, p50/p95) and throughput (videos/s at --batch);
- end to end, store on disk -> class scores: the teacher reads all 300 frames, a student only its k;
  bytes read per video;
- the teacher's model-only throughput against a plain 2-layer ``nn.LSTM`` over the same 300 frames.

Writes ``benchmarks/results/inference_<device>[_paper][_bf16].json`` (or ``--out``) with the machine
described and the command.

Default (moderate) sizes, a few minutes on 2 idle CPU cores: hidden 256, 2 layers, 100 classes, teacher blocks
of 20, 128 videos, batch 64, students k=10 and k=30, 3 rounds. ``--paper-sizes``: hidden 1024, 3862 classes,
batch 256, 1024 videos (meant for ``--device cuda``; slow on a CPU).

    python benchmarks/bench_inference.py                      # CPU, moderate sizes
    python benchmarks/bench_inference.py --rounds 5 --threads 1   # what made results/inference_cpu.json
    python benchmarks/bench_inference.py --paper-sizes --device cuda [--precision bf16]

``--device cuda`` on a machine without CUDA stops at once with a one-line error (exit 2), before any
store is built. The machine's load average is sampled during the run and recorded: on a shared machine
the absolute figures move with the load, the side-by-side ratios much less if the threads do not outnumber
the free cores (``--threads 1`` there; benchmarks/README.md shows both).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from fewframes.benchmark import (
    PRECISIONS,
    add_ratios,
    benchmark_models,
    check_precision,
    compare_plain_lstm,
    describe_machine,
    resolve_device,
)
from fewframes.cli.benchmark import print_table, write_json
from fewframes.config import MAX_FRAMES, ModelConfig, StudentConfig
from fewframes.errors import BenchmarkError, FewframesError
from fewframes.models import build_model, student_model_config

RESULTS = Path(__file__).resolve().parent / "results"
E2E_TIME_RATIO_TARGET = 0.15  # the target for k=30 vs the teacher on 300-frame videos


def build_bench_store(path: Path, videos: int, classes: int, seed: int = 0) -> Path:
    """A frame store of ``videos`` synthetic 300-frame videos at ``path`` (reused when already complete)."""
    from tqdm import tqdm

    from fewframes.data.store import FrameStore, FrameStoreWriter
    from fewframes.data.synth import GenerativeModel, World

    if (path / "store.json").exists():
        store = FrameStore.open(path)
        if len(store) == videos and store.num_classes == classes and bool((store.lengths == MAX_FRAMES).all()):
            return path
    world = World(classes, seed, GenerativeModel(fixed_frames=MAX_FRAMES))
    with FrameStoreWriter(path, num_classes=classes) as writer:
        for index in tqdm(range(videos), desc="bench store", unit="video"):
            writer.add_video(world.generate(index).video)
    return path


class LoadSampler:
    """Samples the 1-minute load average every ``interval`` seconds in a daemon thread while in use."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.samples)
        return {
            "load_1min_min": round(ordered[0], 2),
            "load_1min_median": round(ordered[len(ordered) // 2], 2),
            "load_1min_max": round(ordered[-1], 2),
            "samples": len(ordered),
            "interval_s": self.interval,
            "cpu_cores": os.cpu_count(),
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, or bf16 autocast on the device (default fp32)")
    parser.add_argument("--paper-sizes", action="store_true", help="hidden 1024, 3862 classes, batch 256, 1024 videos")
    parser.add_argument("--hidden", type=int, help="LSTM cells per layer (default 256; paper 1024)")
    parser.add_argument("--classes", type=int, help="classes (default 100; paper 3862)")
    parser.add_argument("--videos", type=int, help="videos timed end to end (default 128; paper 1024)")
    parser.add_argument("--batch", type=int, help="throughput batch size (default 64; paper 256)")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 30], help="students' k (default 10 30)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads (default: torch's, one per core); 1 on a machine shared "
                             "with other jobs, where 2 threads on 2 busy cores spend their time waiting on each other")
    parser.add_argument("--store", type=Path, help="bench store folder (default: a cached one under the temp dir)")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/inference_<device>.json)")
    args = parser.parse_args(argv)
    paper = args.paper_sizes
    args.hidden = args.hidden or (1024 if paper else 256)
    args.classes = args.classes or (3862 if paper else 100)
    args.videos = args.videos or (1024 if paper else 128)
    args.batch = args.batch or (256 if paper else 64)
    suffix = ("_paper" if paper else "") + ("" if args.precision == "fp32" else f"_{args.precision}")
    args.out = args.out or RESULTS / f"inference_{args.device.split(':')[0]}{suffix}.json"
    args.store = args.store or Path(tempfile.gettempdir()) / f"fewframes-bench-store-{args.videos}v-{args.classes}c"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; a bad flag (e.g. ``--device cuda`` without CUDA) is one line on stderr and exit 2."""
    args = parse_args(argv)
    try:
        resolve_device(args.device)  # before minutes of store building
        check_precision(args.precision)
        if args.threads is not None:
            if args.threads < 1:
                raise BenchmarkError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        with LoadSampler() as load:
            payload = run(args, argv)
    except FewframesError as error:
        print(f"bench_inference: error: {error}", file=sys.stderr)
        return 2
    payload["load_average"] = load.summary()
    write_json(args.out, payload)
    print(f"load average (1 min) during the run: median {payload['load_average']['load_1min_median']} "
          f"on {os.cpu_count()} cores")
    print(f"wrote {args.out}")
    return 0


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """The measurements, as the results JSON's payload (without the load average)."""
    command = shlex.join(["python", "benchmarks/bench_inference.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.time()
    torch.manual_seed(0)
    store = build_bench_store(args.store, args.videos, args.classes)

    teacher_config = ModelConfig(num_classes=args.classes, hidden_size=args.hidden, num_layers=2, block_length=20)
    teacher = build_model(teacher_config).eval()
    models: dict[str, Any] = {"teacher": teacher}
    students: dict[str, StudentConfig] = {}
    for k in args.ks:
        # A student shares the teacher's classifier (the serial set-up) and reads k uniformly spaced frames.
        models[f"student_k{k}"] = build_model(student_model_config(teacher_config, k), classifier=teacher.classifier)
        students[f"student_k{k}"] = StudentConfig(k=k, frame_selection="uniform")

    rows = add_ratios(benchmark_models(models, store, device=args.device, batch_size=args.batch,
                                       n_videos=args.videos, rounds=args.rounds, students=students,
                                       precision=args.precision))
    plain = compare_plain_lstm(teacher, MAX_FRAMES, args.batch, args.device, rounds=args.rounds,
                               precision=args.precision)
    machine = describe_machine(args.device)
    print_table(rows, f"bench_inference on {args.device} ({args.precision}): hidden {args.hidden}, {args.classes} classes, "
                      f"{args.videos} videos of {MAX_FRAMES} frames, batch {args.batch}")
    print(f"teacher model-only {plain['hierarchical_videos_s']:.1f} videos/s vs plain nn.LSTM "
          f"{plain['plain_lstm_videos_s']:.1f} videos/s (x{plain['speedup']:.2f})")

    summary: dict[str, Any] = {
        "teacher_model_videos_s": plain["hierarchical_videos_s"],
        "plain_lstm_model_videos_s": plain["plain_lstm_videos_s"],
        "teacher_vs_plain_lstm_speedup": plain["speedup"],
        "teacher_vs_plain_lstm_met": plain["speedup"] >= 1.0,  # target: no worse than the plain LSTM
    }
    k30 = next((r for r in rows if r["k"] == 30), None)
    if k30 is not None:
        summary.update({
            "k30_e2e_time_ratio": k30["time_ratio_e2e"],
            "k30_e2e_time_ratio_target": E2E_TIME_RATIO_TARGET,
            "k30_e2e_time_ratio_met": k30["time_ratio_e2e"] <= E2E_TIME_RATIO_TARGET,
            "k30_model_time_ratio": k30["time_ratio_model"],
            "k30_flops_ratio": k30["flops_ratio"],
            "k30_bytes_ratio": k30["bytes_ratio"],
            "k30_e2e_latency_ratio_batch1": k30["latency_ratio_e2e"],
            "paper_table4_time_ratio_k30": 9.11 / 13.00,
        })
        print(f"k=30 end to end: time ratio {k30['time_ratio_e2e']:.3f} (target <= {E2E_TIME_RATIO_TARGET}), "
              f"FLOPs ratio {k30['flops_ratio']:.3f}, bytes ratio {k30['bytes_ratio']:.3f}")
    payload = {
        "command": command,
        "machine": machine,
        "gpu_run": None if torch.cuda.is_available() else "not possible: no GPU on this machine",
        "precision": args.precision,
        "sizes": {
            "hidden_size": args.hidden, "num_layers": 2, "num_classes": args.classes, "teacher_block_length": 20,
            "frames_per_video": MAX_FRAMES, "videos": args.videos, "batch_size": args.batch, "ks": args.ks,
            "rounds": args.rounds, "torch_threads": torch.get_num_threads(),
            "weights": "untrained (timing does not depend on the values)",
            "store": "synthetic (fewframes.data.synth, fixed 300 frames), local disk, page cache warm",
        },
        "summary": summary,
        "plain_lstm": plain,
        "rows": rows,
        "wall_seconds": round(time.time() - started, 1),
    }
    return payload


if __name__ == "__main__":
    sys.exit(main())
