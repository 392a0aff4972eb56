"""Peak memory of teacher training vs a minimal training loop over the same store (issue 11: target <= 1.1).

Each variant runs in a fresh Python process on the demo-sized store of ``demo_bench.py`` (built once under
the temp directory) with the demo's sizes (hidden 64, 2 layers, batch 64, all frames): ``train_teacher`` for
``--epochs`` epochs (training, validation, checkpoints, best model), and a minimal loop — the same loader
(``make_loader``, all frames, shuffled), model, L_CE, Adam — over the same training videos for the same
epochs, nothing else; and the same minimal loop under ``torch.use_deterministic_algorithms(True)`` with
PyTorch's default ``fill_uninitialized_memory=True`` (what training used before: deterministic mode fills every
new tensor with NaN, touching workspace pages the kernels never use — the 1.2x of issue 11). Each process reports its peak resident set (``ru_maxrss``, i.e. VmHWM) and, at its
end, how its resident memory splits into anonymous memory (tensors, Python) and file-backed pages (the frame
store's memory map, shared libraries), from ``/proc/self/status``; plus the resident set after imports and
after the first batch. Run it with ``OMP_NUM_THREADS=1``.

    OMP_NUM_THREADS=1 python benchmarks/teacher_memory.py
Writes ``benchmarks/results/teacher_memory_cpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("minimal", "minimal_deterministic_fill", "teacher")


def status_kib() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process (KiB), from /proc/self/status."""
    wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    values: dict[str, int] = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in wanted:
                values[name] = int(rest.split()[0])
    return values


def child(variant: str, store_path: str, epochs: int, out_dir: str) -> dict[str, Any]:
    import torch

    from fewframes.config import PRESETS
    from fewframes.data.store import FrameStore

    marks: dict[str, Any] = {}
    demo = PRESETS["demo"]
    store = FrameStore.open(store_path)
    model_config = demo.model_config(store.num_classes)
    config = demo.train.replace(epochs=epochs, device="cpu")
    if variant == "teacher":
        from fewframes.training import train_teacher

        marks["after_imports"] = status_kib()
        train_teacher(store, model_config, config, out_dir=out_dir, progress=False)
    else:
        if variant == "minimal_deterministic_fill":
            torch.use_deterministic_algorithms(True)  # fill_uninitialized_memory keeps its default, True
        from fewframes.data.loader import make_loader
        from fewframes.data.split import load_split
        from fewframes.losses import ce_loss
        from fewframes.models import build_model

        marks["after_imports"] = status_kib()
        torch.manual_seed(config.seed)
        model = build_model(model_config)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        train = load_split(store, "train")
        model.train()
        for epoch in range(epochs):
            loader = make_loader(store, train, strategy="all", batch_size=config.batch_size, shuffle=True,
                                 seed=config.seed, epoch=epoch)
            for batch in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = ce_loss(model(batch.frames, batch.mask).logits, batch.labels)
                loss.backward()
                optimizer.step()
                marks.setdefault("after_first_batch", status_kib())
    marks["end"] = status_kib()
    marks["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--videos", type=int, default=2000, help="videos in the store (the demo's 2000)")
    parser.add_argument("--store", help="an existing frame store (default: the demo-sized one under the temp dir)")
    parser.add_argument("--out", default=str(RESULTS / "teacher_memory_cpu.json"), help="JSON result path")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.store, args.epochs, args.child_out)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from demo_bench import demo_store, results_head

    from fewframes.cli.benchmark import write_json

    store = str(demo_store(args.videos, args.store))
    load_before = os.getloadavg()
    runs: dict[str, Any] = {}
    for variant in VARIANTS:
        with tempfile.TemporaryDirectory(prefix="fewframes-memory-") as out_dir:
            command = [sys.executable, __file__, "--child", variant, "--store", store, "--epochs", str(args.epochs),
                       "--child-out", out_dir]
            finished = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[variant] = json.loads(finished.stdout.strip().splitlines()[-1])
        print(f"{variant}: peak RSS {runs[variant]['peak_rss_mib']} MiB; at the end {runs[variant]['end']}", flush=True)
    payload = {
        **results_head("teacher_training_peak_rss_vs_minimal_loop", "teacher_memory.py", argv, load_before),
        "epochs": args.epochs,
        "minimal_loop": runs["minimal"],
        "minimal_loop_deterministic_fill": runs["minimal_deterministic_fill"],
        "train_teacher": runs["teacher"],
        "ratio_peak_rss": round(runs["teacher"]["peak_rss_mib"] / runs["minimal"]["peak_rss_mib"], 3),
        "ratio_peak_rss_deterministic_fill": round(
            runs["minimal_deterministic_fill"]["peak_rss_mib"] / runs["minimal"]["peak_rss_mib"], 3),
        "target": "ratio_peak_rss <= 1.1",
    }
    write_json(args.out, payload)
    print(f"peak RSS, train_teacher / minimal loop: {payload['ratio_peak_rss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
