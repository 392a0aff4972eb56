"""Shared pytest fixtures (keep small; others may append fixtures in additive edits)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fewframes.config import PRESETS


# Each pytest run gets a base temp folder of its own unless --basetemp names one. pytest's default,
# /tmp/pytest-of-USER/pytest-N, is shared by every run of the user: two runs at once (the lead's suite and a
# helper's module, two worktrees) clean up each other's numbered folders. Removed after a run that passed; kept,
# and named at the end of the report, after one that did not.
_OWN_BASETEMP: dict[str, Any] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None and not hasattr(config, "workerinput"):  # xdist workers get the controller's
        parent = Path(tempfile.mkdtemp(prefix="fewframes-pytest-"))
        config.option.basetemp = str(parent / "basetemp")
        _OWN_BASETEMP["parent"] = parent


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _OWN_BASETEMP["exitstatus"] = int(exitstatus)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    if "parent" in _OWN_BASETEMP and int(exitstatus) != 0:
        terminalreporter.write_line(f"this run's temporary files are kept in {_OWN_BASETEMP['parent']}")


def pytest_unconfigure(config: pytest.Config) -> None:
    parent = _OWN_BASETEMP.pop("parent", None)
    if parent is not None and _OWN_BASETEMP.get("exitstatus") == 0:  # after every fixture's teardown
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def compiled_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """``compiled_pipeline(pipeline, preset, gpu)``: the path of that IR YAML (``compile_pipeline``), compiled once
    per session for each combination: several modules check the same compiled pipelines (a compile takes 4-8 s
    on 2 busy cores). Read it; do not change it."""
    from fewframes.pipelines.dag import compile_pipeline

    folder = tmp_path_factory.mktemp("compiled_pipelines")
    paths: dict[tuple[str, str, Any], Path] = {}

    def compiled(pipeline: str, preset: str, gpu: Any) -> Path:
        key = (pipeline, preset, gpu)
        if key not in paths:
            path = folder / f"{pipeline}-{preset}-{len(paths)}.yaml"
            compile_pipeline(pipeline, str(path), preset, gpu)
            paths[key] = path
        return paths[key]

    return compiled


@pytest.fixture(scope="session")
def tiny_tfrecords(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic data set (160 videos, 12 classes) as 2 real-format TFRecord shards.

    Session-scoped and read-only: copy it before changing anything.
    """
    from fewframes.data.synth import generate_synthetic

    out = tmp_path_factory.mktemp("tiny_tfrecords")
    generate_synthetic(out, PRESETS["tiny"].data, shards=2, progress=False)
    return out


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """URI (``http://127.0.0.1:PORT``) of a real ``mlflow server`` started once per test session."""
    from mlflow_server import running_mlflow_server

    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as uri:
        yield uri


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ``distill`` DAG run once per session with ``fewframes run`` (its folder; shared by the pipeline
    and report tests); what ``fewframes run`` printed is kept in ../printed.txt, its progress display (stderr,
    not a terminal here: plain lines) in ../progress.txt."""
    import contextlib
    import io
    import json
    import logging

    from fewframes.cli import main

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    printed, progress = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(progress):
        code = main(["run", "--preset", "tiny", "--out", str(run_dir)])
    (run_dir.parent / "printed.txt").write_text(printed.getvalue())
    (run_dir.parent / "progress.txt").write_text(progress.getvalue())
    # What the run left on the root logger (test_logging_state): by now the run's log file is closed.
    left = {"handlers_added": [repr(h) for h in root.handlers if h not in handlers],
            "handlers_removed": [repr(h) for h in handlers if h not in root.handlers],
            "level": [logging.getLevelName(level), logging.getLevelName(root.level)]}
    (run_dir.parent / "root_logger.json").write_text(json.dumps(left))
    assert code == 0, progress.getvalue()[-3000:]
    return run_dir


def _closed_stream_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(getattr(h, "stream", None), "closed", False)]


@pytest.fixture(autouse=True)
def _no_root_handler_on_a_closed_stream() -> Iterator[None]:
    """Fail the test that leaves a handler on a closed stream on the root logger (a CLI call, or kfp.local,
    that did not put logging back): otherwise every later log record in this process prints "--- Logging
    error --- ValueError: I/O operation on closed file" and tests that check stderr fail far from the cause."""
    yield
    left = _closed_stream_handlers()
    for handler in left:  # the tests after this one are not its victims
        logging.getLogger().removeHandler(handler)
    if left:
        pytest.fail(f"this test left root-logger handlers on closed streams: {left}", pytrace=False)
