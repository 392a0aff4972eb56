"""The frame store read in place on a cluster, on the GCS emulator: ingest-split writes the store under
``store_root`` on GCS and its KFP artifact is only a pointer (the backend's launcher downloads that, not the
store, into each pod); a k=30 student's evaluate step then fetches about k/N of the frames of the videos
it scores, with the store's ranged reads, instead of the whole store.

What is counted: every byte the GCS client downloads in this process (``Blob.download_as_bytes`` and
``Blob.download_to_file``, wrapped to count and call through), i.e. what the step takes off the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from fewframes.components.steps import (
    STORE_LOCATION_FILE,
    Sizes,
    evaluate_step,
    ingest_split_step,
    store_location,
    train_baseline_step,
)
from fewframes.config import FEATURE_DIM
from fewframes.runs import TrackingContext
from store_helpers import gcs_emulator

BUCKET = "fewframes-in-place"
K = 30


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with gcs_emulator(BUCKET) as url:
        yield url


@pytest.fixture()
def downloaded(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Bytes the GCS client downloads, by method, from now on."""
    from google.cloud.storage import Blob

    counts = {"bytes": 0, "requests": 0}
    as_bytes, to_file = Blob.download_as_bytes, Blob.download_to_file

    def counting_as_bytes(self: Any, *args: Any, **kwargs: Any) -> bytes:
        data = as_bytes(self, *args, **kwargs)
        counts["bytes"] += len(data)
        counts["requests"] += 1
        return data

    def counting_to_file(self: Any, file_obj: Any, *args: Any, **kwargs: Any) -> None:
        start = file_obj.tell()
        to_file(self, file_obj, *args, **kwargs)
        counts["bytes"] += file_obj.tell() - start
        counts["requests"] += 1

    monkeypatch.setattr(Blob, "download_as_bytes", counting_as_bytes)
    monkeypatch.setattr(Blob, "download_to_file", counting_to_file)
    return counts


def _store_bytes(uri: str) -> int:
    from fewframes import fsio

    bucket, prefix = fsio.split_gcs(uri)
    return sum(blob.size for blob in fsio.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/"))


@pytest.mark.slow  # ingest + one training epoch + evaluate through the emulator: ~35 s on 2 busy cores
def test_a_k30_students_evaluate_step_fetches_about_k_over_n_of_the_frames(
    emulator: str, tmp_path: Path, downloaded: dict[str, int], record_property: Any
) -> None:
    from fewframes.data.split import load_split
    from fewframes.data.store import FrameStore

    tracking = TrackingContext()  # tracking off: only the data path is measured here
    artifact = tmp_path / "kfp" / "ingest-split" / "store"
    result = ingest_split_step(
        "synth:tiny", str(artifact), preset="tiny", seed=0, validation_fraction=0.1, test_fraction=0.2,
        tracking=tracking, store_root=f"gs://{BUCKET}/kfp/frame-stores",
    )  # fmt: skip
    # The artifact the backend moves from pod to pod is a pointer of a few bytes, the store is on GCS.
    assert [p.name for p in artifact.iterdir()] == [STORE_LOCATION_FILE]
    uri = store_location(artifact)
    assert uri == result.metadata["uri"] and uri.startswith(f"gs://{BUCKET}/kfp/frame-stores/synth-")
    assert store_location(tmp_path) == str(tmp_path)  # a store written into its artifact is used as is
    whole_store = _store_bytes(uri)
    pointer = (artifact / STORE_LOCATION_FILE).stat().st_size

    # A k=30 student (Uniform-30, trained one epoch from the store on GCS), as its loop iteration has it.
    model_dir = tmp_path / "kfp" / "train-baseline" / "baseline"
    sizes = Sizes(hidden_size=16, num_layers=1, teacher_block_length=20, max_epochs=1, batch_size=32, learning_rate=0.01, seed=0, device="cpu")
    train_baseline_step(
        uri, str(model_dir), k=K, frame_selection="uniform", train_fraction=1.0, sizes=sizes, tracking=tracking
    )

    downloaded.update(bytes=0, requests=0)
    evaluate_step(store_location(artifact), str(model_dir), str(tmp_path / "evaluation"), tracking)
    fetched = downloaded["bytes"]

    store = FrameStore.open(uri)
    test = load_split(uri, "test")
    lengths = np.asarray(store.lengths)[test]
    test_payload = int(lengths.sum()) * FEATURE_DIM  # every frame of the videos it scores
    needed = int(np.minimum(lengths, K).sum()) * FEATURE_DIM  # their k frames
    metadata_bytes = fetched - needed
    ratio_frames = fetched / test_payload
    ratio_store = fetched / whole_store
    report = {
        "videos_scored": len(test), "mean_frames": float(lengths.mean()), "k": K,
        "k_over_mean_n": K / float(lengths.mean()), "fetched_bytes": fetched, "get_requests": downloaded["requests"],
        "frames_needed_bytes": needed, "test_videos_all_frames_bytes": test_payload, "whole_store_bytes": whole_store,
        "pointer_artifact_bytes": pointer, "fetched_over_test_videos": ratio_frames, "fetched_over_whole_store": ratio_store,
    }  # fmt: skip
    record_property("bytes", json.dumps(report))
    print(json.dumps(report, indent=1))
    # Its k frames of each scored video, the store's small index files, nothing else.
    assert needed <= fetched <= needed + 256 * 1024, report
    assert ratio_frames <= 1.2 * K / float(lengths.mean()) + 0.02, report
    assert ratio_store < 0.25, report  # before: the launcher copied the whole store (ratio 1) into the pod
