"""The ``fewframes`` command line.

Each area registers its own subcommands (``register(subparsers)``) in a module of this package, so the
CLI grows without one file that everybody edits. A command handler returns an exit code.

The error boundary (:func:`main`, catalogue in docs/faults.md): a ``FewframesError`` or ``ConfigError`` (bad
input, named by its file, field or flag), any ``OSError`` (permission denied, read-only or full file system,
a file where a folder belongs or the reverse, network) and an MLflow error become ONE line on stderr and exit
status 2; Ctrl-C is exit 130. Anything else is a bug: one line and exit 1. ``--debug`` (anywhere on the
command line) or ``FEWFRAMES_DEBUG=1`` lets the exception through with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from fewframes.config import ConfigError
from fewframes.errors import FewframesError, describe_io_message, describe_os_error

DEBUG_FLAG = "--debug"
DEBUG_ENV = "FEWFRAMES_DEBUG"

# Modules that contribute subcommands, in the order --help lists them.
_COMMAND_MODULES = (
    "fewframes.cli.data",
    "fewframes.cli.pipeline",
    "fewframes.cli.predict",
    "fewframes.cli.benchmark",
    "fewframes.cli.report",
)


def print_rich_table(table: Any) -> None:
    """Print a rich ``table`` at its natural width: rich would otherwise squeeze it to the terminal (80
    columns when piped), cutting cells to "0.…"; a table wider than the terminal wraps as whole lines."""
    from rich.console import Console
    from rich.measure import Measurement

    wide = Console(width=10_000)
    natural = Measurement.get(wide, wide.options, table).maximum
    Console(width=max(natural, Console().width)).print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fewframes",
        description="Distil video classifiers that read only k frames (KFP pipeline, MLflow tracking).",
    )
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show the Python traceback of an error (also FEWFRAMES_DEBUG=1)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that area is not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return int(args.handler(args) or 0)
    except KeyboardInterrupt as exc:
        terminated = str(exc) == SIGTERM_TEXT
        print(f"fewframes: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as exc:
        if debug:
            raise
        line, code = error_line(exc)
        print(f"fewframes: error: {line}", file=sys.stderr)
        return code


SIGTERM_TEXT = "SIGTERM"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt("SIGTERM") while a command runs, so it unwinds like Ctrl-C: the same
    clean-up (the MLflow parent run closed KILLED, child processes stopped, temp files removed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(SIGTERM_TEXT)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one line the CLI prints for ``exc`` and its exit status: 2 for bad input and the environment
    (files, disks, network, the tracking server), 1 for anything else (a bug: ``--debug`` shows where)."""
    module = type(exc).__module__ or ""
    if isinstance(exc, (FewframesError, ConfigError)):
        return str(exc), 2
    if module.startswith(("requests", "urllib3")):  # before OSError: requests' errors subclass it
        return f"network error: {_first_line(exc)}", 2
    if isinstance(exc, OSError):
        return describe_os_error(exc), 2
    if module.startswith("mlflow"):
        return f"MLflow: {_first_line(exc)}", 2
    if module.startswith("tensorflow"):  # tf.io.gfile / TFRecordDataset: file system and network errors
        return describe_io_message(_first_line(exc)), 2
    if isinstance(exc, MemoryError):
        return "out of memory", 2
    return f"internal error, {type(exc).__name__}: {_first_line(exc)} (run again with --debug for the traceback)", 1


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
