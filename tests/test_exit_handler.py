"""The DAG's exit handler closes the MLflow parent run as the pipeline ended, on the path a cluster takes.

The compiled pipeline runs under kfp.local (which runs ``dsl.ExitHandler`` exit tasks after the body, with
a ``PipelineTaskFinalStatus``, since kfp 2.16) against a real MLflow server, with ``parent_run_id`` left
empty as ``fewframes submit`` leaves it: ``start-tracking`` creates the parent run and tags it with KFP's
run id (and the Argo workflow, by which the steps find it), and the exit task ``close-tracking`` finds it
by the run id and ends it FINISHED or FAILED. The local
``fewframes run`` goes through the same function (``fewframes.runs.close_parent_run``).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest

from fewframes.runs import TAG_FAILURE, TAG_PIPELINE_RUN, TAG_STEP, TAG_WORKFLOW, close_parent_run, parent_run_status
from test_faults import ctrl_c_as_in_a_terminal


def _run_cluster_shaped(tmp_path: Path, tracking_uri: str, experiment: str, **arguments: Any) -> Exception | None:
    """The compiled pipeline through kfp.local as a cluster runs it. The one thing kfp.local lacks is the
    pod label Argo puts on every pod of a workflow, which the steps get through the downward API
    (fewframes.cluster.WORKFLOW_ENV): the task subprocesses inherit it from here instead."""
    import os

    from kfp import local

    from fewframes.cli.pipeline import kfp_local_globals_kept
    from fewframes.cluster import WORKFLOW_ENV
    from fewframes.pipelines.dag import make_pipeline

    os.environ[WORKFLOW_ENV] = f"fewframes-distill-{uuid.uuid4().hex[:8]}"

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    dag = _without_retry_waits(make_pipeline("distill", "tiny"))
    try:
        with kfp_local_globals_kept(sys.stdout):  # kfp.local's logging kept on stdout and put back, as `fewframes run` does
            dag(tracking_uri=tracking_uri, experiment=experiment, parent_run_id="", **arguments)
    except RuntimeError as exc:  # kfp.local names the failed task
        return exc
    finally:
        os.environ.pop(WORKFLOW_ENV, None)
    return None


def _without_retry_waits(dag: Any) -> Any:
    """``dag`` with every retry policy's backoff set to 0 s: kfp.local honours the policies (since kfp 2.16), and
    a failed ingest-split waited 60 s + 120 s before its two retries (180 of the test's 280 s, asleep). The retry
    counts stay: the exit handler still runs after the last attempt, as on a cluster."""
    spec = dag.pipeline_spec  # the GraphComponent's own proto: kfp.local executes this object
    for component in [spec.root, *spec.components.values()]:
        if component.WhichOneof("implementation") == "dag":
            for task in component.dag.tasks.values():
                if task.HasField("retry_policy"):
                    task.retry_policy.backoff_duration.seconds = 0
    return dag


def _parent(tracking_uri: str, experiment: str) -> Any:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([found.experiment_id], filter_string=f"tags.`{TAG_STEP}` = 'pipeline'")
    return parent


@pytest.mark.slow  # three kfp.local task processes (start-tracking, ingest-split, close-tracking): ~40 s
def test_a_failed_step_leaves_the_parent_failed_with_the_cause(mlflow_server: str, tmp_path: Path) -> None:
    experiment = f"exit-failed-{uuid.uuid4().hex[:8]}"
    error = _run_cluster_shaped(tmp_path, mlflow_server, experiment, source=str(tmp_path / "missing" / "*.tfrecord"))
    assert error is not None and "ingest-split" in str(error)
    parent = _parent(mlflow_server, experiment)
    assert parent.info.status == "FAILED"
    assert parent.data.tags[TAG_PIPELINE_RUN]  # the KFP run id the exit task found it by
    assert parent.data.tags[TAG_FAILURE]  # what KFP said failed


@pytest.mark.slow  # the tiny DAG on a one-k, one-loss, one-epoch grid: minutes on 2 busy cores
def test_a_successful_run_on_gcs_leaves_the_parent_finished(mlflow_server: str, tmp_path: Path) -> None:
    """The whole cluster-shaped run: the frame store written to gs:// (the GCS emulator) under
    ``store_root`` and read in place by every step (its KFP artifact is a pointer), the parent run created
    by start-tracking, found by the steps through their workflow, closed FINISHED by the exit handler."""
    from store_helpers import gcs_emulator

    from fewframes.components.steps import STORE_LOCATION_FILE

    experiment = f"exit-finished-{uuid.uuid4().hex[:8]}"
    with gcs_emulator("fewframes-cluster-run"):
        error = _run_cluster_shaped(
            tmp_path, mlflow_server, experiment, ks=[4], losses=["rep_ce"], max_epochs=1,
            store_root="gs://fewframes-cluster-run/kfp/frame-stores",
        )  # fmt: skip
    assert error is None, error
    (pointer,) = (tmp_path / "kfp").glob(f"*/ingest-split/store/{STORE_LOCATION_FILE}")
    assert [p.name for p in pointer.parent.iterdir()] == [STORE_LOCATION_FILE]  # no frames in the artifact
    assert json.loads(pointer.read_text())["uri"].startswith("gs://fewframes-cluster-run/kfp/frame-stores/")
    parent = _parent(mlflow_server, experiment)
    assert parent.info.status == "FINISHED"
    assert TAG_FAILURE not in parent.data.tags
    assert parent.data.tags[TAG_WORKFLOW]  # the steps found it by their workflow, not by an input
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`fewframes.parent_run_id` = '{parent.info.run_id}'"
    )
    assert {child.data.tags[TAG_STEP] for child in children} >= {"ingest-split", "train-teacher", "evaluate", "report"}
    assert all(child.info.status == "FINISHED" for child in children)


def test_final_states_map_to_mlflow_statuses_and_the_first_close_wins(mlflow_server: str) -> None:
    # KFP's states (v2 backend, older MLMD releases, kfp.local) and MLflow's own; unknown counts as failed.
    assert [parent_run_status(s) for s in ("SUCCEEDED", "COMPLETE", "CACHED", "FINISHED")] == ["FINISHED"] * 4
    assert [parent_run_status(s) for s in ("FAILED", "SKIPPED", "", "whatever")] == ["FAILED"] * 4
    assert [parent_run_status(s) for s in ("CANCELED", "KILLED")] == ["KILLED"] * 2
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.create_experiment(f"close-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id).info.run_id
    assert close_parent_run(mlflow_server, run_id, "FAILED", "train-teacher: out of memory") == "FAILED"
    assert close_parent_run(mlflow_server, run_id, "SUCCEEDED") == ""  # already closed: left alone
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[TAG_FAILURE] == "train-teacher: out of memory"
    assert close_parent_run("", run_id, "FAILED") == "" and close_parent_run(mlflow_server, "", "FAILED") == ""


@pytest.mark.slow  # a real `fewframes run` until ingest starts, then Ctrl-C: ~30-60 s on 2 busy cores
def test_ctrl_c_during_a_local_run_leaves_the_parent_killed(tmp_path: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group (the CLI and kfp.local's task
    subprocess); the DAG's exit task never runs, so `fewframes run` closes the parent through the same
    close_parent_run: KILLED, with the tag saying it was interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fewframes.runs import local_tracking_uri

    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "fewframes", "run", "--preset", "tiny", "--out", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(run_dir.glob("kfp/*/ingest-split")):  # start-tracking has finished
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "ingest-split never started"
            time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)
        output = process.communicate(timeout=120)[0].decode()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0, output[-2000:]
    parent = _parent(local_tracking_uri(run_dir), "fewframes")
    assert parent.info.status == "KILLED", output[-2000:]
    assert parent.data.tags[TAG_FAILURE] == "interrupted (KeyboardInterrupt)"
