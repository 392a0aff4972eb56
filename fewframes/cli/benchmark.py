"""``fewframes benchmark``: FLOPs, latency and throughput of teachers and students, model-only and end to end."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from fewframes.errors import BenchmarkError

COLUMNS = (
    ("name", "model", "{}"),
    ("family", "family", "{}"),
    ("k", "k", "{}"),
    ("params", "params", "{:,}"),
    ("gflops_per_video", "GFLOPs/video", "{:.4f}"),
    ("latency_ms_p50", "lat p50 ms", "{:.2f}"),
    ("latency_ms_p95", "lat p95 ms", "{:.2f}"),
    ("throughput_videos_s", "videos/s", "{:.1f}"),
    ("e2e_latency_ms_p50", "e2e p50 ms", "{:.2f}"),
    ("e2e_throughput_videos_s", "e2e videos/s", "{:.1f}"),
    ("bytes_read_per_video", "bytes/video", "{:,.0f}"),
    ("time_ratio_e2e", "e2e time ratio", "{:.3f}"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``benchmark`` to the ``fewframes`` command line."""
    parser = subparsers.add_parser(
        "benchmark",
        help="FLOPs, latency and throughput of saved models (model alone and from the frame store)",
        description="Benchmark saved teacher/student models side by side on the same videos of a frame store. "
        "Students read only their k frames. Prints a table and writes JSON with the machine described.",
    )
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="saved model files, e.g. the paths `fewframes run` prints (teacher first); each row is named "
                             "from its file's metadata, or NAME=PATH names it")
    parser.add_argument("--store", required=True, help="frame store to read the videos from (local or gs://)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch", type=int, default=64, help="batch size for throughput (default: 64)")
    parser.add_argument("--videos", type=int, default=128, help="videos to time end to end (default: 128)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default: 3)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="fp32, or bf16 autocast on the device (default: fp32)")
    parser.add_argument("--out", help="write the rows and the machine description to this JSON file (local or gs://)")
    parser.add_argument("--tracking-uri",
                        help="also log each model's figures on its own MLflow run at this tracking URI: the run of the "
                             "pipeline that trained it (model.json beside the file names it), else one this command "
                             "creates (fewframes/benchmark_runs.py); the machine and the JSON go on a 'benchmark' run")
    parser.add_argument("--experiment", default="fewframes",
                        help="MLflow experiment of the 'benchmark' run and of model runs this command creates "
                             "(default: fewframes)")
    parser.set_defaults(handler=run)


def model_name_of(path: str) -> str:
    """A model file's row name from its own metadata: the pipeline's model key (``teacher``,
    ``student-serial-rep_pred_ce-final-k10``, ``baseline-uniform-k10``)."""
    from fewframes.components.steps.common import model_key
    from fewframes.training.results import read_model_file

    payload = read_model_file(path)
    role = str(payload.get("role") or "model")
    student = payload.get("student_config") or {}
    if role == "teacher" or not student:
        return "teacher" if role == "teacher" else Path(path).stem
    return model_key(role, int(student["k"]), mode=student.get("mode", "serial"), loss=student.get("loss", ""),
                     matching=student.get("matching", "final"), frame_selection=student.get("frame_selection", ""))


def _named(models: list[str]) -> dict[str, str]:
    """Row name -> path. ``NAME=PATH`` names a row; a plain path is named from the model file's metadata
    (``model_name_of``), and two files describing the same model get their file names appended."""
    named: dict[str, str] = {}  # in the order given
    for item in models:
        name, sep, path = item.partition("=")
        if sep:
            if not name or not path:
                raise BenchmarkError(f"--models: expected PATH or NAME=PATH, got {item!r}")
            if name in named:
                raise BenchmarkError(f"--models: the name {name!r} is given twice (or is another model's own name)")
        else:
            path = item
            name = base = model_name_of(item)
            if name in named:
                name = base = f"{name}@{Path(item).stem}"
            number = 2
            while name in named:  # the same file given twice
                name, number = f"{base}#{number}", number + 1
        named[name] = path
    return named


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """Print the benchmark rows as a rich table."""
    from rich.table import Table

    from fewframes.cli import print_rich_table

    table = Table(title=title)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*("-" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in COLUMNS))
    print_rich_table(table)  # whole: the table goes to logs and files, not only terminals


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON atomically to a local file or a gs:// object."""
    from fewframes import fsio

    fsio.write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())


def run(args: argparse.Namespace) -> int:
    """Handler of ``fewframes benchmark``."""
    from fewframes.benchmark import add_ratios, benchmark_models, describe_machine
    from fewframes.tracking import check_tracking_uri

    check_tracking_uri(args.tracking_uri)  # an unreachable server fails now, not after the timing
    models = _named(args.models)
    rows = benchmark_models(models, args.store, device=args.device, batch_size=args.batch,
                            n_videos=args.videos, rounds=args.rounds, precision=args.precision)
    rows = add_ratios(rows)
    machine = describe_machine(args.device)
    print_table(rows, f"fewframes benchmark on {machine['device']} ({machine['cpu_model']}, {machine['cpu_cores']} cores"
                      + (f", {machine['gpu']}" if machine["gpu"] else "") + ")")
    if args.out:
        write_json(args.out, {"machine": machine, "store": str(args.store), "rows": rows})
    if args.tracking_uri:
        from fewframes.benchmark_runs import log_benchmark_to_model_runs

        settings = {"store": str(args.store), "device": args.device, "batch_size": args.batch, "videos": args.videos,
                    "rounds": args.rounds, "precision": args.precision, "models": len(models)}
        found = log_benchmark_to_model_runs(
            args.tracking_uri, args.experiment, {name: (path, model_name_of(path)) for name, path in models.items()},
            rows, machine, settings,
        )
        how = {"pipeline": "its pipeline run's model run", "earlier benchmark": "the run an earlier benchmark created",
               "created": "a new model run"}
        for name, model_run in found.items():
            print(f"{name}: figures logged on {how[model_run.found]} {model_run.run_id}")
    return 0
