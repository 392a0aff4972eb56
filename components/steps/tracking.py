"""start-tracking: the pipeline's parent MLflow run and the tracking artifact every other step reads."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from fewframes.errors import PipelineError
from fewframes.runs import TrackingContext

from .common import _write_json, reports_errors


@reports_errors("start-tracking")
def start_tracking_step(
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    pipeline_run_id: str,
    pipeline: str,
    run_name: str,
    out_path: str,
) -> str:
    """Write the tracking artifact and return the parent run's id ('' = tracking off).

    Creates the parent run when ``parent_run_id`` is empty (cluster runs), else checks and tags the given
    one (``fewframes run`` made it). Fails at once, with one line, when the tracking server is unreachable.
    """
    from fewframes.cluster import WORKFLOW_ENV
    from fewframes.runs import TAG_PIPELINE, TAG_PIPELINE_RUN, TAG_WORKFLOW, check_tracking, start_parent_run

    if tracking_uri:
        check_tracking(tracking_uri)
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        if not parent_run_id:
            context = TrackingContext(
                uri=tracking_uri, experiment=experiment, pipeline_run_id=pipeline_run_id, pipeline=pipeline
            )
            parent_run_id = start_parent_run(context, run_name or f"{pipeline}-{pipeline_run_id}")
            # The steps of this run find the parent by their pods' workflow (fewframes.runs.resolve_tracking).
            workflow = os.environ.get(WORKFLOW_ENV, "")
            if workflow:
                client.set_tag(parent_run_id, TAG_WORKFLOW, workflow)
        else:
            try:
                parent_tags = client.get_run(parent_run_id).data.tags
            except mlflow.exceptions.MlflowException:
                raise PipelineError(f"parent_run_id {parent_run_id!r} is not a run at {tracking_uri}") from None
            # `fewframes run` tagged its parent with its own run id, the one it prints: children share it.
            pipeline_run_id = parent_tags.get(TAG_PIPELINE_RUN) or pipeline_run_id
            client.set_tag(parent_run_id, TAG_PIPELINE_RUN, pipeline_run_id)
            if pipeline:
                client.set_tag(parent_run_id, TAG_PIPELINE, pipeline)
    else:
        parent_run_id = ""
    context = TrackingContext(tracking_uri, experiment, parent_run_id, pipeline_run_id, pipeline)
    _write_json(Path(out_path), asdict(context))
    return parent_run_id


@reports_errors("close-tracking")
def close_tracking_step(
    tracking_uri: str, experiment: str, parent_run_id: str, pipeline_run_id: str, state: str, failure: str
) -> tuple[str, str]:
    """The exit handler's work: end the parent MLflow run as the pipeline ended (``runs.close_parent_run``);
    ``(parent run id, status set)``. A step like the others, so a local run's warm server runs it."""
    from fewframes.runs import close_parent_run, find_parent_run

    parent = parent_run_id or find_parent_run(tracking_uri, experiment, pipeline_run_id)
    return parent, close_parent_run(tracking_uri, parent, state, failure)
