"""Warm steps for local runs: one process imports torch, mlflow and the library once; every step of a
``fewframes run`` then runs in a fork of it instead of importing them again (issue 11).

Under ``kfp.local`` each step is a fresh interpreter that imports torch (~1.7 CPU-s), mlflow (~1.3) and
SQLAlchemy's MLflow store (~0.7) before its work: most of the CPU of a small run. ``fewframes run`` starts
this module as a server (``warm_steps``) and puts its socket in ``FEWFRAMES_WARM_STEPS``; a step function
decorated with ``reports_errors`` then sends its arguments, environment, working folder and stdout/stderr
file descriptors to the server, which forks; the child runs the step with the step's own descriptors,
environment and folder, sends back the result (or the exception) and ends with ``os._exit``. The step's
process (kfp's executor) writes its outputs as usual, so KFP sees no difference. Without the variable
(a cluster, the tests, a step run by hand) or when the server cannot be reached, the step runs in its own
process as before.

Fork safety (Linux only): the server only imports modules (no torch op, no thread pool, no MLflow store or engine, no
CUDA; MLflow's telemetry threads off), as PyTorch's DataLoader workers are forked after the same imports.
TensorFlow (ingest only) is not preloaded: it is not fork-safe. The server reaps every child and is waited
for by ``fewframes run``, so the children's CPU time is counted in the run's own (``getrusage``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

SOCKET_ENV = "FEWFRAMES_WARM_STEPS"
# "1": no warm server; every step imports what it needs in its own process (as before issue 11).
COLD_ENV = "FEWFRAMES_COLD_STEPS"
# What the steps' bodies import (components/steps/*.py); each child finds them loaded.
PRELOAD = (
    "torch",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "fewframes.components.steps",
    "fewframes.data.ingest",
    "fewframes.data.split",
    "fewframes.data.store",
    "fewframes.data.synth",
    "fewframes.training",
    "fewframes.evaluation",
    "fewframes.benchmark",
    "fewframes.report",
    "fewframes.runs",
    "fewframes.tracking",
    # What the steps' work imports lazily, measured with FEWFRAMES_STEP_PROFILE (benchmarks/README.md):
    # torch.use_deterministic_algorithms (every training step) and FlopCounterMode (benchmark) import
    # torch._inductor.config, which pulls in torch._dynamo (about 1 CPU-second); logging a model imports
    # MLflow's pyfunc flavour; logging a dataset input MLflow's pandas dataset.
    "torch._inductor.config",
    "mlflow.pyfunc",
    "mlflow.data.pandas_dataset",
    # Opening the SQLite store (alembic's config), reading the split and store index (pyarrow's dataset
    # layer, its pandas conversion).
    "alembic.config",
    "alembic.command",
    "pyarrow.dataset",
    "pyarrow.pandas_compat",
)
READY = b"ready\n"
_STEPS_CPU = "steps_cpu_s"
# Diagnostics (benchmarks/README.md): a file each step's fork appends one JSON line to (the step, its CPU and
# wall seconds), and a folder each fork writes a cProfile of its step into.
STEP_TIMES_ENV = "FEWFRAMES_STEP_TIMES"
STEP_PROFILE_ENV = "FEWFRAMES_STEP_PROFILE"
_HEADER = struct.Struct("!Q")
_in_child = False


def enabled() -> bool:
    """True in a step process of a run with a warm server (never inside the server's own children)."""
    return bool(os.environ.get(SOCKET_ENV)) and not _in_child


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def call(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """Run the step ``function`` (a module-level, ``reports_errors``-decorated function) in a fork of the
    warm server with these arguments: ``(True, its result)``, or its exception raised here; ``(False,
    None)`` when the server cannot be reached (the caller runs the step itself)."""
    from fewframes.errors import PipelineError

    request = pickle.dumps((function.__module__, function.__qualname__, args, kwargs, dict(os.environ), os.getcwd()))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.environ[SOCKET_ENV])
    except OSError as exc:
        sock.close()
        print(f"fewframes: warm step server unreachable ({exc}); running the step in this process", file=sys.stderr)
        return False, None
    with sock:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        socket.send_fds(sock, [_HEADER.pack(len(request))], [sys.stdout.fileno(), sys.stderr.fileno()])
        sock.sendall(request)
        try:
            size = _HEADER.unpack(_receive_exactly(sock, _HEADER.size))[0]
            status, value, text = pickle.loads(_receive_exactly(sock, size))
        except EOFError:
            raise PipelineError(f"step {function.__qualname__}: its process in the warm step server ended without a result") from None
    if status == "ok":
        return True, value
    if isinstance(value, BaseException):
        raise value
    raise PipelineError(text)


def _run_child(conn: socket.socket) -> None:
    """In the forked child: take over the step's descriptors, environment and folder, run it, reply, exit."""
    global _in_child
    _in_child = True
    exit_status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 2)
        request = _receive_exactly(conn, _HEADER.unpack(header)[0])
        for target, fd in zip((1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        module, qualname, args, kwargs, environment, cwd = pickle.loads(request)
        os.environ.clear()
        os.environ.update(environment)
        os.chdir(cwd)
        function: Any = importlib.import_module(module)
        for name in qualname.split("."):
            function = getattr(function, name)
        started = time.perf_counter()
        profile_dir = os.environ.get(STEP_PROFILE_ENV)
        profiler = None
        if profile_dir:
            import cProfile

            profiler = cProfile.Profile(time.process_time)  # CPU seconds: the load does not skew them
            profiler.enable()
        try:
            reply = ("ok", function(*args, **kwargs), "")
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the step's process
            import traceback

            traceback.print_exc()
            try:
                pickle.dumps(exc)
                value: Any = exc
            except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its text
                value = None
            reply = ("error", value, f"{type(exc).__name__}: {exc}")
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"{qualname}-{os.getpid()}.prof"))
        _record_step_time(qualname, started)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        _send(conn, pickle.dumps(reply))
        exit_status = 0
    finally:
        os._exit(exit_status)


def _warm_mlflow_caches() -> None:
    """Fill, once in the server, the per-process caches MLflow builds on first use in every step that logs a
    model: the map of installed modules to distributions (``importlib_metadata.packages_distributions``,
    scanning every installed package's metadata: about 0.3-1 CPU-second a step), which its requirement check
    reads; the newest schema revision of MLflow's SQLite store, which every step's first client reads by
    loading alembic's ~70 migration scripts (about 0.1 CPU-s a step) to check the store is current: it is
    fixed for the installed MLflow, so it is read once here and remembered; and SQLAlchemy's table order of
    MLflow's mappers. Pure data, safe to inherit across fork. Private MLflow API: if it moves, the steps just compute these themselves again."""
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()
    except Exception:  # noqa: BLE001 - an optimisation only
        pass
    try:
        import functools

        from mlflow.store.db import utils as db_utils

        latest = functools.lru_cache(maxsize=1)(db_utils._get_latest_schema_revision)
        latest()
        db_utils._get_latest_schema_revision = latest
    except Exception:  # noqa: BLE001 - an optimisation only
        pass
    try:
        # SQLAlchemy sorts the tables a mapper writes on its first flush (memoized on the mapper): with
        # MLflow's ~70 tables, about 0.04 CPU-s per mapper, 0.3 a step that logs params, metrics and a model.
        from sqlalchemy.orm import configure_mappers

        from mlflow.store.db.base_sql_model import Base

        configure_mappers()
        for mapper in Base.registry.mappers:
            mapper._sorted_tables  # noqa: B018 - computed and kept on the mapper
    except Exception:  # noqa: BLE001 - an optimisation only
        pass


def _record_step_time(qualname: str, started: float) -> None:
    """Append the step's CPU seconds (this fork and the processes it waited for) and wall seconds to the
    ``STEP_TIMES_ENV`` file, when set."""
    path = os.environ.get(STEP_TIMES_ENV)
    if not path:
        return
    import json
    import resource

    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime
    line = json.dumps({"step": qualname, "cpu_s": round(cpu, 3), "wall_s": round(time.perf_counter() - started, 3)})
    with open(path, "a") as handle:  # one short write per line: appends from parallel steps do not interleave
        handle.write(line + "\n")


class _Stop(Exception):
    pass


def serve(path: str) -> None:
    """The server: preload, listen on the Unix socket ``path``, fork a child per step until SIGTERM."""
    for name in PRELOAD:
        importlib.import_module(name)
    _warm_mlflow_caches()
    # The preloaded modules are millions of objects: the cyclic GC of each fork would walk them all in its
    # first full collections (about 0.2-0.3 CPU-s a step) and copy the pages it touches. Frozen, the GC
    # leaves them alone (gc.freeze is meant for this: a pre-fork server).
    import gc

    gc.collect()
    gc.freeze()

    def stop(*_: Any) -> None:
        raise _Stop

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    children: set[int] = set()
    children_cpu = 0.0

    def reap(child: int, flags: int) -> None:
        nonlocal children_cpu
        pid, _, usage = os.wait4(child, flags)
        if pid:
            children.discard(child)
            children_cpu += usage.ru_utime + usage.ru_stime

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    try:
        while True:
            conn, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                listener.close()
                _run_child(conn)
            conn.close()
            children.add(pid)
            for child in list(children):  # reap the finished ones
                reap(child, os.WNOHANG)
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        listener.close()
        for child in children:  # steps still running when the run stops (Ctrl-C): stop them too
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        for child in list(children):  # waited, so their CPU time reaches whoever waits for this process
            with contextlib.suppress(ChildProcessError):
                reap(child, 0)
        sys.stdout.write(f"{_STEPS_CPU} {children_cpu:.6f}\n")  # for benchmarks/step_overhead.py
        sys.stdout.flush()


class WarmServer:
    """What ``warm_steps`` yields: true when the server runs; after the block, the CPU seconds of the steps
    it ran (``steps_cpu_s``, their forked processes only), or None."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.steps_cpu_s: float | None = None

    def __bool__(self) -> bool:
        return self.ready


@contextlib.contextmanager
def warm_steps() -> Iterator[WarmServer]:
    """Start the server, point ``SOCKET_ENV`` at it for the steps started meanwhile, stop it afterwards.
    Yields a false ``WarmServer`` (steps run in their own processes) when the server could not start or
    ``COLD_ENV``=1."""
    # Linux only: elsewhere forking after these imports is not safe (macOS's system frameworks).
    if os.environ.get(COLD_ENV) == "1" or not sys.platform.startswith("linux"):
        yield WarmServer(False)
        return
    folder = tempfile.mkdtemp(prefix="fewframes-warm-")
    path = os.path.join(folder, "steps.sock")
    environment = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}  # no telemetry threads in a fork server
    environment.pop(SOCKET_ENV, None)
    log = open(os.path.join(folder, "server.log"), "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fewframes.components.steps.warm", path],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=environment,
    )
    server = WarmServer(process.stdout is not None and process.stdout.readline() == READY)
    if server:
        os.environ[SOCKET_ENV] = path
    try:
        yield server
    finally:
        os.environ.pop(SOCKET_ENV, None)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        tail = process.stdout.read().decode(errors="replace") if process.stdout is not None else ""
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        for line in tail.splitlines():
            if line.startswith(_STEPS_CPU):
                server.steps_cpu_s = float(line.split()[1])
        log.close()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    # Through the package's module, not this __main__ copy: the children's _in_child must be the one
    # reports_errors reads.
    from fewframes.components.steps.warm import serve as package_serve

    package_serve(sys.argv[1])
