"""The components ``step_overhead.py`` runs through kfp.local (no ``from __future__ import annotations``
here: KFP reads the parameter annotations at decoration time)."""

from kfp import dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False, packages_to_install=[])
def noop(value: int) -> int:
    """Nothing: the interpreter, kfp and its executor."""
    return value


@dsl.component(base_image="python:3.11", install_kfp_package=False, packages_to_install=[])
def tracked(tracking_uri: str, parent_run_id: str, value: int) -> int:
    """The fixed part of a real step: the steps package, torch, the step's MLflow child run."""
    import torch  # every training/evaluation step loads it

    from fewframes.components.steps import tracking_context  # noqa: F401 - what every step imports
    from fewframes.runs import TrackingContext, step_run

    context = TrackingContext(uri=tracking_uri, experiment="fewframes", parent_run_id=parent_run_id)
    with step_run(context, "noop") as tracker:
        tracker.log_metrics({"value": float(torch.tensor(value).item())})
    return value
