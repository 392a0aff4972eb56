"""A `fewframes run` in this process leaves the root logger (and ``print``) as it found them.

kfp.local wraps each task in ``logging_utils.local_logger_context``: it replaces the root logger's handlers
with a StreamHandler on the ``sys.stdout`` of the moment (in ``fewframes run``: RUN_DIR/pipeline.log) at
level INFO, and restores what it saw on entry. Parallel loop iterations run in threads, so two contexts
overlap and unwind out of order, and the second one "restores" the first one's handler. Left on the root
logger after the log file closed, it made every later log record in the process print "--- Logging error
--- ValueError: I/O operation on closed file" (the GCS emulator's request log, in the tests after a run).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import threading
from pathlib import Path

from kfp.local import logging_utils

from fewframes.cli.pipeline import kfp_local_globals_kept


def _two_overlapping_kfp_tasks(stdout: object) -> None:
    """kfp.local's per-task logging and print contexts in two threads: A enters, B enters, A leaves, B leaves
    (the order parallel loop iterations can take), with ``sys.stdout`` redirected to ``stdout``."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def task(entered: threading.Event, wait_for: threading.Event, done: threading.Event | None) -> None:
        with logging_utils.local_logger_context(), logging_utils.indented_print():
            entered.set()
            wait_for.wait(10)
            logging.info("a task's log line")
        if done is not None:
            done.set()

    with contextlib.redirect_stdout(stdout):
        a = threading.Thread(target=task, args=(a_in, b_in, a_out))
        a.start()
        a_in.wait(10)
        b = threading.Thread(target=task, args=(b_in, a_out, None))
        b.start()
        a.join(10)
        b.join(10)


def test_overlapping_kfp_tasks_leave_a_handler_on_the_run_log_unless_put_back(tmp_path: Path, capsys) -> None:
    root = logging.getLogger()
    handlers, level, real_print = root.handlers[:], root.level, builtins.print

    # Bare, the overlap leaves kfp's handler (on the closed log file) and INFO behind: what the guard is for.
    # If a later kfp puts the root logger back itself, this first part fails and the guard may go.
    with (tmp_path / "bare.log").open("w") as log:
        _two_overlapping_kfp_tasks(log)
    left = [h for h in root.handlers if h not in handlers]
    leaked_level, builtins.print = root.level, real_print
    for handler in root.handlers[:]:  # kfp also dropped pytest's own handlers: all back as they were
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    assert left and all(h.stream.closed for h in left) and leaked_level == logging.INFO

    # Inside kfp_local_globals_kept (what `fewframes run` wraps the DAG in) everything is put back.
    with (tmp_path / "pipeline.log").open("w") as log, kfp_local_globals_kept():
        _two_overlapping_kfp_tasks(log)
    assert root.handlers == handlers and root.level == level and builtins.print is real_print
    capsys.readouterr()
    logging.getLogger("gcp_storage_emulator.server").warning("a request")  # a later record in this process
    assert "Logging error" not in capsys.readouterr().err


def test_fewframes_run_leaves_the_root_logger_as_it_was(tiny_run: Path) -> None:
    """The real CLI call (the session's tiny run, in this process: conftest.tiny_run notes what it left)."""
    left = json.loads((tiny_run.parent / "root_logger.json").read_text())
    assert left["handlers_added"] == [] and left["handlers_removed"] == []
    assert left["level"][0] == left["level"][1]
