"""Classify new videos with a trained teacher or student and write a YouTube-8M Kaggle submission CSV.

``predict(model, src, out, top_k=20)`` reads videos from a frame store (only the frames the model needs:
a student's k selected frames, a teacher's all) or from frame-level TFRecords (which must be parsed whole,
then only the selected frames are kept), and writes

    VideoId,LabelConfidencePairs
    abc1,17 0.981234 3 0.520000 ...

one line per video, its ``top_k`` (label, sigmoid score) pairs sorted by score, highest first (ties: lower
label first), scores as ``%f`` like the official starter code's ``format_lines``. The file is written under a
temporary name and renamed (or, for ``gs://``, uploaded) at the end, so an interrupted run leaves no half file.

Class names: the submission file stays in Kaggle's format. When the classes have names (the model file's
``class_names``, from the vocabulary of the store it was trained on; else the vocabulary of the frame store
read), the same pairs are also written with their names to ``names_path(out)`` (``predictions.csv`` ->
``predictions.names.csv``), one row per (video, rank), a CSV that quotes names holding commas::

    VideoId,Rank,Label,Name,Score
    abc1,1,17,Guitar,0.981234
    abc1,2,3,"Musician, street",0.520000

Contract details chosen here: the source is TFRecords when it is a ``.tfrecord`` file, a glob, or a
directory holding ``*.tfrecord`` shards; anything else is opened as a frame store. Students take their
``StudentConfig`` (k, frame selection) from the loaded model (see ``fewframes.benchmark.student_config_of``)
or from the ``student`` argument; random frame selection is seeded.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from fewframes import fsio
from fewframes.benchmark import (
    open_store,
    resolve_model,
    classify_batch,
    frame_positions,
    read_batch,
    resolve_device,
    student_config_of,
)
from fewframes.config import StudentConfig
from fewframes.errors import BenchmarkError

CSV_HEADER = "VideoId,LabelConfidencePairs"
NAMES_HEADER = ("VideoId", "Rank", "Label", "Name", "Score")


def names_path(out: str | os.PathLike[str]) -> str:
    """Where the named predictions of ``out`` go: ``x.csv`` -> ``x.names.csv`` (any other name: + ``.names.csv``)."""
    text = os.fspath(out)
    return (text[: -len(".csv")] if text.endswith(".csv") else text) + ".names.csv"


def top_k_pairs(scores: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """The ``top_k`` (label, score) pairs of one video's scores, highest score first, ties by lower label."""
    k = min(top_k, scores.shape[0])
    candidates = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    order = np.lexsort((candidates, -scores[candidates]))  # primary key: -score; then label
    return [(int(candidates[i]), float(scores[candidates[i]])) for i in order]


def format_line(video_id: str, scores: np.ndarray, top_k: int) -> str:
    """One submission line (no newline): ``id,label score label score ...``."""
    if "," in video_id or "\n" in video_id:
        raise BenchmarkError(f"video id {video_id!r} contains a comma or newline; cannot write it to the CSV")
    return video_id + "," + " ".join(f"{label:d} {score:f}" for label, score in top_k_pairs(scores, top_k))


def is_tfrecord_source(src: str | os.PathLike[str]) -> bool:
    """True when ``src`` names TFRecords (a ``.tfrecord`` file, a glob, or a directory of shards)."""
    text = os.fspath(src)
    if any(ch in text for ch in "*?[") or text.endswith(".tfrecord"):
        return True
    if fsio.is_gcs(text):
        # A gs:// "folder" of shards; a frame store holds no *.tfrecord objects at its top level.
        return bool(fsio.glob(fsio.join(text, "*.tfrecord")))
    return Path(text).is_dir() and any(Path(text).glob("*.tfrecord"))


def _store_batches(
    store: Any, student: StudentConfig | None, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray | None]]:
    ids = list(store.video_ids)
    for start in range(0, len(store), batch_size):
        indices = list(range(start, min(start + batch_size, len(store))))
        frames, mask = read_batch(store, indices, student, rng)
        yield [ids[i] for i in indices], frames, mask


def _tfrecord_batches(
    src: str, student: StudentConfig | None, batch_size: int, rng: np.random.Generator, widths: tuple[int, int]
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray | None]]:
    """Batches of TFRecord videos; ``widths``: the model's (rgb, audio) frame widths ((D, 0): one part, split
    as the records hold it)."""
    from fewframes.data.yt8m import read_tfrecords

    feature_dim = sum(widths)

    def flush(ids: list[str], selected: list[np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        slots = max(len(s) for s in selected)
        frames = np.zeros((len(selected), slots, feature_dim), dtype=np.uint8)
        mask = np.zeros((len(selected), slots), dtype=bool)
        for row, chosen in enumerate(selected):
            frames[row, : len(chosen)] = chosen
            mask[row, : len(chosen)] = True
        return ids, frames, (None if mask.all() else mask)

    ids: list[str] = []
    selected: list[np.ndarray] = []
    # Predictions need no labels (the test set has none); the frames must be as wide as the model reads them.
    for video in read_tfrecords(src, labelled=False, widths=widths if widths[1] else None):
        if video.rgb.shape[1] + video.audio.shape[1] != feature_dim:
            raise BenchmarkError(
                f"video {video.id!r}: frames of {video.rgb.shape[1]} + {video.audio.shape[1]} bytes; the model reads "
                f"{feature_dim}"
            )
        positions, real = frame_positions(video.num_frames, student, rng)
        chosen = positions[real]
        selected.append(np.concatenate([video.rgb[chosen], video.audio[chosen]], axis=1))
        ids.append(video.id)
        if len(ids) == batch_size:
            yield flush(ids, selected)
            ids, selected = [], []
    if ids:
        yield flush(ids, selected)


def _write_names(out: str, rows: list[tuple[str, int, int, str, float]]) -> None:
    """The named predictions (see the module docstring), written atomically like the submission."""
    import csv

    with fsio.staged_output_file(out) as temp:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(NAMES_HEADER)
            for video_id, rank, label, name, score in rows:
                writer.writerow([video_id, rank, label, name, f"{score:f}"])


def _write_atomically(out: str, lines: Iterable[str]) -> int:
    count = 0
    try:
        with fsio.staged_output_file(out) as temp:  # local rename or gs:// upload once complete
            with open(temp, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(CSV_HEADER + "\n")
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
    finally:
        close = getattr(lines, "close", None)
        if close is not None:  # a failed write: end the progress bar now, not after the error is printed
            close()
    return count


def predict(
    model: nn.Module | str | os.PathLike[str], src: str | os.PathLike[str] | Any, out: str | os.PathLike[str],
    top_k: int = 20, **options: Any,
) -> int:
    """Classify every video of ``src`` (frame store or TFRecords) and write the submission CSV ``out``.

    Returns the number of videos written. ``model`` is a ``VideoClassifier`` or a saved model path; ``src`` a
    path, or an already open ``FrameStore`` (whose ``bytes_read`` then shows what was read). ``options``:
    ``predict_files``'s (batch_size, device, student, seed, progress). When the classes have names,
    ``names_path(out)`` holds them too (module docstring; ``predict_files`` also says whether).
    """
    return predict_files(model, src, out, top_k, **options)[0]


def class_names_of(model: nn.Module, store: Any = None) -> list[str] | None:
    """The class names of ``model`` (its file's), else of ``store`` (its vocabulary) when the counts agree."""
    names = getattr(model, "class_names", None)
    if names is None and store is not None:
        names = getattr(store, "class_names", None)
    config = getattr(model, "config", None)
    if names is not None and config is not None and len(names) != config.num_classes:
        return None
    return list(names) if names is not None else None


def predict_files(
    model: nn.Module | str | os.PathLike[str],
    src: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    top_k: int = 20,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    student: StudentConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[int, str | None]:
    """``predict``, returning (videos written, the named predictions' path or None when no names are known)."""
    from tqdm.auto import tqdm

    if top_k < 1:
        raise BenchmarkError(f"--top-k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise BenchmarkError(f"--batch must be >= 1, got {batch_size}")
    torch_device = resolve_device(device)
    loaded = resolve_model(model).to(torch_device).eval()
    student = student or student_config_of(loaded)
    rng = np.random.default_rng(seed)
    src_text = os.fspath(src) if isinstance(src, (str, os.PathLike)) else None
    config = getattr(loaded, "config", None)
    store = None
    if src_text is not None and is_tfrecord_source(src_text):
        widths = config.widths if config is not None else (1024, 128)
        batches = _tfrecord_batches(src_text, student, batch_size, rng, widths)
        total = None
    else:
        store = open_store(src if src_text is None else src_text)
        if config is not None and store.feature_dim != config.feature_dim:
            raise BenchmarkError(
                f"--src {store.path}: frames of {store.feature_dim} bytes (rgb {store.rgb_dim} + audio "
                f"{store.audio_dim}); the model reads {config.feature_dim}"
            )
        batches = _store_batches(store, student, batch_size, rng)
        total = len(store)
    names = class_names_of(loaded, store)
    named: list[tuple[str, int, int, str, float]] = []

    def lines() -> Iterator[str]:
        with torch.inference_mode(), tqdm(total=total, desc="predict", unit="video", disable=not progress) as bar:
            for ids, frames, mask in batches:
                scores = classify_batch(loaded, frames, mask, torch_device)
                for video_id, video_scores in zip(ids, scores):
                    line = format_line(video_id, video_scores, top_k)
                    if names is not None:
                        pairs = top_k_pairs(video_scores, top_k)
                        named.extend((video_id, rank, label, names[label], score)
                                     for rank, (label, score) in enumerate(pairs, start=1))
                    yield line
                bar.update(len(ids))

    count = _write_atomically(os.fspath(out), lines())
    if names is None:
        return count, None
    _write_names(names_path(out), named)
    return count, names_path(out)


def read_predictions(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Parse a submission CSV (local or gs://) back into {video id: [(label, score), ...]} (checks the header)."""
    text = fsio.read_bytes(path).decode("utf-8")
    return _parse(io.StringIO(text, newline="\n"), os.fspath(path))


def _parse(handle: TextIO, name: str) -> dict[str, list[tuple[int, float]]]:
    header = handle.readline().rstrip("\n")
    if header != CSV_HEADER:
        raise BenchmarkError(f"{name}: header must be {CSV_HEADER!r}, got {header!r}")
    result: dict[str, list[tuple[int, float]]] = {}
    for number, line in enumerate(handle, start=2):
        video_id, _, pairs = line.rstrip("\n").partition(",")
        values: Sequence[str] = pairs.split()
        if len(values) % 2:
            raise BenchmarkError(f"{name} line {number}: odd number of label/score values")
        result[video_id] = [(int(values[i]), float(values[i + 1])) for i in range(0, len(values), 2)]
    return result


__all__ = [
    "CSV_HEADER", "NAMES_HEADER", "class_names_of", "format_line", "is_tfrecord_source", "names_path", "predict",
    "predict_files", "read_predictions", "top_k_pairs",
]  # fmt: skip
