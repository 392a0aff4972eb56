"""Ingest speed: fewframes' validated TFRecord reader against tf.data's own C++ parser on the same shard,
and ``fewframes data ingest --workers 1`` against ``--workers 2`` on several shards.

    python benchmarks/ingest_speed.py [--videos 200] [--shards 4] [--rounds 3] [--out FILE]

Parse (in-process CPU seconds, ``time.process_time``: every thread of this process, so tf.data's own
threads count, and load from other jobs on the machine hardly moves it), interleaved round by round:

- ``tf_data``: ``tf.data.TFRecordDataset`` -> ``map(tf.io.parse_single_sequence_example`` + ``decode_raw``
  + reshape) -> the rgb/audio/labels/id of every video as numpy arrays (what ingest needs, no validation);
- ``fewframes``: ``fewframes.data.yt8m.read_shard`` (read, parse and validate every record, numpy arrays).

The ratio ``fewframes / tf_data`` is the target of issue 11 (<= 1.0). The same script runs on an older
checkout (it uses only ``read_shard``/``write_tfrecord``/``ingest``) to measure "before".

Scaling (run first, before TensorFlow is loaded, so ingest can fork its workers as it does from the CLI and
the pipeline): ``ingest(..., workers=1)`` vs ``workers=2`` over ``--shards`` shards, and 2 workers started as
before issue 11's last change (spawned, parts copied into the store), ``--scaling-rounds`` interleaved
rounds: wall seconds and CPU seconds (this process + its workers, ``resource.getrusage``). On a machine
shared with other jobs the wall-clock speed-up is bounded by the idle cores; the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fewframes.data.yt8m import Video, read_shard, write_tfrecord

# Nothing heavy at module level: spawned workers (the "before" variant) import this script again
# (multiprocessing's spawn re-imports __main__), and their start-up is part of what the scaling measures.

RESULTS = Path(__file__).resolve().parent / "results"


def make_shard(path: Path, videos: int, seed: int, first_id: int = 0) -> int:
    """``videos`` random videos of 120-300 frames (the official length range is 1-300), 1-5 labels each."""
    rng = np.random.default_rng(seed)

    def generate():
        for i in range(videos):
            n = int(rng.integers(120, 301))
            yield Video(
                id=f"v{first_id + i:07d}",
                labels=np.sort(rng.choice(3862, size=int(rng.integers(1, 6)), replace=False)).astype(np.int64),
                rgb=rng.integers(0, 256, size=(n, 1024), dtype=np.uint8),
                audio=rng.integers(0, 256, size=(n, 128), dtype=np.uint8),
            )

    return write_tfrecord(path, generate())


def tf_data_parse(shard: str) -> int:
    """tf.data's C++ read + parse_single_sequence_example + decode_raw, materialised as numpy arrays."""
    import tensorflow as tf

    context = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    sequence = {
        "rgb": tf.io.FixedLenSequenceFeature([], tf.string),
        "audio": tf.io.FixedLenSequenceFeature([], tf.string),
    }

    def parse(record):
        ctx, seq = tf.io.parse_single_sequence_example(record, context_features=context, sequence_features=sequence)
        rgb = tf.reshape(tf.io.decode_raw(seq["rgb"], tf.uint8), [-1, 1024])
        audio = tf.reshape(tf.io.decode_raw(seq["audio"], tf.uint8), [-1, 128])
        return ctx["id"], ctx["labels"].values, rgb, audio

    count = 0
    for video_id, labels, rgb, audio in tf.data.TFRecordDataset(shard, buffer_size=8 << 20).map(parse):
        video_id.numpy(), labels.numpy(), rgb.numpy(), audio.numpy()
        count += 1
    return count


def fewframes_parse(shard: str) -> int:
    return sum(1 for _ in read_shard(shard, num_classes=3862))


def cpu_seconds(function, *args) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return time.process_time() - cpu, time.perf_counter() - wall, result


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# The ways of running 2 workers the scaling compares: how ingest starts them now (fork when this process
# has not loaded TensorFlow, parts hard-linked into the store), and as before this work (spawned workers,
# parts copied), to show where the extra CPU of the old 2-worker ingest went.
VARIANTS = {
    "workers_1": (1, None, None),
    "workers_2": (2, None, None),
    "workers_2_spawn_copy": (2, "spawn", False),
}


def ingest_scaling(src: str, variant: str, out: Path) -> dict[str, Any]:
    import fewframes.data.ingest as ingest_module
    import fewframes.data.store as store_module

    workers, start_method, link = VARIANTS[variant]
    shutil.rmtree(out, ignore_errors=True)
    saved = ingest_module._worker_start_method, store_module.merge_stores
    if start_method is not None:
        ingest_module._worker_start_method = lambda: start_method
    if link is False:
        merge = store_module.merge_stores
        store_module.merge_stores = lambda path, parts, **kw: merge(path, parts, **{**kw, "link": False})
    try:
        method = ingest_module._worker_start_method() if workers > 1 else "none"
        load = os.getloadavg()[0]
        wall, cpu, children = time.perf_counter(), time.process_time(), children_cpu()
        summary = ingest_module.ingest(src, str(out), num_classes=3862, workers=workers, progress=False)
        return {
            "wall_s": time.perf_counter() - wall,
            "cpu_s": (time.process_time() - cpu) + (children_cpu() - children),
            "videos": summary.videos,
            "start_method": method,
            "load_1min_at_start": load,
        }
    finally:
        ingest_module._worker_start_method, store_module.merge_stores = saved
        shutil.rmtree(out, ignore_errors=True)


def summarise_scaling(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant, runs in samples.items():
        out[variant] = {
            "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 3),
            "cpu_s_all": [round(r["cpu_s"], 3) for r in runs],
            "wall_s_all": [round(r["wall_s"], 3) for r in runs],
            "load_1min_at_start": [round(r["load_1min_at_start"], 2) for r in runs],
            "videos": runs[0]["videos"],
            "start_method": runs[0]["start_method"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=200, help="videos per shard (default 200)")
    parser.add_argument("--shards", type=int, default=4, help="shards for the workers scaling (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved parse rounds (default 3)")
    parser.add_argument("--no-scaling", action="store_true", help="parse only, skip the workers scaling")
    parser.add_argument("--scaling-rounds", type=int, default=3, help="interleaved rounds of the scaling (default 3)")
    parser.add_argument("--label", default="", help="a name for this checkout in the JSON (e.g. before)")
    parser.add_argument("--out", default=str(RESULTS / "ingest_speed.json"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_inference import LoadSampler
    from store_read import describe_machine

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = Path(tempfile.mkdtemp(prefix="fewframes-ingest-bench-"))
    try:
        shards = [work / "src" / f"train{i:04d}.tfrecord" for i in range(max(1, args.shards))]
        for i, shard in enumerate(shards):
            make_shard(shard, args.videos, seed=i, first_id=i * args.videos)
        shard = str(shards[0])
        # The scaling first: ingest forks its workers only while this process has not loaded TensorFlow
        # (as in `fewframes data ingest` and the pipeline's ingest step); the tf.data parse below loads it.
        samples: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        with LoadSampler() as scaling_load:
            if not args.no_scaling:
                ingest_scaling(str(work / "src"), "workers_1", work / "warm-up")  # the page cache, the imports
                for _ in range(args.scaling_rounds):
                    for variant in VARIANTS:
                        samples[variant].append(ingest_scaling(str(work / "src"), variant, work / f"store-{variant}"))
        # warm-up: imports, TensorFlow's graph for the map function, the page cache
        tf_data_parse(shard), fewframes_parse(shard)
        timings: dict[str, list[tuple[float, float]]] = {"tf_data": [], "fewframes": []}
        with LoadSampler() as load:
            for _ in range(args.rounds):
                for name, function in (("tf_data", tf_data_parse), ("fewframes", fewframes_parse)):
                    cpu, wall, count = cpu_seconds(function, shard)
                    assert count == args.videos, (name, count)
                    timings[name].append((cpu, wall))
        scaling = summarise_scaling(samples) if not args.no_scaling else {}
        parse = {
            name: {
                "cpu_s_median": round(statistics.median(c for c, _ in values), 4),
                "cpu_s_all": [round(c, 4) for c, _ in values],
                "wall_s_median": round(statistics.median(w for _, w in values), 4),
                "videos_per_cpu_s": round(args.videos / statistics.median(c for c, _ in values), 1),
            }
            for name, values in timings.items()
        }
        ratio = parse["fewframes"]["cpu_s_median"] / parse["tf_data"]["cpu_s_median"]
        payload: dict[str, Any] = {
            "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
            "label": args.label,
            "machine": {**describe_machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")},
            "load_average": load.summary(),
            "shard": {"videos": args.videos, "bytes": os.path.getsize(shard), "frames": "120-300 per video"},
            "parse": parse,
            "ratio_fewframes_over_tf_data_cpu": round(ratio, 3),
            "target": "ratio <= 1.0",
            "met": ratio <= 1.0,
        }
        if scaling:
            one, two = scaling["workers_1"], scaling["workers_2"]
            payload["scaling"] = {
                "shards": len(shards),
                "videos": len(shards) * args.videos,
                "bytes": sum(os.path.getsize(s) for s in shards),
                "rounds": args.scaling_rounds,
                "cpu_cores": os.cpu_count(),
                "load_average": scaling_load.summary(),
                **scaling,
                "wall_speedup_2_over_1": round(one["wall_s_median"] / two["wall_s_median"], 3),
                "cpu_ratio_2_over_1": round(two["cpu_s_median"] / one["cpu_s_median"], 3),
                "cpu_ratio_2_spawn_copy_over_1": round(scaling["workers_2_spawn_copy"]["cpu_s_median"] / one["cpu_s_median"], 3),
            }
        print(f"parse CPU s (median of {args.rounds}): tf.data {parse['tf_data']['cpu_s_median']:.3f}, "
              f"fewframes {parse['fewframes']['cpu_s_median']:.3f} -> ratio {ratio:.3f}")
        if scaling:
            s = payload["scaling"]
            for variant in VARIANTS:
                print(f"ingest {s['videos']} videos in {s['shards']} shards, {variant}: {s[variant]['wall_s_median']:.2f} s wall, "
                      f"{s[variant]['cpu_s_median']:.2f} CPU-s (median of {args.scaling_rounds})")
            print(f"wall speed-up 2 over 1 workers: x{s['wall_speedup_2_over_1']} (load {s['load_average']['load_1min_median']})")
        print(f"load average (1 min): median {payload['load_average']['load_1min_median']} on {os.cpu_count()} cores")
        if args.out:
            from fewframes.cli.benchmark import write_json

            write_json(args.out, payload)
            print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
