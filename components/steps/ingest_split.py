"""ingest-split: the frame store (synthetic or YouTube-8M TFRecords) and its train/validation/test split."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from fewframes.config import get_preset
from fewframes.runs import TrackingContext, step_run

from .common import STORE_LOCATION_FILE, StepResult, _write_json, reports_errors

# How a pipeline's user sets the classes (named by the line printed when they were assumed).
PIPELINE_OVERRIDE = "--param vocabulary=FILE (class names and count) or --param num_classes=N"


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
    store_root: str = "",
    vocabulary: str = "",
) -> StepResult:
    """Synthesize (``synth:<preset>`` or '') or read YouTube-8M TFRecords, write the frame store and its split.

    ``num_classes``: the class count; 0 = the synthetic preset's classes, or for TFRecords the vocabulary's,
    else a recognised YouTube-8M release's, else the largest label + 1 (``fewframes.data.ingest``; the step
    prints which, and the store records it). ``vocabulary``: a vocabulary file (class names; '' = none).
    ``store_root`` (``gs://BUCKET/...`` on a cluster): the store is written under it, at a name
    derived from these inputs, and ``store_path`` (the KFP artifact) only points to it (``location.json``),
    so the steps that use it read their frames in place instead of each downloading the whole store; a
    store already complete at that name (a retry, or the same inputs again) is reused. '' = the store is
    written into ``store_path`` itself (local runs)."""
    # Imported here, not at the top: every step's KFP executor imports this package, and fsio brings in
    # pyarrow and numpy (about 0.1 CPU-s in each of a run's executors, which only forward to the warm server).
    from fewframes import fsio
    from fewframes.data.ingest import ingest
    from fewframes.data.split import write_split
    from fewframes.data.store import METADATA_FILE, FrameStore

    kind, where = parse_source(source, preset)
    params = {
        "source": source or f"synth:{preset}",
        "preset": preset,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
        "num_classes": num_classes,
    }
    if vocabulary:  # only when given: the same inputs as before keep the same store name
        params["vocabulary"] = vocabulary
    store_dir: Any = Path(store_path)
    if store_root:
        store_dir = fsio.join(store_root.rstrip("/"), f"{kind}-{_inputs_key(params)}")
    with step_run(tracking, "ingest-split", params=params) as tracker:
        started = time.perf_counter()
        if store_root and fsio.exists(fsio.join(store_dir, METADATA_FILE)):
            pass  # complete (its store.json is written last): the same inputs made it
        elif kind == "synth":
            from fewframes.data.synth import generate_synthetic

            # The synthetic TFRecords go beside a local store (in a local temporary folder for one on GCS)
            # and are removed once ingested.
            scratch = None
            if not store_root:
                store_dir.parent.mkdir(parents=True, exist_ok=True)
                scratch = store_dir.parent
            data = get_preset(where).data
            with tempfile.TemporaryDirectory(prefix=".synth-", dir=scratch) as tfrecord_dir:
                generate_synthetic(tfrecord_dir, data)
                ingest(
                    os.path.join(tfrecord_dir, "*.tfrecord"), str(store_dir),
                    num_classes=num_classes or (None if vocabulary else data.classes), vocabulary=vocabulary or None,
                )
        else:
            summary = ingest(
                where, str(store_dir), num_classes=num_classes or None, vocabulary=vocabulary or None,
                override=PIPELINE_OVERRIDE,
            )
            if summary.classes_note:
                print(summary.classes_note, flush=True)
        if store_root:
            Path(store_path).mkdir(parents=True, exist_ok=True)
            _write_json(Path(store_path) / STORE_LOCATION_FILE, {"uri": str(store_dir)})
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
    metadata = {"videos": len(store), "num_classes": store.num_classes, "max_length": max(lengths)}
    if store_root:
        metadata["uri"] = str(store_dir)
    return StepResult(metrics=metrics, metadata=metadata)


def _inputs_key(params: dict[str, Any]) -> str:
    """A short name determined by the ingest's inputs (the same inputs make the same store)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
