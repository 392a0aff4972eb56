"""A real ``mlflow server`` on loopback for tests (start it once per session: it takes ~10-20 s).

Use the ``mlflow_server`` fixture from ``tests/conftest.py`` (returns the ``http://127.0.0.1:PORT`` URI),
or ``running_mlflow_server(folder)`` directly. The server stores runs in SQLite and artifacts in a local
folder under ``folder``; its log is ``folder/server.log`` (shown if it fails to start).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Generous: at a load average of ~19 on 2 cores (other jobs) the server took over 90 s to import and migrate
# its database. A server that exits is noticed at once (process.poll), whatever this says.
START_TIMEOUT_S = 300.0
# The server process of each running URI, so a test can kill it mid-run (kill_mlflow_server).
SERVER_PROCESSES: dict[str, "subprocess.Popen[bytes]"] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_mlflow_server(folder: Path, backend_store_uri: str | None = None) -> Iterator[str]:
    """Start ``mlflow server`` (SQLite backend, artifacts in ``folder/artifacts``); yield its URI; stop it.

    ``backend_store_uri``: serve that existing store (e.g. a finished local run's ``sqlite:///…/mlflow.db``)
    instead of a new ``folder/mlflow.db``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root", str(folder / "artifacts"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: 2 CPU cores
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        # Own process group: the server forks workers, and stopping the group stops them all.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(uri):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server did not start at {uri} (exit {process.poll()}):\n{tail}")
            time.sleep(0.3)
        SERVER_PROCESSES[uri] = process
        yield uri
    finally:
        SERVER_PROCESSES.pop(uri, None)
        _stop(process)


def kill_mlflow_server(uri: str) -> None:
    """SIGKILL the server at ``uri`` and its workers at once (a crash, not a shutdown)."""
    process = SERVER_PROCESSES[uri]
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
