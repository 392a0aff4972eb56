"""The fixed cost of one pipeline step: what a step pays before and after its work, and where it goes.

    python benchmarks/step_overhead.py [--repeats 3] [--out benchmarks/results/step_overhead.json]

CPU seconds (user + system of the step's processes: ``resource.getrusage(RUSAGE_CHILDREN)`` around each
run, so load from other jobs on the machine hardly moves them; wall seconds are recorded too):

1. ``kfp_local``: whole steps through ``kfp.local.SubprocessRunner`` (what ``fewframes run`` does), each a
   component defined here:
   - ``noop``: a body that does nothing (the Python interpreter, kfp and its executor);
   - ``tracked``: the fixed part of a real step: import ``fewframes.components.steps``, ``torch`` and open
     the step's MLflow child run in a SQLite store (``fewframes.runs.step_run``), log one metric;
   - ``tracked_full_teardown``: the same with ``FEWFRAMES_FULL_TEARDOWN=1`` (Python's normal interpreter
     teardown after the outputs are written, as before issue 11);
   - ``tracked_warm``: the same step run in a fork of the warm step server (``fewframes run``'s default,
     ``components/steps/warm.py``); the server's own start, once per pipeline run, is reported apart.
2. ``parts``: each piece alone in a fresh interpreter (``python -c``): start-up, ``import kfp.dsl.
   executor_main``, ``import torch``, ``import mlflow``, opening a run in an existing SQLite store,
   ``import tensorflow`` (ingest only), and the teardown with torch + mlflow loaded (normal exit minus
   ``os._exit``).
3. ``entry_points``: what each step's entry point imports before its work (the modules a step body
   imports), CPU seconds, whether tensorflow/mlflow/kfp/matplotlib get loaded, and the five slowest
   imports (``python -X importtime``, wall seconds: they move with the load).

The same script runs on an older checkout (``--label before``) for the before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import LoadSampler  # noqa: E402
from store_read import describe_machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# The lazy imports of each step's body (components/steps/*.py), i.e. what a step loads before its work.
ENTRY_POINTS = {
    "start-tracking": "from fewframes.components.steps import start_tracking_step; import mlflow",
    # ingest-split also writes and reads one tiny TFRecord shard (what synth + ingest load for it)
    "ingest-split": "from fewframes.components.steps import ingest_split_step; from fewframes.data.ingest import ingest; "
    "from fewframes.data.split import write_split; from fewframes.data.synth import generate_synthetic; "
    "import numpy as np, os, tempfile; from fewframes.data.yt8m import Video, read_shard, write_tfrecord; "
    "p = os.path.join(tempfile.mkdtemp(), 'a.tfrecord'); "
    "write_tfrecord(p, [Video('v', np.array([1]), np.zeros((2, 1024), np.uint8), np.zeros((2, 128), np.uint8))]); "
    "list(read_shard(p))",
    "plan": "from fewframes.components.steps import plan_students_step; from fewframes.data.store import FrameStore",
    "train": "from fewframes.components.steps import train_teacher_step; from fewframes.data.store import FrameStore; "
    "from fewframes.training import train_teacher; import fewframes.runs, fewframes.tracking, mlflow",
    "evaluate": "from fewframes.components.steps import evaluate_step; from fewframes.evaluation import evaluate; "
    "from fewframes.training import load_model; import mlflow",
    "benchmark": "from fewframes.components.steps import benchmark_step; "
    "from fewframes.benchmark import benchmark_models; import mlflow",
    "report": "from fewframes.components.steps import report_step; from fewframes.report import build_report; import mlflow",
}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(function, *args, **kwargs) -> tuple[float, float]:
    """(CPU seconds of the child processes that ended meanwhile, wall seconds)."""
    cpu, wall = children_cpu(), time.perf_counter()
    function(*args, **kwargs)
    return children_cpu() - cpu, time.perf_counter() - wall


def python(code: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kfp_local_steps(work: Path, repeats: int) -> dict[str, Any]:
    from kfp import local

    from fewframes.components.steps.common import FULL_TEARDOWN_ENV
    from fewframes.components.steps.warm import warm_steps
    from fewframes.runs import TrackingContext, local_tracking_uri, start_parent_run

    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    uri = local_tracking_uri(work)
    parent = start_parent_run(TrackingContext(uri=uri, experiment="fewframes"), "step-overhead")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "kfp"))
    from step_overhead_components import noop, tracked

    def tracked_run() -> None:
        tracked(tracking_uri=uri, parent_run_id=parent, value=1)

    variants: dict[str, tuple[Any, dict[str, str], bool]] = {  # run, environment, through the warm server
        "noop": (lambda: noop(value=1), {}, False),
        "tracked_full_teardown": (tracked_run, {FULL_TEARDOWN_ENV: "1"}, False),
        "tracked": (tracked_run, {}, False),
        "tracked_warm": (tracked_run, {}, True),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    import contextlib
    import io

    tracked_run()  # warm-up: the page cache, the MLflow experiment
    server_start: list[float] = []
    for _ in range(repeats):
        for name, (run, env, warm) in variants.items():  # interleaved: load hits every variant alike
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    if warm:
                        # The step's process here (kfp's executor) + its fork in the server (the server
                        # counts its children's CPU); the server's own start is once per pipeline run.
                        alone = children_cpu()
                        with warm_steps() as server:
                            assert server, "warm step server did not start"
                            cpu, wall = measured(run)
                        alone = children_cpu() - alone - cpu - server.steps_cpu_s
                        samples[name].append((cpu + server.steps_cpu_s, wall))
                        server_start.append(alone)
                    else:
                        samples[name].append(measured(run))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    result: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
    result["warm_server_start_cpu_s_median"] = round(statistics.median(server_start), 3)  # once per pipeline run
    return result


def summary(values: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "cpu_s_median": round(statistics.median(c for c, _ in values), 3),
        "cpu_s_all": [round(c, 3) for c, _ in values],
        "wall_s_median": round(statistics.median(w for _, w in values), 3),
    }


def parts(work: Path, repeats: int) -> dict[str, Any]:
    """Each piece of a step's fixed cost alone, in a fresh interpreter (differences of medians)."""
    uri = f"sqlite:///{work / 'mlflow.db'}"  # made by kfp_local_steps (or here)
    python(f"import mlflow; c = mlflow.MlflowClient(tracking_uri={uri!r}); c.get_experiment_by_name('x')")
    open_run = (f"c = mlflow.MlflowClient(tracking_uri={uri!r}); e = c.create_experiment('p' + str(time.time())); "
                "r = c.create_run(e); c.set_terminated(r.info.run_id)")
    programs = {
        "python": "pass",
        "kfp_executor": "import kfp.dsl.executor_main",
        "torch": "import torch",
        "mlflow": "import mlflow",
        "mlflow_open_run": f"import mlflow, time; {open_run}",
        "tensorflow": "import tensorflow",
        "torch_mlflow_run": f"import torch, mlflow, time; {open_run}",
        "torch_mlflow_run_os_exit": f"import torch, mlflow, time, os; {open_run}; os._exit(0)",
    }
    # _KFP_RUNTIME: what kfp.local sets for a step, so kfp loads only its runtime part
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "_KFP_RUNTIME": "true"}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in programs}
    for _ in range(repeats):
        for name, code in programs.items():
            samples[name].append(measured(python, code, env))
    result = {name: summary(values) for name, values in samples.items()}
    med = {name: result[name]["cpu_s_median"] for name in result}
    result["derived_cpu_s"] = {
        "interpreter_start": med["python"],
        "import kfp executor": round(med["kfp_executor"] - med["python"], 3),
        "import torch": round(med["torch"] - med["python"], 3),
        "import mlflow": round(med["mlflow"] - med["python"], 3),
        "open an MLflow run (SQLite store: SQLAlchemy + alembic imports, run)": round(med["mlflow_open_run"] - med["mlflow"], 3),
        "import tensorflow": round(med["tensorflow"] - med["python"], 3),
        "teardown with torch + mlflow loaded": round(med["torch_mlflow_run"] - med["torch_mlflow_run_os_exit"], 3),
    }
    return result


def entry_points(repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for step, code in ENTRY_POINTS.items():
        cpus = []
        for _ in range(repeats):
            cpu, _ = measured(python, code)
            cpus.append(cpu)
        finished = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env,
                                  capture_output=True, text=True)
        top: list[tuple[int, str]] = []
        loaded = set()
        for line in finished.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _, cumulative, name = line.split("|")
            loaded.add(name.strip())
            if len(name) - len(name.lstrip()) <= 2:  # the program's own imports and their direct ones
                top.append((int(cumulative), name.strip()))
        top.sort(reverse=True)
        out[step] = {
            "cpu_s_median": round(statistics.median(cpus), 3),
            "loads_tensorflow": "tensorflow" in loaded,
            "loads_kfp": "kfp" in loaded,
            "loads_mlflow": "mlflow" in loaded,
            "loads_matplotlib": "matplotlib" in loaded,
            "slowest_imports_wall_s": {name: round(us / 1e6, 3) for us, name in top[:5]},  # -X importtime: wall
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, interleaved (default 3)")
    parser.add_argument("--label", default="", help="a name for this checkout in the JSON (e.g. before)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["kfp_local", "parts", "entry_points"])
    parser.add_argument("--out", default=str(RESULTS / "step_overhead.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = Path(tempfile.mkdtemp(prefix="fewframes-step-overhead-"))
    payload: dict[str, Any] = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "label": args.label,
        "machine": {**describe_machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")},
    }
    try:
        with LoadSampler() as load:
            if "kfp_local" not in args.skip:
                payload["kfp_local"] = kfp_local_steps(work, args.repeats)
            if "parts" not in args.skip:
                payload["parts"] = parts(work, args.repeats)
            if "entry_points" not in args.skip:
                payload["entry_points"] = entry_points(args.repeats)
        payload["load_average"] = load.summary()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in payload.items() if k not in ("machine",)}, indent=1))
    if args.out:
        from fewframes.cli.benchmark import write_json

        write_json(args.out, payload)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
