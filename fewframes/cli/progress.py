"""What ``fewframes run`` shows while the DAG runs: the tasks running NOW, named as a person names them
(``train teacher seed 1``, ``distill student serial L_rep k=10``, ``evaluate Uniform-10``), the epoch of every
model in training, and how many tasks are done.

Everything is read from the run's folder, which ``kfp.local`` fills as the tasks run:

- a task's folder (``<pipeline run>/<task>`` or, inside a ``dsl.ParallelFor``, ``<pipeline run>/for-loop-N-
  iteration-I/<task>``) appears when its executor starts (it creates the output artifacts' folders) and gets
  ``executor_output.json`` when it finishes;
- iteration I of a loop runs item I of its plan task's output list (``plan-students/executor_output.json``),
  which says what the model is (k, loss, mode, seed, ...): the item-specific name comes from there, since a
  KFP display name inside a ParallelFor cannot depend on the loop item (the Kubeflow UI shows the static
  names set in ``fewframes.pipelines.dag``);
- a training task's model folder holds ``progress.json`` (``fewframes.training.loop.PROGRESS_FILE``), rewritten
  after every epoch: epochs done of at most ``max_epochs``, the last and best validation GAP.

No ETA: with early stopping the number of epochs a model trains is decided while it trains, and the tasks of a
grid differ by an order of magnitude in cost, so any estimate of the run's end would be a guess (the last one
shown here swung between 3 and 34 minutes). What is shown instead is measured: tasks done of the total, the
elapsed time, each model's epoch of at most its maximum and its seconds per epoch.

On a terminal the running tasks are a block redrawn in place, with a permanent line per finished task above
it; elsewhere (a pipe, a file) every event is one plain line: a task starting, an epoch ending, a task finishing.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PROGRESS_FILE = "progress.json"  # fewframes.training.loop.PROGRESS_FILE (not imported: that pulls in torch)
DONE_FILE = "executor_output.json"
# The loop tasks and the plan task whose output list their loop runs over.
PLAN_OF_TASK = {
    "train-teacher": "plan-teachers",
    "distill-student": "plan-students",
    "train-baseline": "plan-baselines",
    "evaluate-teacher-on-k": "plan-teacher-on-k",
}
TRAINING_TASKS = ("train-teacher", "distill-student", "train-baseline")
# Top-level tasks whose folder name is not already the words a person would use.
TASK_WORDS = {"ingest-split": "ingest/split"}
# One line of the plain (not a terminal) display: "[  3m12s] done   train teacher seed 0 in 2m40s ...".
EVENT_LINE = re.compile(r"^\[\s*\d+(?:s|m\d\ds|h\d\dm)\] (start|epoch|done|stop|end)\s+(.+)$")
_LOOP = re.compile(r"^for-loop-(\d+)-iteration-(\d+)$")
_SUFFIX = re.compile(r"^(.*?)(?:-\d+)?$")  # kfp.local names a component's 2nd, 3rd use "evaluate-2", "evaluate-3"
LOSS_NAMES = {"rep": "L_rep", "rep_ce": "L_rep+L_CE", "rep_pred_ce": "L_rep+L_pred+L_CE", "ce": "L_CE"}
SELECTION_NAMES = {"uniform": "Uniform", "random": "Random", "first": "First", "middle": "Middle", "last": "Last",
                   "first_middle_last": "First-Middle-Last"}


# ----------------------------------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------------------------------


def _fraction(item: dict[str, Any]) -> str:
    fraction = float(item.get("train_fraction") or 1.0)
    return f" on {fraction:.0%} of the data" if fraction < 1.0 else ""


def _seed(item: dict[str, Any]) -> str:
    return f" seed {item['seed']}" if item.get("repeat") and item.get("seed") is not None else ""


def model_name(plan: str, item: dict[str, Any]) -> str:
    """What the model of a plan item is, in words: ``teacher seed 0``, ``student serial L_rep k=10``,
    ``Uniform-10``, ``warm-start control k=10``, ``teacher seed 0 on 10 frames``."""
    if plan == "plan-teachers":
        return f"teacher seed {item.get('seed', '?')}" + _fraction(item)
    if plan == "plan-teacher-on-k":
        return f"teacher seed {item.get('seed', '?')} on {item.get('k', '?')} frames"
    if plan == "plan-baselines":
        selection = str(item.get("frame_selection", "uniform"))
        return f"{SELECTION_NAMES.get(selection, selection)}-{item.get('k', '?')}" + _seed(item) + _fraction(item)
    if item.get("control"):
        return f"{str(item['control']).replace('_', '-')} control k={item.get('k', '?')}" + _seed(item) + _fraction(item)
    loss = str(item.get("loss", ""))
    matching = " intermediate" if item.get("matching") == "intermediate" else ""
    return (f"student {item.get('mode', '')} {LOSS_NAMES.get(loss, loss)}{matching} k={item.get('k', '?')}"
            + _seed(item) + _fraction(item))


def task_label(task: str, plan: str | None = None, item: dict[str, Any] | None = None) -> str:
    """A task's name for a person: ``task`` is kfp.local's folder name (``distill-student``, ``evaluate-2``),
    ``plan``/``item`` the plan and item of its loop iteration (None outside a loop or when not known yet)."""
    kind = _SUFFIX.match(task).group(1)  # type: ignore[union-attr]
    if item is None or plan is None:
        return TASK_WORDS.get(kind, kind.replace("-", " "))
    name = model_name(plan, item)
    if kind == "train-teacher":
        return f"train {name}"
    if kind == "distill-student":
        return f"distill {name}" if not item.get("control") else f"train {name}"
    if kind == "train-baseline":
        return f"train baseline {name}"
    return f"evaluate {name}"


# ----------------------------------------------------------------------------------------------------------
# the run folder
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TaskState:
    path: str  # relative to the pipeline root, e.g. "fewframes-distill-.../for-loop-3-iteration-7/distill-student"
    label: str
    done: bool
    training: dict[str, Any] | None = None  # the model's progress.json


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet, or caught between two writes of a non-atomic writer


@dataclass
class RunFolder:
    """The tasks of one ``fewframes run`` as its kfp.local output folder shows them."""

    root: Path  # RUN_DIR/kfp
    _plans: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    _loop_plans: dict[tuple[str, str], str] = field(default_factory=dict)

    def _plan_items(self, run: Path, plan: str) -> list[dict[str, Any]] | None:
        key = (run.name, plan)
        if key not in self._plans:
            output = _read_json(run / plan / DONE_FILE)
            items = (output or {}).get("parameterValues", {}).get("Output")
            if not isinstance(items, list):
                return None
            self._plans[key] = items
        return self._plans[key]

    def _loop_plan(self, run: Path, loop: str) -> str | None:
        """Which plan loop ``for-loop-N`` runs over: the one of the loop task found in any of its iterations."""
        key = (run.name, loop)
        if key not in self._loop_plans:
            for iteration in run.glob(f"for-loop-{loop}-iteration-*"):
                found = [PLAN_OF_TASK[t.name] for t in iteration.iterdir() if t.name in PLAN_OF_TASK]
                if found:
                    self._loop_plans[key] = found[0]
                    break
            else:
                return None
        return self._loop_plans[key]

    def _label(self, run: Path, parent: str, task: str) -> str:
        match = _LOOP.match(parent)
        if match is None:
            return task_label(task)
        plan = self._loop_plan(run, match.group(1))
        items = self._plan_items(run, plan) if plan else None
        index = int(match.group(2))
        item = items[index] if items is not None and index < len(items) and isinstance(items[index], dict) else None
        return task_label(task, plan, item)

    def tasks(self) -> list[TaskState]:
        found: list[TaskState] = []
        for run in sorted(p for p in self.root.glob("*") if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(run.iterdir()):
                if not entry.is_dir():
                    continue
                folders = [t for t in entry.iterdir() if t.is_dir()] if _LOOP.match(entry.name) else [entry]
                for folder in folders:
                    task = folder.name
                    parent = entry.name if folder is not entry else ""
                    state = TaskState(str(folder.relative_to(self.root)), self._label(run, parent, task),
                                      (folder / DONE_FILE).is_file())
                    if _SUFFIX.match(task).group(1) in TRAINING_TASKS:  # type: ignore[union-attr]
                        progress = [_read_json(p) for p in folder.glob(f"*/{PROGRESS_FILE}")]
                        state.training = next((p for p in progress if isinstance(p, dict)), None)
                    found.append(state)
        return found


# ----------------------------------------------------------------------------------------------------------
# what is shown
# ----------------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def epoch_text(training: dict[str, Any] | None, finished: bool = False, ended: bool = False) -> str:
    """While training, ``epoch 4 of at most 20, last val GAP 0.6120 (best val GAP 0.6400 at epoch 3),
    41s/epoch`` (``ended``: ``epoch 3 of at most 20 done, val GAP ...``, the line of an epoch's end);
    ``finished``: ``stopped after 12 of at most 20 epochs, best val GAP 0.6400 at epoch 9``; '' before any."""
    if not training:
        return ""
    done, most = int(training.get("epochs_done") or 0), training.get("max_epochs")
    best, best_epoch = training.get("best_val_gap"), training.get("best_epoch")
    best_text = f"best val GAP {best:.4f} at epoch {best_epoch}" if best is not None and best_epoch else ""
    if finished:
        if not done:
            return ""
        ran = f"{done} epochs" if done == most else f"stopped after {done} of at most {most} epochs"
        return ", ".join(t for t in (ran, best_text) if t)
    if ended:
        parts = [f"epoch {done} of at most {most} done"]
    else:
        parts = [f"epoch {done + 1} of at most {most}" if most is None or done < int(most) else f"epoch {done} of {most}"]
    if training.get("val_gap") is not None:
        parts.append(f"{'' if ended else 'last '}val GAP {training['val_gap']:.4f}" + (f" ({best_text})" if best_text else ""))
    seconds = training.get("epoch_seconds")
    if seconds:
        parts.append(f"{seconds:.1f}s/epoch" if seconds < 10 else f"{_duration(seconds)}/epoch")
    return ", ".join(parts)


class RunProgress:
    """Follows ``root`` (RUN_DIR/kfp) from a thread and writes to ``stream``: on a terminal a redrawn block of
    the running tasks with a permanent line per finished one, elsewhere plain lines (see the module's doc)."""

    def __init__(self, root: Path, total: int, stream: TextIO, interval_s: float = 1.0,
                 terminal: bool | None = None) -> None:
        self.folder = RunFolder(Path(root))
        self.total = total
        self.stream = stream
        self.interval_s = interval_s
        self.terminal = stream.isatty() if terminal is None else terminal
        self.started = time.monotonic()
        self._seen: dict[str, TaskState] = {}
        self._since: dict[str, float] = {}  # when a task was first seen running
        self._done = 0
        self._drawn = 0  # lines of the live block now on the terminal
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="fewframes-progress")

    # events ------------------------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return f"[{_duration(time.monotonic() - self.started):>6}]"

    def _event(self, kind: str, text: str) -> str:
        return f"{self._stamp()} {kind:<6} {text}"

    def poll(self) -> list[str]:
        """Look at the folder once; the event lines since the last look (and redraw on a terminal)."""
        with self._lock:
            events: list[str] = []
            now = time.monotonic()
            for task in self.folder.tasks():
                before = self._seen.get(task.path)
                if before is None and task.done:  # finished between two looks (or reused from the cache)
                    self._done += 1
                    extra = epoch_text(task.training, finished=True)
                    events.append(self._event("done", f"{task.label}" + (f" ({extra})" if extra else "")
                                              + f"  [{self._done}/{self.total} tasks]"))
                elif before is None:
                    self._since[task.path] = now
                    events.append(self._event("start", task.label))
                elif not before.done and task.done:
                    self._done += 1
                    took = _duration(now - self._since.get(task.path, now))
                    extra = epoch_text(task.training, finished=True)
                    events.append(self._event("done", f"{task.label} in {took}" + (f" ({extra})" if extra else "")
                                              + f"  [{self._done}/{self.total} tasks]"))
                elif not task.done and task.training and (before.training or {}).get("epochs_done") != \
                        task.training.get("epochs_done") and task.training.get("epochs_done"):
                    events.append(self._event("epoch", f"{task.label}: {epoch_text(task.training, ended=True)}"))
                self._seen[task.path] = task
            self._write(events)
            return events

    # output ------------------------------------------------------------------------------------------------

    def running_block(self) -> list[str]:
        """The live block: a header line and one line per running task."""
        now = time.monotonic()
        running = [t for t in self._seen.values() if not t.done]
        lines = [f"pipeline: {self._done}/{self.total} tasks done, {len(running)} running, "
                 f"{_duration(now - self.started)} elapsed (no ETA: early stopping decides each model's epochs)"]
        for task in running:
            extra = epoch_text(task.training)
            lines.append(f"  {task.label}" + (f": {extra}" if extra else "")
                         + f"  ({_duration(now - self._since.get(task.path, now))})")
        return lines

    def _write(self, events: list[str]) -> None:
        if not self.terminal:
            for line in events:
                self.stream.write(line + "\n")
            self.stream.flush()
            return
        # The block shows what runs now; only finished tasks get a permanent line above it.
        events = [line for line in events if line.split("] ", 1)[-1].startswith("done")]
        width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
        clear = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""  # back to the block's first line, erase down
        block = [line[:width] for line in self.running_block()]  # never wrap: the redraw counts lines
        self.stream.write(clear + "".join(line + "\n" for line in events + block))
        self.stream.flush()
        self._drawn = len(block)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except OSError:  # a folder caught while kfp.local creates or renames it: look again next time
                continue

    def __enter__(self) -> RunProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        with self._lock:
            unfinished = [t for t in self._seen.values() if not t.done]
            lines = [self._event("stop", f"{t.label} did not finish") for t in unfinished]
            summary = self._event("end", f"{self._done}/{self.total} tasks done in {_duration(time.monotonic() - self.started)}")
            if self.terminal and self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
                self._drawn = 0
            self.stream.write("".join(line + "\n" for line in lines + [summary]))
            self.stream.flush()


# ----------------------------------------------------------------------------------------------------------
# a cluster run (``fewframes submit --watch``): what the KFP API says
# ----------------------------------------------------------------------------------------------------------
#
# ``kfp.Client.get_run`` answers a ``V2beta1Run``; its ``run_details.task_details`` is a list of
# ``V2beta1PipelineTaskDetail`` with ``display_name`` and ``state`` (a V2beta1RuntimeState name: PENDING,
# RUNNING, SUCCEEDED, SKIPPED, FAILED, CANCELING, CANCELED, PAUSED). The KFP API server fills them from the Argo
# workflow's nodes (backend/src/apiserver/server/api_converter.go, toModelTask: display_name = the node's
# display name, state = its phase), so besides the pipeline's own tasks the list holds the workflow's
# machinery: the root DAG, each task's ``-driver`` node, the loops and their iterations. A task is recognised
# by the name it has in the run's own ``pipeline_spec`` (also in the answer): its task key (``evaluate-2``) or
# its display name (``evaluate student``, fewframes.pipelines.dag); the rest is machinery, not counted. As on
# the Kubeflow UI, a task inside a ParallelFor is named by its static display name, not by its loop item.

DONE_STATES = ("SUCCEEDED", "SKIPPED")  # V2beta1RuntimeState names of a task that is over and did its part


def pipeline_task_names(pipeline_spec: Any) -> dict[str, str]:
    """Every container task of a compiled pipeline spec (as ``V2beta1Run.pipeline_spec`` holds it: the spec, or
    ``{"pipeline_spec": spec, "platform_spec": ...}``), under its task key and its display name, mapped to
    its display name. DAG tasks (loops, the exit handler) are left out: they are machinery here."""
    spec = pipeline_spec.get("pipeline_spec", pipeline_spec) if isinstance(pipeline_spec, dict) else {}
    components = spec.get("components") or {}
    names: dict[str, str] = {}
    dags = [(spec.get("root") or {}).get("dag") or {}]
    dags += [component["dag"] for component in components.values() if isinstance(component, dict) and "dag" in component]
    for dag in dags:
        for key, task in (dag.get("tasks") or {}).items():
            component = components.get((task.get("componentRef") or {}).get("name", ""), {})
            if "dag" in component:
                continue
            display = str((task.get("taskInfo") or {}).get("name") or key)
            names[key] = display
            names[display] = display
    return names


@dataclass
class ClusterTasks:
    """The pipeline tasks a KFP run reports: how many are done of those seen so far, and the display names of
    the running ones (a name once per running task; a ParallelFor runs several tasks of one name)."""

    done: int = 0
    seen: int = 0
    running: list[str] = field(default_factory=list)

    def running_text(self) -> str:
        """``train teacher, distill student ×2``: each name once, with its count when several run."""
        counts: dict[str, int] = {}
        for name in self.running:
            counts[name] = counts.get(name, 0) + 1
        return ", ".join(name if count == 1 else f"{name} ×{count}" for name, count in counts.items())


def cluster_tasks(run: Any) -> ClusterTasks:
    """``ClusterTasks`` of a ``V2beta1Run`` (``kfp.Client.get_run``'s answer); see the section's comment."""
    known = pipeline_task_names(getattr(run, "pipeline_spec", None))
    details = getattr(getattr(run, "run_details", None), "task_details", None) or []
    tasks = ClusterTasks()
    for task in details:
        name = known.get(str(getattr(task, "display_name", "") or ""))
        if name is None:  # the workflow's machinery, or a name this spec does not have
            continue
        state = str(getattr(task, "state", "") or "")
        tasks.seen += 1
        tasks.done += state in DONE_STATES
        if state == "RUNNING":
            tasks.running.append(name)
    tasks.running.sort()
    return tasks
