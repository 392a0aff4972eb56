"""evaluate, evaluate-teacher-on-k: one model's metrics on the test split, and the ``row.json`` benchmark and
report read (the model's parameters — ``role``, ``family``, ``control``, ``k``, ``frame_selection``, ``seed``,
``train_fraction``, ... — its metrics and MLflow run ids)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fewframes.errors import PipelineError
from fewframes.runs import TAG_MODEL_KEY, TAG_ROLE, TrackingContext, step_run

from .common import (
    ROW_FILE,
    TEACHER_ON_K,
    StepResult,
    _limit_threads,
    _write_json,
    model_key,
    model_params,
    read_model_info,
    reports_errors,
)


# The metric names of evaluate's metrics.json that become MLflow/KFP metrics under our names.
EVALUATION_METRICS = ("gap", "map", "hit_at_1", "perr")


def _evaluate(
    store_path: str, model_file: Path, info: dict[str, Any], out_dir: str, tracking: TrackingContext,
    strategy: str, k: int | None,
) -> StepResult:
    """Evaluate ``model_file`` fed ``strategy``/``k`` frames on the test split; write ``row.json`` (``info``,
    the metrics and the evaluate run's id) beside the evaluation's files."""
    from fewframes.data.store import FrameStore
    from fewframes.evaluation import evaluate
    from fewframes.run_results import add_test_metrics, log_split, model_run_name
    from fewframes.training import load_model

    _limit_threads()
    model = load_model(model_file)
    store = FrameStore.open(store_path)
    # Every row names the same fields (blank when not relevant), whatever wrote its model.json.
    info = {**model_params(info["role"]), **info}
    if not info.get("family"):
        info["family"] = getattr(getattr(model, "config", None), "family", "") or ""
    params = {name: info.get(name, "") for name in model_params("teacher")}
    params["model_run_id"] = info.get("mlflow_run_id", "")
    tags = {TAG_ROLE: info["role"], TAG_MODEL_KEY: info["model_key"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A model with a training run of its own: that run is its row in the runs table and this run is nested
    # under the pipeline's. The teacher-on-k control has none: this run is its row (top-level, readable name).
    own_run = not info.get("mlflow_run_id")
    run_name = model_run_name(info) if own_run else f"evaluate {info['model_key']}"
    with step_run(tracking, "evaluate", run_name, params=params, tags=tags, nested=not own_run) as tracker:
        results = evaluate(model, store, split="test", strategy=strategy, k=k, out_dir=out)
        metrics = {name: float(results[name]) for name in EVALUATION_METRICS if name in results}
        tracker.log_metrics(metrics)
        log_split(tracker, store_path, "test", "evaluation")
        # The model's own run (its training run) gets its test metrics too: one row per model in MLflow.
        add_test_metrics(tracking.uri, info.get("mlflow_run_id", ""), metrics, info["model_key"])
        for name in ("metrics.json", "per_class_ap.parquet"):
            if (out / name).exists():
                tracker.log_artifact(out / name)
        run_id = getattr(tracker, "run_id", "") or ""
    row = {**info, **metrics, "evaluate_run_id": run_id}
    _write_json(out / ROW_FILE, row)
    return StepResult(metrics=metrics, metadata={"model_key": info["model_key"], "evaluate_run_id": run_id})


@reports_errors("evaluate")
def evaluate_step(store_path: str, model_dir: str, out_dir: str, tracking: TrackingContext) -> StepResult:
    """GAP@20, mAP, Hit@1, PERR (and per-class AP, encodings) of one model on the test split, fed the frames
    it was trained on (all for a teacher, its k frames by its selection otherwise)."""
    info = read_model_info(model_dir)
    teacher = info["role"] == "teacher"
    strategy = "all" if teacher else info["frame_selection"]
    k = None if teacher else int(info["k"])
    return _evaluate(store_path, Path(model_dir) / info["model_file"], info, out_dir, tracking, strategy, k)


@reports_errors("evaluate-teacher-on-k")
def evaluate_teacher_on_k_step(
    store_path: str,
    teachers_dir: str,
    out_dir: str,
    tracking: TrackingContext,
    *,
    seed: int,
    k: int,
    repeat: bool = False,
) -> StepResult:
    """The teacher-on-k control (role ``control``, no training): the all-data teacher of ``seed`` fed k
    uniformly spaced frames. ``teachers_dir``: a teachers artifact (``gather_teachers_step``) or one
    teacher's model folder."""
    from .train import resolve_teacher

    folder = resolve_teacher(teachers_dir, int(seed), 1.0)
    teacher = read_model_info(folder, "teacher")
    k = int(k)
    info = {
        **model_params("control", k, "uniform", train_fraction=1.0, teacher_run_id=teacher.get("mlflow_run_id", ""),
                       seed=teacher.get("seed", int(seed)), family=teacher.get("family", ""), control=TEACHER_ON_K),
        "model_key": model_key("control", k, control=TEACHER_ON_K, seed=int(seed), repeat=repeat),
        "mlflow_run_id": "",  # no training run of its own: the teacher's is teacher_run_id
        "teacher_key": teacher.get("model_key", ""),
    }
    return _evaluate(store_path, folder / teacher["model_file"], info, out_dir, tracking, "uniform", k)


def read_row(evaluation_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(evaluation_dir) / ROW_FILE
    if not path.is_file():
        raise PipelineError(f"evaluation artifact {evaluation_dir} is missing {ROW_FILE}")
    return json.loads(path.read_text())
