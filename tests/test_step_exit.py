"""A step process ends with os._exit(0) once KFP's executor has written its outputs (no second interpreter
teardown; components/steps/common.py), through the real kfp.local SubprocessRunner: outputs, metadata and
the return value all arrive, a failing step still fails, and outside an executor nothing changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def kfp_local(tmp_path: Path):
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    return tmp_path


@pytest.mark.parametrize("full_teardown", ["", "1"])
def test_outputs_metadata_and_return_value_arrive(kfp_local: Path, monkeypatch, capsys, full_teardown: str) -> None:
    from step_exit_components import writes_then_returns

    from fewframes.components.steps.common import FULL_TEARDOWN_ENV

    monkeypatch.setenv(FULL_TEARDOWN_ENV, full_teardown)
    task = writes_then_returns(text="frames")
    assert task.outputs["Output"] == "FRAMES"
    out = task.outputs["out"]
    assert Path(out.path).read_text() == "frames"
    assert out.metadata["length"] == 6
    # The fast exit skips the teardown, and with it atexit handlers registered before the steps package.
    assert ("earlier atexit handler ran" in capsys.readouterr().out) == bool(full_teardown)


def test_a_failing_step_still_fails(kfp_local: Path) -> None:
    from step_exit_components import fails_after_import

    with pytest.raises(RuntimeError, match="fails-after-import"):
        fails_after_import(text="x")


def test_nothing_changes_outside_a_kfp_executor(tmp_path: Path) -> None:
    # Importing the steps package in a plain interpreter must keep Python's exit status and atexit handlers.
    code = (
        "import atexit, sys; atexit.register(lambda: print('atexit ran', flush=True)); "
        "import fewframes.components.steps; sys.exit(3)"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert finished.returncode == 3
    assert "atexit ran" in finished.stdout
