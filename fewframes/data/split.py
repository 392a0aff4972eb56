"""Deterministic train/validation/test split by a stable hash of the video id.

Each id maps to ``u = sha256(id)[:8] / 2**64`` in [0, 1): ``u < test_fraction`` -> test,
``u < test_fraction + validation_fraction`` -> validation, else train. A video's split depends only on its
id and the fractions, never on the order, the sharding or the other videos of the store, so re-ingesting
or re-sharding never moves a video between splits.

Training subsets (the paper's Table 3: 10/25/50% of the training data): a training video is in the subset
of fraction f under seed s when ``sha256(f"{s}:" + id)[:8] / 2**64 < f``. For one seed, the subset of a
smaller fraction is contained in the subset of any bigger one (nested), and the subset hash is independent
of the split hash.

YouTube-8M practice of a separate test store: ``write_split(store, test_store=other)`` records ``other``
as the test split (all its videos) and divides ``store`` into train/validation only (``test_fraction`` is
then 0 for ``store``). Ids present in both stores are an error (a test leak).

``write_split`` records the split as ``split.parquet`` inside the store (atomically) together with its
parameters; ``load_split`` uses that record when present (its fractions, its test store) and computes
the same hash split on the fly otherwise (with the ``DataConfig`` default fractions).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fewframes import fsio
from fewframes.config import DataConfig
from fewframes.errors import DataError, StoreError

SPLITS = ("train", "validation", "test")
SPLIT_FILE = "split.parquet"
_METADATA_KEY = b"fewframes_split"


def hash_unit(video_ids: Iterable[str], salt: str = "") -> np.ndarray:
    """float64 in [0, 1) per id: the first 8 bytes of sha256(salt + id) over 2**64 (platform-independent)."""
    prefix = salt.encode("utf-8")
    words = [int.from_bytes(hashlib.sha256(prefix + v.encode("utf-8")).digest()[:8], "big") for v in video_ids]
    # Divide in two steps so no precision is lost before the float conversion matters.
    return np.array([w >> 11 for w in words], dtype=np.float64) / float(1 << 53)


def assign_splits(video_ids: Iterable[str], validation_fraction: float, test_fraction: float) -> np.ndarray:
    """The split name of each id (an array of ``"train"``/``"validation"``/``"test"``)."""
    _check_fractions(validation_fraction, test_fraction)
    u = hash_unit(video_ids)
    out = np.full(len(u), "train", dtype=object)
    out[u < test_fraction + validation_fraction] = "validation"
    out[u < test_fraction] = "test"
    return out


def train_subset_mask(video_ids: Iterable[str], train_fraction: float, seed: int) -> np.ndarray:
    """bool per id: in the seeded training subset of ``train_fraction`` (nested across fractions)."""
    if not 0.0 < train_fraction <= 1.0:
        raise DataError(f"train_fraction must be in (0, 1], got {train_fraction}")
    ids = list(video_ids)
    if train_fraction >= 1.0:
        return np.ones(len(ids), dtype=bool)
    return hash_unit(ids, salt=f"{int(seed)}:") < train_fraction


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if validation_fraction + test_fraction >= 1.0:
        raise DataError(
            f"validation_fraction + test_fraction must be < 1 (no training data left), got {validation_fraction} + {test_fraction}"
        )


def _open(store: Any) -> Any:
    from fewframes.data.store import FrameStore

    return store if isinstance(store, FrameStore) else FrameStore.open(store)


def _absolute(path: str) -> str:
    return path if fsio.is_gcs(path) else os.path.abspath(path)


def _store_path(store: Any) -> str:
    return str(getattr(store, "path", store))


def write_split(
    store_path: Any,
    *,
    validation_fraction: float = DataConfig.validation_fraction,
    test_fraction: float = DataConfig.test_fraction,
    train_fraction: float = 1.0,
    seed: int = 0,
    test_store: Any = None,
) -> dict[str, Any]:
    """Compute the hash split of the store at ``store_path`` (a path or an open ``FrameStore``), record it as
    ``split.parquet`` in the store (atomically) and return a summary: videos per split, the size of the
    training subset for ``train_fraction``/``seed``, and the parameters."""
    store = _open(store_path)
    store.require_labels("a training/validation/test split")
    test = None if test_store is None else _open(test_store)
    if test is not None:
        test.require_labels("the test split (evaluation needs labels)")
    if test is not None:
        overlap = set(store.video_ids) & set(test.video_ids)
        if overlap:
            example = sorted(overlap)[0]
            raise DataError(
                f"test_store {test.path}: {len(overlap)} video id(s) also in {store.path} (e.g. {example!r}); a test leak"
            )
        test_fraction = 0.0
    splits = assign_splits(store.video_ids, validation_fraction, test_fraction)
    subset = train_subset_mask(store.video_ids, train_fraction, seed)
    params = {
        "validation_fraction": float(validation_fraction),
        "test_fraction": float(test_fraction),
        "train_fraction": float(train_fraction),
        "seed": int(seed),
        "test_store": None if test is None else _absolute(test.path),
        "hash": "sha256(video_id)[:8] / 2**64",
    }
    table = pa.table({"video_id": store.video_ids, "split": pa.array(splits.tolist(), pa.string())})
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(params).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    fsio.write_bytes_atomic(fsio.join(store.path, SPLIT_FILE), sink.getvalue())
    counts = {name: int(np.sum(splits == name)) for name in SPLITS}
    if test is not None:
        counts["test"] = len(test)
    return {
        **counts,
        "train_subset": int(np.sum((splits == "train") & subset)),
        **params,
        "path": fsio.join(store.path, SPLIT_FILE),
    }


def read_split_record(store_path: Any) -> tuple[dict[str, Any], pa.Table] | None:
    """(parameters, table) of the recorded ``split.parquet``, or None when the store has none."""
    path = fsio.join(_store_path(store_path), SPLIT_FILE)
    if not fsio.exists(path):
        return None
    try:
        table = pq.read_table(pa.BufferReader(fsio.read_bytes(path)))
        params = json.loads((table.schema.metadata or {})[_METADATA_KEY])
    except Exception as exc:
        raise StoreError(f"{path}: not a fewframes split record ({exc})") from exc
    return params, table


def _split_indices(store: Any, split: str, train_fraction: float | None, seed: int | None) -> tuple[np.ndarray, str | None]:
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    record = read_split_record(store)
    if record is None:
        params: dict[str, Any] = {
            "validation_fraction": DataConfig.validation_fraction,
            "test_fraction": DataConfig.test_fraction,
            "train_fraction": 1.0,
            "seed": 0,
            "test_store": None,
        }
        splits = assign_splits(store.video_ids, params["validation_fraction"], params["test_fraction"])
    else:
        params, table = record
        recorded_ids = table.column("video_id").to_pylist()
        if recorded_ids != store.video_ids:
            raise StoreError(
                f"{fsio.join(store.path, SPLIT_FILE)}: records {len(recorded_ids)} videos that do not match the store's "
                f"{len(store)}; it is stale, run `fewframes data split` again"
            )
        splits = np.array(table.column("split").to_pylist(), dtype=object)
    if split == "test" and params.get("test_store"):
        return np.arange(len(_open(params["test_store"])), dtype=np.int64), params["test_store"]
    selected = splits == split
    if split == "train":
        fraction = params.get("train_fraction", 1.0) if train_fraction is None else train_fraction
        chosen_seed = params.get("seed", 0) if seed is None else seed
        selected &= train_subset_mask(store.video_ids, fraction, chosen_seed)
    return np.flatnonzero(selected).astype(np.int64), None


def load_split(
    store_path: Any, split: str, train_fraction: float | None = None, seed: int | None = None
) -> np.ndarray:
    """Sorted int64 indices of the videos of ``split`` in the store at ``store_path`` (a path or a
    ``FrameStore``). For ``train``, only the seeded subset of ``train_fraction`` (None: the recorded value,
    else 1.0). When the split was recorded with a separate test store, ``test`` indexes THAT store: use
    ``open_split`` to get the store to read them from."""
    store = _open(store_path)
    store.require_labels(f"the {split} split (training and evaluation need labels)")
    indices, _ = _split_indices(store, split, train_fraction, seed)
    return indices


def open_split(
    store_path: Any, split: str, train_fraction: float | None = None, seed: int | None = None
) -> tuple[Any, np.ndarray]:
    """(FrameStore, indices) of ``split``: the store itself, or the separate test store when recorded."""
    store = _open(store_path)
    store.require_labels(f"the {split} split (training and evaluation need labels)")
    indices, other = _split_indices(store, split, train_fraction, seed)
    if other is None:
        return store, indices
    test = _open(other)
    test.require_labels(f"the {split} split (evaluation needs labels)")
    return test, indices


__all__ = [
    "SPLITS",
    "SPLIT_FILE",
    "assign_splits",
    "hash_unit",
    "load_split",
    "open_split",
    "read_split_record",
    "train_subset_mask",
    "write_split",
]
