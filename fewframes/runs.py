"""The MLflow run structure of a pipeline run: one pipeline (parent) run, one run per component execution.

Layout, so that the experiment's default runs table compares models without expanding anything:

- each model's run (its training step: ``train-teacher``, ``distill-student``, ``train-baseline``; the
  evaluate run of a model that has no training run, the teacher-on-k control) is a TOP-LEVEL run of the
  experiment with a readable name (``student serial L_rep k=10 seed 0``): params, curves, logged model,
  test metrics, cost figures;
- the other steps' runs (ingest-split, evaluate, benchmark, report, ...) are nested under the pipeline run,
  which holds the headline metrics and the report (``fewframes.run_results``);
- every step's run carries ``TAG_PARENT_RUN`` (the pipeline run's MLflow id) and ``TAG_PIPELINE_RUN``, so
  ``tags.`fewframes.pipeline_run_id` = '...'`` in the UI's search box shows one pipeline run's runs.

Choice (documented here and in the README): the parent run is created BEFORE the DAG starts and its id
travels to every step as the pipeline parameter ``parent_run_id``.

- ``fewframes run`` (local) creates the parent run itself, after ``check_tracking_uri`` has proved the
  server reachable, so a bad ``--tracking-uri`` fails at the start and never after training.
- On a cluster, the DAG's first step ``start-tracking`` creates the parent run when ``parent_run_id`` is
  empty (the submitting laptop usually cannot reach the in-cluster MLflow server) and echoes it otherwise.
- The parent is closed by ``close_parent_run`` alone: the DAG's exit-handler task ``close-tracking`` calls
  it with KFP's final state on every backend (after success or failure), and ``fewframes run`` calls it
  after kfp.local returns and on Ctrl-C; the first call wins.

Every run, parent and child, carries the same tag names (``TAG_*`` below) and the same parameter names
(``k``, ``frame_selection``, ``loss``, ``mode``, ``matching``, ``train_fraction``, ``teacher_run_id``, ...),
so runs of different pipeline runs compare column by column in the MLflow UI and in ``fewframes compare``.

An empty tracking URI switches tracking off: steps still run, nothing is logged.
Imports mlflow (and fewframes.tracking, which imports it) only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewframes.errors import PipelineError

DEFAULT_EXPERIMENT = "fewframes"

# Tag names shared by every run of a pipeline run.
TAG_STEP = "fewframes.step"  # start-tracking | ingest-split | train-teacher | ... | report ("pipeline" on the parent)
TAG_ROLE = "fewframes.role"  # teacher | student | baseline | control (runs about one model)
TAG_MODEL_KEY = "fewframes.model_key"  # one name per model of a pipeline run, e.g. student-serial-rep_pred_ce-final-k30
TAG_PIPELINE_RUN = "fewframes.pipeline_run_id"  # the KFP run id, or the local run's id
TAG_PARENT_RUN = "fewframes.parent_run_id"  # on every step's run: the pipeline's MLflow run (nested or not)
TAG_MODEL_RUN = "fewframes.model_run"  # "true" on a model's own (top-level) run: the models view filters on it
TAG_PIPELINE = "fewframes.pipeline"  # distill | paper
TAG_WORKFLOW = "fewframes.kfp_workflow"  # on a cluster's parent run: the Argo workflow (pods find it by it)
TAG_FAILURE = "fewframes.failure"  # on a parent run that did not finish: what failed, as KFP reported it

# Parameters that describe one model; every run about a model logs all of them (blank when not relevant).
MODEL_PARAMS: tuple[str, ...] = (
    "role",
    "family",
    "control",
    "k",
    "frame_selection",
    "loss",
    "mode",
    "matching",
    "train_fraction",
    "teacher_run_id",
    "seed",
)

# The metric names every step uses.
METRIC_NAMES: tuple[str, ...] = (
    "gap",
    "map",
    "hit_at_1",
    "perr",
    "gflops",
    "latency_ms_p50",
    "latency_ms_p95",
    "num_parameters",
    "best_val_gap",
    "best_epoch",
)


@dataclass(frozen=True)
class TrackingContext:
    """Where a step logs: the tracking URI ('' = off), the experiment, the parent run and the pipeline run id."""

    uri: str = ""
    experiment: str = DEFAULT_EXPERIMENT
    parent_run_id: str = ""
    pipeline_run_id: str = ""
    pipeline: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.uri)

    def tags(self, step: str) -> dict[str, str]:
        tags = {TAG_STEP: step}
        if self.pipeline_run_id:
            tags[TAG_PIPELINE_RUN] = self.pipeline_run_id
        if self.pipeline:
            tags[TAG_PIPELINE] = self.pipeline
        return tags


def local_tracking_uri(run_dir: str | os.PathLike[str]) -> str:
    """The local run's MLflow store: a SQLite database inside the run folder (``fewframes.tracking`` puts
    the artifacts beside it, in ``mlartifacts/``)."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def local_artifact_root(uri: str) -> Path | None:
    """Where the artifacts of a ``sqlite:`` tracking store go (``mlartifacts/`` beside the database, the
    rule ``fewframes.tracking`` applies when it creates an experiment); None for a server or other store."""
    from fewframes.tracking import _sqlite_path

    database = _sqlite_path(uri)
    return database.resolve().parent / "mlartifacts" if database is not None else None


def check_tracking(uri: str) -> None:
    """Fail now, with one line, when the tracking server cannot be reached ('' = tracking off: nothing to check)."""
    if not uri:
        return
    from fewframes.tracking import check_tracking_uri

    check_tracking_uri(uri)


def start_parent_run(
    context: TrackingContext,
    run_name: str,
    params: dict[str, Any] | None = None,
) -> str:
    """Create the pipeline run's parent MLflow run and return its id ('' when tracking is off).

    The parent stays open (RUNNING) until ``end_parent_run``: children attach to it by id.
    """
    if not context.enabled:
        return ""
    from fewframes.tracking import Tracker

    tracker = Tracker.start(
        context.uri,
        context.experiment,
        run_name,
        tags=context.tags("pipeline"),
        params=_clean_params(params or {}),
    )
    return str(tracker.run_id)


def end_parent_run(uri: str, run_id: str, *, failed: bool = False) -> None:
    """Mark the parent run FINISHED (or FAILED): ``close_parent_run`` with a plain outcome."""
    close_parent_run(uri, run_id, "FAILED" if failed else "FINISHED")


# How a pipeline ended -> the MLflow status of its parent run. KFP's PipelineTaskFinalStatus.state is
# SUCCEEDED/FAILED/CANCELED/SKIPPED on the v2 backend (COMPLETE/CACHED in older MLMD-based releases) and
# SUCCEEDED/FAILED on kfp.local; MLflow's own statuses pass through. Anything unknown counts as a failure:
# a run is only FINISHED when something said it succeeded.
_FINISHED_STATES = {"FINISHED", "SUCCEEDED", "SUCCESS", "COMPLETE", "COMPLETED", "CACHED"}
_KILLED_STATES = {"KILLED", "CANCELED", "CANCELLED", "CANCELING", "INTERRUPTED"}


def parent_run_status(state: str) -> str:
    """The MLflow status (FINISHED, FAILED, KILLED) for a pipeline's final state."""
    state = str(state or "").strip().upper()
    if state in _FINISHED_STATES:
        return "FINISHED"
    if state in _KILLED_STATES:
        return "KILLED"
    return "FAILED"


def find_parent_run(uri: str, experiment: str, pipeline_run_id: str) -> str:
    """The id of the parent run that ``start-tracking`` tagged with ``pipeline_run_id`` ('' if none)."""
    if not uri or not pipeline_run_id:
        return ""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return ""
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{TAG_PIPELINE_RUN}` = '{pipeline_run_id}' and tags.`{TAG_STEP}` = 'pipeline'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""


def resolve_tracking(uri: str, experiment: str, parent_run_id: str = "") -> TrackingContext:
    """Where a step logs, from the stable coordinates it gets as parameters (so KFP can cache it).

    ``parent_run_id`` given (``fewframes run``): that run. Empty (a cluster run): the parent that
    ``start-tracking`` tagged with this pod's workflow (``fewframes.cluster.WORKFLOW_ENV``, from the pod's
    Argo label). The pipeline run id and pipeline name come from the parent's tags.
    """
    if not uri:
        return TrackingContext(uri="", experiment=experiment)
    import mlflow

    from fewframes.cluster import WORKFLOW_ENV

    client = mlflow.MlflowClient(tracking_uri=uri)
    if not parent_run_id:
        workflow = os.environ.get(WORKFLOW_ENV, "")
        found = client.get_experiment_by_name(experiment) if workflow else None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{TAG_WORKFLOW}` = '{workflow}' and tags.`{TAG_STEP}` = 'pipeline'",
            max_results=1,
        ) if found is not None else []  # fmt: skip
        if not runs:
            raise PipelineError(
                f"no parent MLflow run for this pipeline run in experiment {experiment!r} at {uri} "
                f"(workflow {workflow or f'unknown: ${WORKFLOW_ENV} unset'}; start-tracking did not run?)"
            )
        parent_run_id = runs[0].info.run_id
        tags = runs[0].data.tags
    else:
        try:
            tags = client.get_run(parent_run_id).data.tags
        except mlflow.exceptions.MlflowException:
            from fewframes.tracking import check_tracking_uri

            check_tracking_uri(uri)  # a dead server is "unreachable", not "no such run"
            raise PipelineError(f"parent_run_id {parent_run_id!r} is not a run at {uri}") from None
    return TrackingContext(uri, experiment, parent_run_id, tags.get(TAG_PIPELINE_RUN, ""), tags.get(TAG_PIPELINE, ""))


def close_parent_run(uri: str, run_id: str, state: str, message: str = "") -> str:
    """End the pipeline's parent MLflow run as the pipeline ended; returns the status set ('' = nothing to do).

    The one place a parent run is closed: the DAG's exit-handler task (``close-tracking``, every backend,
    with KFP's final state) and ``fewframes run`` (after kfp.local returns, on an error, on Ctrl-C/SIGTERM)
    both call it. Only a RUNNING parent changes, so the first to close it wins and a second call (the local
    runner after its exit task) leaves the status alone. ``message`` (the failure) goes in a tag.
    """
    if not uri or not run_id:
        return ""
    import mlflow

    from fewframes.tracking import bound_http_retries

    bound_http_retries()  # a dead server: a few seconds, not MLflow's 8 minutes of retries
    status = parent_run_status(state)
    client = mlflow.MlflowClient(tracking_uri=uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return ""
    if message and status != "FINISHED":
        client.set_tag(run_id, TAG_FAILURE, message[:4000])
    if status != "FINISHED":  # steps stopped mid-way (SIGTERM kills without clean-up) left theirs RUNNING
        end_stale_child_runs(uri, run_id, status)
    client.set_terminated(run_id, status=status)
    return status


def end_stale_child_runs(uri: str, parent_run_id: str, status: str = "KILLED") -> int:
    """End every run of the pipeline run ``parent_run_id`` still RUNNING with ``status``: its child runs
    (``mlflow.parentRunId``) and the models' top-level runs, tied to it by ``TAG_PARENT_RUN`` (a training step
    cut short by SIGKILL leaves its model's run RUNNING); returns how many. Only called when no step of the
    pipeline run can still be writing to them: the parent is being closed as not FINISHED, or a resume has
    stopped whatever the interrupted attempt left."""
    if not uri or not parent_run_id:
        return 0
    import mlflow

    from fewframes.tracking import bound_http_retries

    bound_http_retries()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    stale = {}
    for tag in ("mlflow.parentRunId", TAG_PARENT_RUN):  # MLflow's filter has no OR
        for run in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{tag}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
            max_results=10000,
        ):
            stale[run.info.run_id] = run
    stale.pop(parent_run_id, None)
    for run_id in stale:
        client.set_terminated(run_id, status=status)
    return len(stale)


def reopen_parent_run(uri: str, run_id: str) -> None:
    """Set a closed (KILLED/FAILED) parent run RUNNING again: ``fewframes run --resume`` goes on with it, and
    :func:`close_parent_run` closes it at the end as usual."""
    if not uri or not run_id:
        return
    import mlflow

    from fewframes.tracking import bound_http_retries

    bound_http_retries()
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        client.update_run(run_id, status="RUNNING")
    except Exception as exc:  # MlflowException: no such run (another store?), server trouble
        raise PipelineError(f"--resume: cannot reopen MLflow parent run {run_id} at {uri}: {str(exc).splitlines()[0]}") from None
    with contextlib.suppress(Exception):  # the interruption's failure tag, if it was set
        client.delete_tag(run_id, TAG_FAILURE)


@contextlib.contextmanager
def step_run(
    context: TrackingContext,
    step: str,
    run_name: str | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    system_metrics: bool = False,
    nested: bool = True,
) -> Iterator[Any]:
    """The MLflow run of one component execution; yields a ``Tracker``.

    ``nested``: a child run of the pipeline's parent run (``mlflow.parentRunId``); False: a top-level run of
    the experiment (a model's own run, so the default runs table lists one row per model). Either way the
    tags ``TAG_PARENT_RUN`` and ``TAG_PIPELINE_RUN`` tie it to its pipeline run.
    ``system_metrics``: MLflow samples CPU/memory/GPU into the run while it lasts (training steps).

    With tracking off the Tracker is the library's no-op one. The run ends FAILED if the step raises.
    """
    from fewframes.tracking import Tracker

    if context.enabled and not context.parent_run_id:
        raise PipelineError(f"step {step}: tracking_uri is set but parent_run_id is empty (start-tracking did not run)")
    all_tags = {**context.tags(step), **(tags or {})}
    if context.parent_run_id:
        all_tags[TAG_PARENT_RUN] = context.parent_run_id
    if not nested:
        all_tags[TAG_MODEL_RUN] = "true"
    tracker = Tracker.start(
        context.uri or None,
        context.experiment,
        run_name or step,
        parent_run_id=(context.parent_run_id or None) if nested else None,
        tags=all_tags,
        params=_clean_params(params or {}),
        system_metrics=system_metrics,
    )
    try:
        yield tracker
    except BaseException:
        tracker.end(status="FAILED")
        raise
    tracker.end()


def log_metrics_to_run(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Add metrics to an existing (possibly finished) run: the benchmark step fills in the evaluate runs'
    ``gflops``/``latency_ms_p50`` so each model is one row in the MLflow UI and in ``fewframes compare``."""
    if not uri or not run_id or not metrics:
        return
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(tracking_uri=uri)
    import time

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, float(value), now, 0) for name, value in metrics.items()])


def _clean_params(params: dict[str, Any]) -> dict[str, str]:
    """MLflow params are strings; None becomes '' so every run has the same parameter names."""
    return {name: "" if value is None else str(value) for name, value in params.items()}


# ----------------------------------------------------------------------------------------------------------
# fewframes compare
# ----------------------------------------------------------------------------------------------------------

COMPARE_COLUMNS: tuple[str, ...] = (
    "run_name",
    "model_key",
    "family",
    "role",
    "control",
    "k",
    "frame_selection",
    "loss",
    "mode",
    "matching",
    "train_fraction",
    "seed",
    "gap",
    "map",
    "hit_at_1",
    "gflops",
    "latency_ms_p50",
    "pipeline_run",
    "run_id",
)


def compare_rows(uri: str, experiment: str, metric: str = "gap") -> list[dict[str, Any]]:
    """One row per evaluated model (the ``evaluate`` child runs) of the experiment, best ``metric`` first.

    Raises ``PipelineError`` when the experiment does not exist or the metric is not a known one.
    """
    import mlflow

    if metric not in METRIC_NAMES:
        raise PipelineError(f"--metric must be one of {', '.join(METRIC_NAMES)}, got {metric!r}")
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise PipelineError(f"--experiment {experiment!r} does not exist at tracking URI {uri}")
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{TAG_STEP}` = 'evaluate'", max_results=10000
    )
    rows = []
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        row: dict[str, Any] = {
            "run_name": run.info.run_name,
            "model_key": tags.get(TAG_MODEL_KEY, ""),
            "pipeline_run": tags.get(TAG_PIPELINE_RUN, ""),
            "run_id": run.info.run_id,
        }
        for name in ("family", "role", "control", "k", "frame_selection", "loss", "mode", "matching", "train_fraction",
                     "seed"):
            row[name] = params.get(name, "")
        for name in METRIC_NAMES:
            row[name] = metrics.get(name)
        rows.append(row)
    # Missing values sort last; larger is better except for cost metrics. Ties keep a fixed order
    # (pipeline run, then model), not MLflow's search order.
    lower_is_better = metric in ("gflops", "latency_ms_p50", "latency_ms_p95", "num_parameters")
    rows.sort(key=lambda r: (r["pipeline_run"], r["model_key"], r["run_name"] or ""))
    present = [r for r in rows if r.get(metric) is not None]
    missing = [r for r in rows if r.get(metric) is None]
    present.sort(key=lambda r: r[metric], reverse=not lower_is_better)
    return present + missing


def write_rows_csv(rows: list[dict[str, Any]], path: str | os.PathLike[str], columns: tuple[str, ...]) -> None:
    """Write the comparison as CSV, locally or to ``gs://``, atomically (fsio's staged output)."""
    import csv

    from fewframes import fsio

    with fsio.staged_output_file(path) as staged, staged.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})


__all__ = [
    "COMPARE_COLUMNS",
    "DEFAULT_EXPERIMENT",
    "METRIC_NAMES",
    "MODEL_PARAMS",
    "TAG_MODEL_KEY",
    "TAG_PIPELINE",
    "TAG_MODEL_RUN",
    "TAG_PARENT_RUN",
    "TAG_PIPELINE_RUN",
    "TAG_ROLE",
    "TAG_STEP",
    "TrackingContext",
    "check_tracking",
    "close_parent_run",
    "compare_rows",
    "end_parent_run",
    "end_stale_child_runs",
    "find_parent_run",
    "local_artifact_root",
    "local_tracking_uri",
    "parent_run_status",
    "resolve_tracking",
    "log_metrics_to_run",
    "reopen_parent_run",
    "start_parent_run",
    "step_run",
    "write_rows_csv",
]
