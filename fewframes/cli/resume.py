"""``fewframes run --resume RUN_DIR``: what a local run records so that it can go on after an interruption,
the processes of a run (stopped on Ctrl-C/SIGTERM, by a watchdog when ``fewframes run`` itself is killed,
and before a resume), and the kfp.local behaviour a resume relies on (docs/faults.md, "Resume").

How a resume works: every ``fewframes run`` enables kfp.local's task cache in ``RUN_DIR/kfp-cache`` and
records its arguments, MLflow store and parent run in ``RUN_DIR/resume.json``. A resume runs the DAG again
with the same arguments, writing into the interrupted attempt's own output folder, so every task that
finished is a cache hit (its key holds its inputs, artifact paths included) and a training task that was
cut short runs again in the same folder and resumes from its checkpoints.

That relies on two kfp.local internals, checked before a resume starts (:func:`kfp_local_problem`; written
against kfp 2.17.3, where the local task cache first appeared):

1. kfp.local names a run's output folder (``<pipeline>-<time>``) in ONE function,
   ``kfp.local.executor_input_utils.get_local_pipeline_resource_name``, looked up through its module when a
   pipeline starts: a resume replaces it for the run (:func:`pinned_pipeline_folder`).
2. A cache entry is a JSON file ``<key>.json`` whose artifacts carry ``schema_title`` and ``uri``, and an entry
   whose local artifact file is missing counts as a miss. A ``system.Metrics`` output has no file (its figures
   live in the entry), so a resume gives each an empty one first (:func:`restore_metrics_files`).

Processes are found through ``/proc`` (Linux): every process a run starts inherits ``FEWFRAMES_RUN_DIR`` and
``FEWFRAMES_RUN_ATTEMPT`` in its environment. Elsewhere nothing is found and nothing is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fewframes.errors import PipelineError

RESUME_FILE = "resume.json"  # written when a local run starts: what `fewframes run --resume` needs
KFP_CACHE = "kfp-cache"  # kfp.local's task cache, RUN_DIR/kfp-cache: the finished tasks a resume reuses
RUN_DIR_ENV = "FEWFRAMES_RUN_DIR"  # in the environment of every process a run starts: how leftovers are found
ATTEMPT_ENV = "FEWFRAMES_RUN_ATTEMPT"  # ... and which attempt (a fresh start or one resume) started it
KFP_WRITTEN_FOR = "2.17.3"  # the kfp release whose kfp.local internals the resume was written against
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL for what is still there after this long


# ----------------------------------------------------------------------------------------------------------
# kfp.local internals
# ----------------------------------------------------------------------------------------------------------


def kfp_local_problem() -> str:
    """'' when the installed kfp.local behaves as the resume needs; otherwise what is missing or changed.

    Checked by behaviour, not by version number: a cache entry is written and read back through kfp's own
    ``LocalCache``, with and without its Metrics file, and through :func:`restore_metrics_files`."""
    import inspect
    import tempfile

    try:
        import kfp
        from kfp import dsl, local
        from kfp.local import cache, executor_input_utils, pipeline_orchestrator
    except ImportError as exc:
        return f"cannot import kfp.local ({exc})"
    version = getattr(kfp, "__version__", "?")
    parameters = inspect.signature(local.init).parameters
    if "enable_caching" not in parameters or "cache_root" not in parameters:
        return f"kfp {version}: kfp.local.init has no enable_caching/cache_root (the local task cache came in kfp 2.17)"
    name_function = getattr(executor_input_utils, "get_local_pipeline_resource_name", None)
    if not callable(name_function):
        return f"kfp {version}: kfp.local.executor_input_utils.get_local_pipeline_resource_name is gone"
    callers = [
        value for value in vars(pipeline_orchestrator).values()
        if inspect.isfunction(value) and "get_local_pipeline_resource_name" in value.__code__.co_names
    ]  # fmt: skip
    if not callers:
        return f"kfp {version}: kfp.local's pipeline orchestrator no longer names its output folder with get_local_pipeline_resource_name"
    with tempfile.TemporaryDirectory(prefix="fewframes-kfp-check-") as scratch:
        try:
            local_cache = cache.LocalCache(cache_root=os.path.join(scratch, "cache"))
            metrics_file = Path(scratch, "step", "metrics")
            metrics_file.parent.mkdir()
            metrics = dsl.Metrics(name="metrics", uri=str(metrics_file), metadata={"gap": 0.5})
            key = local_cache.compute_key("check", "image", ["python"], {"x": 1})
            local_cache.put(key, {"metrics": metrics})
            if local_cache.get(key) is not None:
                return f"kfp {version}: kfp.local's cache no longer treats an entry with a missing artifact file as a miss"
            if restore_metrics_files(Path(local_cache.cache_root)) != 1:
                return f"kfp {version}: kfp.local's cache entries changed format (no schema_title/uri for a Metrics output)"
            found = local_cache.get(key)
        except Exception as exc:  # noqa: BLE001 - any change in these internals is reported the same way
            return f"kfp {version}: kfp.local's cache changed ({type(exc).__name__}: {exc})"
        if not found or getattr(found.get("metrics"), "metadata", None) != {"gap": 0.5}:
            return f"kfp {version}: kfp.local's cache no longer hands back a cached Metrics output"
    return ""


def require_kfp_local(run_dir: str | os.PathLike[str]) -> None:
    """One line (exit 2) when the installed kfp.local cannot resume a run."""
    problem = kfp_local_problem()
    if problem:
        raise PipelineError(
            f"--resume {run_dir}: {problem}; the resume relies on kfp.local internals as of kfp {KFP_WRITTEN_FOR} "
            f"(pip install 'kfp=={KFP_WRITTEN_FOR}')"
        )


@contextlib.contextmanager
def pinned_pipeline_folder(name: str | None) -> Iterator[None]:
    """Make kfp.local write into the existing output folder ``name`` instead of a new timestamped one, so
    every task's inputs (artifact paths) are those of the interrupted attempt and its cache entries match."""
    if name is None:
        yield
        return
    from unittest import mock

    from kfp.local import executor_input_utils

    with mock.patch.object(executor_input_utils, "get_local_pipeline_resource_name", lambda pipeline_name: name):
        yield


def restore_metrics_files(cache_root: Path) -> int:
    """Give every ``system.Metrics`` output in the cache an (empty) file; returns how many were made.

    A Metrics artifact is metadata only (the figures travel in the cache entry itself) and the steps never
    write its file, but kfp.local's cache treats an entry whose local artifact file is missing as a miss:
    without this every task with a metrics output (ingest, training, evaluation) would run again."""
    made = 0
    for entry in cache_root.glob("*.json"):
        try:
            outputs = json.loads(entry.read_text())
        except (OSError, ValueError):
            continue
        for value in outputs.values() if isinstance(outputs, dict) else ():
            artifacts = value.get("artifacts", []) if isinstance(value, dict) and "artifacts" in value else [value]
            for artifact in artifacts:
                if not isinstance(artifact, dict) or artifact.get("schema_title") != "system.Metrics":
                    continue
                uri = Path(str(artifact.get("uri", "")))
                if uri.is_absolute() and not uri.exists() and uri.parent.is_dir():
                    uri.touch()
                    made += 1
    return made


# ----------------------------------------------------------------------------------------------------------
# the run folder
# ----------------------------------------------------------------------------------------------------------


def read_resume_state(run_dir: str) -> dict[str, Any]:
    """What ``fewframes run`` recorded when RUN_DIR started; one line when it cannot be resumed."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise PipelineError(f"--resume {run_dir}: no such run folder")
    if (folder / "run.json").is_file():
        raise PipelineError(f"--resume {run_dir}: the run finished (run.json is there); nothing to resume")
    try:
        state = json.loads((folder / RESUME_FILE).read_text())
        state["arguments"]["parent_run_id"]  # noqa: B018 - the fields a resume needs
        state["preset"], state["pipeline"], state["run_id"], state["tracking_uri"], state["experiment"]  # noqa: B018
    except FileNotFoundError:
        raise PipelineError(f"--resume {run_dir}: not a `fewframes run` folder (no {RESUME_FILE})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"--resume {run_dir}: {RESUME_FILE} is damaged ({exc})") from None
    return state


def interrupted_pipeline_folder(pipeline_root: Path) -> str | None:
    """The name kfp.local gave the interrupted attempt's output folder (``fewframes-distill-<time>``)."""
    found = [p.name for p in pipeline_root.glob("*") if p.is_dir() and not p.name.startswith(".")]
    if len(found) > 1:
        raise PipelineError(f"--resume {pipeline_root.parent}: {len(found)} pipeline folders under {pipeline_root}; expected one")
    return found[0] if found else None  # interrupted before kfp made one: a fresh start in the same run


# fsio's staged writes (.NAME.tmp-XXXXXXXX, .NAME.old-/.parts- of a store), kfp.local's cache entries being
# written (.kfp_cache_XXXX.tmp) and checkpoints being written (.ckpt-N.pt.XXXX.tmp).
_STALE = re.compile(r"^\..+\.(?:tmp|old|parts)-[0-9a-f]{8}$|^\.kfp_cache_.+\.tmp$|^\.ckpt-.+\.tmp$")


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove what writes cut short by a kill left anywhere in ``run_dir`` (only a resume calls this: no
    process of the run is alive then); returns what was removed. A store's ``.old-`` copy with nothing in its
    place (a kill between the two renames of a replacement) is moved back instead."""
    from fewframes import fsio

    removed: list[Path] = []
    for found in sorted(run_dir.rglob(".*")):
        if not _STALE.match(found.name) or not os.path.lexists(found):
            continue
        kept = re.match(r"^\.(.+)\.(?:tmp|old|parts)-[0-9a-f]{8}$", found.name)
        if kept:
            removed += fsio.remove_stale_temporaries(found.with_name(kept.group(1)))
        elif found.is_file():
            found.unlink(missing_ok=True)
            removed.append(found)
    return removed


# ----------------------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]; [] when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start(pid: int) -> int:
    """When ``pid`` started (clock ticks since boot; 0 when unknown): a pid with another start is another process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else 0


def descendants(root: int) -> list[int]:
    """Process ids under ``root`` (children first level first), from /proc; [] where there is no /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(int(entry.name))
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        frontier = [child for pid in frontier for child in children.get(pid, [])]
        found += frontier
    return found


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own children, or they stay as zombies that look alive
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def processes_of_run(run_dir: str | os.PathLike[str], attempt: str | None = None) -> list[int]:
    """The live processes started by a ``fewframes run`` of ``run_dir`` (of one ``attempt``, or of any),
    found by the variables every one inherits; this process excluded."""
    wanted = {f"{RUN_DIR_ENV}={Path(run_dir).resolve()}".encode()}
    if attempt is not None:
        wanted.add(f"{ATTEMPT_ENV}={attempt}".encode())
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            environment = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= environment and alive(pid):
            found.append(pid)
    return found


def stop_processes(pids: list[int], grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those still there after ``grace_s``; returns them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for pid in left if alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


def stop_child_processes(grace_s: float = STOP_GRACE_S, keep: frozenset[int] = frozenset()) -> list[int]:
    """Stop every descendant of this process (the KFP steps and what they started) but ``keep``; returns
    the ids signalled. Ctrl-C reaches the whole terminal process group, but a SIGTERM sent to
    ``fewframes run`` alone does not: without this its steps would run on."""
    kept = set(keep)
    for pid in list(kept):
        kept.update(descendants(pid))
    return stop_processes([pid for pid in descendants(os.getpid()) if pid not in kept], grace_s)


def attempt_record(attempt: str, watchdog: int = 0) -> dict[str, Any]:
    """Who runs this attempt (kept in resume.json): a resume refuses while it is alive."""
    record = {"attempt": attempt, "pid": os.getpid(), "start": process_start(os.getpid())}
    if watchdog:
        record.update(watchdog_pid=watchdog, watchdog_start=process_start(watchdog))
    return record


def _same_process_alive(pid: int, start: int) -> bool:
    return bool(pid) and alive(pid) and process_start(pid) == start


def prepare_resume(run_dir: Path, state: dict[str, Any]) -> list[str]:
    """Before a resume: refuse while the interrupted attempt still runs; stop what it left running (a
    ``fewframes run`` killed with SIGKILL leaves its steps running until its watchdog stops them, or for good
    when the watchdog was killed too); end the MLflow child runs it left RUNNING; remove the temporaries of
    writes it cut short. Returns the notices to print (one line each)."""
    record = state.get("last_attempt") or {}
    if _same_process_alive(int(record.get("pid", 0)), int(record.get("start", 0))):
        raise PipelineError(
            f"--resume {run_dir}: the run is still going (fewframes run, process {record['pid']}); "
            "stop it first (Ctrl-C) or let it finish"
        )
    watchdog, deadline = int(record.get("watchdog_pid", 0)), time.monotonic() + 2 * STOP_GRACE_S + 20
    while _same_process_alive(watchdog, int(record.get("watchdog_start", 0))) and time.monotonic() < deadline:
        time.sleep(0.2)  # it is stopping the killed attempt's steps and closing its MLflow runs
    notices = []
    leftovers = processes_of_run(run_dir)
    if leftovers:
        stop_processes(leftovers)
        notices.append(f"stopped {len(leftovers)} process(es) the interrupted attempt left running")
    from fewframes.runs import end_stale_child_runs

    ended = end_stale_child_runs(state["tracking_uri"], state["arguments"]["parent_run_id"])
    if ended:
        notices.append(f"ended {ended} MLflow child run(s) the interruption left RUNNING (status KILLED)")
    removed = remove_stale_temporaries(run_dir)
    if removed:
        notices.append(f"removed {len(removed)} temporary file(s) of writes cut short by the interruption")
    return notices


# ----------------------------------------------------------------------------------------------------------
# the watchdog: what a SIGKILL of `fewframes run` would leave behind
# ----------------------------------------------------------------------------------------------------------

_DONE = b"done\n"


class Watchdog:
    """A small process that outlives ``fewframes run``: when the run ends without saying so (SIGKILL, the
    OOM killer: no clean-up code runs), it stops the run's processes, ends the MLflow parent run (and its
    RUNNING children) KILLED and prints one line. It learns of the death from its stdin, a pipe only the run
    holds: the kernel closes it whatever kills the run."""

    def __init__(self, run_dir: Path, attempt: str, uri: str, parent_run_id: str) -> None:
        environment = {k: v for k, v in os.environ.items() if k not in (RUN_DIR_ENV, ATTEMPT_ENV)}
        request = json.dumps({"run_dir": str(run_dir), "attempt": attempt, "uri": uri, "parent_run_id": parent_run_id})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fewframes.cli.resume", request], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, env=environment,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def done(self) -> None:
        """The run cleaned up after itself: the watchdog ends without doing anything."""
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.write(_DONE)
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _watch(request: dict[str, Any]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it then says "done"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.stdin.buffer.read() == _DONE:
        return 0
    run_dir = request["run_dir"]
    stopped = stop_processes(processes_of_run(run_dir, request["attempt"]))
    try:
        from fewframes.runs import close_parent_run

        close_parent_run(request["uri"], request["parent_run_id"], "KILLED", "fewframes run was killed")
    except Exception as exc:  # noqa: BLE001 - e.g. the server is gone too; the line below still matters
        print(f"fewframes: warning: could not close the MLflow parent run: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
    print(f"fewframes: the run was killed; stopped {len(stopped)} of its processes; "
          f"`fewframes run --resume {run_dir}` goes on with it", file=sys.stderr)
    return 0


def new_attempt() -> str:
    return secrets.token_hex(4)


if __name__ == "__main__":
    sys.exit(_watch(json.loads(sys.argv[1])))
