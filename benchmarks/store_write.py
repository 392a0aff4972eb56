"""How fast the frame store is written, next to a plain sequential file write and a Parquet writer of the
same bytes, and next to how fast TFRecords are parsed (the other half of ``fewframes data ingest``).

    python benchmarks/store_write.py [--videos 500] [--frames 300] [--rounds 5]

Each round writes the same random videos three ways, in turn (interleaved, so load from other jobs on the
machine hits all three alike): ``plain`` (``open().write`` of each video's bytes), ``store``
(``FrameStoreWriter``, what ingest uses) and ``parquet`` (uncompressed, one row group per video). Two
times per write: until the writer returns (the data may still sit in the page cache) and until the files
are also fsync'ed (on the disk). Medians go to ``benchmarks/results/store_write.json``; docs/frame_store.md
quotes them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from store_read import describe_machine, measure_ingest_rate

from fewframes.cli.benchmark import write_json
from fewframes.config import FEATURE_DIM, RGB_DIM
from fewframes.data.store import FrameStoreWriter

RESULTS = Path(__file__).resolve().parent / "results"


def write_plain(folder: Path, videos: list[np.ndarray]) -> None:
    folder.mkdir()
    with open(folder / "frames.bin", "wb") as handle:
        for frames in videos:
            handle.write(frames.data)


def write_store(folder: Path, videos: list[np.ndarray]) -> None:
    with FrameStoreWriter(folder, num_classes=10) as writer:
        for i, frames in enumerate(videos):
            writer.add(f"v{i:06d}", [i % 10], frames[:, :RGB_DIM], frames[:, RGB_DIM:])


def write_parquet(folder: Path, videos: list[np.ndarray]) -> None:
    folder.mkdir()
    schema = pa.schema([pa.field("frame", pa.binary(FEATURE_DIM), nullable=False)])
    with pq.ParquetWriter(
        folder / "frames.parquet", schema, compression="none", use_dictionary=False, write_statistics=False
    ) as writer:
        for frames in videos:
            column = pa.FixedSizeBinaryArray.from_buffers(schema.field(0).type, len(frames), [None, pa.py_buffer(frames)])
            writer.write_table(pa.Table.from_arrays([column], schema=schema))


def fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=500)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ingest-videos", type=int, default=200, help="videos for the TFRecord parse rate")
    parser.add_argument("--out", default=str(RESULTS / "store_write.json"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, size=(args.frames, FEATURE_DIM), dtype=np.uint8) for _ in range(args.videos)]
    payload = args.videos * args.frames * FEATURE_DIM
    writers: dict[str, Callable[[Path, list[np.ndarray]], None]] = {
        "plain": write_plain, "store": write_store, "parquet": write_parquet,
    }  # fmt: skip
    seconds: dict[str, dict[str, list[float]]] = {name: {"write": [], "write_fsync": []} for name in writers}
    workdir = Path(tempfile.mkdtemp(prefix="fewframes-write-bench-"))
    try:
        for round_number in range(args.rounds):
            for name, write in writers.items():
                folder = workdir / f"{name}-{round_number}"
                started = time.perf_counter()
                write(folder, videos)
                written = time.perf_counter() - started
                fsync_tree(folder)
                seconds[name]["write"].append(written)
                seconds[name]["write_fsync"].append(time.perf_counter() - started)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    layouts = {}
    for name, times in seconds.items():
        layouts[name] = {
            f"{kind}_mb_per_second_median": round(payload / statistics.median(values) / 1e6, 1)
            for kind, values in times.items()
        }
        layouts[name]["write_seconds_all_rounds"] = [round(v, 3) for v in times["write"]]
    report = {
        "benchmark": "store_write",
        "command": "python benchmarks/store_write.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": describe_machine(),
        "videos": args.videos,
        "frames_per_video": args.frames,
        "payload_bytes": payload,
        "rounds": args.rounds,
        "writers": layouts,
        "tfrecord_ingest": measure_ingest_rate(args.ingest_videos, args.frames),
    }
    out = Path(args.out)
    write_json(out, report)
    for name, figures in layouts.items():
        print(f"{name:8} write {figures['write_mb_per_second_median']:8.1f} MB/s   "
              f"write+fsync {figures['write_fsync_mb_per_second_median']:8.1f} MB/s")
    ingest = report["tfrecord_ingest"]
    if ingest:
        parse_mb = ingest["tfrecord_parse_videos_per_second"] * args.frames * FEATURE_DIM / 1e6
        print(f"TFRecord parse {ingest['tfrecord_parse_videos_per_second']} videos/s ({parse_mb:.1f} MB/s of frames)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
