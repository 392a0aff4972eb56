"""Warm steps (components/steps/warm.py): a step decorated with reports_errors runs in a fork of the warm
server when FEWFRAMES_WARM_STEPS names it, with the caller's descriptors, environment and folder; results
and errors come back as if it ran here; without a reachable server it runs here. The real server process
is started and stopped as ``fewframes run`` does (the whole pipeline through it: test_pipeline_local.py)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from fewframes.components.steps import ERROR_FILE_ENV, plan_students_step, start_tracking_step, warm
from fewframes.errors import StoreError


@pytest.fixture(scope="module")
def server():
    with warm.warm_steps() as ready:
        assert ready, "the warm step server did not start"
        yield os.environ[warm.SOCKET_ENV]


def test_a_step_runs_in_a_fork_with_this_folder_and_environment(server, tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(warm.SOCKET_ENV, server)
    parent = start_tracking_step("", "fewframes", "", "run-1", "distill", "", "tracking.json")  # a relative path
    assert parent == ""
    assert json.loads((tmp_path / "tracking.json").read_text())["pipeline_run_id"] == "run-1"


def test_an_error_comes_back_with_its_type_message_and_error_file(server, tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.setenv(warm.SOCKET_ENV, server)
    error_file = tmp_path / "errors.log"
    monkeypatch.setenv(ERROR_FILE_ENV, str(error_file))  # the child sees the caller's environment
    with pytest.raises(StoreError, match="no-such-store: not a frame store"):
        plan_students_step(str(tmp_path / "no-such-store"), [10], ["rep"], ["serial"], 0, 0, [], [], [], 0)
    assert "plan-students:" in error_file.read_text()
    # The traceback was printed by the forked child on this process's stderr (in this process the
    # decorator re-raises without printing): the step did run in the server.
    assert "Traceback" in capfd.readouterr().err


def test_without_a_reachable_server_the_step_runs_here(tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.setenv(warm.SOCKET_ENV, str(tmp_path / "absent.sock"))
    monkeypatch.chdir(tmp_path)
    assert start_tracking_step("", "fewframes", "", "run-2", "distill", "", "t.json") == ""
    assert (tmp_path / "t.json").is_file()
    assert "warm step server unreachable" in capfd.readouterr().err


def test_every_step_can_be_named_across_processes() -> None:
    # The server finds a step by module and qualified name: each must resolve to the decorated function.
    import fewframes.components.steps as steps

    for name in steps.__all__:
        value = getattr(steps, name)
        if callable(value) and name.endswith("_step"):
            module = importlib.import_module(value.__module__)
            assert getattr(module, value.__qualname__) is value, name


def test_the_server_counts_its_steps_cpu(tmp_path: Path, monkeypatch) -> None:
    with warm.warm_steps() as server:
        assert server
        monkeypatch.chdir(tmp_path)
        start_tracking_step("", "fewframes", "", "run-3", "distill", "", "t.json")
    assert (tmp_path / "t.json").is_file()
    assert server.steps_cpu_s is not None and server.steps_cpu_s > 0


def test_cold_steps_switch(monkeypatch) -> None:
    monkeypatch.setenv(warm.COLD_ENV, "1")
    monkeypatch.delenv(warm.SOCKET_ENV, raising=False)
    with warm.warm_steps() as ready:
        assert not ready
        assert warm.SOCKET_ENV not in os.environ


def test_the_step_process_leaves_the_mlflow_lookup_to_the_fork(tmp_path: Path) -> None:
    # With a warm server, a step's KFP executor only forwards its arguments: it must not import mlflow to
    # resolve where the step logs (about 2 CPU-seconds a step). A fresh interpreter shows what it loaded.
    import subprocess
    import sys

    script = (
        "import sys; from fewframes.components.steps import tracking_context, PendingTracking; "
        "c = tracking_context('sqlite:////nowhere/mlflow.db', 'fewframes', 'abc'); "
        "print(type(c).__name__, isinstance(c, PendingTracking), 'mlflow' in sys.modules)"
    )
    env = {**os.environ, warm.SOCKET_ENV: str(tmp_path / "steps.sock")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PendingTracking", "True", "False"]


def test_a_pending_tracking_context_is_resolved_where_the_step_runs(tmp_path: Path, monkeypatch) -> None:
    from fewframes.components.steps import PendingTracking, reports_errors, tracking_context
    from fewframes.runs import TrackingContext, local_tracking_uri, start_parent_run

    uri = local_tracking_uri(tmp_path)
    parent = start_parent_run(TrackingContext(uri, "fewframes", pipeline_run_id="run-7", pipeline="distill"), "p")
    monkeypatch.setenv(warm.SOCKET_ENV, str(tmp_path / "absent.sock"))
    pending = tracking_context(uri, "fewframes", parent)
    assert isinstance(pending, PendingTracking) and pending.pipeline_run_id == ""  # not looked up yet

    @reports_errors("probe")
    def probe(tracking: TrackingContext, *, again: TrackingContext) -> tuple[TrackingContext, TrackingContext]:
        return tracking, again

    monkeypatch.delenv(warm.SOCKET_ENV)  # the step runs here, as in the warm server's fork
    got, again = probe(pending, again=pending)
    for context in (got, again):
        assert type(context) is TrackingContext
        assert (context.parent_run_id, context.pipeline_run_id, context.pipeline) == (parent, "run-7", "distill")
