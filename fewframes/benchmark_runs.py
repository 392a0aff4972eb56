"""Where ``fewframes benchmark --tracking-uri`` logs: each model's figures on that model's own MLflow run.

The pipeline's benchmark step puts a model's cost figures (``fewframes.benchmark.model_figures``: GFLOPs,
latency, throughput, ``flops_ratio``, ``speedup_e2e``) on the model's run, its logged model and its evaluate
run, so one row of the runs table holds GAP and cost. The standalone command does the same, finding each
model file's run in this order:

1. the pipeline's: ``model.json`` beside the model file (what a training step leaves in its model folder;
   ``fewframes run`` prints those files' paths) names the run (``mlflow_run_id``), if that run is on this
   tracking server. Its logged model and its evaluate run (same pipeline run, same model key) get the
   figures too, as the pipeline's benchmark step does;
2. else a model run an earlier ``fewframes benchmark`` created for the same model file (the same content:
   tag ``TAG_MODEL_CHECKSUM``, the file's payload checksum) in ``--experiment``;
3. else a new top-level run in ``--experiment``, named and tagged as the pipeline names and tags a model's run
   (``model_run_name``, ``TAG_ROLE``, ``TAG_MODEL_KEY``, ``TAG_MODEL_RUN``; the ``MODEL_PARAMS`` the model file
   describes, blank where it does not say: seed, train fraction, teacher run), with ``TAG_STEP`` ``benchmark``:
   it holds the figures only (no training curves, no logged model).

The figures are logged at step 0 with the time of the benchmark, so a later benchmark's figures are the
ones MLflow shows (it keeps the earlier values in the metric's history). The command's own ``benchmark`` run
keeps the machine (tags ``machine.*``), the settings and every raw figure in ``benchmark/benchmark.json``,
not as metrics, as the pipeline's benchmark step run does.

mlflow is imported only inside the functions (through ``fewframes.tracking``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewframes.runs import (
    MODEL_PARAMS,
    TAG_MODEL_KEY,
    TAG_MODEL_RUN,
    TAG_PIPELINE_RUN,
    TAG_ROLE,
    TAG_STEP,
)

TAG_MODEL_CHECKSUM = "fewframes.model_checksum"  # on a model run `fewframes benchmark` created: the file's content


@dataclass(frozen=True)
class ModelRun:
    """A model file's MLflow run: its id, how it was found (``pipeline``, ``earlier benchmark``, ``created``)
    and, for a pipeline's model, its evaluate run ('' if none) and its model key (the logged model's name)."""

    run_id: str
    found: str
    model_key: str
    evaluate_run_id: str = ""


def _pipeline_run_id(model_file: str) -> str:
    """The ``mlflow_run_id`` of the ``model.json`` beside ``model_file`` that describes that very file; ''."""
    from fewframes import fsio
    from fewframes.components.steps.common import MODEL_INFO_FILE  # what a training step leaves beside its model

    folder = str(model_file).rstrip("/").rsplit("/", 1)[0] if fsio.is_gcs(model_file) else str(Path(model_file).parent)
    info_path = fsio.join(folder, MODEL_INFO_FILE) if fsio.is_gcs(model_file) else str(Path(folder) / MODEL_INFO_FILE)
    if not fsio.exists(info_path):
        return ""
    try:
        info = json.loads(fsio.read_bytes(info_path))
    except ValueError:
        return ""  # not a training step's model.json: no pipeline run to find
    described = str(info.get("model_file", ""))
    same = (
        described.rsplit("/", 1)[-1] == str(model_file).rstrip("/").rsplit("/", 1)[-1]
        if fsio.is_gcs(model_file)
        else (Path(folder) / described).resolve() == Path(model_file).resolve()
    )
    return str(info.get("mlflow_run_id") or "") if same else ""


def _described_params(payload: Mapping[str, Any]) -> dict[str, str]:
    """``MODEL_PARAMS`` as far as a model file says them; blank where it does not (seed, train fraction...)."""
    params = dict.fromkeys(MODEL_PARAMS, "")
    student = payload.get("student_config") or {}
    params["role"] = str(payload.get("role") or "model")
    params["family"] = str((payload.get("model_config") or {}).get("family", "") or "")
    if student:
        for name in ("k", "frame_selection", "loss", "mode", "matching"):
            params[name] = "" if student.get(name) is None else str(student[name])
    elif params["role"] == "teacher":
        params["frame_selection"] = "all"
    return params


def _run_exists(client: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:  # not on this server (another store), or deleted
        return None


def find_or_create_model_run(uri: str, experiment: str, model_file: str, model_key: str) -> ModelRun:
    """The run ``model_file``'s figures go on (see the module docstring for the order)."""
    import mlflow

    from fewframes.run_results import model_run_name
    from fewframes.tracking import Tracker
    from fewframes.training.results import CHECKSUM_KEY, read_model_file

    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = _pipeline_run_id(model_file)
    run = _run_exists(client, run_id) if run_id else None
    if run is not None:
        tags = run.data.tags
        key = tags.get(TAG_MODEL_KEY, model_key)
        evaluate = ""
        if tags.get(TAG_PIPELINE_RUN):
            found = client.search_runs(
                [run.info.experiment_id],
                filter_string=f"tags.`{TAG_STEP}` = 'evaluate' and tags.`{TAG_MODEL_KEY}` = '{key}' "
                f"and tags.`{TAG_PIPELINE_RUN}` = '{tags[TAG_PIPELINE_RUN]}'",
                max_results=1,
            )
            evaluate = found[0].info.run_id if found else ""
        return ModelRun(run_id, "pipeline", key, evaluate)

    payload = read_model_file(model_file)
    checksum = str(payload.get(CHECKSUM_KEY) or "")
    known = client.get_experiment_by_name(experiment)
    if checksum and known is not None:
        earlier = client.search_runs(
            [known.experiment_id],
            filter_string=f"tags.`{TAG_MODEL_CHECKSUM}` = '{checksum}' and tags.`{TAG_MODEL_RUN}` = 'true'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if earlier:
            return ModelRun(earlier[0].info.run_id, "earlier benchmark", model_key)
    params = _described_params(payload)
    # The seed is not in a model file: the pipeline's name without its "seed ?".
    name = model_run_name(params).replace(" seed ?", "")
    tags = {TAG_STEP: "benchmark", TAG_ROLE: params["role"], TAG_MODEL_KEY: model_key, TAG_MODEL_RUN: "true"}
    if checksum:
        tags[TAG_MODEL_CHECKSUM] = checksum
    with Tracker.start(uri, experiment, name, tags=tags, params=params) as tracker:
        return ModelRun(tracker.run_id or "", "created", model_key)


def log_benchmark_to_model_runs(
    uri: str,
    experiment: str,
    models: Mapping[str, tuple[str, str]],
    rows: list[dict[str, Any]],
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, ModelRun]:
    """Log each row's figures (row ``name`` -> ``models[name]``: its model file and model key) on that model's
    run (and, for a
    pipeline's model, its logged model and evaluate run); start the command's ``benchmark`` run with
    ``settings`` as params, the machine as tags and the rows (with each model's run id) as
    ``benchmark/benchmark.json``. Returns row name -> ``ModelRun``."""
    from fewframes.benchmark import model_figures
    from fewframes.run_results import add_test_metrics
    from fewframes.runs import log_metrics_to_run
    from fewframes.tracking import Tracker

    found: dict[str, ModelRun] = {}
    for row in rows:
        name = row["name"]
        model_file, model_key = models[name]
        model_run = find_or_create_model_run(uri, experiment, model_file, model_key)
        figures = model_figures(row)
        if model_run.found == "pipeline":
            add_test_metrics(uri, model_run.run_id, figures, model_run.model_key)  # the run and its logged model
            log_metrics_to_run(uri, model_run.evaluate_run_id, figures)  # what `fewframes compare` reads
        else:
            Tracker.existing(uri, model_run.run_id).log_metrics(figures)
        found[name] = model_run
    with Tracker.start(uri, experiment, "benchmark", tags={TAG_STEP: "benchmark"}, params=dict(settings)) as tracker:
        tracker.set_tags({f"machine.{key}": value for key, value in machine.items()})
        payload = {
            "machine": dict(machine),
            "rows": [{**row, "mlflow_run_id": found[row["name"]].run_id} for row in rows],
        }
        with tempfile.TemporaryDirectory(prefix="fewframes-benchmark-") as folder:
            results = Path(folder) / "benchmark.json"
            results.write_text(json.dumps(payload, indent=2) + "\n")
            tracker.log_artifact(results, "benchmark")
    return found


__all__ = ["ModelRun", "TAG_MODEL_CHECKSUM", "find_or_create_model_run", "log_benchmark_to_model_runs"]
