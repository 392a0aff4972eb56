"""``fewframes submit`` with a real kfp.Client against a stand-in of the KFP v2beta1 API on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import time

import pytest

from fewframes.cli import main
from fewframes.cluster import DEFAULT_GPU, MLFLOW_TRACKING_URI

from kfp_standin import KfpStandin


@pytest.fixture
def standin():
    with KfpStandin() as server:
        yield server


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_submit_and_watch_against_kfp_api_standin(standin, capsys):
    code = main([
        "submit", "--host", standin.url, "--preset", "tiny", "--experiment", "distil-tests",
        "--run-name", "try-1", "--param", "max_epochs=1", "--param", "ks=6,10", "--watch", "--poll", "0.05",
        "--gpus", "2", "--accelerator", "nvidia-l4",
    ])
    out = capsys.readouterr().out
    assert code == 0
    (run_id,) = standin.runs
    link = f"{standin.url}/#/runs/details/{run_id}"
    assert "finished: SUCCEEDED" in out
    # The link comes first (a long run is watched with it on screen), then the progress display.
    progress = f"run {run_id}: SUCCEEDED"
    assert out.index(link) < out.index(progress) < out.index("finished: SUCCEEDED")
    progress_line = next(line for line in out.splitlines() if progress in line)
    assert f"{standin.tasks}/{standin.tasks} tasks" in progress_line  # pipeline tasks: not the -driver/root nodes
    # Not a terminal: each change of the running tasks is a line, the tasks by their display names
    # (fewframes.pipelines.dag) although the API reported them under their task keys, among the workflow's nodes.
    running = [line.split("] ", 1)[1] for line in out.splitlines() if re.match(r"^\[\s*\d+s\] running ", line)]
    assert running == ["running ingest/split  [1/2 tasks done]", "running plan teachers  [2/3 tasks done]",
                       "running -  [4/4 tasks done]"], out

    (experiment,) = standin.experiments.values()
    assert experiment["display_name"] == "distil-tests"
    run = standin.runs[run_id]
    assert run["display_name"] == "try-1"
    assert run["experiment_id"] == experiment["experiment_id"]
    parameters = run["runtime_config"]["parameters"]
    assert parameters["max_epochs"] == 1 and parameters["ks"] == [6, 10]
    assert parameters["experiment"] == "distil-tests"  # the MLflow experiment follows the KFP one
    assert parameters["tracking_uri"] == MLFLOW_TRACKING_URI  # the in-cluster server, by default
    assert f"MLflow {MLFLOW_TRACKING_URI}" in out
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "fewframes-distill"
    platform = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    teacher = platform["exec-train-teacher"]
    assert teacher["nodeSelector"]["labels"] == {DEFAULT_GPU.node_selector_key: "nvidia-l4", DEFAULT_GPU.capacity_label_key: "on-demand"}
    assert teacher["tolerations"][0]["key"] == DEFAULT_GPU.taint_key
    resources = spec["pipeline_spec"]["deploymentSpec"]["executors"]["exec-train-teacher"]["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "2"
    # --watch polled until the run ended.
    assert sum(1 for method, path in standin.requests if path.endswith(f"/runs/{run_id}")) == standin.polls_to_finish


def test_watch_exits_non_zero_when_the_run_fails_against_kfp_api_standin(capsys):
    with KfpStandin(final_state="FAILED") as server:
        code = main(["submit", "--host", server.url, "--preset", "tiny", "--watch", "--poll", "0.05"])
    assert code == 1
    assert "finished: FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, expected",
    [(["--tracking-uri", ""], ""), (["--tracking-uri", "http://mlflow.example:5000"], "http://mlflow.example:5000"),
     (["--param", "tracking_uri=http://other:5000"], "http://other:5000")],
)
def test_tracking_uri_flag_reaches_the_run_against_kfp_api_standin(standin, capsys, argv, expected):
    assert main(["submit", "--host", standin.url, "--preset", "tiny", *argv]) == 0
    (run,) = standin.runs.values()
    assert run["runtime_config"]["parameters"]["tracking_uri"] == expected
    assert ("MLflow tracking off" if not expected else f"MLflow {expected}") in capsys.readouterr().out


def test_existing_experiment_is_reused_against_kfp_api_standin(standin, capsys):
    for _ in range(2):
        assert main(["submit", "--host", standin.url, "--preset", "tiny", "--experiment", "same"]) == 0
    assert len(standin.experiments) == 1
    assert len(standin.runs) == 2
    capsys.readouterr()


def test_unreachable_host_is_one_line_and_quick(capsys):
    url = _closed_port_url()
    started = time.monotonic()
    code = main(["submit", "--host", url, "--preset", "tiny"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert time.monotonic() - started < 15
    assert err.count("\n") == 0
    assert f"--host {url}" in err and "unreachable" in err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--param", "nope=1"], "--param nope"),
        (["--param", "ks=6,400"], "k=400"),
        (["--param", "losses=l1"], "losses"),
        (["--host", "ftp://example"], "--host ftp://example"),
    ],
)
def test_bad_input_fails_before_anything_is_submitted_against_kfp_api_standin(standin, capsys, argv, named):
    code = main(["submit", "--host", standin.url, "--preset", "tiny", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and named in err
    assert standin.runs == {}
