"""A real ``mlflow server`` on loopback for tests (start it once per session: it takes ~10-20 s).

Use the ``mlflow_server`` fixture from ``tests/conftest.py`` (returns the ``http://127.0.0.1:PORT`` URI),
or ``running_mlflow_server(folder)`` directly (started, waited for and stopped by
``fewframes.serving.start_loopback_server``). The server stores runs in SQLite and artifacts in a local
folder under ``folder``; its log is ``folder/server.log`` (shown if it fails to start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fewframes.serving import free_loopback_port, start_loopback_server

# Generous: at a load average of ~19 on 2 cores (other jobs) the server took over 90 s to import and migrate
# its database. A server that exits is noticed at once (process.poll), whatever this says.
START_TIMEOUT_S = 300.0
# The server process of each running URI, so a test can kill it mid-run (kill_mlflow_server).
SERVER_PROCESSES: dict[str, "subprocess.Popen[bytes]"] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_loopback_port()


@contextmanager
def running_mlflow_server(folder: Path, backend_store_uri: str | None = None) -> Iterator[str]:
    """Start ``mlflow server`` (SQLite backend, artifacts in ``folder/artifacts``); yield its URI; stop it.

    ``backend_store_uri``: serve that existing store (e.g. a finished local run's ``sqlite:///…/mlflow.db``)
    instead of a new ``folder/mlflow.db``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
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
    with start_loopback_server(
        command, port, "/health", folder / "server.log", env=env, cwd=folder, start_timeout_s=START_TIMEOUT_S
    ) as server:
        SERVER_PROCESSES[server.url] = server.process
        try:
            yield server.url
        finally:
            SERVER_PROCESSES.pop(server.url, None)


def kill_mlflow_server(uri: str) -> None:
    """SIGKILL the server at ``uri`` and its workers at once (a crash, not a shutdown)."""
    process = SERVER_PROCESSES[uri]
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
