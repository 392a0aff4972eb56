"""Tiny frame stores for the training tests (test_training, test_resume, test_ddp), written with STORE's
real writer from the synthetic generator's videos (no TFRecords: no tensorflow import, seconds faster).

Short videos (100-140 frames) keep the all-frames teacher cheap on 2 CPU cores while the data keeps the
generator's structure (labelled shots, background, title cards), so models really learn.
"""

from __future__ import annotations

from pathlib import Path

from fewframes.config import ModelConfig, TrainConfig

TINY_CLASSES = 8
TINY_VIDEOS = 160
VALIDATION_FRACTION = 0.3  # ~48 validation videos: a GAP steady enough to see learning


def build_tiny_store(path: Path, videos: int = TINY_VIDEOS, classes: int = TINY_CLASSES, seed: int = 0) -> Path:
    """A frame store of ``videos`` synthetic videos of ``classes`` classes at ``path`` (returned), with a
    recorded train/validation split (no test videos: training never reads them)."""
    from threadpoolctl import threadpool_limits

    from fewframes.data.split import write_split
    from fewframes.data.store import FrameStoreWriter
    from fewframes.data.synth import GenerativeModel, World

    world = World(classes, seed, GenerativeModel(min_frames=100, max_frames=140))
    # One BLAS thread, as the generator's own CLI: its small products only contend with more.
    with threadpool_limits(1, "blas"), FrameStoreWriter(path, num_classes=classes) as writer:
        for index in range(videos):
            writer.add_video(world.generate(index).video)
    write_split(path, validation_fraction=VALIDATION_FRACTION, test_fraction=0.0)
    return path


def tiny_model_config(**changes: object) -> ModelConfig:
    """The tests' teacher: 2-layer LSTMs of 16 cells, blocks of 10 frames."""
    values = dict(num_classes=TINY_CLASSES, hidden_size=16, num_layers=2, block_length=10, dropout=0.2)
    values.update(changes)
    return ModelConfig(**values)  # type: ignore[arg-type]


def tiny_train_config(**changes: object) -> TrainConfig:
    """Few epochs, small batches, a brisk learning rate, CPU."""
    values = dict(epochs=3, batch_size=16, learning_rate=5e-3, seed=0, device="cpu")
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


# 63 synthetic videos split 48 train / 15 validation: 48 is a multiple of the global batches the resume and
# DDP tests use (8), so no epoch ends with a short or wrap-padded batch.
SMALL_VIDEOS = 63
SMALL_BATCH = 8
SMALL_STEPS_PER_EPOCH = 48 // SMALL_BATCH


def training_command(mode: str, store: Path, out: Path, *, processes: int = 1, **configs: dict) -> list[str]:
    """``python -m fewframes.training MODE ...`` (under ``torchrun --standalone`` with ``processes`` > 1);
    ``configs`` maps ``model_config``/``train_config``/``student_config``/``teacher`` to their values."""
    import json
    import sys

    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*launcher, "-m", "fewframes.training", mode, "--store", str(store), "--out", str(out), "--no-progress"]
    for name, value in configs.items():
        flag = "--" + name.replace("_", "-")
        command += [flag, value if isinstance(value, str) else json.dumps(value)]
    return command


def run_training_process(command: list[str], timeout: float = 180) -> dict:
    """Run a training command to its end; its result summary (the JSON line rank 0 prints last)."""
    import json
    import subprocess

    finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=one_thread_env())
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(finished.stdout.strip().splitlines()[-1])


def one_thread_env() -> dict:
    """The environment for training subprocesses: one intra-op thread each, so that runs compared for exact
    equality compute in the same order whatever else the 2-core machine is doing."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}
