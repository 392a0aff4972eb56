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
