"""Encoder design benchmark: how the hierarchical teacher runs ragged (padded) batches on this machine.

The teacher's masked path drops all-padding blocks and runs ONE lower-LSTM call over the rest. A video's
short last block can go through that call two ways with the same result (tested in tests/test_models.py):

- ``dense_gather`` (what ``HierarchicalEncoder`` does): zero-pad it to l steps, read the state at its last
  real frame (the LSTM is causal);
- ``packed``: ``pack_padded_sequence(enforce_sorted=False)`` over the kept blocks.

This script times both on the same kept blocks, and the whole teacher forward against a plain 2-layer
``nn.LSTM`` over the same real frames (packed by video length), interleaved over rounds, median wall time
and process CPU time. Video lengths are drawn from 120..300 frames (YouTube-8M's mean is about 200).
The machine may be shared: the JSON records the load average before and after.

    python benchmarks/bench_encoder.py                      # hidden 64 and 256, batch 32, 5 rounds
    python benchmarks/bench_encoder.py --hidden 1024 --batch 16 --threads 1
Writes ``benchmarks/results/encoder_cpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pack_padded_sequence
from tqdm import tqdm

from fewframes.benchmark import describe_machine
from fewframes.cli.benchmark import write_json
from fewframes.config import FEATURE_DIM, MAX_FRAMES, ModelConfig
from fewframes.models import build_model, prepare_frames

RESULTS = Path(__file__).resolve().parent / "results"


def _time(function: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_size(hidden: int, batch: int, rounds: int, seed: int) -> dict[str, Any]:
    """Time the lower-LSTM strategies and the whole teacher for one hidden size."""
    torch.manual_seed(seed)
    config = ModelConfig(num_classes=100, hidden_size=hidden)
    teacher = build_model(config).eval()
    lower = teacher.encoder.lower
    l = config.block_length
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, MAX_FRAMES, FEATURE_DIM), dtype=torch.uint8, generator=generator)
    lengths = torch.randint(120, MAX_FRAMES + 1, (batch,), generator=generator)
    mask = torch.arange(MAX_FRAMES).unsqueeze(0) < lengths.unsqueeze(1)

    # The kept blocks exactly as the encoder builds them.
    nblocks = math.ceil(MAX_FRAMES / l)
    block_lengths = (lengths.unsqueeze(1) - torch.arange(nblocks).unsqueeze(0) * l).clamp(0, l).reshape(-1)
    kept = (block_lengths > 0).nonzero().squeeze(1)
    blocks = prepare_frames(frames.reshape(batch * nblocks, l, FEATURE_DIM).index_select(0, kept))
    kept_lengths = block_lengths.index_select(0, kept)
    rows = torch.arange(kept.numel())

    plain = torch.nn.LSTM(FEATURE_DIM, hidden, config.num_layers, batch_first=True).eval()
    prepared_videos = prepare_frames(frames)

    candidates: dict[str, Callable[[], Any]] = {
        "lower_dense_gather": lambda: lower(blocks)[0][rows, kept_lengths - 1],
        "lower_packed": lambda: lower(pack_padded_sequence(blocks, kept_lengths, batch_first=True, enforce_sorted=False))[1][0][-1],
        "teacher_forward": lambda: teacher(frames, mask),
        "plain_lstm_packed": lambda: plain(
            pack_padded_sequence(prepared_videos, lengths, batch_first=True, enforce_sorted=False)
        ),
    }
    walls: dict[str, list[float]] = {name: [] for name in candidates}
    cpus: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.inference_mode():
        torch.testing.assert_close(candidates["lower_dense_gather"](), candidates["lower_packed"](), atol=1e-5, rtol=0)
        for function in candidates.values():  # warm-up
            function()
        for _ in tqdm(range(rounds), desc=f"hidden {hidden}", leave=False):
            for name, function in candidates.items():
                wall, cpu = _time(function)
                walls[name].append(wall)
                cpus[name].append(cpu)
    timings = {
        name: {
            "wall_ms_median": round(1000 * statistics.median(walls[name]), 2),
            "cpu_ms_median": round(1000 * statistics.median(cpus[name]), 2),
            "videos_per_s_wall": round(batch / statistics.median(walls[name]), 2),
        }
        for name in candidates
    }
    return {
        "hidden_size": hidden,
        "num_layers": config.num_layers,
        "block_length": l,
        "batch": batch,
        "real_frames": int(lengths.sum()),
        "kept_blocks": int(kept.numel()),
        "ragged_blocks": int((kept_lengths < l).sum()),
        "timings": timings,
        "dense_over_packed_speedup_cpu": round(
            timings["lower_packed"]["cpu_ms_median"] / timings["lower_dense_gather"]["cpu_ms_median"], 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 256], help="hidden sizes to time")
    parser.add_argument("--batch", type=int, default=32, help="videos per batch")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "encoder_cpu.json"), help="JSON result path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    sizes = [bench_size(hidden, args.batch, args.rounds, args.seed) for hidden in args.hidden]
    payload = {
        "benchmark": "encoder_lower_lstm_strategy",
        "command": "python benchmarks/bench_encoder.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": describe_machine("cpu"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "sizes": sizes,
    }
    write_json(args.out, payload)
    for size in sizes:
        print(
            f"hidden {size['hidden_size']}: "
            + ", ".join(f"{name} {t['videos_per_s_wall']} videos/s" for name, t in size["timings"].items())
            + f"; dense/packed lower CPU-time speedup {size['dense_over_packed_speedup_cpu']}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
