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
