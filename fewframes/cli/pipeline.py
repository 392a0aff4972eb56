"""``fewframes run | compile | submit | compare``: the pipeline, locally, compiled, on a cluster, and its runs.

- ``run``: the WHOLE DAG through ``kfp.local`` (``SubprocessRunner(use_venv=False)``: every step a
  subprocess of the current environment), MLflow in ``RUN_DIR/mlflow.db`` unless ``--tracking-uri``.
  The CLI creates the MLflow parent run first (an unreachable server fails here, before any training) and
  passes its id as the ``parent_run_id`` pipeline parameter. KFP's verbose task logs go to
  ``RUN_DIR/pipeline.log``; stderr shows the tasks running now, by name, with the epoch of each model in
  training (``fewframes.cli.progress``: a redrawn block on a terminal, plain lines in a pipe or file).
- ``compile``: IR YAML for the Kubeflow UI, GPU settings from ``--gpus/--accelerator/...`` (default
  ``fewframes.cluster.DEFAULT_GPU``; ``--gpus 0`` compiles a CPU-only pipeline).
- ``submit``: compile + ``kfp.Client(host).create_run_from_pipeline_package``; ``--watch`` follows the run.
  Authentication is kfp.Client's own (``KF_PIPELINES_SA_TOKEN_PATH``, kube config, ``--token``). On the
  cluster the ``start-tracking`` step creates the MLflow parent run (``parent_run_id`` left empty).
- ``compare``: the evaluate runs of an MLflow experiment side by side (rich table, optional CSV).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from fewframes.errors import PipelineError

DEFAULT_RUNS_DIR = "runs"
TERMINAL_STATES = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELING", "PAUSED"}
# Parameters the CLI sets itself (flags), not via --param.
_CLI_OWNED = {"parent_run_id"}


# ----------------------------------------------------------------------------------------------------------
# --param key=value
# ----------------------------------------------------------------------------------------------------------


def parse_params(pairs: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``key=value`` strings -> typed pipeline arguments; unknown keys and bad values are PipelineErrors.

    Lists take JSON (``ks=[6,10]``) or commas (``ks=6,10``); numbers and strings as written.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise PipelineError(f"--param {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in defaults or key in _CLI_OWNED:
            known = ", ".join(sorted(k for k in defaults if k not in _CLI_OWNED))
            raise PipelineError(f"--param {key}: unknown pipeline parameter (known: {known})")
        values[key] = _coerce(key, raw.strip(), defaults[key])
    return values


def _coerce(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, list):
            if raw.startswith("["):
                items = json.loads(raw)
            else:
                items = [item.strip() for item in raw.split(",") if item.strip()]
            kind = _list_kind(key)
            return [kind(item) for item in items]
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except (ValueError, json.JSONDecodeError):
        raise PipelineError(f"--param {key}={raw}: not a valid {type(default).__name__}") from None
    return raw


def _list_kind(key: str) -> type:
    return {"ks": int, "train_fractions": float, "repeat_seeds": int, "repeat_ks": int}.get(key, str)


# ----------------------------------------------------------------------------------------------------------
# fewframes run
# ----------------------------------------------------------------------------------------------------------


def _expected_tasks(params: dict[str, Any]) -> int:
    """How many tasks the local DAG runs (for the progress bar); also checks the grid before anything runs."""
    from fewframes.components.steps import plan_baselines, plan_students, plan_teacher_on_k, plan_teachers

    repeats = (params["repeat_seeds"], params["repeat_ks"], params["seed"])
    teachers = plan_teachers(params["fraction_k"], params["train_fractions"], params["repeat_seeds"], params["seed"])
    students = plan_students(
        params["ks"], params["losses"], params["modes"], params["intermediate_k"], params["fraction_k"],
        params["train_fractions"], *repeats, params["controls"],
    )
    baselines = plan_baselines(
        params["ks"], params["baselines"], params["fraction_k"], params["train_fractions"], *repeats
    )
    teacher_on_k = plan_teacher_on_k(params["ks"], *repeats, params["controls"])
    # start-tracking, ingest-split, 4 plans, gather-teachers, benchmark, report, close-tracking; a training
    # task and its evaluation per model; one evaluation per teacher-on-k control.
    return 10 + 2 * (len(teachers) + len(students) + len(baselines)) + len(teacher_on_k)


def check_arguments(arguments: dict[str, Any]) -> None:
    """Every pipeline argument checked at once, before any step runs (a bad ``max_epochs`` or learning rate must
    not wait for ingest to finish): sizes and training settings through the configuration types that the
    steps build from them, fractions and the device here. Raises ``PipelineError`` naming ``--param KEY``."""
    from fewframes.config import ConfigError, ModelConfig, TrainConfig

    def param_error(key: str, why: str) -> PipelineError:
        return PipelineError(f"--param {key}={arguments[key]}: {why}")

    if arguments["num_classes"] < 0:
        raise param_error("num_classes", "must be >= 0 (0: the store's own)")
    if arguments.get("vocabulary") and not str(arguments["vocabulary"]).startswith("gs://"):
        from fewframes.data.vocabulary import load_vocabulary
        from fewframes.errors import DataError

        try:  # a missing or malformed vocabulary is found now, not after the data is read
            vocabulary = load_vocabulary(arguments["vocabulary"])
        except DataError as exc:
            raise param_error("vocabulary", str(exc).removeprefix(f"--vocabulary {arguments['vocabulary']}: ")) from None
        if arguments["num_classes"] and arguments["num_classes"] != vocabulary.num_classes:
            raise param_error("num_classes", f"the vocabulary has {vocabulary.num_classes} classes; give one of them")
    checks = (
        (TrainConfig, {"max_epochs": "epochs", "patience": "patience", "batch_size": "batch_size",
                       "learning_rate": "learning_rate", "seed": "seed"}),
        (ModelConfig, {"hidden_size": "hidden_size", "num_layers": "num_layers", "teacher_block_length": "block_length",
                       "family": "family"}),
    )
    for config_type, fields in checks:
        values = {field: arguments[key] for key, field in fields.items()}
        if config_type is ModelConfig:
            values["num_classes"] = arguments["num_classes"] or 1
        try:
            config_type(**values)
        except ConfigError as exc:
            field = str(exc).split(" ", 1)[0].split(".", 1)[-1]
            key = next((k for k, f in fields.items() if f == field), field)
            raise param_error(key, str(exc).split(" ", 1)[1]) from None
    # A combination certain to fail in a later step: a serial L_rep student (loss (a)) trains L_rep, then L_CE.
    if "rep" in arguments.get("losses", []) and "serial" in arguments.get("modes", []):
        from fewframes.config import StudentConfig

        try:
            StudentConfig(k=1, loss="rep").rep_stages(int(arguments["max_epochs"]))
        except ConfigError:
            raise param_error("max_epochs", "losses has rep, whose serial student trains in two stages (L_rep, "
                              "then L_CE): give max_epochs >= 2 or drop rep from losses") from None
    for key in ("validation_fraction", "test_fraction"):
        if not 0.0 <= float(arguments[key]) < 1.0:
            raise param_error(key, "must be in [0, 1)")
    if arguments["validation_fraction"] + arguments["test_fraction"] >= 1.0:
        raise PipelineError(
            f"--param validation_fraction={arguments['validation_fraction']} and test_fraction="
            f"{arguments['test_fraction']}: together they must leave training data (sum < 1)"
        )
    if arguments["device"] not in ("auto", "cpu", "cuda") and not str(arguments["device"]).startswith("cuda:"):
        raise param_error("device", "must be auto, cpu, cuda or cuda:N")
    if not float(arguments["tolerance"]) >= 0.0:
        raise param_error("tolerance", "must be >= 0")


def _atomic_copy(source: Path, target: Path) -> None:
    from fewframes.fsio import write_bytes_atomic

    write_bytes_atomic(target, source.read_bytes())


from fewframes.cli.resume import KFP_CACHE, RESUME_FILE  # noqa: E402 - beside the code that writes them


def run_local(
    preset: str = "demo",
    pipeline: str = "distill",
    out: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "fewframes",
    params: list[str] | None = None,
    quiet_log: bool = True,
    resume: str | None = None,
) -> dict[str, Any]:
    """Run the whole DAG with kfp.local in this environment; returns the run's summary (also RUN_DIR/run.json).

    ``resume=RUN_DIR`` goes on with an interrupted run (Ctrl-C, SIGTERM, SIGKILL, a failed step): same
    arguments, same MLflow parent run (reopened), same kfp output folder; kfp.local's task cache hands back
    the outputs of every task that finished, and a training task that was cut short resumes from the
    checkpoints in its output folder. The result is the one an uninterrupted run gives (docs/faults.md).
    """
    from fewframes.components.steps import ERROR_FILE_ENV, TEACHERS_FILE, TORCH_THREADS_ENV, read_model_info
    from fewframes.cli.progress import RunProgress
    from fewframes.components.steps.warm import warm_steps
    from fewframes.config import get_preset
    from fewframes.pipelines.dag import make_pipeline, parameter_defaults
    from fewframes.fsio import check_output_dir, is_gcs, write_bytes_atomic
    from fewframes.cli.resume import (
        ATTEMPT_ENV,
        RUN_DIR_ENV,
        Watchdog,
        attempt_record,
        interrupted_pipeline_folder,
        new_attempt,
        pinned_pipeline_folder,
        prepare_resume,
        read_resume_state,
        require_kfp_local,
        restore_metrics_files,
        stop_child_processes,
    )
    from fewframes.runs import (
        TrackingContext,
        check_tracking,
        close_parent_run,
        local_tracking_uri,
        reopen_parent_run,
        start_parent_run,
    )
    from fewframes.tracking import quiet_logger

    if resume is not None:
        state = read_resume_state(resume)
        run_dir, preset, pipeline = Path(resume).resolve(), state["preset"], state["pipeline"]
        preset_config = get_preset(preset)
        arguments, run_id, uri = state["arguments"], state["run_id"], state["tracking_uri"]
        experiment, parent_run_id = state["experiment"], arguments["parent_run_id"]
        require_kfp_local(resume)
        check_tracking(uri)
        notices = prepare_resume(run_dir, state)
        reopen_parent_run(uri, parent_run_id)
        for notice in notices:
            print(f"fewframes: {notice}", file=sys.stderr)
        expected = _expected_tasks(arguments)
    else:
        preset_config = get_preset(preset)
        defaults = parameter_defaults(pipeline, preset_config)
        arguments = {**defaults, **parse_params(params or [], defaults)}
        check_arguments(arguments)
        expected = _expected_tasks(arguments)

        if out and is_gcs(out):
            raise PipelineError(
                f"--out {out}: a local run needs a local folder (kfp.local's pipeline root); "
                "data and models on gs:// are for cluster runs (fewframes submit)"
            )
        run_dir = Path(out) if out else Path(DEFAULT_RUNS_DIR) / unique_name(f"{pipeline}-{preset}")
        if os.path.lexists(run_dir) and not run_dir.is_dir():
            raise PipelineError(f"--out {run_dir}: is an existing file, not a run folder")
        if run_dir.exists() and any(run_dir.iterdir()):
            resumable = (run_dir / RESUME_FILE).is_file() and not (run_dir / "run.json").is_file()
            hint = f"; `fewframes run --resume {run_dir}` goes on with it" if resumable else " (pick a new run folder)"
            raise PipelineError(f"--out {run_dir}: folder exists and is not empty{hint}")
        check_output_dir(run_dir, "--out")
        run_dir.mkdir(parents=True, exist_ok=True)
        run_dir = run_dir.resolve()

        uri = tracking_uri if tracking_uri is not None else local_tracking_uri(run_dir)
        run_id = unique_name(f"local-{pipeline}")  # two runs started in the same second still differ
        arguments.update(tracking_uri=uri, experiment=experiment, run_name=arguments["run_name"] or run_id)
        context = TrackingContext(uri=uri, experiment=experiment, pipeline_run_id=run_id, pipeline=pipeline)
        recorded = {k: v for k, v in arguments.items() if k not in ("tracking_uri", "parent_run_id", "run_name")}
        # MLflow logs the creation of a new SQLite store at INFO on stderr ("Creating initial MLflow database
        # tables"): routine for every local run, so kept off the terminal (docs/faults.md); warnings still show.
        with quiet_logger("mlflow.store.db.utils", logging.WARNING):
            check_tracking(uri)  # fail now, not after training
            parent_run_id = start_parent_run(context, arguments["run_name"], params=recorded)
        arguments["parent_run_id"] = parent_run_id
        state = {"preset": preset, "pipeline": pipeline, "run_id": run_id, "tracking_uri": uri,
                 "experiment": experiment, "arguments": arguments}
        write_bytes_atomic(run_dir / RESUME_FILE, json.dumps(state, indent=2, default=str).encode())

    from kfp import local

    pipeline_root = run_dir / "kfp"
    error_file = run_dir / "step_errors.log"
    log_path = run_dir / "pipeline.log"
    pinned = interrupted_pipeline_folder(pipeline_root) if resume is not None else None
    if resume is not None:
        restore_metrics_files(run_dir / KFP_CACHE)
    # urllib3 logs each MLflow retry as a WARNING (kfp.local configures logging): the one line is ours.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    error_file.unlink(missing_ok=True)  # a cause from the interrupted attempt is not this attempt's
    os.environ[ERROR_FILE_ENV] = str(error_file)
    os.environ[TORCH_THREADS_ENV] = str(max(1, (os.cpu_count() or 2) // 2))
    # Caching on: every finished task leaves an entry in RUN_DIR/kfp-cache that a resume reuses. Keys hold
    # the task's inputs (artifact paths included), and the folder is this run's own: nothing crosses runs.
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=True,
        cache_root=str(run_dir / KFP_CACHE),
    )
    dag = _without_retries(make_pipeline(pipeline, preset_config))

    started = time.perf_counter()
    failure: str | None = None
    terminal = sys.stderr
    # Every process of this attempt inherits these (how its leftovers are found), but not the watchdog,
    # which stops them and closes the parent run if this process is killed without its clean-up (SIGKILL).
    attempt = new_attempt()
    watchdog = Watchdog(run_dir, attempt, uri, parent_run_id)
    os.environ[RUN_DIR_ENV], os.environ[ATTEMPT_ENV] = str(run_dir), attempt
    state["last_attempt"] = attempt_record(attempt, watchdog.pid)
    write_bytes_atomic(run_dir / RESUME_FILE, json.dumps(state, indent=2, default=str).encode())
    try:
        # warm_steps: every step runs in a fork of one process that imported torch and mlflow once.
        # --verbose: KFP's logs share the terminal, so the display writes plain lines instead of redrawing.
        shown = RunProgress(pipeline_root, expected, terminal, terminal=None if quiet_log else False)
        with warm_steps(), log_path.open("a" if resume else "w") as log_file, shown:
            log = OneWriterAtATime(log_file)
            redirect = contextlib.redirect_stdout(log) if quiet_log else contextlib.nullcontext()
            # kfp_local_globals_kept innermost: it keeps kfp's root-logger records in the log (stdout with
            # --verbose, where kfp's logs go) and puts the root logger back before the log file closes
            kfp_messages = log if quiet_log else sys.stdout
            with redirect, _quiet_kfp_warnings(), pinned_pipeline_folder(pinned), kfp_local_globals_kept(kfp_messages):
                try:
                    dag(**arguments)
                except Exception as exc:  # kfp.local raises RuntimeError naming the failed task
                    failure = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except BaseException as exc:  # Ctrl-C (SIGINT/SIGTERM) while the DAG runs: its exit task never ran
        stop_child_processes(keep=frozenset({watchdog.pid}))  # a SIGTERM reached this process only; its steps would run on
        try:
            close_parent_run(uri, parent_run_id, "KILLED", f"interrupted ({str(exc) or type(exc).__name__})")
        except Exception as close_error:  # e.g. the server is gone too: the interruption is what to report
            print(f"fewframes: warning: could not close the MLflow parent run: {close_error}", file=sys.stderr)
        raise
    finally:  # also after Ctrl-C: the caller's environment as it was
        for name in (ERROR_FILE_ENV, TORCH_THREADS_ENV, RUN_DIR_ENV, ATTEMPT_ENV):
            os.environ.pop(name, None)
        watchdog.done()
    seconds = time.perf_counter() - started
    # The DAG's exit task (close-tracking) has closed the parent already; this covers a failure before it.
    try:
        close_parent_run(uri, parent_run_id, "FAILED" if failure is not None else "SUCCEEDED", failure or "")
    except Exception:
        if failure is None:
            raise
        # The failure is the one line to report (most often this same server, dead); the parent stays as it is.
    if failure is not None:
        cause = error_file.read_text().strip().splitlines()[0] if error_file.is_file() else ""
        raise PipelineError(cause or _first_logged_error(log_path) or f"{_plain(failure)} (task logs: {log_path})")

    markdown = _report_output(pipeline_root, "markdown")
    html = _report_output(pipeline_root, "html")
    _atomic_copy(markdown, run_dir / "report.md")
    _atomic_copy(html, run_dir / "report.html")
    # report.md names its figures by file name: they (and summary.json) go beside it.
    for extra in sorted(markdown.parent.glob("*.png")) + [markdown.parent / "summary.json"]:
        if extra.is_file():
            _atomic_copy(extra, run_dir / extra.name)
    from fewframes.components.steps import store_location

    stores = sorted(pipeline_root.glob("*/ingest-split/store"), key=lambda path: path.stat().st_mtime)
    models = {}
    for info_file in sorted(pipeline_root.glob("**/model.json")):
        if (info_file.parent.parent / TEACHERS_FILE).is_file():
            continue  # gather-teachers' copy of a teacher listed from its own training task
        info = read_model_info(info_file.parent)
        models[info["model_key"]] = str(info_file.parent / info["model_file"])
    summary = {
        "run_id": run_id,
        "pipeline": pipeline,
        "preset": preset,
        "run_dir": str(run_dir),
        "seconds": round(seconds, 1),
        "report": str(run_dir / "report.md"),
        "report_html": str(run_dir / "report.html"),
        "models": models,
        "store": store_location(stores[-1]) if stores else "",
        "classes": _store_classes(store_location(stores[-1])) if stores else {},
        "tracking_uri": uri,
        "experiment": experiment,
        "parent_run_id": parent_run_id,
        "pipeline_log": str(log_path),
        "arguments": {k: v for k, v in arguments.items() if k != "tracking_uri"},
    }
    write_bytes_atomic(run_dir / "run.json", json.dumps(summary, indent=2, default=str).encode())
    return summary


def _store_classes(store: str) -> dict[str, Any]:
    """Where the run's store took its class count from (``store.json`` ``classes``), {} if unreadable."""
    try:
        from fewframes.data.store import FrameStore

        return FrameStore.open(store).class_source
    except Exception:
        return {}


def _report_output(pipeline_root: Path, name: str) -> Path:
    """The report task's output file under kfp.local's root (``<root>/<pipeline run>/report/<name>``): the
    pipeline has no output of its own, since KFP allows none from inside its exit handler."""
    found = sorted(pipeline_root.glob(f"*/report/{name}"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise PipelineError(f"the report task wrote no {name} under {pipeline_root}")
    return found[-1]


_LOGGED_ERROR = re.compile(r"fewframes\.(?:errors\.\w+|config\.ConfigError): (.+)$")


def _first_logged_error(log_path: Path) -> str:
    """The first fewframes error a task logged (its one-line message), for a failure that did not reach the
    step error file (raised in a component's body around the step function); '' when there is none."""
    try:
        with log_path.open(errors="replace") as log:
            for line in log:
                found = _LOGGED_ERROR.search(line.rstrip("\n"))
                if found:
                    return found.group(1).strip()
    except OSError:
        pass
    return ""


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (kfp.local colours task names in its messages)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _without_retries(dag: Any) -> Any:
    """``dag`` with every task's retry policy removed, for kfp.local. The policies are for a cluster (a
    preempted node: retry after a backoff of minutes); on this machine a failed step fails the same way again
    (bad input, a dead MLflow server) and retrying only delays its one-line error by minutes.
    ``fewframes run --resume`` is the local way to go on after a failure."""
    spec = dag.pipeline_spec  # the GraphComponent's own proto: kfp.local executes this object
    for component in [spec.root, *spec.components.values()]:
        if component.WhichOneof("implementation") == "dag":
            for task in component.dag.tasks.values():
                task.ClearField("retry_policy")
    return dag


class OneWriterAtATime:
    """A text stream that several threads write to, one write at a time. kfp.local runs parallel loop
    iterations in threads that print and log to this process's stdout (RUN_DIR/pipeline.log); a TextIOWrapper
    is not safe for that: a full test run found raw memory bytes written into pipeline.log among two tasks'
    lines. Everything but write/flush is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        import threading

        self._stream = stream
        self._lock = threading.RLock()  # re-entrant: a signal handler may print in the middle of a write

    def write(self, text: str) -> int:
        with self._lock:
            return self._stream.write(text)

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def kfp_local_globals_kept(kfp_messages: TextIO) -> Iterator[None]:
    """Keep what kfp.local logs through the root logger in ``kfp_messages`` (RUN_DIR/pipeline.log) and off
    this process's stderr while the DAG runs; put back what it swaps process-wide when it ends (Ctrl-C too).

    kfp.local indents output by swapping ``builtins.print``, and wraps each task in a logging context that
    replaces the root logger's handlers with a StreamHandler on the ``sys.stdout`` of that moment (in
    ``fewframes run``, the log) at level INFO, then restores what it saw on entry. Parallel loop iterations
    run in threads, so these swaps overlap and unwind out of order:

    - an iteration that leaves first "restores" the root logger of before both while the other still runs.
      With no handler there (a CLI process configures no logging), the other's next record - "Task 'x'
      finished with status FAILURE" - makes ``logging.error`` call ``logging.basicConfig()``, which puts a
      handler on ``sys.stderr`` ("ERROR:root:Task ..." beside our one line) that every later swap keeps. So
      does any record kfp logs outside its contexts ("cache hit", "Cleaned up workspace") on an empty root.
      Here the root logger holds a handler on ``kfp_messages`` for the whole DAG, so what a swap restores
      is never empty, and ``sys.stderr`` is ``kfp_messages`` too, so a ``basicConfig()`` in the instant a
      swap has emptied the list (or Python's last-resort handler) still writes there;
    - an iteration "restores" another's handler on the log file and leaves it on the root logger after the
      file closed: every later log record in this process then failed with "--- Logging error ---
      ValueError: I/O operation on closed file" on stderr. Everything is put back as it was on entry.
    """
    kept = logging.StreamHandler(kfp_messages)
    kept.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    with root_logger_restored() as root:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.addHandler(kept)
        with contextlib.redirect_stderr(kfp_messages):
            yield


@contextlib.contextmanager
def root_logger_restored() -> Iterator[logging.Logger]:
    """The root logger for the block; its handlers, its level and ``builtins.print`` are put back as they were
    on entry, whatever the block (or kfp.local's swaps inside it) left."""
    import builtins

    root = logging.getLogger()
    real_print, handlers, level = builtins.print, root.handlers[:], root.level
    try:
        yield root
    finally:
        builtins.print = real_print
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@contextlib.contextmanager
def _quiet_kfp_warnings() -> Any:
    import warnings

    with warnings.catch_warnings():
        # The subprocess runner warns that our image name has no "python" in it: we run in this venv on purpose.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        # Display names only matter in the Kubeflow UI.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        yield


def mlflow_ui_hint(uri: str) -> str:
    """How to look at the runs of tracking ``uri``: a tracking server is its own UI (open its address);
    any other store (the local SQLite database) is opened with ``mlflow ui`` on it."""
    import shlex

    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (the tracking server is the MLflow UI)"
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"


# Models listed one per line up to this many; a bigger grid (the paper preset) prints the folder only.
_MODELS_LISTED = 12


def unique_name(prefix: str) -> str:
    """``PREFIX-YYYYmmdd-HHMMSS-xxxxxx``: a UTC second plus 6 random hex digits, so two runs started in the
    same second (two terminals, a script) still get different run ids, names and folders."""
    import secrets

    return f"{prefix}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def run_summary_lines(summary: dict[str, Any]) -> list[str]:
    """What ``fewframes run`` prints at the end: where the report, the models and the MLflow store are,
    and the command that opens the MLflow UI."""
    from fewframes.runs import local_artifact_root

    minutes, seconds = divmod(summary["seconds"], 60)
    models = summary["models"]
    lines = [
        f"fewframes run {summary['run_id']}: finished in {int(minutes)}m{seconds:04.1f}s",
        f"  report      {summary['report']}  (HTML: {summary['report_html']})",
        f"  models      {len(models)} under {summary['run_dir']}/kfp (all listed in {summary['run_dir']}/run.json)",
    ]
    if len(models) <= _MODELS_LISTED:
        width = max((len(key) for key in models), default=0)
        lines += [f"    {key:<{width}}  {path}" for key, path in sorted(models.items())]
    if summary.get("store"):  # what predict, benchmark and inspect read
        lines.append(f"  store       {summary['store']}  (read by predict --src, benchmark --store, data inspect)")
    if (summary.get("classes") or {}).get("note"):  # the class count was assumed: say so, once, with the fix
        lines.append(f"  {summary['classes']['note']}")
    uri = summary["tracking_uri"]
    if uri:
        lines.append(f"  MLflow      {uri}  experiment {summary['experiment']!r}, parent run {summary['parent_run_id']}")
        artifacts = local_artifact_root(uri)
        if artifacts is not None:
            lines.append(f"              artifacts (models, reports, figures) in {artifacts}")
    else:
        lines.append("  MLflow      tracking off (--tracking-uri '')")
    lines.append(f"  task logs   {summary['pipeline_log']}")
    if uri:
        lines.append(f"  MLflow UI   {mlflow_ui_hint(uri)}")
        view = models_view_hint(uri, summary["experiment"])
        if view:
            lines.append(f"  models      {view}  (one row per model: GAP, cost, k, loss...)")
    return lines


def models_view_hint(uri: str, experiment: str) -> str:
    """The MLflow UI page of the experiment's models view (``fewframes.tracking.MODELS_VIEW``); a local
    store's address is where ``mlflow ui`` serves by default. '' when the experiment cannot be read."""
    try:
        import mlflow

        found = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception:  # the run is over; a store that cannot be read now only loses this line
        return ""
    if found is None:
        return ""
    from fewframes.tracking import models_view_url

    ui = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return models_view_url(ui, found.experiment_id)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        given = [flag for flag, value in (("--out", args.out), ("--param", args.param), ("--tracking-uri", args.tracking_uri))
                 if value]
        if given:
            raise PipelineError(f"--resume takes the run's own settings; drop {', '.join(given)}")
    summary = run_local(
        resume=args.resume,
        preset=args.preset,
        pipeline=args.pipeline,
        out=args.out,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        params=args.param,
        quiet_log=not args.verbose,
    )
    print("\n".join(run_summary_lines(summary)))
    return 0


# ----------------------------------------------------------------------------------------------------------
# fewframes compile
# ----------------------------------------------------------------------------------------------------------


def gpu_settings_from_args(args: argparse.Namespace) -> Any:
    """GpuSettings from the --gpus/--accelerator/... flags (defaults: ``fewframes.cluster.DEFAULT_GPU``)."""
    from fewframes.cluster import DEFAULT_GPU

    changes = {}
    for flag, field in (
        ("gpus", "gpus"),
        ("accelerator", "accelerator_type"),
        ("cpu_request", "cpu_request"),
        ("memory_request", "memory_request"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            changes[field] = value
    if getattr(args, "spot", False):
        changes["spot"] = True
    if changes.get("gpus", DEFAULT_GPU.gpus) < 0:
        raise PipelineError(f"--gpus must be >= 0, got {changes['gpus']}")
    return DEFAULT_GPU.replace(**changes)


def _add_gpu_flags(parser: argparse.ArgumentParser) -> None:
    from fewframes.cluster import DEFAULT_GPU

    group = parser.add_argument_group("GPU node pool (training and benchmark tasks)")
    group.add_argument("--gpus", type=int, help=f"GPUs per task; 0 = CPU-only pipeline (default {DEFAULT_GPU.gpus})")
    group.add_argument("--accelerator", help=f"GKE accelerator type (default {DEFAULT_GPU.accelerator_type})")
    group.add_argument("--cpu-request", help=f"CPU request per GPU task (default {DEFAULT_GPU.cpu_request})")
    group.add_argument("--memory-request", help=f"memory request per GPU task (default {DEFAULT_GPU.memory_request})")
    group.add_argument(
        "--spot", action="store_true",
        help=f"run GPU tasks on the spot pool ({DEFAULT_GPU.spot_node_pool}; cheaper, preemptible: retried tasks "
        f"resume from their checkpoints) instead of the on-demand one ({DEFAULT_GPU.node_pool})",
    )  # fmt: skip
    parser.add_argument(
        "--image-lock",
        default=None,
        metavar="FILE",
        help="name the images by digest from this lock (containers/build.sh --push writes "
        "containers/images.lock.json; default $FEWFRAMES_IMAGE_LOCK, else by tag)",
    )
    parser.add_argument(
        "--pipeline-root",
        default=None,
        help="where KFP keeps the run's artifacts, e.g. gs://BUCKET/kfp (Terraform output pipeline_root; "
        "default $FEWFRAMES_PIPELINE_ROOT, else the backend's in-cluster store)",
    )


def _pipeline_root(args: argparse.Namespace) -> str:
    """--pipeline-root, else $FEWFRAMES_PIPELINE_ROOT (fewframes.cluster.PIPELINE_ROOT), checked."""
    from fewframes.cluster import PIPELINE_ROOT
    from fewframes.pipelines.dag import check_pipeline_root

    return check_pipeline_root(args.pipeline_root if args.pipeline_root is not None else PIPELINE_ROOT)


def _image_lock(args: argparse.Namespace) -> dict[str, str] | None:
    """--image-lock FILE (else $FEWFRAMES_IMAGE_LOCK): the images by digest; None: by tag."""
    from fewframes.cluster import IMAGE_LOCK_ENV, read_image_lock

    path = args.image_lock if args.image_lock is not None else os.environ.get(IMAGE_LOCK_ENV, "")
    return read_image_lock(path) if path else None


def _cmd_compile(args: argparse.Namespace) -> int:
    from fewframes.fsio import check_output_file
    from fewframes.pipelines.dag import compile_pipeline

    check_output_file(args.out, "--out")
    gpu = gpu_settings_from_args(args)
    path = compile_pipeline(args.pipeline, args.out, args.preset, gpu, _pipeline_root(args), _image_lock(args))
    where = f"GPU x{gpu.gpus} {gpu.accelerator_type}" if gpu.enabled else "CPU only"
    print(f"compiled pipeline {args.pipeline!r} ({args.preset} sizes, {where}) to {path}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# fewframes submit
# ----------------------------------------------------------------------------------------------------------


def check_host(host: str, timeout_s: float = 5.0) -> None:
    """One quick request to the KFP API's healthz: any HTTP answer proves the host is there.

    (kfp.Client retries an unreachable host for about half a minute before failing with a traceback.)
    """
    import urllib.error
    import urllib.request

    if not host.startswith(("http://", "https://")):
        raise PipelineError(f"--host {host}: expected an http(s):// URL")
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # it answered (perhaps 401/403 before auth): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(f"--host {host}: Kubeflow Pipelines API unreachable ({reason})") from None


def submit(
    host: str,
    pipeline: str = "distill",
    preset: str = "demo",
    experiment: str = "fewframes",
    run_name: str | None = None,
    params: list[str] | None = None,
    gpu: Any = None,
    tracking_uri: str | None = None,
    token: str | None = None,
    watch: bool = False,
    poll_s: float = 10.0,
    timeout_s: float | None = None,
    on_submitted: Any = None,
    pipeline_root: str | None = None,
    image_lock: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Compile and submit a run to the KFP host; returns ``run_id``, ``url``, ``tracking_uri`` and (with
    ``watch``) ``state``.

    MLflow: ``tracking_uri`` as the cluster's pods see it; by default the project's in-cluster server
    (``fewframes.cluster.MLFLOW_TRACKING_URI``, deployed by ``infra/``), '' switches tracking off.
    ``pipeline_root``: where KFP keeps the artifacts (``gs://BUCKET/kfp``; None: ``FEWFRAMES_PIPELINE_ROOT``).
    ``on_submitted(outcome)`` is called as soon as the run exists, before any watching, so the run's link
    is shown while a long run is followed.
    """
    import tempfile

    from fewframes.cluster import DEFAULT_GPU, MLFLOW_TRACKING_URI
    from fewframes.pipelines.dag import compile_pipeline, parameter_defaults

    defaults = parameter_defaults(pipeline, preset)
    arguments = parse_params(params or [], defaults)
    _expected_tasks({**defaults, **arguments})  # a bad grid fails here, not on the cluster
    arguments.setdefault("experiment", experiment)
    if tracking_uri is not None:
        arguments["tracking_uri"] = tracking_uri
    arguments.setdefault("tracking_uri", MLFLOW_TRACKING_URI)  # unless --param tracking_uri= said otherwise
    name = run_name or unique_name(f"{pipeline}-{preset}")
    arguments.setdefault("run_name", name)
    if pipeline_root is None:
        from fewframes.cluster import PIPELINE_ROOT

        pipeline_root = PIPELINE_ROOT
    check_host(host)

    import kfp

    with tempfile.TemporaryDirectory() as scratch:
        package = compile_pipeline(
            pipeline, os.path.join(scratch, f"{pipeline}.yaml"), preset, gpu or DEFAULT_GPU, pipeline_root, image_lock
        )
        try:
            client = kfp.Client(host=host, existing_token=token)
            with contextlib.redirect_stdout(sys.stderr):  # kfp prints its own links; ours go to stdout
                result = client.create_run_from_pipeline_package(
                    package, arguments=arguments, run_name=name, experiment_name=experiment
                )
        except Exception as exc:  # kfp_server_api.ApiException and connection errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PipelineError(f"--host {host}: submitting the run failed: {first}") from None
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    outcome = {
        "run_id": result.run_id, "url": url, "run_name": name, "experiment": experiment,
        "tracking_uri": arguments["tracking_uri"],
    }  # fmt: skip
    if on_submitted is not None:
        on_submitted(outcome)
    if watch:
        outcome["state"] = watch_run(client, result.run_id, poll_s=poll_s, timeout_s=timeout_s)
    return outcome


def watch_run(client: Any, run_id: str, poll_s: float = 10.0, timeout_s: float | None = None) -> str:
    """Follow a run to its end with a rich progress display (pipeline tasks done / seen, and the running ones by
    display name: ``fewframes.cli.progress.cluster_tasks``); returns the final state. Not on a terminal, each
    change of the running tasks is also one plain line, as ``fewframes run`` writes its events."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from fewframes.cli.progress import _duration, cluster_tasks

    started = time.monotonic()
    state = "PENDING"
    shown = ""
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tasks"),
        TimeElapsedColumn(), console=None, transient=False,
    ) as progress:
        bar = progress.add_task(f"run {run_id}: {state}", total=None)
        while True:
            try:
                run = client.get_run(run_id)
            except Exception as exc:
                raise PipelineError(f"watching run {run_id} failed: {str(exc).splitlines()[0]}") from None
            state = str(run.state or "PENDING")
            tasks = cluster_tasks(run)
            running = tasks.running_text()
            progress.update(bar, description=f"run {run_id}: {state}" + (f" - running {running}" if running else ""),
                            completed=tasks.done, total=max(tasks.seen, tasks.done) or None)
            if running != shown and not progress.console.is_terminal:
                progress.console.print(f"[{_duration(time.monotonic() - started):>6}] running {running or '-'}  "
                                       f"[{tasks.done}/{tasks.seen} tasks done]", markup=False, highlight=False)
            shown = running
            if state in TERMINAL_STATES:
                break
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise PipelineError(f"--watch: run {run_id} still {state} after {timeout_s:.0f} s")
            time.sleep(poll_s)
    return state


def _print_submitted(outcome: dict[str, Any]) -> None:
    print(f"submitted run {outcome['run_name']} ({outcome['run_id']}) to experiment {outcome['experiment']!r}")
    print(f"  {outcome['url']}")
    uri = outcome["tracking_uri"]
    print(f"  MLflow {uri} (as the cluster sees it)" if uri else "  MLflow tracking off (--tracking-uri '')", flush=True)


def _cmd_submit(args: argparse.Namespace) -> int:
    gpu = gpu_settings_from_args(args)
    outcome = submit(
        args.host,
        pipeline=args.pipeline,
        preset=args.preset,
        experiment=args.experiment,
        run_name=args.run_name,
        params=args.param,
        gpu=gpu,
        tracking_uri=args.tracking_uri,
        token=args.token,
        watch=args.watch,
        poll_s=args.poll,
        on_submitted=_print_submitted,
        pipeline_root=_pipeline_root(args),
        image_lock=_image_lock(args),
    )
    if args.watch:
        print(f"  finished: {outcome['state']}")
        return 0 if outcome["state"] == "SUCCEEDED" else 1
    return 0


# ----------------------------------------------------------------------------------------------------------
# fewframes compare
# ----------------------------------------------------------------------------------------------------------


def default_compare_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the newest local run's database under ./runs."""
    from fewframes.runs import local_tracking_uri

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    databases = sorted(Path(DEFAULT_RUNS_DIR).glob("*/mlflow.db"), key=lambda p: p.stat().st_mtime)
    if not databases:
        raise PipelineError("--tracking-uri not given, MLFLOW_TRACKING_URI unset and no runs/*/mlflow.db found")
    return local_tracking_uri(databases[-1].parent)


# (row field, header) of the terminal table; the CSV keeps the field names and adds run ids.
COMPARE_TABLE: tuple[tuple[str, str], ...] = (
    ("family", "family"),
    ("role", "role"),
    ("control", "control"),
    ("k", "k"),
    ("frame_selection", "selection"),
    ("loss", "loss"),
    ("mode", "mode"),
    ("matching", "matching"),
    ("train_fraction", "fraction"),
    ("seed", "seed"),
    ("gap", "GAP"),
    ("map", "mAP"),
    ("hit_at_1", "Hit@1"),
    ("perr", "PERR"),
    ("gflops", "GFLOPs"),
    ("latency_ms_p50", "latency p50 ms"),
    ("pipeline_run", "pipeline run"),
)
_NUMERIC = {"k", "train_fraction", "seed", "gap", "map", "hit_at_1", "perr", "gflops", "latency_ms_p50"}


def compare_table(rows: list[dict[str, Any]], title: str) -> Any:
    """The rich Table ``fewframes compare`` prints: one row per evaluated model, in ``rows``' order."""
    from rich.table import Table

    table = Table(title=title)
    for field, header in COMPARE_TABLE:
        # Never squeeze a cell into "0.…": a table wider than the terminal wraps as whole lines instead.
        table.add_column(header, justify="right" if field in _NUMERIC else "left", no_wrap=True)
    for row in rows:
        table.add_row(*[_format(row.get(field)) for field, _ in COMPARE_TABLE])
    return table


def _cmd_compare(args: argparse.Namespace) -> int:
    from fewframes.cli import print_rich_table
    from fewframes.runs import COMPARE_COLUMNS, check_tracking, compare_rows, write_rows_csv

    uri = args.tracking_uri or default_compare_uri()
    check_tracking(uri)
    rows = compare_rows(uri, args.experiment, args.metric)
    print_rich_table(compare_table(rows, f"{args.experiment} at {uri}: {len(rows)} evaluated models, by {args.metric}"))
    if args.csv:
        write_rows_csv(rows, args.csv, COMPARE_COLUMNS + ("perr", "latency_ms_p95", "num_parameters"))
        print(f"wrote {len(rows)} rows to {args.csv}")
    return 0


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        # Four decimals for scores; small costs (a tiny model's GFLOPs) keep three significant digits.
        return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"
    return str(value)


# ----------------------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    from fewframes.config import PRESETS
    from fewframes.pipelines import PIPELINE_NAMES

    presets = list(PRESETS)
    run = subparsers.add_parser("run", help="run the whole pipeline locally (kfp.local, this environment)")
    run.add_argument("--preset", choices=presets, default="demo", help="sizes and bundled data (default demo)")
    run.add_argument("--pipeline", choices=PIPELINE_NAMES, default="distill", help="which DAG (default distill)")
    run.add_argument("--out", help="run folder (default runs/<pipeline>-<preset>-<UTC time>)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUN_DIR/mlflow.db; '' = off)")
    run.add_argument("--experiment", default="fewframes", help="MLflow experiment (default fewframes)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="override a pipeline parameter")
    run.add_argument("--verbose", action="store_true", help="show KFP's task logs here, not only in RUN_DIR/pipeline.log")
    run.add_argument(
        "--resume", metavar="RUN_DIR",
        help="go on with an interrupted run: finished steps are reused, cut-short training resumes from its checkpoint",
    )
    run.set_defaults(handler=_cmd_run)

    comp = subparsers.add_parser("compile", help="compile a pipeline to IR YAML for the Kubeflow UI")
    comp.add_argument("--pipeline", choices=PIPELINE_NAMES, default="distill")
    comp.add_argument("--preset", choices=presets, default="demo", help="parameter defaults (default demo)")
    comp.add_argument("--out", required=True, help="FILE.yaml")
    _add_gpu_flags(comp)
    comp.set_defaults(handler=_cmd_compile)

    sub = subparsers.add_parser("submit", help="compile and submit a run to a Kubeflow Pipelines host")
    sub.add_argument("--host", required=True, help="KFP API URL, e.g. https://HOST/pipeline")
    sub.add_argument("--pipeline", choices=PIPELINE_NAMES, default="distill")
    sub.add_argument("--preset", choices=presets, default="demo")
    sub.add_argument("--experiment", default="fewframes", help="KFP (and MLflow) experiment")
    sub.add_argument("--run-name", help="run name (default <pipeline>-<preset>-<UTC time>)")
    sub.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="override a pipeline parameter")
    sub.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI as the cluster sees it (default: the in-cluster server of infra/, "
        "fewframes.cluster.MLFLOW_TRACKING_URI; '' = off)",
    )
    sub.add_argument("--token", help="bearer token (default: kfp.Client's own discovery)")
    sub.add_argument("--watch", action="store_true", help="follow the run to its end")
    sub.add_argument("--poll", type=float, default=10.0, help="seconds between status polls with --watch")
    _add_gpu_flags(sub)
    sub.set_defaults(handler=_cmd_submit)

    cmp_ = subparsers.add_parser("compare", help="the evaluated models of an MLflow experiment side by side")
    cmp_.add_argument("--experiment", default="fewframes")
    cmp_.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI, else the newest runs/*/mlflow.db")
    cmp_.add_argument("--metric", default="gap", help="sort by this metric (default gap)")
    cmp_.add_argument("--csv", help="also write the table to this CSV file")
    cmp_.set_defaults(handler=_cmd_compare)
