"""What the demo-sized benchmarks share (``student_epoch.py``, ``teacher_memory.py``, ``gpu_training.py``): the
demo-sized frame store, built once and kept under the temp directory, and the head of each results JSON (the
command, the machine, the threads and the load average around the run)."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any


def build_store(path: Path, videos: int, classes: int, seed: int) -> Path:
    """A synthetic frame store of ``videos`` videos at ``path`` with a 70/10/20 split; an existing one is kept."""
    from threadpoolctl import threadpool_limits

    from fewframes.data.split import write_split
    from fewframes.data.store import FrameStoreWriter
    from fewframes.data.synth import GenerativeModel, World

    if (path / "store.json").is_file():
        return path
    world = World(classes, seed, GenerativeModel())
    with threadpool_limits(1, "blas"), FrameStoreWriter(path, num_classes=classes) as writer:
        for index in range(videos):
            writer.add_video(world.generate(index).video)
    write_split(path, validation_fraction=0.1, test_fraction=0.2)
    return path


def demo_store(videos: int, store: str | None = None) -> Path:
    """``store`` when given, else the demo preset's data (``videos`` of them) under the temp directory."""
    from fewframes.config import PRESETS

    if store:
        return Path(store)
    demo = PRESETS["demo"].data
    return build_store(Path(tempfile.gettempdir()) / f"fewframes-bench-demo-store-{videos}", videos, demo.classes,
                       demo.seed)


def results_head(benchmark: str, script: str, argv: list[str] | None, load_before: tuple[float, ...],
                 device: str = "cpu") -> dict[str, Any]:
    """The first fields of a results JSON: what was measured, the exact command (run with
    ``OMP_NUM_THREADS=1``), the machine, the threads, and the load average before and now (after)."""
    from fewframes.benchmark import describe_machine

    return {
        "benchmark": benchmark,
        "command": f"OMP_NUM_THREADS=1 python benchmarks/{script} "
                   + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": describe_machine(device),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
