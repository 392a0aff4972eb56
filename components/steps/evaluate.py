"""evaluate: one model's metrics on the test split, and the ``row.json`` benchmark and report read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fewframes.errors import PipelineError
from fewframes.runs import TAG_MODEL_KEY, TAG_ROLE, TrackingContext, step_run

from .common import ROW_FILE, StepResult, _limit_threads, _write_json, model_params, read_model_info, reports_errors


# The metric names of evaluate's metrics.json that become MLflow/KFP metrics under our names.
EVALUATION_METRICS = ("gap", "map", "hit_at_1", "perr")


@reports_errors("evaluate")
def evaluate_step(store_path: str, model_dir: str, out_dir: str, tracking: TrackingContext) -> StepResult:
    """GAP@20, mAP, Hit@1, PERR (and per-class AP, encodings) of one model on the test split."""
    from fewframes.data.store import FrameStore
    from fewframes.evaluation import evaluate
    from fewframes.run_results import add_test_metrics, log_split
    from fewframes.training import load_model

    _limit_threads()
    info = read_model_info(model_dir)
    model = load_model(Path(model_dir) / info["model_file"])
    store = FrameStore.open(store_path)
    role = info["role"]
    strategy = "all" if role == "teacher" else info["frame_selection"]
    k = None if role == "teacher" else int(info["k"])
    params = {name: info.get(name, "") for name in model_params("teacher")}
    params["model_run_id"] = info.get("mlflow_run_id", "")
    tags = {TAG_ROLE: role, TAG_MODEL_KEY: info["model_key"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with step_run(tracking, "evaluate", f"evaluate {info['model_key']}", params=params, tags=tags) as tracker:
        results = evaluate(model, store, split="test", strategy=strategy, k=k, out_dir=out)
        metrics = {name: float(results[name]) for name in EVALUATION_METRICS if name in results}
        tracker.log_metrics(metrics)
        log_split(tracker, store_path, "test", "evaluation")
        # The model's own run (its training run) gets its test metrics too: one row per model in MLflow.
        add_test_metrics(tracking.uri, info.get("mlflow_run_id", ""), metrics, role)
        for name in ("metrics.json", "per_class_ap.parquet"):
            if (out / name).exists():
                tracker.log_artifact(out / name)
        run_id = getattr(tracker, "run_id", "") or ""
    row = {**info, **metrics, "evaluate_run_id": run_id}
    _write_json(out / ROW_FILE, row)
    return StepResult(metrics=metrics, metadata={"model_key": info["model_key"], "evaluate_run_id": run_id})


def read_row(evaluation_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(evaluation_dir) / ROW_FILE
    if not path.is_file():
        raise PipelineError(f"evaluation artifact {evaluation_dir} is missing {ROW_FILE}")
    return json.loads(path.read_text())
