"""benchmark: parameters, FLOPs, latency and throughput of every model, on the same videos."""

from __future__ import annotations

from pathlib import Path

from fewframes.benchmark import BENCHMARK_METRICS, model_figures  # noqa: F401  (BENCHMARK_METRICS: re-exported)
from fewframes.runs import TrackingContext, step_run

from .common import BENCHMARK_FILE, StepResult, _limit_threads, _write_json, read_model_info, reports_errors
from .evaluate import read_row


# Benchmark sizes: small enough that the local demo stays quick, large enough for stable medians.
BENCHMARK_BATCH = 32
BENCHMARK_VIDEOS = 64
BENCHMARK_LATENCY_VIDEOS = 10

def _benchmark_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@reports_errors("benchmark")
def benchmark_step(
    store_path: str,
    model_dirs: list[str],
    evaluation_dirs: list[str],
    out_dir: str,
    tracking: TrackingContext,
    device: str = "auto",
) -> StepResult:
    """Parameters, FLOPs, latency and throughput of every model (``fewframes.benchmark``), on the same
    videos. Each model's figures go on that model's own MLflow run (and its logged model; its evaluate run
    too, which ``fewframes compare`` reads), so one row of the runs table holds GAP and cost; the benchmark
    step's run keeps the machine and every raw figure in ``benchmark/benchmark.json``, not as metrics."""
    from fewframes.benchmark import add_ratios, benchmark_models, describe_machine
    from fewframes.run_results import add_test_metrics
    from fewframes.runs import log_metrics_to_run

    _limit_threads()
    evaluate_runs, model_runs = {}, {}
    for evaluation_dir in evaluation_dirs:
        row = read_row(evaluation_dir)
        evaluate_runs[row["model_key"]] = row.get("evaluate_run_id", "")
        model_runs[row["model_key"]] = row.get("mlflow_run_id", "")
    infos = {}
    for model_dir in model_dirs:
        info = read_model_info(model_dir)
        infos[info["model_key"]] = (info, str(Path(model_dir) / info["model_file"]))
    run_device = _benchmark_device(device)
    with step_run(tracking, "benchmark", params={"models": len(infos), "device": run_device}) as tracker:
        raw = add_ratios(benchmark_models(
            {key: path for key, (_, path) in infos.items()},
            store_path,
            device=run_device,
            batch_size=BENCHMARK_BATCH,
            n_videos=BENCHMARK_VIDEOS,
            latency_videos=BENCHMARK_LATENCY_VIDEOS,
        ))
        rows = []
        summary: dict[str, float] = {}
        for bench in raw:
            key = bench["name"]
            figures = model_figures(bench)
            rows.append({"model_key": key, "role": infos[key][0]["role"], **figures, "raw": bench})
            log_metrics_to_run(tracking.uri, evaluate_runs.get(key, ""), figures)
            add_test_metrics(tracking.uri, model_runs.get(key, ""), figures, key)
            summary[f"{key}.latency_ms_p50"] = figures["latency_ms_p50"]  # KFP's metrics of the step
            summary[f"{key}.gflops"] = figures["gflops"]
        out = Path(out_dir)
        machine = describe_machine(run_device)
        _write_json(out / BENCHMARK_FILE, {"machine": machine, "rows": rows})
        tracker.set_tags({f"machine.{name}": value for name, value in machine.items()})
        tracker.log_artifact(out / BENCHMARK_FILE, "benchmark")
    return StepResult(metrics=summary, metadata={"models": len(rows), "device": run_device})
