"""The ``fewframes`` command line.

Each area registers its own subcommands (``register(subparsers)``) in a module of this package, so the
CLI grows without one file that everybody edits. A command handler returns an exit code; any
``FewframesError`` (or ``ConfigError``) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from fewframes.config import ConfigError
from fewframes.errors import FewframesError

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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (FewframesError, ConfigError) as exc:
        print(f"fewframes: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fewframes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
