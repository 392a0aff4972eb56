"""Interrupted runs: what Ctrl-C, SIGTERM and SIGKILL leave, and ``fewframes run --resume`` going on from it
(docs/faults.md, "Resume").

Fast tests use real processes and a real MLflow store (SQLite) without a pipeline: the watchdog that a
``fewframes run`` killed with SIGKILL leaves behind, what a resume stops, ends and removes first, and the
kfp.local internals the resume relies on. The slow test interrupts one real tiny run three ways (Ctrl-C,
SIGKILL of ``fewframes run`` alone, SIGKILL of its whole process group) and resumes it each time; it must
end with the test GAPs of the uninterrupted run (the session's ``tiny_run``, same seed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewframes.cli import main
from fewframes.cli.resume import (
    ATTEMPT_ENV,
    KFP_CACHE,
    KFP_WRITTEN_FOR,
    RESUME_FILE,
    RUN_DIR_ENV,
    alive,
    attempt_record,
    kfp_local_problem,
    prepare_resume,
    processes_of_run,
    remove_stale_temporaries,
)
from test_faults import REPO, cli, in_process_error, one_line_error

# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow store (SQLite), shared by this module's fast tests (creating one takes seconds)."""
    from fewframes.runs import local_tracking_uri

    return local_tracking_uri(tmp_path_factory.mktemp("mlflow"))


def _mlflow_parent_with_children(uri: str, running_children: int) -> str:
    """A RUNNING parent run with ``running_children`` RUNNING child runs, one FINISHED child and, as a
    training step cut short leaves it, a RUNNING top-level model run tied to it by tag (``step_run``); its id."""
    from fewframes.runs import TAG_MODEL_RUN, TAG_PARENT_RUN, TrackingContext, start_parent_run
    from fewframes.tracking import Tracker

    parent = start_parent_run(TrackingContext(uri=uri, experiment="fewframes", pipeline_run_id="p1"), "p1")
    for index in range(running_children + 1):
        child = Tracker.start(uri, "fewframes", f"step-{index}", parent_run_id=parent, tags={TAG_PARENT_RUN: parent})
        if index == running_children:
            child.end()
    Tracker.start(uri, "fewframes", "teacher seed 0", tags={TAG_PARENT_RUN: parent, TAG_MODEL_RUN: "true"})
    return parent


def _statuses(uri: str, parent: str) -> dict[str, str]:
    """run name -> status of the parent (as 'parent') and of its runs: its child runs and the models' runs."""
    import mlflow

    from fewframes.runs import TAG_PARENT_RUN

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = {"parent": client.get_run(parent).info.status}
    experiment = client.get_run(parent).info.experiment_id
    for tag in ("mlflow.parentRunId", TAG_PARENT_RUN):
        for run in client.search_runs([experiment], filter_string=f"tags.`{tag}` = '{parent}'"):
            if run.info.run_id != parent:
                found[run.info.run_name] = run.info.status
    return found


def _resume_state(run_dir: Path, uri: str = "", parent: str = "") -> dict:
    state = {"preset": "tiny", "pipeline": "distill", "run_id": "local-distill-x", "tracking_uri": uri,
             "experiment": "fewframes", "arguments": {"parent_run_id": parent}}
    (run_dir / RESUME_FILE).write_text(json.dumps(state))
    return state


# A process that says it runs, then sleeps. Popen returns once the child has called exec, and with vfork that can
# be before the kernel has set up the new program's environment: /proc/PID/environ reads empty until then, and
# processes_of_run would miss it. Its first line is the sign it runs.
SLEEPER = "print('up', flush=True); import time; time.sleep(600)"


def _sleeper(run_dir: Path, attempt: str = "a1") -> subprocess.Popen[bytes]:
    """A process as a step of a run of ``run_dir`` is: it carries the run's variables in its environment."""
    env = dict(os.environ, **{RUN_DIR_ENV: str(run_dir.resolve()), ATTEMPT_ENV: attempt})
    process = subprocess.Popen([sys.executable, "-c", SLEEPER], env=env, stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"up\n"
    return process


# ----------------------------------------------------------------------------------------------------------
# kfp.local internals
# ----------------------------------------------------------------------------------------------------------


def test_kfp_local_internals_the_resume_relies_on_are_there() -> None:
    """Fails when a kfp upgrade changes what the resume relies on (docs/faults.md): the one function that
    names kfp.local's output folder, and its cache's entry format and missing-file rule, exercised through
    kfp's own LocalCache. A kfp of another minor release (pyproject.toml pins 2.17.x) means checking --resume
    again with the slow test below."""
    import kfp

    assert kfp_local_problem() == ""
    written_for = KFP_WRITTEN_FOR.rsplit(".", 1)[0] + "."  # a patch release keeps kfp.local's internals
    assert kfp.__version__.startswith(written_for), (
        f"kfp {kfp.__version__} installed; the resume was checked against {KFP_WRITTEN_FOR}: run the slow "
        "resume test with it, then update KFP_WRITTEN_FOR and the kfp pin in pyproject.toml"
    )


def test_resume_with_a_changed_kfp_local_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # What a kfp release without these internals would do, made by removing/altering them here (a future
    # kfp cannot be installed in a test): one line naming what changed and the kfp version to install.
    from kfp.local import cache, executor_input_utils

    _resume_state(tmp_path)
    with monkeypatch.context() as patch:
        patch.delattr(executor_input_utils, "get_local_pipeline_resource_name")
        in_process_error(capsys, ["run", "--resume", str(tmp_path)], f"--resume {tmp_path}: kfp ",
                         "get_local_pipeline_resource_name is gone", f"pip install 'kfp=={KFP_WRITTEN_FOR}'")
    with monkeypatch.context() as patch:
        patch.setattr(cache.LocalCache, "_deserialize_artifact", staticmethod(lambda data: data))
        in_process_error(capsys, ["run", "--resume", str(tmp_path)], "no longer treats an entry with a missing artifact file as a miss")


# ----------------------------------------------------------------------------------------------------------
# before a resume: the interrupted attempt's processes, MLflow runs and temporaries
# ----------------------------------------------------------------------------------------------------------


def test_resume_refuses_while_the_interrupted_run_still_runs(tmp_path: Path) -> None:
    from fewframes.errors import PipelineError

    state = _resume_state(tmp_path)
    state["last_attempt"] = attempt_record("a1")  # this very process: alive
    with pytest.raises(PipelineError, match=f"--resume {tmp_path}: the run is still going .*process {os.getpid()}"):
        prepare_resume(tmp_path, state)


def test_prepare_resume_stops_leftovers_ends_stale_mlflow_runs_and_removes_temporaries(tmp_path: Path, mlflow_uri: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    uri, parent = mlflow_uri, _mlflow_parent_with_children(mlflow_uri, running_children=2)
    state = _resume_state(run_dir, uri, parent)
    # The interrupted attempt: its fewframes run process gone (a pid that is not running), two steps left
    # running, the temporaries of three writes it cut short, and a store's old copy with nothing in its place.
    state["last_attempt"] = {"attempt": "a1", "pid": 2**22 + 1, "start": 1}
    leftovers = [_sleeper(run_dir), _sleeper(run_dir, "a0")]
    other_run = _sleeper(tmp_path / "another-run")
    step = run_dir / "kfp" / "fewframes-distill-1" / "train-teacher"
    (step / "teacher" / "checkpoints").mkdir(parents=True)
    cut_short = [step / ".model.json.tmp-0123abcd", run_dir / "kfp-cache" / ".kfp_cache_x1y2.tmp",
                 step / "teacher" / "checkpoints" / ".ckpt-00000004.pt.k1ll3d.tmp"]
    for path in cut_short:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    (step / ".store.old-89abcdef").mkdir()
    (step / "model.json").write_text("{}")
    try:
        assert sorted(processes_of_run(run_dir)) == sorted(p.pid for p in leftovers)
        notices = prepare_resume(run_dir, state)
        assert notices == [
            "stopped 2 process(es) the interrupted attempt left running",
            "ended 3 MLflow child run(s) the interruption left RUNNING (status KILLED)",
            "removed 3 temporary file(s) of writes cut short by the interruption",
        ]
        assert not any(alive(p.pid) for p in leftovers)
        assert alive(other_run.pid)  # another run's process is not this run's
    finally:
        for process in [*leftovers, other_run]:
            process.kill()
            process.wait()
    assert not any(path.exists() for path in cut_short) and (step / "model.json").read_text() == "{}"
    assert (step / "store").is_dir() and not (step / ".store.old-89abcdef").exists()  # moved back
    assert _statuses(uri, parent) == {"parent": "RUNNING", "step-0": "KILLED", "step-1": "KILLED", "step-2": "FINISHED",
                                      "teacher seed 0": "KILLED"}
    assert remove_stale_temporaries(run_dir) == []


def test_the_watchdog_of_a_run_killed_with_sigkill_stops_its_processes_and_closes_its_mlflow_runs(
    tmp_path: Path, mlflow_uri: str
) -> None:
    """``fewframes run`` killed with SIGKILL runs no clean-up of its own: its watchdog (a process holding the
    other end of a pipe only the run holds) stops the run's processes and ends the parent run and its RUNNING
    children KILLED. Here the killed process is a small Python process that starts a watchdog and a step the
    way ``run_local`` does; the whole pipeline version is in the slow test below."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    uri, parent = mlflow_uri, _mlflow_parent_with_children(mlflow_uri, running_children=1)
    script = f"""
import os, subprocess, sys, time
from pathlib import Path
from fewframes.cli.resume import ATTEMPT_ENV, RUN_DIR_ENV, Watchdog
run_dir = Path({str(run_dir)!r})
watchdog = Watchdog(run_dir, "a1", {uri!r}, {parent!r})
os.environ[RUN_DIR_ENV], os.environ[ATTEMPT_ENV] = str(run_dir), "a1"
step = subprocess.Popen([sys.executable, "-c", {SLEEPER!r}], stdout=subprocess.PIPE)
assert step.stdout.readline() == b"up\\n"
print(watchdog.pid, step.pid, flush=True)
time.sleep(600)
"""
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog, step = (int(pid) for pid in run.stdout.readline().split())
    try:
        assert processes_of_run(run_dir) == [step] and processes_of_run(run_dir, "a1") == [step]
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 300  # it imports mlflow to close the runs: over a minute on a loaded machine
        while alive(watchdog) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(step) and not alive(watchdog)
    finally:
        for pid in (watchdog, step):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert f"fewframes: the run was killed; stopped 1 of its processes; `fewframes run --resume {run_dir}`" in run.stderr.read()
    assert _statuses(uri, parent) == {"parent": "KILLED", "step-0": "KILLED", "step-1": "FINISHED",
                                      "teacher seed 0": "KILLED"}


def test_resume_refuses_what_it_cannot_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    in_process_error(capsys, ["run", "--resume", str(tmp_path / "nope")], f"--resume {tmp_path / 'nope'}: no such run folder")
    in_process_error(capsys, ["run", "--resume", str(tmp_path)], f"--resume {tmp_path}: not a `fewframes run` folder (no resume.json)")
    (tmp_path / "resume.json").write_text("{not json")
    in_process_error(capsys, ["run", "--resume", str(tmp_path)], "resume.json is damaged")
    (tmp_path / "run.json").write_text("{}")
    in_process_error(capsys, ["run", "--resume", str(tmp_path)], "the run finished (run.json is there); nothing to resume")
    in_process_error(capsys, ["run", "--resume", str(tmp_path), "--param", "epochs=3"], "--resume takes the run's own settings; drop --param")


# ----------------------------------------------------------------------------------------------------------
# a real run interrupted three ways, resumed each time
# ----------------------------------------------------------------------------------------------------------


def _gaps(run_dir: Path) -> dict[str, float]:
    from fewframes.components.steps import ROW_FILE

    rows = [json.loads(p.read_text()) for p in (run_dir / "kfp").glob(f"**/evaluation/{ROW_FILE}")]
    return {row["model_key"]: row["gap"] for row in rows}


def _checkpoints(run_dir: Path, pattern: str = "**/checkpoints/ckpt-*.pt") -> set[Path]:
    return set((run_dir / "kfp").glob(pattern))


def _wait_for_new_checkpoint(run_dir: Path, process: subprocess.Popen[str], log: Path, pattern: str,
                             before: set[Path], timeout_s: float = 600) -> None:
    """Wait until a training checkpoint matching ``pattern`` that was not in ``before`` appears."""
    deadline = time.monotonic() + timeout_s
    while not _checkpoints(run_dir, pattern) - before:
        assert process.poll() is None, f"the run ended before it could be interrupted: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.1)


def _recorded_tasks(run_dir: Path) -> dict[Path, int]:
    """What kfp.local recorded as finished, with modification times: each entry of its task cache (written
    once a task succeeded and before any task that takes its outputs starts; what a resume reuses) and the
    ``executor_output.json`` of the task whose artifacts the entry names. A task cut short between its
    executor output and its entry is not recorded: a resume runs it again, as it should. start-tracking and
    close-tracking are never cached (by design), so never recorded."""
    from fewframes.cli.progress import DONE_FILE

    recorded = {}
    for entry in (run_dir / KFP_CACHE).glob("*.json"):
        recorded[entry] = entry.stat().st_mtime_ns
        for output in json.loads(entry.read_text()).values():
            if isinstance(output, dict) and output.get("uri"):
                done = Path(output["uri"]).parent / DONE_FILE
                recorded[done] = done.stat().st_mtime_ns
    return recorded


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
# a tiny run (the shared fixture's) and this one with three restarts: 3.7-6.5 min at load 2-5 (nice -n 10 beside
# one or two CPU hogs), 9.6 at load 7-9 (2026-11-29, 2 cores)
@pytest.mark.timeout(1800)
def test_ctrl_c_and_sigkill_then_resume_end_with_the_uninterrupted_results(tmp_path: Path, tiny_run: Path) -> None:
    from test_faults import _parent_status, _processes_mentioning, _start_run

    from fewframes.runs import local_tracking_uri

    run_dir = tmp_path / "run"
    uri = local_tracking_uri(run_dir)
    finished: dict[Path, int] = {}

    # 1. Ctrl-C (the terminal's whole process group) while the teacher trains, after its first checkpoint
    process, log = _start_run(run_dir)
    try:
        _wait_for_new_checkpoint(run_dir, process, log, "**/train-teacher/teacher/checkpoints/ckpt-*.pt", set())
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=120)
    finally:
        _stop(process)
    assert process.returncode == 130, log.read_text()[-2000:]
    assert _parent_status(uri) == "KILLED"
    assert _processes_mentioning(str(run_dir)) == [] and processes_of_run(run_dir) == []
    # ingest-split and plan-teachers at least: train-teacher takes their outputs; not all of the full run's
    finished.update(_recorded_tasks(run_dir))
    entries = [path for path in finished if path.parent.name == KFP_CACHE]
    assert 2 <= len(entries) < len(list((tiny_run / KFP_CACHE).glob("*.json"))), sorted(finished)

    # the same --out again: refused, pointing at --resume
    one_line_error(cli("run", "--preset", "tiny", "--out", str(run_dir)),
                   f"--out {run_dir}: folder exists and is not empty; `fewframes run --resume {run_dir}`")
    # report of the interrupted run: marked incomplete (or, if nothing was evaluated yet, one line saying so)
    done = cli("report", "--run", str(run_dir), "--out", str(tmp_path / "report-interrupted"))
    if done.returncode == 0:
        assert "INCOMPLETE RUN" in done.stdout
    else:
        one_line_error(done, f"--run {run_dir}: no evaluated models", "INCOMPLETE RUN", f"fewframes run --resume {run_dir}")
    # report of a run cut after some evaluations (the finished run without its run.json): marked incomplete
    cut = tmp_path / "cut"
    shutil.copytree(tiny_run, cut, ignore=shutil.ignore_patterns("run.json"))
    done = cli("report", "--run", str(cut), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INCOMPLETE RUN" in done.stdout and "INCOMPLETE RUN" in (tmp_path / "report" / "report.md").read_text()

    # 2. resume; SIGKILL of `fewframes run` alone (no clean-up code runs) once a student has a checkpoint:
    #    its watchdog stops the steps it leaves and ends the MLflow parent run KILLED
    process, log = _start_run(run_dir, resume=True)
    try:
        _wait_for_new_checkpoint(run_dir, process, log, "**/distill-student/student/checkpoints/ckpt-*.pt", set())
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        watchdog = json.loads((run_dir / RESUME_FILE).read_text())["last_attempt"]["watchdog_pid"]
        deadline = time.monotonic() + 300
        while alive(watchdog) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(watchdog), "the watchdog did not finish"
        assert processes_of_run(run_dir) == [] and _processes_mentioning(str(run_dir)) == []
    finally:
        _stop(process)
    assert f"fewframes: the run was killed; stopped " in log.read_text() and f"--resume {run_dir}" in log.read_text()
    assert _parent_status(uri) == "KILLED"
    finished.update({p: m for p, m in _recorded_tasks(run_dir).items() if p not in finished})

    # 3. resume; SIGKILL of the whole process group (the watchdog too) at the next new checkpoint: nothing
    #    closes anything, the parent and the cut-short step's child run stay RUNNING
    checkpoints = _checkpoints(run_dir)
    process, log = _start_run(run_dir, resume=True)
    try:
        _wait_for_new_checkpoint(run_dir, process, log, "**/checkpoints/ckpt-*.pt", checkpoints)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        _stop(process)
    assert _parent_status(uri) == "RUNNING"
    finished.update({p: m for p, m in _recorded_tasks(run_dir).items() if p not in finished})

    # 4. the last resume: leftovers stopped, stale child runs ended, the rest runs; the uninterrupted results
    done = cli("run", "--resume", str(run_dir), timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MLflow child run(s) the interruption left RUNNING (status KILLED)" in done.stderr
    # no recorded task was run again: a rerun would have rewritten its executor output and its cache entry
    rerun = sorted(str(p.relative_to(run_dir)) for p, mtime in finished.items() if p.stat().st_mtime_ns != mtime)
    assert rerun == []
    assert _parent_status(uri) == "FINISHED"
    assert "RUNNING" not in _statuses(uri, json.loads((run_dir / "run.json").read_text())["parent_run_id"]).values()
    resumed, uninterrupted = _gaps(run_dir), _gaps(tiny_run)
    assert resumed.keys() == uninterrupted.keys()
    for key, gap in uninterrupted.items():
        assert resumed[key] == pytest.approx(gap, abs=1e-6), key
    assert (run_dir / "report.md").is_file() and processes_of_run(run_dir) == []
