"""What a finished tiny run shows through the MLflow REST API (issue 13's "Done when").

The tiny run (``tiny_run`` fixture, shared with the pipeline and report tests) tracks into its own
``mlflow.db``; a real ``mlflow server`` serves that database here and every check goes over its REST API,
as the MLflow UI and any other client would see it.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from fewframes.run_results import REGISTERED_STUDENT, model_run_name
from fewframes.runs import TAG_MODEL_KEY, TAG_PARENT_RUN, TAG_PIPELINE_RUN, TAG_STEP, local_tracking_uri
from fewframes.tracking import (
    CHAMPION_ALIAS,
    EXPERIMENT_KIND_TAG,
    MODEL_ID_TAG,
    MODEL_TRAINING_KIND,
    MODELS_VIEW,
    SHARED_VIEW_TAG_PREFIX,
    models_view_url,
)

MODEL_STEPS = ("train-teacher", "distill-student", "train-baseline")


@pytest.fixture(scope="module")
def rest(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """GET/POST helpers against a real mlflow server on the tiny run's database."""
    from mlflow_server import running_mlflow_server

    with running_mlflow_server(tmp_path_factory.mktemp("layout_server"), local_tracking_uri(tiny_run)) as uri:

        def call(endpoint: str, body: dict | None = None, **query: str):
            url = f"{uri}/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
            return raw if endpoint.endswith("/files") else json.loads(raw or b"{}")

        yield call


def _tags(entity: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in entity.get("tags", [])}


@pytest.mark.slow
def test_finished_run_as_the_mlflow_rest_api_shows_it(tiny_run: Path, rest) -> None:
    summary = json.loads((tiny_run / "run.json").read_text())
    experiment = rest("api/2.0/mlflow/experiments/get-by-name", experiment_name="fewframes")["experiment"]
    assert _tags(experiment)[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # the UI's model-training type
    runs = rest("api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000})["runs"]

    model_runs = [r for r in runs if r["data"]["tags"] and _tags(r["data"]).get(TAG_STEP) in MODEL_STEPS]
    assert len(model_runs) == len(summary["models"])

    # The default runs table (top-level runs) compares models without expanding anything: the pipeline run,
    # each trained model's own run, and the teacher-on-k controls' evaluate runs (no training run of their own).
    top_level = [r for r in runs if "mlflow.parentRunId" not in _tags(r["data"])]
    controls = [r for r in runs if _tags(r["data"]).get(TAG_STEP) == "evaluate"
                and {p["key"]: p["value"] for p in r["data"]["params"]}["control"] == "teacher_on_k"]
    assert {r["info"]["run_id"] for r in top_level} == {
        summary["parent_run_id"], *(r["info"]["run_id"] for r in model_runs + controls)}
    for run in model_runs + controls:
        tags = _tags(run["data"])
        assert tags[TAG_PARENT_RUN] == summary["parent_run_id"] and tags[TAG_PIPELINE_RUN] == summary["run_id"]
        # A readable name ("student serial L_rep+L_pred+L_CE k=6 seed 0"), not the model key.
        assert run["info"]["run_name"] == model_run_name({p["key"]: p["value"] for p in run["data"]["params"]})
        assert "gap" in {m["key"] for m in run["data"]["metrics"]}, run["info"]["run_name"]
    assert len({r["info"]["run_name"] for r in model_runs + controls}) == len(model_runs + controls)

    # The experiment's saved UI view "fewframes-models" (printed by `fewframes run`): its filter, run as the UI
    # runs it, finds exactly the model rows, best test GAP first; its columns are metrics and params.
    view = json.loads(_tags(experiment)[SHARED_VIEW_TAG_PREFIX + MODELS_VIEW])
    assert {"metrics.`gap`", "metrics.`gflops`", "params.`k`", "params.`loss`"} <= set(view["selectedColumns"])
    shown = rest("api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment["experiment_id"]], "filter": view["searchFilter"], "max_results": 1000,
        "order_by": [f"{view['orderByKey']} {'ASC' if view['orderByAsc'] else 'DESC'}"]})["runs"]
    assert sorted(r["info"]["run_id"] for r in shown) == sorted(r["info"]["run_id"] for r in model_runs + controls)
    gaps = [_metric(r, "gap") for r in shown]
    assert gaps == sorted(gaps, reverse=True)
    url = models_view_url("http://127.0.0.1:5000", experiment["experiment_id"])
    assert f"  models      {url}" in (tiny_run.parent / "printed.txt").read_text()
    # The other steps' runs nest under the pipeline run; none holds <model>.<figure> metrics.
    for run in runs:
        if run not in top_level:
            assert _tags(run["data"])["mlflow.parentRunId"] == summary["parent_run_id"]
            assert not any("." in m["key"] for m in run["data"].get("metrics", [])), run["info"]["run_name"]

    for run in model_runs:
        name = run["info"]["run_name"]
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        # One row per model: its params, training curve, test metrics and cost figures.
        assert {"k", "frame_selection", "loss", "mode", "family", "seed", "teacher_run_id"} <= set(params), name
        assert {"gap", "map", "hit_at_1", "perr", "gflops", "latency_ms_p50", "throughput_videos_s",
                "e2e_throughput_videos_s", "speedup_e2e", "flops_ratio", "best_val_gap"} <= set(metrics), name
        history = rest("api/2.0/mlflow/metrics/get-history", run_id=run["info"]["run_id"], metric_key="val_gap")
        assert len(history["metrics"]) >= 1, name
        # Its logged model: an MLflow 3 LoggedModel with a signature and an input example.
        outputs = run.get("outputs", {}).get("model_outputs", [])
        assert outputs, f"{name}: no logged model"
        model = rest(f"api/2.0/mlflow/logged-models/{outputs[0]['model_id']}")["model"]
        assert model["info"]["source_run_id"] == run["info"]["run_id"] and model["info"]["status"] == "LOGGED_MODEL_READY"
        assert model["info"]["name"] == _tags(run["data"])[TAG_MODEL_KEY]  # readable: the model's key
        assert {"gap", "map", "gflops"} <= {m["key"] for m in model["data"]["metrics"]}, name  # on its page too
        mlmodel = rest(f"ajax-api/2.0/mlflow/logged-models/{model['info']['model_id']}/artifacts/files",
                       artifact_file_path="MLmodel").decode()
        assert "signature:" in mlmodel and "inputs:" in mlmodel and "saved_input_example_info" in mlmodel, name
        # A pyfunc "model from code" (nothing pickled), the fewframes model file as its artifact.
        assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel and "model_file:" in mlmodel, name
        # Its dataset input: the train split of the frame store, the store's path as the source.
        datasets = run["inputs"].get("dataset_inputs", [])
        assert any(json.loads(d["dataset"]["source"])["uri"].endswith("store") for d in datasets), name

    # The logged models are found as MLflow 3 logged models of the experiment (the UI's Models tab).
    found = rest("api/2.0/mlflow/logged-models/search", {"experiment_ids": [experiment["experiment_id"]],
                                                         "max_results": 1000})["models"]
    assert {m["info"]["source_run_id"] for m in found} == {r["info"]["run_id"] for r in model_runs}

    parent = rest("api/2.0/mlflow/runs/get", run_id=summary["parent_run_id"])["run"]
    headline = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert {"teacher_gap", "champion_gap", "champion_k", "champion_flops_ratio", "champion_speedup_e2e"} <= set(headline)
    recommended = json.loads((tiny_run / "summary.json").read_text())["recommended"]
    assert ("recommended_gap" in headline) == (recommended is not None)
    report_files = {f["path"] for f in rest("api/2.0/mlflow/artifacts/list", run_id=summary["parent_run_id"],
                                             path="report").get("files", [])}
    assert {"report/report.md", "report/report.html", "report/summary.json"} <= report_files

    # The champion (the recommended student, else the best by test GAP), registered:
    # models:/fewframes-student@champion resolves to its logged model.
    version = rest("api/2.0/mlflow/registered-models/alias", name=REGISTERED_STUDENT, alias=CHAMPION_ALIAS)
    by_key = {_tags(r["data"]).get(TAG_MODEL_KEY): r for r in model_runs}
    champion_key = _tags(parent["data"])["fewframes.champion"]
    if recommended is not None:
        assert champion_key == recommended["model_key"]
    else:
        # Candidates: students and baselines; never the teacher or a control (a yardstick).
        students = [r for r in model_runs if {p["key"]: p["value"] for p in r["data"]["params"]}["role"]
                    in ("student", "baseline")]
        best = max(_metric(r, "gap") for r in students)
        assert _metric(by_key[champion_key], "gap") == best
    model_id = by_key[champion_key]["outputs"]["model_outputs"][0]["model_id"]
    assert _tags(version["model_version"])[MODEL_ID_TAG] == model_id
    artifact_location = rest(f"api/2.0/mlflow/logged-models/{model_id}")["model"]["info"]["artifact_uri"]
    assert version["model_version"]["source"] == artifact_location
    assert version["model_version"]["run_id"] == by_key[champion_key]["info"]["run_id"]  # the model's own run


def _metric(run: dict, name: str) -> float:
    return next(m["value"] for m in run["data"]["metrics"] if m["key"] == name)
