"""Shared pytest fixtures (keep small; others may append fixtures in additive edits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewframes.config import PRESETS


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

    from fewframes.cli import main

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    printed, progress = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(progress):
        code = main(["run", "--preset", "tiny", "--out", str(run_dir)])
    (run_dir.parent / "printed.txt").write_text(printed.getvalue())
    (run_dir.parent / "progress.txt").write_text(progress.getvalue())
    assert code == 0, progress.getvalue()[-3000:]
    return run_dir
