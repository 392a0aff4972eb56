"""The components ``step_overhead.py`` runs through kfp.local (no ``from __future__ import annotations``
here: KFP reads the parameter annotations at decoration time), and the step they call. The step is a
``reports_errors`` function like every step of ``components/steps`` (so a warm server can run it);
``step_overhead.py`` puts this folder on PYTHONPATH for the step processes and the server."""

from kfp import dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False, packages_to_install=[])
def noop(value: int) -> int:
    """Nothing: the interpreter, kfp and its executor."""
    return value


@dsl.component(base_image="python:3.11", install_kfp_package=False, packages_to_install=[])
def tracked(tracking_uri: str, parent_run_id: str, value: int) -> int:
    """A step: the steps package, then ``tracked_step`` (here, or in a fork of the warm server)."""
    from step_overhead_step import tracked_step

    return tracked_step(tracking_uri, parent_run_id, value)
