"""kfp.local's logging during a `fewframes run`: its records stay in RUN_DIR/pipeline.log, never on the user's
stderr, and the run leaves the root logger (and ``print``) as it found them.

kfp.local wraps each task in ``logging_utils.local_logger_context``: it replaces the root logger's handlers
with a StreamHandler on the ``sys.stdout`` of the moment (in ``fewframes run``: RUN_DIR/pipeline.log) at
level INFO, and restores what it saw on entry. Parallel loop iterations run in threads, so two contexts
overlap and unwind out of order. In a process that configured no logging (the CLI), the iteration that
leaves first empties the root logger under the other, whose "Task 'x' finished with status FAILURE" then
makes ``logging.error`` call ``logging.basicConfig()``: a handler on stderr, printing "ERROR:root:Task ..."
beside fewframes' one-line error. The other "restores" the first one's handler: left on the root logger after
the log file closed, it made every later log record in the process print "--- Logging error ---
ValueError: I/O operation on closed file". ``kfp_local_globals_kept`` (what `fewframes run` wraps the DAG in)
answers both; the bare parts below fail if a later kfp stops doing this, and the guard may then go.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kfp.local import logging_utils

from fewframes.cli.pipeline import kfp_local_globals_kept, root_logger_restored
from fewframes.cli.progress import EVENT_LINE

FAILED = "Task 'b' finished with status FAILURE"  # what kfp.local logs (in colour) for a failed task


def _two_overlapping_kfp_tasks(stdout: object) -> None:
    """kfp.local's per-task logging and print contexts in two threads: A enters, B enters, A leaves, B logs
    its failure and leaves (the order parallel loop iterations can take), with ``sys.stdout`` = ``stdout``."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def task(entered: threading.Event, wait_for: threading.Event, done: threading.Event | None) -> None:
        with logging_utils.local_logger_context(), logging_utils.indented_print():
            entered.set()
            assert wait_for.wait(10)
            if done is None:
                logging.error(FAILED)  # B, after A left: as task_dispatcher logs a failed task
            else:
                logging.info("Task 'a' finished with status SUCCESS")
        if done is not None:
            done.set()

    with contextlib.redirect_stdout(stdout):
        a = threading.Thread(target=task, args=(a_in, b_in, a_out))
        a.start()
        assert a_in.wait(10)
        b = threading.Thread(target=task, args=(b_in, a_out, None))
        b.start()
        a.join(10)
        b.join(10)


@contextlib.contextmanager
def _root_logger_as_in_the_cli() -> Iterator[logging.Logger]:
    """The root logger as a `fewframes` process has it (no handler, level WARNING) for the block; pytest's
    own handlers, its level and ``print`` are put back after, whatever the block left."""
    with root_logger_restored() as root:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        yield root


def test_bare_kfp_local_prints_a_failed_task_on_stderr_and_leaves_a_handler_on_the_closed_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the guard is for: kfp.local alone, in a process without logging configuration."""
    with _root_logger_as_in_the_cli() as root, (tmp_path / "bare.log").open("w") as log:
        _two_overlapping_kfp_tasks(log)
        log.flush()
        left, leaked_level = root.handlers[:], root.level
    assert f"ERROR:root:{FAILED}" in capsys.readouterr().err.splitlines()  # logging.basicConfig's format
    assert FAILED not in (tmp_path / "bare.log").read_text()
    assert any(getattr(h, "stream", None) is log for h in left) and log.closed and leaked_level == logging.INFO


@pytest.mark.parametrize("configured", [False, True], ids=["cli-process", "logging-configured"])
def test_kfp_records_stay_in_the_run_log_and_logging_is_put_back(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 configured: bool) -> None:
    """Inside kfp_local_globals_kept, in a process without logging configuration (the CLI) and in one with a
    handler on stderr (pytest's, here): nothing of kfp's reaches stderr and its records are in the log."""
    with _root_logger_as_in_the_cli() as root:
        if configured:
            root.addHandler(logging.StreamHandler())  # on stderr: kfp's contexts would restore it mid-DAG
        handlers, level, real_print = root.handlers[:], root.level, builtins.print
        with (tmp_path / "pipeline.log").open("w") as log, kfp_local_globals_kept(log):
            _two_overlapping_kfp_tasks(log)
            # The instant a kfp context has cleared the handlers and not yet added its own, another thread
            # logs (kfp also logs outside its contexts: "cache hit", "Cleaned up workspace"): basicConfig.
            root.handlers.clear()
            logging.warning("Task 'c' cache hit")
        assert root.handlers == handlers and root.level == level and builtins.print is real_print
        logging.getLogger("gcp_storage_emulator.server").warning("a request")  # a later record in this process
    captured = capsys.readouterr()
    assert "Logging error" not in captured.err
    assert FAILED not in captured.err and "cache hit" not in captured.err
    written = (tmp_path / "pipeline.log").read_text()
    assert FAILED in written and "Task 'c' cache hit" in written and "Task 'a' finished with status SUCCESS" in written


def test_fewframes_run_keeps_stderr_to_its_own_lines_and_the_root_logger_as_it_was(tiny_run: Path) -> None:
    """The real CLI call (the session's tiny run, in this process: conftest.tiny_run keeps what it printed on
    stderr and what it left on the root logger): stderr holds the progress display's lines only (not even
    MLflow's creation of the run's new database); kfp's task lines are in pipeline.log."""
    left = json.loads((tiny_run.parent / "root_logger.json").read_text())
    assert left["handlers_added"] == [] and left["handlers_removed"] == []
    assert left["level"][0] == left["level"][1]
    stderr = (tiny_run.parent / "progress.txt").read_text().splitlines()
    others = [line for line in stderr if line.strip() and not EVENT_LINE.match(line)]
    assert others == [] and any(EVENT_LINE.match(line) for line in stderr)
    assert "finished with status" in (tiny_run / "pipeline.log").read_text()
