"""Helpers for the frame-store tests: small real stores and a real GCS emulator on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from fewframes.config import RGB_DIM


def random_video(rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8[length,1024], audio uint8[length,128]) of random bytes."""
    frames = rng.integers(0, 256, size=(length, RGB_DIM + 128), dtype=np.uint8)
    return frames[:, :RGB_DIM], frames[:, RGB_DIM:]


def write_store(
    path: str | Path,
    lengths: Sequence[int],
    *,
    num_classes: int = 7,
    seed: int = 0,
    shard_max_frames: int = 1000,
    id_prefix: str = "vid",
) -> list[np.ndarray]:
    """Write a store of ``len(lengths)`` random videos; return each video's frames (uint8 [n, 1152])."""
    from fewframes.data.store import FrameStoreWriter

    rng = np.random.default_rng(seed)
    frames = []
    with FrameStoreWriter(path, num_classes=num_classes, shard_max_frames=shard_max_frames) as writer:
        for i, length in enumerate(lengths):
            rgb, audio = random_video(rng, int(length))
            labels = rng.choice(num_classes, size=1 + i % 3, replace=False)
            writer.add(f"{id_prefix}{i:04d}", labels, rgb, audio)
            frames.append(np.concatenate([rgb, audio], axis=1))
    return frames


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[str]:
    """Run gcp-storage-emulator in memory on 127.0.0.1 with ``bucket`` created; yields its URL and sets
    ``STORAGE_EMULATOR_HOST`` for the duration."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()  # starts its own API thread and waits until it serves
    url = f"http://127.0.0.1:{port}"
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    import fewframes.fsio as fsio

    fsio._CLIENT = None  # a client made for another emulator must not be reused
    try:
        yield url
    finally:
        server.stop()
        fsio._CLIENT = None
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old
