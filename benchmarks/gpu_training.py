"""Training throughput on a device (for ``benchmarks/gpu.sh``): teacher epoch videos/s, and a serial student
epoch with the teacher's outputs cached and with the live teacher, on the demo-sized store.

    python benchmarks/gpu_training.py --device cuda --out OUT.json [--hidden 64] [--epochs 2]

Each run trains for ``--epochs`` epochs through the public API (``train_teacher``, ``train_student``) and
times the last epoch between the per-epoch tracker calls (``student_epoch.EpochClock``: a whole
steady-state epoch with validation and checkpoint, free of set-up). Not yet run on a GPU (no GPU was lent
to the session that wrote it); on CPU it runs the same code (``--device cpu``) for a check.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_bench import demo_store  # noqa: E402
from student_epoch import EpochClock  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch

    from fewframes.benchmark import describe_machine
    from fewframes.cli.benchmark import write_json
    from fewframes.config import PRESETS, StudentConfig
    from fewframes.data.store import FrameStore
    from fewframes.training import train_student, train_teacher

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hidden", type=int, help="LSTM cells (default: the demo's)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last is timed (default 2)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the last epoch is timed)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_training: error: --device {args.device}: CUDA is not available on this machine", file=sys.stderr)
        return 2

    demo = PRESETS["demo"]
    store = FrameStore.open(demo_store(args.videos))
    model_config = demo.model_config(store.num_classes)
    if args.hidden:
        model_config = model_config.replace(hidden_size=args.hidden)
    train = demo.train.replace(epochs=args.epochs, device=args.device)
    work = Path(tempfile.mkdtemp(prefix="fewframes-gpu-training-"))
    from fewframes.data.split import load_split

    train_videos = len(load_split(store, "train"))

    def timed(run: Any) -> dict[str, float]:
        clock = EpochClock()
        run(clock)
        cpu, wall = clock.epoch(args.epochs)
        return {"epoch_wall_s": round(wall, 4), "epoch_cpu_s": round(cpu, 4)}

    results: dict[str, Any] = {}
    results["teacher"] = timed(lambda clock: train_teacher(store, model_config, train, out_dir=work / "teacher",
                                                           tracker=clock, progress=False))
    teacher_file = next((work / "teacher").glob("*.pt"))
    student = StudentConfig(k=args.k, loss="rep_pred_ce")
    for variant in ("cache", "live"):
        results[f"student_{variant}"] = timed(lambda clock, v=variant: train_student(
            store, teacher_file, student, train.replace(cache_teacher_outputs=v == "cache"),
            model_config=model_config, out_dir=work / f"student-{v}", tracker=clock, progress=False))
    for row in results.values():
        row["train_videos_per_s"] = round(train_videos / row["epoch_wall_s"], 1)
    results["student_cache_over_live_wall"] = round(
        results["student_cache"]["epoch_wall_s"] / results["student_live"]["epoch_wall_s"], 3)
    payload = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": describe_machine(args.device),
        "model": model_config.to_dict(),
        "train": {"epochs": args.epochs, "batch_size": train.batch_size, "device": args.device},
        "results": results,
    }
    write_json(args.out, payload)
    print(payload["results"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
