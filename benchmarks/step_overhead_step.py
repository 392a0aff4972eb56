"""The step ``step_overhead.py`` measures: a ``reports_errors`` function like every step of
``components/steps`` (so the warm server can run it), doing only a step's fixed part."""

from fewframes.components.steps.common import reports_errors


@reports_errors("noop")
def tracked_step(tracking_uri: str, parent_run_id: str, value: int) -> int:
    """The fixed part of a real step: torch, the step's MLflow child run with one metric."""
    import torch  # every training/evaluation step loads it

    from fewframes.runs import TrackingContext, step_run

    context = TrackingContext(uri=tracking_uri, experiment="fewframes", parent_run_id=parent_run_id)
    with step_run(context, "noop") as tracker:
        tracker.log_metrics({"value": float(torch.tensor(value).item())})
    return value
