"""Evaluate a teacher or student on a split of a frame store: YouTube-8M metrics, per-class AP, encodings.

``evaluate(model, store, split="test", strategy=..., k=...)`` runs the model in ``torch.inference_mode``
over the split (unshuffled), turns logits into probabilities with a sigmoid (PERR counts only scores
above 0, as the official code, so it must see probabilities), and streams them into
``fewframes.metrics.MetricsAccumulator``: memory stays O(videos x top_k), never videos x classes.

It also keeps the video encoding E of the first ``sample_encodings`` videos of the split, in store order
(the split is a stable hash of the video ids), so teacher and students keep the same videos (the paper's
Figure 3 t-SNE compares them video by video).

With ``out_dir`` it writes, each atomically (temp name in the same folder, then rename):

- ``metrics.json``: gap, map, hit_at_1, perr, num_videos, num_classes, top_k, split, strategy, k,
  seconds, videos_per_second (NaN values, e.g. mAP with no positive labels at all, are written as null);
- ``per_class_ap.parquet``: class (int32), ap (float64, null for classes without positives),
  num_positives (int64);
- ``encodings.parquet``: video_id (string), labels (list<int64>), encoding (list<float32>);
- ``predictions.parquet``: one row per evaluated video, in evaluation order: video_id (string), classes
  (list<int32>, its top_k classes by descending score), scores (list<float32>, their probabilities),
  labels (list<int32>, its label ids). What GAP and mAP need and no more (O(videos x top_k)), so the
  report can bootstrap over test videos paired across models (``fewframes.stats``).

Choices the contract left open: the split comes from ``fewframes.data.split.open_split`` (so a test split
recorded with a separate test store is read from that store); ``strategy="all"`` reads every frame and
records ``k`` as null; ``strategy="random"`` is seeded by ``seed`` so a student's evaluation is repeatable.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fewframes import fsio
from fewframes.config import FRAME_SELECTIONS
from fewframes.errors import EvaluationError
from fewframes.metrics import DEFAULT_TOP_K, MetricsAccumulator

METRICS_FILE = "metrics.json"
PER_CLASS_AP_FILE = "per_class_ap.parquet"
ENCODINGS_FILE = "encodings.parquet"
PREDICTIONS_FILE = "predictions.parquet"
METRIC_NAMES = ("gap", "map", "hit_at_1", "perr")


@dataclass
class EvaluationResult:
    """The metrics of one model on one split, and the sampled encodings.

    Indexable like a dict for the headline numbers: ``result["gap"]``, ``"map" in result``.
    """

    gap: float
    map: float
    hit_at_1: float
    perr: float
    per_class_ap: np.ndarray  # float64[classes], NaN for classes without positives
    positives_per_class: np.ndarray  # int64[classes]
    num_videos: int
    split: str
    strategy: str
    k: int | None
    top_k: int = DEFAULT_TOP_K
    seconds: float = 0.0
    encoding_video_ids: list[str] = field(default_factory=list)
    encoding_labels: list[np.ndarray] = field(default_factory=list)
    encodings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    files: dict[str, str] = field(default_factory=dict)  # name -> written path (empty without out_dir)
    # Per evaluated video (evaluation order): its id, top_k classes and scores, and label ids.
    video_ids: list[str] = field(default_factory=list)
    top_classes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int32))
    top_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    video_labels: list[np.ndarray] = field(default_factory=list)
    class_names: list[str] | None = None  # the store's vocabulary ('' where a class has no name), or None

    @property
    def num_classes(self) -> int:
        return int(self.per_class_ap.shape[0])

    def metrics(self) -> dict[str, Any]:
        """The JSON-ready summary written as ``metrics.json``."""
        return {
            "gap": self.gap,
            "map": self.map,
            "hit_at_1": self.hit_at_1,
            "perr": self.perr,
            "num_videos": self.num_videos,
            "num_classes": self.num_classes,
            "top_k": self.top_k,
            "split": self.split,
            "strategy": self.strategy,
            "k": self.k,
            "seconds": self.seconds,
            "videos_per_second": self.num_videos / self.seconds if self.seconds > 0 else None,
        }

    def __getitem__(self, name: str) -> Any:
        return self.metrics()[name]

    def __contains__(self, name: object) -> bool:
        return name in self.metrics()


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N``; CUDA when absent is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise EvaluationError(f"device must be auto, cpu or cuda[:N], got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"device {device!r}: CUDA is not available on this machine")
    return resolved


def _loader_k(strategy: str, k: int | None) -> int | None:
    if strategy not in FRAME_SELECTIONS:
        raise EvaluationError(f"strategy must be one of {', '.join(FRAME_SELECTIONS)}, got {strategy!r}")
    if strategy == "all":
        return None  # every frame; the loader ignores k
    if k is None or int(k) < 1:
        raise EvaluationError(f"strategy {strategy!r} needs k >= 1 (frames per video), got {k!r}")
    return int(k)


def evaluate(
    model: torch.nn.Module,
    store: Any,
    split: str = "test",
    *,
    strategy: str = "all",
    k: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    sample_encodings: int = 500,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    top_k: int = DEFAULT_TOP_K,
    seed: int = 0,
    num_workers: int = 0,
) -> EvaluationResult:
    """GAP@top_k, mAP, Hit@1, PERR, per-class AP and sampled encodings of ``model`` on ``split`` of ``store``.

    ``store`` is a ``FrameStore`` or its path. The teacher reads all frames (``strategy="all"``); a student
    its ``k`` frames (``strategy="uniform"``, ``k=...``). The model is moved to ``device`` (``auto``: CUDA if
    available); scores stay float32 (no autocast) so the metrics do not depend on the device's precision.
    Writes the three files to ``out_dir`` if given.
    """
    from fewframes.data.loader import make_loader
    from fewframes.data.split import open_split

    loader_k = _loader_k(strategy, k)
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    # open_split: the test split may live in a separate test store recorded with the split.
    frame_store, indices = open_split(store, split)
    if len(indices) == 0:
        raise EvaluationError(f"split {split!r} of store {getattr(frame_store, 'path', store)} has no videos")
    torch_device = resolve_device(device)
    loader = make_loader(
        frame_store,
        np.asarray(indices, dtype=np.int64),
        strategy=strategy,
        k=loader_k,
        batch_size=batch_size,
        shuffle=False,
        seed=seed,
        epoch=0,
        num_workers=num_workers,
        pin_memory=torch_device.type == "cuda",
    )
    return evaluate_batches(
        model,
        loader,
        num_classes=int(frame_store.num_classes),
        class_names=frame_store.class_names,
        split=split,
        strategy=strategy,
        k=loader_k,
        device=torch_device,
        sample_encodings=sample_encodings,
        out_dir=out_dir,
        progress=progress,
        top_k=top_k,
        total=len(loader),
    )


def evaluate_batches(
    model: torch.nn.Module,
    batches: Iterable[Any],
    *,
    num_classes: int,
    split: str = "test",
    strategy: str = "all",
    k: int | None = None,
    device: str | torch.device = "cpu",
    sample_encodings: int = 500,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    top_k: int = DEFAULT_TOP_K,
    total: int | None = None,
    class_names: list[str] | None = None,
) -> EvaluationResult:
    """The loop of ``evaluate`` over any iterable of batches with ``frames``, ``mask``, ``labels``, ``video_ids``.
    ``class_names``: the classes' names (kept in the result and its per-class file), or None."""
    from tqdm.auto import tqdm

    if sample_encodings < 0:
        raise EvaluationError(f"sample_encodings must be >= 0, got {sample_encodings}")
    device = resolve_device(device)
    model.to(device)
    accumulator = MetricsAccumulator(num_classes, top_k=top_k)
    sampled_ids: list[str] = []
    sampled_labels: list[np.ndarray] = []
    sampled_encodings: list[np.ndarray] = []
    video_ids: list[str] = []
    video_labels: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, total=total, desc=f"evaluate {split}", unit="batch", disable=not progress):
                output = model(batch.frames.to(device, non_blocking=True), batch.mask.to(device, non_blocking=True))
                logits = output.logits
                if logits.ndim != 2 or logits.shape[1] != num_classes:
                    raise EvaluationError(
                        f"model logits have shape {tuple(logits.shape)}, the store has {num_classes} classes"
                    )
                scores = torch.sigmoid(logits.float()).cpu().numpy()
                labels = batch.labels.cpu().numpy() if torch.is_tensor(batch.labels) else np.asarray(batch.labels)
                accumulator.update(scores, labels)
                video_ids.extend(str(v) for v in list(batch.video_ids))
                video_labels.extend(np.flatnonzero(row > 0).astype(np.int32) for row in labels)
                wanted = sample_encodings - len(sampled_ids)
                if wanted > 0:
                    take = min(wanted, scores.shape[0])
                    sampled_ids.extend(str(v) for v in list(batch.video_ids)[:take])
                    sampled_labels.extend(np.flatnonzero(row > 0).astype(np.int64) for row in labels[:take])
                    sampled_encodings.append(output.encoding[:take].float().cpu().numpy())
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    if accumulator.num_videos == 0:
        raise EvaluationError(f"split {split!r} gave no batches to evaluate")
    computed = accumulator.compute()
    top_classes, top_scores = accumulator.kept_pairs()
    result = EvaluationResult(
        gap=computed["gap"],
        map=computed["map"],
        hit_at_1=computed["hit_at_1"],
        perr=computed["perr"],
        per_class_ap=computed["per_class_ap"],
        positives_per_class=accumulator.positives_per_class,
        num_videos=computed["num_videos"],
        split=split,
        strategy=strategy,
        k=k,
        top_k=top_k,
        seconds=seconds,
        encoding_video_ids=sampled_ids,
        encoding_labels=sampled_labels,
        encodings=np.concatenate(sampled_encodings) if sampled_encodings else np.zeros((0, 0), dtype=np.float32),
        video_ids=video_ids,
        top_classes=top_classes,
        top_scores=top_scores,
        video_labels=video_labels,
        class_names=list(class_names) if class_names is not None else None,
    )
    if out_dir is not None:
        result.files = write_evaluation(result, out_dir)
    return result


# ------------------------------------------------------------------------------------------------------
# Files


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json_atomic(target: Path, obj: dict[str, Any]) -> None:
    text = json.dumps({k: _json_safe(v) for k, v in obj.items()}, indent=2, allow_nan=False) + "\n"
    fsio.write_bytes_atomic(target, text.encode())


def _write_parquet_atomic(target: Path, table: pa.Table) -> None:
    with fsio.staged_output_file(target) as staged:
        pq.write_table(table, staged)


def per_class_table(result: EvaluationResult) -> pa.Table:
    """class, ap (null where the class has no positives), num_positives; and name when the classes have names."""
    ap = result.per_class_ap
    columns = {
        "class": pa.array(np.arange(ap.shape[0], dtype=np.int32)),
        "ap": pa.array(ap, mask=np.isnan(ap), type=pa.float64()),
        "num_positives": pa.array(result.positives_per_class.astype(np.int64)),
    }
    if result.class_names is not None and len(result.class_names) == ap.shape[0]:
        columns["name"] = pa.array(result.class_names, type=pa.string())
    return pa.table(columns)


def class_names_of_evaluation(folder: str | os.PathLike[str]) -> list[str] | None:
    """The class names an evaluation folder's per-class file holds (None when it has none)."""
    path = Path(folder) / PER_CLASS_AP_FILE
    if not path.is_file():
        return None
    table = pq.read_table(path)
    return table.column("name").to_pylist() if "name" in table.column_names else None


def class_label(label: int, class_names: list[str] | None) -> str:
    """How a class is shown to people: "17 Guitar" with names, else "class 17"."""
    name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else ""
    return f"{label} {name}" if name else f"class {label}"


def _list_column(matrix: np.ndarray, rows: int) -> pa.Array:
    """A float32[rows, E] matrix as list<float32> (one list per row), without a Python loop."""
    values = np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1)
    width = values.size // rows if rows else 0
    offsets = np.arange(rows + 1, dtype=np.int32) * width
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))


def encodings_table(result: EvaluationResult) -> pa.Table:
    """video_id, labels (list<int64>), encoding (list<float32>) of the sampled videos."""
    return pa.table(
        {
            "video_id": pa.array(result.encoding_video_ids, type=pa.string()),
            "labels": pa.array([row.tolist() for row in result.encoding_labels], type=pa.list_(pa.int64())),
            "encoding": _list_column(result.encodings, len(result.encoding_video_ids)),
        }
    )


def _int_lists(rows: list[np.ndarray]) -> pa.Array:
    """Variable-length int32 rows as list<int32>, without a Python loop over the values."""
    lengths = np.array([row.size for row in rows], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int32()))


def predictions_table(result: EvaluationResult) -> pa.Table:
    """video_id, classes (top_k, by descending score), scores, labels: one row per evaluated video."""
    return predictions_of(result.video_ids, result.top_classes, result.top_scores, result.video_labels)


def predictions_of(video_ids: list[str], top_classes: np.ndarray, top_scores: np.ndarray,
                   video_labels: list[np.ndarray]) -> pa.Table:
    """The ``predictions.parquet`` table of videos' kept top-k pairs (any order within a row) and label ids."""
    top_classes, top_scores = np.asarray(top_classes), np.asarray(top_scores)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    classes = np.take_along_axis(top_classes, order, axis=1).astype(np.int32)
    scores = np.take_along_axis(top_scores, order, axis=1).astype(np.float32)
    rows = len(video_ids)
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * (classes.shape[1] if rows else 0))
    return pa.table(
        {
            "video_id": pa.array(video_ids, type=pa.string()),
            "classes": pa.ListArray.from_arrays(offsets, pa.array(classes.reshape(-1), type=pa.int32())),
            "scores": pa.ListArray.from_arrays(offsets, pa.array(scores.reshape(-1), type=pa.float32())),
            "labels": _int_lists([np.asarray(v, dtype=np.int32) for v in video_labels]),
        }
    )


def write_predictions(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a ``predictions_of`` table atomically."""
    _write_parquet_atomic(Path(path), table)


def read_predictions(path: str | os.PathLike[str]) -> Any:
    """A ``predictions.parquet`` as ``fewframes.stats.VideoPredictions`` (for paired bootstraps)."""
    from fewframes.stats import VideoPredictions

    table = pq.read_table(path)
    ids = [str(v) for v in table.column("video_id").to_pylist()]
    width = len(table.column("classes")[0]) if ids else 0

    def matrix(name: str, dtype: Any) -> np.ndarray:
        values = table.column(name).combine_chunks().values.to_numpy(zero_copy_only=False)
        return values.astype(dtype).reshape(len(ids), width)

    labels = [np.asarray(v, dtype=np.int64) for v in table.column("labels").to_pylist()]
    return VideoPredictions(ids, matrix("classes", np.int64), matrix("scores", np.float32), labels)


def write_evaluation(result: EvaluationResult, out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Write metrics.json, per_class_ap.parquet, encodings.parquet and predictions.parquet (each
    atomically); return their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    names = (METRICS_FILE, PER_CLASS_AP_FILE, ENCODINGS_FILE, PREDICTIONS_FILE)
    paths = {name: folder / name for name in names}
    _write_parquet_atomic(paths[PER_CLASS_AP_FILE], per_class_table(result))
    _write_parquet_atomic(paths[ENCODINGS_FILE], encodings_table(result))
    _write_parquet_atomic(paths[PREDICTIONS_FILE], predictions_table(result))
    _write_json_atomic(paths[METRICS_FILE], result.metrics())  # last: its presence means the set is complete
    return {name: str(path) for name, path in paths.items()}


def read_encodings(path: str | os.PathLike[str]) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """(video_ids, labels, encodings float32[n, E]) from an ``encodings.parquet`` (for the t-SNE figure)."""
    table = pq.read_table(path)
    ids = [str(v) for v in table.column("video_id").to_pylist()]
    labels = [np.asarray(v, dtype=np.int64) for v in table.column("labels").to_pylist()]
    column = table.column("encoding").combine_chunks()
    if len(ids) == 0:
        return ids, labels, np.zeros((0, 0), dtype=np.float32)
    flat = column.values.to_numpy(zero_copy_only=False).astype(np.float32)
    return ids, labels, flat.reshape(len(ids), -1)


# ------------------------------------------------------------------------------------------------------
# Figure 3: t-SNE of teacher and student encodings of the same videos


@dataclass
class EncodingEmbedding:
    """A joint 2-D t-SNE of teacher and student encodings of the same videos (the paper's Figure 3).

    ``pair_distance_ratio``: mean distance between a video's teacher and student points over the mean
    distance between teacher points of different videos (0: they overlap; about 1: unrelated).
    ``mean_cosine``: mean cosine similarity of the teacher's and the student's raw E of the same video
    (independent of t-SNE's randomness).
    """

    video_ids: list[str]
    video_class: np.ndarray  # int64[n], the top class each video is drawn for
    classes: list[int]  # the drawn classes, most frequent first
    teacher_xy: np.ndarray  # float[n, 2]
    student_xy: np.ndarray  # float[n, 2]
    pair_distance_ratio: float
    mean_cosine: float


def encoding_tsne(
    teacher_file: str | os.PathLike[str],
    student_file: str | os.PathLike[str],
    *,
    num_classes: int = 5,
    perplexity: float = 30.0,
    seed: int = 0,
) -> EncodingEmbedding:
    """Joint t-SNE of two ``encodings.parquet`` files on their common videos of the ``num_classes`` most
    frequent classes (a video is drawn for the first of those classes it carries)."""
    from sklearn.manifold import TSNE

    teacher_ids, teacher_labels, teacher_e = read_encodings(teacher_file)
    student_ids, _, student_e = read_encodings(student_file)
    if teacher_e.shape[1:] != student_e.shape[1:]:
        raise EvaluationError(
            f"encodings of {teacher_file} (size {teacher_e.shape[1:]}) and {student_file} "
            f"(size {student_e.shape[1:]}) differ: the student must share the teacher's E"
        )
    student_row = {video_id: row for row, video_id in enumerate(student_ids)}
    common = [row for row, video_id in enumerate(teacher_ids) if video_id in student_row]
    counts = np.bincount(np.concatenate([teacher_labels[r] for r in common] or [np.zeros(0, np.int64)]))
    top = [int(c) for c in np.argsort(-counts, kind="stable")[:num_classes] if counts[c] > 0]
    rows, video_class = [], []
    for row in common:
        carried = [c for c in top if c in set(teacher_labels[row].tolist())]
        if carried:
            rows.append(row)
            video_class.append(carried[0])
    if len(rows) < 3:
        raise EvaluationError(
            f"{teacher_file} and {student_file}: only {len(rows)} common videos of the top classes; t-SNE needs 3"
        )
    teacher = teacher_e[rows].astype(np.float64)
    student = student_e[[student_row[teacher_ids[r]] for r in rows]].astype(np.float64)
    n = len(rows)
    # Exact t-SNE for small sets: faster than Barnes-Hut's threaded tree code below a few hundred points.
    method = "exact" if 2 * n <= 400 else "barnes_hut"
    tsne = TSNE(
        n_components=2, perplexity=min(perplexity, (2 * n - 1) / 3.0), init="pca", random_state=seed, method=method
    )
    xy = tsne.fit_transform(np.concatenate([teacher, student]))
    teacher_xy, student_xy = xy[:n], xy[n:]
    pair = np.linalg.norm(teacher_xy - student_xy, axis=1).mean()
    spread = np.linalg.norm(teacher_xy[:, None, :] - teacher_xy[None, :, :], axis=2).sum() / (n * (n - 1))
    norms = np.linalg.norm(teacher, axis=1) * np.linalg.norm(student, axis=1)
    cosine = np.sum(teacher * student, axis=1) / np.maximum(norms, 1e-12)
    return EncodingEmbedding(
        video_ids=[teacher_ids[r] for r in rows],
        video_class=np.asarray(video_class, dtype=np.int64),
        classes=top,
        teacher_xy=teacher_xy,
        student_xy=student_xy,
        pair_distance_ratio=float(pair / spread) if spread > 0 else 0.0,
        mean_cosine=float(cosine.mean()),
    )


def plot_encoding_tsne(
    embedding: EncodingEmbedding,
    title: str = "Teacher (dark) and student (light) encodings",
    class_names: list[str] | None = None,
) -> Any:
    """The Figure 3 scatter: one colour per class, dark = teacher, light = student of the same video; the legend
    names the classes when ``class_names`` is given."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    fig, ax = plt.subplots(figsize=(6, 5))
    palette = plt.get_cmap("tab10")
    for i, cls in enumerate(embedding.classes):
        chosen = embedding.video_class == cls
        dark = np.array(to_rgb(palette(i % 10)))
        light = dark + (1.0 - dark) * 0.55  # the same hue, lighter
        label = class_label(cls, class_names)
        ax.scatter(*embedding.teacher_xy[chosen].T, s=14, color=dark, marker="o", label=f"{label} (t)")
        ax.scatter(*embedding.student_xy[chosen].T, s=14, color=light, marker="^", label=f"{label} (s)")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return fig


__all__ = [
    "ENCODINGS_FILE",
    "EncodingEmbedding",
    "EvaluationResult",
    "METRICS_FILE",
    "METRIC_NAMES",
    "PER_CLASS_AP_FILE",
    "PREDICTIONS_FILE",
    "class_label",
    "class_names_of_evaluation",
    "evaluate",
    "encoding_tsne",
    "evaluate_batches",
    "plot_encoding_tsne",
    "read_encodings",
    "predictions_of",
    "read_predictions",
    "write_predictions",
    "write_evaluation",
]
