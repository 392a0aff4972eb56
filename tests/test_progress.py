"""What ``fewframes run`` shows while it runs (``fewframes.cli.progress``): in a pipe, plain lines naming each
task as a person would, from a real tiny run (the session's ``tiny_run``, stderr captured: not a terminal);
on a terminal, the running tasks redrawn in place with the epoch of the model in training."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from fewframes.cli.pipeline import _expected_tasks
from fewframes.cli.progress import DONE_FILE, EVENT_LINE, PROGRESS_FILE, RunProgress, task_label

EVENT = EVENT_LINE


@pytest.mark.slow
def test_a_piped_run_writes_one_plain_line_per_event_with_names_a_person_reads(tiny_run: Path):
    text = (tiny_run.parent / "progress.txt").read_text()
    assert "\r" not in text and "\x1b" not in text  # no bar, no cursor movement, no colour
    events = [EVENT.match(line).groups() for line in text.splitlines() if EVENT.match(line)]
    kinds = [kind for kind, _ in events]
    total = _expected_tasks(json.loads((tiny_run / "resume.json").read_text())["arguments"])
    done = [what for kind, what in events if kind == "done"]
    assert len(done) == total and kinds[-1] == "end" and "stop" not in kinds
    assert events[-1][1].startswith(f"{total}/{total} tasks done in ")
    # Every task finished once, its counter in order; the tiny grid (ks 6 and 30, Serial (c), Uniform-k, controls).
    assert [int(re.search(r"\[(\d+)/\d+ tasks\]$", line).group(1)) for line in done] == list(range(1, total + 1))
    names = {re.sub(r" in \d+\S*| \(.*\)|  \[.*\]$", "", line) for line in done}
    expected = {"train teacher seed 0", "evaluate teacher seed 0", "ingest/split", "benchmark", "report",
                "close tracking", "start tracking", "gather teachers"}
    for k in (6, 30):
        expected |= {f"distill student serial L_rep+L_pred+L_CE k={k}", f"evaluate student serial L_rep+L_pred+L_CE k={k}",
                     f"train baseline Uniform-{k}", f"evaluate Uniform-{k}", f"train warm-start control k={k}",
                     f"evaluate teacher seed 0 on {k} frames"}
    assert expected <= names, expected - names
    kfp_names = {"evaluate", "evaluate-2", "evaluate-3", "distill-student", "train-teacher", "train-baseline"}
    assert not any("for-loop" in name for name in names) and not names & kfp_names  # no KFP internal names
    # A training task's line says how many epochs ran, of at most max_epochs, and which was best.
    teacher = next(line for line in done if line.startswith("train teacher seed 0"))
    assert re.search(r"\((2 epochs|stopped after 1 of at most 2 epochs), best val GAP 0\.\d{4} at epoch [12]\)", teacher)
    started = [what for kind, what in events if kind == "start"]
    assert "train teacher seed 0" in started  # seen while it ran, not only once finished


def _task(folder: Path, done: bool = False, progress: dict | None = None, output: str = "student") -> None:
    (folder / output).mkdir(parents=True, exist_ok=True)
    if progress is not None:
        (folder / output / PROGRESS_FILE).write_text(json.dumps(progress))
    if done:
        (folder / DONE_FILE).write_text("{}")


def test_a_terminal_shows_the_running_tasks_in_place_with_their_epoch(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the block's lines are cut to the terminal's width
    # kfp.local's layout, as the tiny run above has it: a plan's output list, and iteration I of a loop in
    # for-loop-N-iteration-I/<task>, done once executor_output.json is there.
    run = tmp_path / "kfp" / "fewframes-distill-2026-01-01-00-00-00-000000"
    plan = [{"role": "student", "control": "", "k": 10, "loss": "rep", "mode": "serial", "matching": "final",
             "train_fraction": 1.0, "seed": 0, "repeat": False},
            {"role": "student", "control": "", "k": 10, "loss": "rep", "mode": "serial", "matching": "final",
             "train_fraction": 1.0, "seed": 1, "repeat": True}]
    (run / "plan-students").mkdir(parents=True)
    (run / "plan-students" / DONE_FILE).write_text(json.dumps({"parameterValues": {"Output": plan}}))
    _task(run / "ingest-split", done=True, output="store")
    student = run / "for-loop-3-iteration-1" / "distill-student"
    _task(student, progress={"epochs_done": 2, "max_epochs": 20, "val_gap": 0.61, "best_val_gap": 0.64,
                             "best_epoch": 1, "epoch_seconds": 41.0})
    screen = io.StringIO()
    progress = RunProgress(tmp_path / "kfp", total=5, stream=screen, terminal=True)
    progress.poll()
    first = screen.getvalue()
    assert "done   ingest/split" in first and "start" not in first  # a start shows in the block only
    assert ("  distill student serial L_rep k=10 seed 1: epoch 3 of at most 20, last val GAP 0.6100 (best val GAP "
            "0.6400 at epoch 1), 41s/epoch") in first
    assert "pipeline: 2/5 tasks done, 1 running" in first and "no ETA" in first
    # The next look redraws the block in place (cursor up over its 2 lines, erase), and a finished task
    # gets a permanent line above it.
    _task(run / "for-loop-3-iteration-1" / "evaluate-2", output="evaluation")
    (student / "student" / PROGRESS_FILE).write_text(json.dumps({"epochs_done": 5, "max_epochs": 20, "val_gap": 0.6,
                                                               "best_val_gap": 0.65, "best_epoch": 3}))
    (student / DONE_FILE).write_text("{}")
    progress.poll()
    second = screen.getvalue()[len(first):]
    assert second.startswith("\x1b[2F\x1b[J")
    assert re.search(r"done   distill student serial L_rep k=10 seed 1 in \d+s \(stopped after 5 of at most 20 "
                     r"epochs, best val GAP 0\.6500 at epoch 3\)  \[3/5 tasks\]", second)
    assert "  evaluate student serial L_rep k=10 seed 1  (" in second
    # In a pipe the same looks are plain lines: one per start, epoch and finish, nothing redrawn.
    piped = io.StringIO()
    plain = RunProgress(tmp_path / "kfp", total=5, stream=piped)
    plain.poll()
    assert "\x1b" not in piped.getvalue() and all(EVENT.match(line) for line in piped.getvalue().splitlines())


def test_task_names_outside_a_loop_and_before_the_plan_is_readable():
    assert task_label("ingest-split") == "ingest/split"
    assert task_label("evaluate-3") == "evaluate"  # the loop's plan not readable yet: the kind of task
    assert task_label("train-baseline", "plan-baselines", {"k": 6, "frame_selection": "first_middle_last",
                                                           "train_fraction": 0.25}) == \
        "train baseline First-Middle-Last-6 on 25% of the data"


def test_in_a_pipe_each_epoch_end_is_one_line(tmp_path: Path):
    run = tmp_path / "kfp" / "fewframes-distill-2026-01-01-00-00-00-000000"
    (run / "plan-teachers").mkdir(parents=True)
    (run / "plan-teachers" / DONE_FILE).write_text(json.dumps({"parameterValues": {"Output": [
        {"role": "teacher", "seed": 1, "train_fraction": 1.0, "repeat": True}]}}))
    teacher = run / "for-loop-2-iteration-0" / "train-teacher"
    _task(teacher, progress={"epochs_done": 0, "max_epochs": 8}, output="teacher")
    piped = io.StringIO()
    progress = RunProgress(tmp_path / "kfp", total=3, stream=piped)
    progress.poll()
    (teacher / "teacher" / PROGRESS_FILE).write_text(json.dumps({"epochs_done": 1, "max_epochs": 8, "val_gap": 0.5,
                                                               "best_val_gap": 0.5, "best_epoch": 1, "epoch_seconds": 75}))
    progress.poll()
    lines = [EVENT.match(line).groups() for line in piped.getvalue().splitlines()]
    assert lines == [("start", "train teacher seed 1"), ("done", "plan teachers  [1/3 tasks]"),
                     ("epoch", "train teacher seed 1: epoch 1 of at most 8 done, val GAP 0.5000 (best val GAP 0.5000 "
                               "at epoch 1), 1m15s/epoch")]


def test_a_cluster_runs_running_tasks_by_display_name_from_the_kfp_api_schema(tmp_path: Path):
    """``fewframes submit --watch`` names the running tasks from ``kfp.Client.get_run``'s answer. No KFP API server
    can run here: the answer is built with kfp's own ``kfp_server_api`` model classes, as the documented v2beta1
    schema has it (``V2beta1Run.run_details.task_details``: ``display_name``, ``state``), and goes once through
    the client library's own JSON round trip. The run's ``pipeline_spec`` is the real compiled distill DAG (with
    its platform spec beside it, as ``create_run_from_pipeline_package`` sends it). The API server fills the tasks
    from the Argo workflow's nodes, so the workflow's machinery (root, drivers, loops, iterations) is among them
    and is neither counted nor shown; a task may come under its key (``distill-student``) or its display name."""
    import yaml
    from kfp_server_api import ApiClient
    from kfp_server_api.models import V2beta1PipelineTaskDetail, V2beta1Run, V2beta1RunDetails, V2beta1RuntimeState

    from fewframes.cli.progress import cluster_tasks, pipeline_task_names
    from fewframes.pipelines.dag import compile_pipeline

    spec = next(yaml.safe_load_all(Path(compile_pipeline("distill", str(tmp_path / "distill.yaml"), "tiny")).read_text()))
    names = pipeline_task_names({"pipeline_spec": spec, "platform_spec": {}})
    assert names["distill-student"] == names["distill student"] == "distill student"
    assert names["evaluate-2"] == "evaluate student" and names["ingest-split"] == "ingest/split"
    assert "for-loop-3" not in names and "exit-handler-1" not in names  # DAGs: machinery here

    state = V2beta1RuntimeState
    reported = [
        ("fewframes-distill-x7k2p", state.RUNNING), ("root-driver", state.SUCCEEDED), ("root", state.RUNNING),
        ("start-tracking-driver", state.SUCCEEDED), ("start-tracking", state.SUCCEEDED),
        ("ingest-split", state.SUCCEEDED), ("train-teacher", state.SUCCEEDED), ("evaluate", state.SKIPPED),
        ("for-loop-3-driver", state.SUCCEEDED), ("for-loop-3", state.RUNNING), ("iteration-0", state.RUNNING),
        ("distill-student-driver", state.SUCCEEDED), ("distill-student", state.RUNNING),
        ("distill-student", state.RUNNING), ("evaluate student", state.RUNNING), ("executor", state.RUNNING),
        ("train-baseline", state.FAILED), ("train-baseline", state.PENDING),
    ]
    run = V2beta1Run(
        run_id="r1", display_name="try-1", state=state.RUNNING, pipeline_spec={"pipeline_spec": spec, "platform_spec": {}},
        run_details=V2beta1RunDetails(task_details=[
            V2beta1PipelineTaskDetail(run_id="r1", task_id=f"t{i}", display_name=name, state=task_state)
            for i, (name, task_state) in enumerate(reported)
        ]),
    )

    class Response:  # what kfp_server_api's RESTResponse offers its deserialiser
        data = json.dumps(ApiClient().sanitize_for_serialization(run))

        def getheader(self, name: str, default: str | None = None) -> str | None:
            return default

    for answer in (run, ApiClient().deserialize(Response(), "V2beta1Run")):
        tasks = cluster_tasks(answer)
        assert (tasks.done, tasks.seen) == (4, 9)  # start tracking, ingest/split, train teacher, evaluate (skipped)
        assert tasks.running == ["distill student", "distill student", "evaluate student"]
        assert tasks.running_text() == "distill student ×2, evaluate student"

    nothing = cluster_tasks(V2beta1Run(run_id="r2", state=state.PENDING))  # no details yet, no spec
    assert (nothing.done, nothing.seen, nothing.running_text()) == (0, 0, "")
