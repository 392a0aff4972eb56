"""Components for tests/test_step_exit.py (no ``from __future__ import annotations``: KFP reads the
annotations at decoration time)."""

from kfp import dsl
from kfp.dsl import Dataset, Output


@dsl.component(base_image="python:3.11", install_kfp_package=False, packages_to_install=[])
def writes_then_returns(text: str, out: Output[Dataset]) -> str:
    """Imports the steps package (which arms the fast exit), writes an artifact and returns a value. An
    atexit handler registered before that import runs only with the full teardown."""
    import atexit

    atexit.register(lambda: print("earlier atexit handler ran", flush=True))
    import fewframes.components.steps  # noqa: F401

    with open(out.path, "w") as handle:
        handle.write(text)
    out.metadata["length"] = len(text)
    return text.upper()


@dsl.component(base_image="python:3.11", install_kfp_package=False, packages_to_install=[])
def fails_after_import(text: str) -> str:
    """Imports the steps package, then fails: the task must fail, not exit 0 early."""
    import fewframes.components.steps  # noqa: F401

    raise ValueError(f"failing on purpose: {text}")
