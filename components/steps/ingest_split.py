"""ingest-split: the frame store (synthetic or YouTube-8M TFRecords) and its train/validation/test split."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from fewframes.config import get_preset
from fewframes.runs import TrackingContext, step_run

from .common import StepResult, reports_errors


def parse_source(source: str, default_preset: str) -> tuple[str, str]:
    """``('synth', preset)`` for '' or 'synth:<preset>', else ``('tfrecords', source)`` (path, glob, gs://)."""
    if not source:
        return "synth", default_preset
    if source.startswith("synth:"):
        preset = source.split(":", 1)[1] or default_preset
        get_preset(preset)  # a clear error for an unknown preset name
        return "synth", preset
    return "tfrecords", source


@reports_errors("ingest-split")
def ingest_split_step(
    source: str,
    store_path: str,
    *,
    preset: str,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    tracking: TrackingContext,
    num_classes: int = 0,
) -> StepResult:
    """Synthesize (``synth:<preset>`` or '') or read YouTube-8M TFRecords, write the frame store and its split.

    ``num_classes``: the label vocabulary; 0 = the synthetic preset's classes, or YouTube-8M's 3862 for
    TFRecords."""
    from fewframes.data.ingest import ingest
    from fewframes.data.split import write_split
    from fewframes.data.store import FrameStore

    kind, where = parse_source(source, preset)
    params = {
        "source": source or f"synth:{preset}",
        "preset": preset,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
        "num_classes": num_classes,
    }
    store_dir = Path(store_path)
    with step_run(tracking, "ingest-split", params=params) as tracker:
        started = time.perf_counter()
        if kind == "synth":
            from fewframes.data.synth import generate_synthetic

            # The synthetic TFRecords go beside the store and are removed once ingested.
            store_dir.parent.mkdir(parents=True, exist_ok=True)
            data = get_preset(where).data
            with tempfile.TemporaryDirectory(prefix=".synth-", dir=store_dir.parent) as tfrecord_dir:
                generate_synthetic(tfrecord_dir, data)
                ingest(os.path.join(tfrecord_dir, "*.tfrecord"), str(store_dir), num_classes=num_classes or data.classes)
        else:
            from fewframes.data.ingest import DEFAULT_NUM_CLASSES

            ingest(where, str(store_dir), num_classes=num_classes or DEFAULT_NUM_CLASSES)
        write_split(
            store_dir, validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed
        )
        store = FrameStore.open(store_dir)
        lengths = [int(n) for n in store.lengths]
        metrics = {
            "videos": float(len(store)),
            "classes": float(store.num_classes),
            "max_length": float(max(lengths)),
            "mean_length": float(sum(lengths) / len(lengths)),
            "seconds": time.perf_counter() - started,
        }
        tracker.log_metrics(metrics)
    return StepResult(
        metrics=metrics,
        metadata={"videos": len(store), "num_classes": store.num_classes, "max_length": max(lengths)},
    )
