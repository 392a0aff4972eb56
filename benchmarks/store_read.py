"""Frame-store read benchmark: k of N frames versus all N, for candidate layouts, side by side in one run.

Writes the same random videos (``--videos`` x ``--frames`` frames of 1152 quantised bytes) in four layouts
and reads, per layout, ``k`` uniformly spaced frames of every video (the student) and all frames (the
teacher):

- ``arrow_ipc_mmap``: the fewframes store (``FrameStore``), local shards memory-mapped (the default).
- ``arrow_ipc_pread``: the same files, ``FrameStore.open(memory_map=False)``: one ranged ``pread`` per run
  of adjacent frames, the same code path as ``gs://`` ranged GETs.
- ``parquet_rg_video``: Parquet, uncompressed, one row group per video (64 KiB pages). pyarrow reads whole
  row groups (it cannot skip pages inside one: apache/arrow#29598, #45284), so k frames cost a video.
- ``parquet_rg_10``: Parquet, uncompressed, row groups of 10 frames; only the row groups holding a
  selected frame are read.

Per layout and read: seconds per pass (median of ``--rounds`` interleaved passes), payload bytes fetched
through the file API (counted: the store's counter, or a counting wrapper around the Parquet file), and,
for a cold pass (the files' pages dropped from the page cache with ``posix_fadvise(DONTNEED)``, which needs
no root), the bytes the kernel fetched from storage (``/proc/self/io`` ``read_bytes``; includes
read-ahead). Also: write throughput of each layout, and (when TensorFlow is installed) the TFRecord parse
rate of DATA-IO's reader, to say which one bounds ingest.

    python benchmarks/store_read.py                      # 1000 videos x 300 frames, k = 30
    python benchmarks/store_read.py --videos 100 --rounds 1 --out /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from fewframes.config import FEATURE_DIM, RGB_DIM
from fewframes.data.selection import select_frames
from fewframes.data.store import FrameStore, FrameStoreWriter

RESULTS = Path(__file__).resolve().parent / "results"
VIDEOS_PER_PARQUET_FILE = 200


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS and library versions."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def storage_read_bytes() -> int | None:
    """Bytes this process caused to be fetched from storage (Linux ``/proc/self/io``), or None."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def drop_page_cache(files: list[Path]) -> None:
    """Evict the files' pages (no root needed). DONTNEED drops clean pages only, hence the fsync; pages
    that a live memory map holds stay, so close maps first."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class CountingFile:
    """A Python file over a local file that counts the bytes read through it (for Parquet)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")
        self.bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.bytes += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed


# -- layouts -----------------------------------------------------------------------------------------


def write_fewframes(path: Path, videos: list[np.ndarray]) -> None:
    with FrameStoreWriter(path, num_classes=10) as writer:
        for i, frames in enumerate(tqdm(videos, desc="write arrow_ipc", unit="video", leave=False)):
            writer.add(f"v{i:06d}", [i % 10], frames[:, :RGB_DIM], frames[:, RGB_DIM:])


def write_parquet(folder: Path, videos: list[np.ndarray], row_group_frames: int | None) -> None:
    folder.mkdir(parents=True)
    schema = pa.schema([pa.field("frame", pa.binary(FEATURE_DIM), nullable=False)])
    for start in tqdm(range(0, len(videos), VIDEOS_PER_PARQUET_FILE), desc="write parquet", unit="file", leave=False):
        with pq.ParquetWriter(
            folder / f"part-{start // VIDEOS_PER_PARQUET_FILE:05d}.parquet",
            schema,
            compression="none",
            use_dictionary=False,
            write_statistics=False,
            data_page_size=64 * 1024,
        ) as writer:
            for frames in videos[start : start + VIDEOS_PER_PARQUET_FILE]:
                array = pa.FixedSizeBinaryArray.from_buffers(
                    schema.field(0).type, len(frames), [None, pa.py_buffer(np.ascontiguousarray(frames))]
                )
                table = pa.table([array], schema=schema)
                writer.write_table(table, row_group_size=row_group_frames or len(frames))


class ParquetReader:
    """Reads frames of video v from a Parquet layout (row groups per video or of fixed size)."""

    def __init__(self, folder: Path, lengths: list[int], row_group_frames: int | None) -> None:
        self.files = sorted(folder.glob("*.parquet"))
        self.lengths = lengths
        self.row_group_frames = row_group_frames
        self.handles: list[CountingFile] = []
        self.parquet: list[pq.ParquetFile] = []

    def open(self) -> None:
        self.handles = [CountingFile(f) for f in self.files]
        self.parquet = [pq.ParquetFile(pa.PythonFile(h, mode="r")) for h in self.handles]
        self.opened_bytes = sum(h.bytes for h in self.handles)

    def close(self) -> None:
        for h in self.handles:
            h.close()
        self.handles, self.parquet = [], []

    @property
    def bytes(self) -> int:
        return sum(h.bytes for h in self.handles) - self.opened_bytes

    def read(self, video: int, positions: np.ndarray) -> np.ndarray:
        pf = self.parquet[video // VIDEOS_PER_PARQUET_FILE]
        local = video % VIDEOS_PER_PARQUET_FILE
        if self.row_group_frames is None:
            table = pf.read_row_group(local)
            offset = 0
        else:
            per_video = -(-self.lengths[video] // self.row_group_frames)
            groups = np.unique(positions // self.row_group_frames)
            table = pf.read_row_groups([int(local * per_video + g) for g in groups])
            # Map positions to rows of the concatenated groups read.
            starts = {int(g): i * self.row_group_frames for i, g in enumerate(groups)}
            positions = np.array([starts[int(p // self.row_group_frames)] + p % self.row_group_frames for p in positions])
            offset = 0
        column = table.column(0).combine_chunks()
        frames = np.frombuffer(column.buffers()[1], dtype=np.uint8).reshape(-1, FEATURE_DIM)
        return frames[positions + offset]


# -- measuring ---------------------------------------------------------------------------------------


def run_pass(read: Callable[[int, np.ndarray], np.ndarray], selections: list[np.ndarray]) -> float:
    start = time.perf_counter()
    checksum = 0
    for video, positions in enumerate(selections):
        checksum += int(read(video, positions)[0, 0])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where the layouts are written (default: a temp folder)")
    parser.add_argument("--out", default=str(RESULTS / "store_read.json"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, size=(args.frames, FEATURE_DIM), dtype=np.uint8) for _ in range(args.videos)]
    lengths = [len(v) for v in videos]
    k_selection = [select_frames("uniform", n, args.k)[0] for n in lengths]
    all_selection = [np.arange(n, dtype=np.int64) for n in lengths]

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fewframes-store-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    write_seconds: dict[str, float] = {}
    payload = sum(lengths) * FEATURE_DIM
    try:
        t = time.perf_counter()
        write_fewframes(workdir / "arrow_ipc", videos)
        write_seconds["arrow_ipc"] = time.perf_counter() - t
        for name, rg in (("parquet_rg_video", None), ("parquet_rg_10", 10)):
            t = time.perf_counter()
            write_parquet(workdir / name, videos, rg)
            write_seconds[name] = time.perf_counter() - t
        del videos

        store_files = sorted((workdir / "arrow_ipc").glob("shard-*.arrow"))
        stores: dict[str, Any] = {}

        def open_layout(name: str) -> Any:
            if name == "arrow_ipc_mmap":
                return FrameStore.open(workdir / "arrow_ipc")
            if name == "arrow_ipc_pread":
                return FrameStore.open(workdir / "arrow_ipc", memory_map=False)
            reader = ParquetReader(workdir / name, lengths, None if name == "parquet_rg_video" else 10)
            reader.open()
            return reader

        def files_of(name: str) -> list[Path]:
            return store_files if name.startswith("arrow") else sorted((workdir / name).glob("*.parquet"))

        def counted(layout: Any) -> int:
            return layout.bytes_read if isinstance(layout, FrameStore) else layout.bytes

        def reset(layout: Any) -> None:
            if isinstance(layout, FrameStore):
                layout.bytes_read = 0
            else:
                layout.opened_bytes += layout.bytes

        def close(layout: Any) -> None:
            layout.close()

        layouts = ["arrow_ipc_mmap", "arrow_ipc_pread", "parquet_rg_video", "parquet_rg_10"]
        reads = {f"k{args.k}": k_selection, "all": all_selection}
        results: dict[str, dict[str, Any]] = {name: {} for name in layouts}
        # Warm passes, interleaved over rounds so drift on a shared machine hits every layout alike.
        for name in layouts:
            stores[name] = open_layout(name)
            run_pass(stores[name].read_frames if isinstance(stores[name], FrameStore) else stores[name].read, k_selection[:10])
        times: dict[tuple[str, str], list[float]] = {(n, r): [] for n in layouts for r in reads}
        bytes_fetched: dict[tuple[str, str], int] = {}
        for _ in tqdm(range(args.rounds), desc="warm rounds", unit="round"):
            for read_name, selection in reads.items():
                for name in layouts:
                    layout = stores[name]
                    reader = layout.read_frames if isinstance(layout, FrameStore) else layout.read
                    reset(layout)
                    times[(name, read_name)].append(run_pass(reader, selection))
                    bytes_fetched[(name, read_name)] = counted(layout)
        for name in layouts:
            close(stores[name])
        # Cold passes: one each, page cache of that layout's files dropped first.
        cold: dict[tuple[str, str], dict[str, Any]] = {}
        for read_name, selection in reads.items():
            for name in layouts:
                drop_page_cache(files_of(name))
                layout = open_layout(name)
                reader = layout.read_frames if isinstance(layout, FrameStore) else layout.read
                reset(layout)
                before = storage_read_bytes()
                seconds = run_pass(reader, selection)
                after = storage_read_bytes()
                cold[(name, read_name)] = {
                    "seconds": round(seconds, 4),
                    "storage_bytes": None if before is None or after is None else after - before,
                }
                close(layout)

        for name in layouts:
            for read_name in reads:
                median = statistics.median(times[(name, read_name)])
                results[name][read_name] = {
                    "warm_seconds_median": round(median, 4),
                    "warm_seconds_all_rounds": [round(t, 4) for t in times[(name, read_name)]],
                    "videos_per_second_warm": round(args.videos / median, 1),
                    "bytes_fetched": bytes_fetched[(name, read_name)],
                    "cold_seconds": cold[(name, read_name)]["seconds"],
                    "cold_storage_bytes": cold[(name, read_name)]["storage_bytes"],
                }
            k_res, all_res = results[name][f"k{args.k}"], results[name]["all"]
            results[name]["ratio_k_over_all"] = {
                "bytes_fetched": round(k_res["bytes_fetched"] / max(1, all_res["bytes_fetched"]), 4),
                "warm_seconds": round(k_res["warm_seconds_median"] / all_res["warm_seconds_median"], 4),
                "cold_seconds": round(k_res["cold_seconds"] / all_res["cold_seconds"], 4),
                "cold_storage_bytes": (
                    None
                    if not all_res["cold_storage_bytes"]
                    else round((k_res["cold_storage_bytes"] or 0) / all_res["cold_storage_bytes"], 4)
                ),
            }
        loader_rates = measure_loader(workdir / "arrow_ipc", args.k, args.rounds)
        disk = {
            "arrow_ipc": sum(p.stat().st_size for p in (workdir / "arrow_ipc").iterdir()),
            "parquet_rg_video": sum(p.stat().st_size for p in (workdir / "parquet_rg_video").iterdir()),
            "parquet_rg_10": sum(p.stat().st_size for p in (workdir / "parquet_rg_10").iterdir()),
        }
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    ingest = measure_ingest_rate(min(args.videos, 200), args.frames)
    report = {
        "benchmark": "store_read",
        "command": " ".join(["python", "benchmarks/store_read.py", *map(shlex.quote, argv or sys.argv[1:])]),
        "machine": describe_machine(),
        "videos": args.videos,
        "frames_per_video": args.frames,
        "k": args.k,
        "selection": "uniform",
        "payload_bytes_all_frames": payload,
        "rounds": args.rounds,
        "layouts": results,
        "disk_bytes": disk,
        "write_seconds": {k: round(v, 3) for k, v in write_seconds.items()},
        "write_mb_per_second": {k: round(payload / v / 1e6, 1) for k, v in write_seconds.items()},
        "loader": loader_rates,
        "ingest": ingest,
        "notes": [
            "warm: files in the page cache (written just before); cold: pages dropped with posix_fadvise(DONTNEED)",
            "bytes_fetched: payload bytes through the file API (store counter / counting wrapper, Parquet page headers included)",
            "cold_storage_bytes: /proc/self/io read_bytes, i.e. what the kernel read from the device incl. read-ahead",
        ],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"wrote {out}")
    return 0


def measure_loader(store_path: Path, k: int, rounds: int, batch_size: int = 64) -> dict[str, Any]:
    """Videos/s through ``make_loader`` / ``make_paired_loader`` (warm, main process): student vs teacher."""
    from fewframes.data.loader import make_loader, make_paired_loader

    store = FrameStore.open(store_path)
    indices = np.arange(len(store))
    loaders = {
        f"uniform_k{k}": lambda: make_loader(store, indices, strategy="uniform", k=k, batch_size=batch_size, shuffle=True, seed=0),
        "all": lambda: make_loader(store, indices, strategy="all", batch_size=batch_size, shuffle=True, seed=0),
        f"paired_all_uniform_k{k}": lambda: make_paired_loader(
            store, indices, student_strategy="uniform", k=k, batch_size=batch_size, shuffle=True, seed=0
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(rounds):
        for name, build in loaders.items():
            start = time.perf_counter()
            for _batch in build():
                pass
            times[name].append(time.perf_counter() - start)
    out: dict[str, Any] = {"batch_size": batch_size, "num_workers": 0}
    for name, values in times.items():
        out[name] = {"seconds_median": round(statistics.median(values), 4), "videos_per_second": round(len(store) / statistics.median(values), 1)}
    out[f"ratio_uniform_k{k}_over_all_seconds"] = round(
        out[f"uniform_k{k}"]["seconds_median"] / out["all"]["seconds_median"], 4
    )
    return out


def measure_ingest_rate(videos: int, frames: int) -> dict[str, Any] | None:
    """TFRecord parse rate (DATA-IO's reader) next to this store's write rate, on the same videos."""
    try:
        from fewframes.data.yt8m import Video, read_tfrecords, write_tfrecord
    except ImportError:
        return None
    rng = np.random.default_rng(1)
    items = [
        Video(
            f"t{i:05d}",
            np.array([i % 10], dtype=np.int64),
            rng.integers(0, 256, (frames, RGB_DIM), dtype=np.uint8),
            rng.integers(0, 256, (frames, FEATURE_DIM - RGB_DIM), dtype=np.uint8),
        )
        for i in range(videos)
    ]
    with tempfile.TemporaryDirectory(prefix="fewframes-ingest-bench-") as tmp:
        write_tfrecord(Path(tmp) / "shard.tfrecord", items)
        next(iter(read_tfrecords(Path(tmp) / "shard.tfrecord")))  # import TensorFlow before timing
        t = time.perf_counter()
        parsed = sum(1 for _ in read_tfrecords(Path(tmp) / "shard.tfrecord"))
        parse_seconds = time.perf_counter() - t
        t = time.perf_counter()
        with FrameStoreWriter(Path(tmp) / "store", num_classes=10) as writer:
            for video in items:
                writer.add_video(video)
        write_seconds = time.perf_counter() - t
    return {
        "videos": parsed,
        "tfrecord_parse_videos_per_second": round(parsed / parse_seconds, 1),
        "store_write_videos_per_second": round(videos / write_seconds, 1),
        "parse_over_write_time": round(parse_seconds / write_seconds, 2),
    }


def print_summary(report: dict[str, Any]) -> None:
    k = report["k"]
    print(f"{'layout':18} {'read':5} {'warm s':>8} {'cold s':>8} {'fetched MB':>11} {'storage MB':>11}")
    for name, res in report["layouts"].items():
        for read_name in (f"k{k}", "all"):
            r = res[read_name]
            storage = "-" if r["cold_storage_bytes"] is None else f"{r['cold_storage_bytes'] / 1e6:.1f}"
            print(
                f"{name:18} {read_name:5} {r['warm_seconds_median']:8.3f} {r['cold_seconds']:8.3f} "
                f"{r['bytes_fetched'] / 1e6:11.1f} {storage:>11}"
            )
        print(f"{'':18} ratio k/all: {res['ratio_k_over_all']}")
    print("loader:", report["loader"])
    print("ingest:", report["ingest"])


if __name__ == "__main__":
    sys.exit(main())
