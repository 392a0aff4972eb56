"""Where a pipeline run's results land in MLflow, so the default runs table compares models.

- Each model's run (its training step's run, a top-level run of the experiment named by ``model_run_name``,
  see ``fewframes.runs``) holds its params, training curves and logged model (``Tracker.log_model_file``,
  logged by the training loop under the model's key); ``add_test_metrics`` adds the evaluate step's test
  metrics (GAP, mAP, Hit@1, PERR) and the benchmark's cost figures (GFLOPs, latency, throughput, ratios to
  the teacher) to it, also as the logged model's metrics. The evaluate runs keep their own copy
  (``fewframes compare`` reads those).
- ``split_dataset`` describes a split of a frame store (video ids, frames, labels) as a pandas frame whose
  dataset source is the store's URI; training runs log their train split, evaluate runs the test split.
- ``publish_to_parent`` puts the headline metrics (teacher GAP; the champion student's GAP, k, FLOPs ratio
  and speed-up) and the report's files on the pipeline's parent run, and registers the champion
  (``REGISTERED_STUDENT``, alias ``champion``) so ``models:/fewframes-student@champion`` serves it. The
  champion is the report's recommended student, or, when none is within the tolerance, the student with the
  highest test GAP (the parent's tag ``fewframes.champion_reason`` says which; ``recommended_*`` metrics
  only exist in the first case).

mlflow is imported only inside the functions (through ``fewframes.tracking``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fewframes.runs import TrackingContext

REGISTERED_STUDENT = "fewframes-student"

# A model's role -> the plan its items come from (``fewframes.cli.progress.model_name`` words them).
_PLAN_OF_ROLE = {"teacher": "plan-teachers", "baseline": "plan-baselines", "student": "plan-students",
                 "control": "plan-students"}


def model_run_name(params: Mapping[str, Any]) -> str:
    """A model's run name a person reads in the runs table, from its parameters (``model_params``), in the
    words of the progress display (``fewframes.cli.progress.model_name``) with the seed always said:
    ``teacher seed 0``, ``student serial L_rep k=10 seed 0``, ``Uniform-10 seed 0``,
    ``warm-start control k=10 seed 0``, ``teacher seed 0 on 10 frames``; a reduced train fraction adds
    ``on 50% of the data``."""
    from fewframes.cli.progress import model_name

    role, control = str(params.get("role", "")), str(params.get("control", "") or "")
    plan = "plan-teacher-on-k" if control == "teacher_on_k" else _PLAN_OF_ROLE.get(role, "plan-students")
    item = {name: value for name, value in params.items() if value not in (None, "")}
    return model_name(plan, {**item, "repeat": True})


def split_dataset(store_path: str, split: str, train_fraction: float | None = None, seed: int | None = None) -> Any:
    """A pandas DataFrame of the videos of ``split``: ``video_id``, ``num_frames``, ``labels`` (the class
    numbers, space-separated) and, when the store has a vocabulary, ``label_names`` ("; "-separated)."""
    import pandas as pd

    from fewframes.data.split import open_split

    store, indices = open_split(store_path, split, train_fraction, seed)
    ids = store.video_ids
    columns: dict[str, list[Any]] = {
        "video_id": [ids[int(i)] for i in indices],
        "num_frames": [int(store.lengths[int(i)]) for i in indices],
        "labels": [" ".join(str(int(c)) for c in store.labels[int(i)]) for i in indices],
    }
    names = store.class_names
    if names is not None:
        columns["label_names"] = ["; ".join(names[int(c)] for c in store.labels[int(i)]) for i in indices]
    return pd.DataFrame(columns)


def classes_description(store_path: str) -> str:
    """One line saying what the store's classes are: how many, where the count came from, whether named."""
    from fewframes.data.store import FrameStore

    store = FrameStore.open(store_path)
    source = store.class_source
    origin = {
        "vocabulary": f"names and count from the vocabulary {source.get('file', '')}".rstrip(),
        "release": f"the YouTube-8M {source.get('release', '')} release's vocabulary (recognised), no names",
        "data": "count assumed from the data (largest label + 1), no names",
    }.get(source.get("from", ""), "count given at ingest, no names")
    return f"{store.num_classes} classes: {origin}; frames {store.rgb_dim} + {store.audio_dim} bytes"


def log_split(tracker: Any, store_path: str, split: str, context: str, **split_args: Any) -> None:
    """Log ``split`` of the store at ``store_path`` as ``tracker``'s dataset input (nothing when disabled); its
    ``fewframes.classes`` tag describes the classes (``classes_description``)."""
    if not getattr(tracker, "active", False):
        return
    source = store_path if "://" in store_path else str(Path(store_path).resolve())
    name = f"{Path(store_path.rstrip('/')).name}:{split}"
    tracker.log_dataset(split_dataset(store_path, split, **split_args), source=source, name=name, context=context,
                        tags={"fewframes.classes": classes_description(store_path)})


def logged_model_of(uri: str, run_id: str, name: str | None = None) -> str | None:
    """The id of the logged model run ``run_id`` output (the one named ``name``, a model key, if several:
    a parallel run logs its co-trained teacher too); None if none."""
    if not uri or not run_id:
        return None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    outputs = client.get_run(run_id).outputs
    ids = [output.model_id for output in (outputs.model_outputs if outputs else [])]
    if len(ids) > 1 and name:
        from fewframes.tracking import logged_model_name

        named = [model_id for model_id in ids if client.get_logged_model(model_id).name == logged_model_name(name)]
        ids = named or ids
    return ids[-1] if ids else None


def add_test_metrics(uri: str, model_run_id: str, metrics: Mapping[str, float], model_key: str | None = None) -> None:
    """Log ``metrics`` into the (finished) model run ``model_run_id`` and onto its logged model (the one
    named ``model_key``)."""
    if not uri or not model_run_id or not metrics:
        return
    from fewframes.tracking import Tracker

    tracker = Tracker.existing(uri, model_run_id)
    tracker.log_metrics(metrics, model_id=logged_model_of(uri, model_run_id, model_key))


def champion(rows: list[Mapping[str, Any]], recommended_key: str | None) -> tuple[Mapping[str, Any] | None, str]:
    """The student to register: the report's recommended one, else (none within tolerance) the student or
    baseline with the highest test GAP; and why it was chosen."""
    if recommended_key:
        chosen = next((r for r in rows if r.get("model_key") == recommended_key), None)
        if chosen is not None:
            return chosen, "recommended: within the report's tolerance of the teacher's GAP"
    # Controls (warm-start, teacher on k frames) are yardsticks, not candidates.
    students = [r for r in rows if r.get("role") in ("student", "baseline") and r.get("gap") is not None]
    if not students:
        return None, ""
    best = max(students, key=lambda r: (float(r["gap"]), str(r.get("model_key", ""))))
    return best, "highest test GAP (no student within the report's tolerance of the teacher)"


def headline_metrics(rows: list[Mapping[str, Any]], chosen: Mapping[str, Any] | None, recommended: bool) -> dict[str, float]:
    """The parent run's metrics: the teacher's GAP; the registered student's GAP, k, FLOPs ratio and
    store-to-scores speed-up over the teacher (``recommended_*`` too when the report recommended it).

    "The teacher" is the one the report compares with (``fewframes.report``): ``teacher_gap`` is the mean over
    seeds of the full-data teachers of the student's family (``teacher_seeds`` of them), and the cost ratios use
    the teacher of the pipeline's own seed, the one the benchmark step measured. Not the first teacher row: with
    a teacher per seed (and per data fraction) that was whichever scored best."""
    from fewframes.report.configs import Grid

    family = str((chosen or {}).get("family") or "") or None
    grid = Grid([dict(r) for r in rows], family if family else None) if rows else None
    teachers = grid.teacher() if grid is not None else None
    metrics: dict[str, float] = {}
    teacher: Mapping[str, Any] | None = None
    if teachers is not None and teachers.mean("gap") is not None:
        metrics["teacher_gap"] = float(teachers.mean("gap"))
        metrics["teacher_seeds"] = float(len(teachers.values("gap")))
        teacher = teachers.first()
    if chosen is None:
        return metrics
    figures = {"gap": float(chosen["gap"]), "k": float(chosen["k"])}
    if teacher is not None and chosen.get("gflops") and teacher.get("gflops"):
        figures["flops_ratio"] = float(chosen["gflops"]) / float(teacher["gflops"])
    if teacher is not None and chosen.get("e2e_throughput_videos_s") and teacher.get("e2e_throughput_videos_s"):
        figures["speedup_e2e"] = float(chosen["e2e_throughput_videos_s"]) / float(teacher["e2e_throughput_videos_s"])
    metrics.update({f"champion_{name}": value for name, value in figures.items()})
    if recommended:
        metrics.update({f"recommended_{name}": value for name, value in figures.items()})
    return metrics


def publish_to_parent(
    tracking: TrackingContext,
    rows: list[Mapping[str, Any]],
    recommended_key: str | None,
    files: Iterable[str | os.PathLike[str]],
) -> str | None:
    """Headline metrics and the report's files (folder ``report``) on the parent run; registers the
    champion student (``champion``) as ``REGISTERED_STUDENT`` with the alias ``champion``.

    Returns the registered version (None when tracking is off or no student has a logged model).
    """
    if not tracking.enabled or not tracking.parent_run_id:
        return None
    from fewframes.tracking import CHAMPION_ALIAS, Tracker

    chosen, why = champion(rows, recommended_key)
    parent = Tracker.existing(tracking.uri, tracking.parent_run_id)
    parent.log_metrics(headline_metrics(rows, chosen, bool(recommended_key) and chosen is not None
                                        and chosen.get("model_key") == recommended_key))
    for path in files:
        parent.log_artifact(path, "report")
    if chosen is None:
        return None
    model_id = logged_model_of(tracking.uri, str(chosen.get("mlflow_run_id", "")), str(chosen.get("model_key", "")))
    if model_id is None:
        return None
    version = parent.register_model(model_id, REGISTERED_STUDENT, CHAMPION_ALIAS)
    parent.set_tags({
        "fewframes.champion": str(chosen.get("model_key", "")),
        "fewframes.champion_reason": why,
        "fewframes.registered_model": f"models:/{REGISTERED_STUDENT}@{CHAMPION_ALIAS} (version {version})",
    })  # fmt: skip
    return version


__all__ = [
    "REGISTERED_STUDENT", "add_test_metrics", "champion", "headline_metrics", "log_split",
    "logged_model_of", "model_run_name", "publish_to_parent", "split_dataset",
]  # fmt: skip
