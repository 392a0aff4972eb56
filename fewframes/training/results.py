"""What a training run returns, and the self-describing model file it leaves behind.

A model file (``teacher.pt``, ``student.pt``, ``baseline.pt``) is a plain ``torch.save`` dict, loadable with
``weights_only=True``: the format tag, the ModelConfig (the model's own block length), the StudentConfig for
students and baselines (k, frame selection, loss, ...) or None for a teacher, the role, the state dict and the
validation metrics of the epoch it comes from, and the class names of the store it was trained on when that
store has a vocabulary (``class_names``; absent otherwise). :func:`load_model` rebuilds the model from it alone.

Integrity (docs/faults.md): the payload carries ``payload_sha256``, a SHA-256 over its fields and every tensor's
name, dtype, shape and bytes; :func:`read_model_file` refuses a file whose payload does not match it (a damaged
file) with one line. A file written before checksums existed has none: it is loaded with a one-line warning on
stderr (refusing would strand every model trained so far). Before anything is allocated, :func:`load_model`
checks the ModelConfig against :data:`MODEL_FILE_LIMITS`, builds the model on PyTorch's ``meta`` device (shapes,
no memory) and compares every weight's shape with the file's, so a crafted configuration (``num_classes =
10**9``) or an architecture mismatch is one line, never a 256 GB allocation or an 18-line PyTorch message.
Files are only ever read with ``weights_only=True``; no message suggests otherwise.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fewframes.checkpoint import atomic_torch_save
from fewframes.config import ModelConfig, StudentConfig
from fewframes.errors import TrainingError

MODEL_FORMAT = "fewframes-model/1"
CHECKSUM_KEY = "payload_sha256"
# Upper bounds on a model file's ModelConfig, checked before anything is built: far above any real model
# (YouTube-8M has 3,862 classes; the paper's LSTMs 1,024 cells) and far below what exhausts a machine.
MODEL_FILE_LIMITS: dict[str, int] = {
    "num_classes": 100_000,
    "feature_dim": 65_536,
    "hidden_size": 65_536,
    "num_layers": 64,
    "block_length": 300,
    "clusters": 4_096,
    "expansion": 64,
    "groups": 4_096,
    "moe_experts": 64,
}
MAX_MODEL_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights


@dataclass
class TrainResult:
    """One trained model: its best epoch (by validation GAP), the per-epoch history and the saved best model.

    ``history`` holds one dict per epoch: ``epoch`` (1-based), ``stage``, ``train_loss`` (and its parts,
    ``train_ce``, ``train_rep``, ...), ``val_gap``, ``val_map``, ``lr`` (the learning rate the epoch used);
    in parallel training also ``teacher_val_gap`` and ``teacher_val_map``.

    ``epochs_run`` is how many epochs were trained, ``stopped_early`` whether early stopping ended the run before
    ``TrainConfig.epochs``, and ``stages`` one entry per stage: its ``stage`` name, ``epochs_run``,
    ``max_epochs`` and ``stopped_early`` (serial (a)'s L_rep stage may stop early and its L_CE stage still run).
    """

    best_epoch: int
    best_val_gap: float
    history: list[dict[str, Any]]
    model_path: Path | str  # a str for a gs:// out_dir
    model: torch.nn.Module
    model_config: ModelConfig
    student_config: StudentConfig | None = None
    best_val_map: float = float("nan")
    epochs_run: int = 0
    stopped_early: bool = False
    stages: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the run (no tensors)."""
        return {
            "best_epoch": self.best_epoch,
            "best_val_gap": self.best_val_gap,
            "best_val_map": self.best_val_map,
            "model_path": str(self.model_path),
            "model_config": self.model_config.to_dict(),
            "student_config": self.student_config.to_dict() if self.student_config else None,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "stages": self.stages,
            "history": self.history,
        }


@dataclass
class ParallelResult:
    """Parallel training's two models: the teacher's and the student's results over the same epochs."""

    teacher: TrainResult
    student: TrainResult
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch, both models' figures


def model_file_payload(
    model: torch.nn.Module,
    model_config: ModelConfig,
    student_config: StudentConfig | None,
    role: str,
    metrics: dict[str, float] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """The dict a model file holds (tensors on the CPU)."""
    payload = {
        "format": MODEL_FORMAT,
        "role": role,
        "model_config": model_config.to_dict(),
        "student_config": student_config.to_dict() if student_config else None,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "metrics": dict(metrics or {}),
    }
    if class_names is not None:
        if len(class_names) != model_config.num_classes:
            raise TrainingError(f"{len(class_names)} class names for a model of {model_config.num_classes} classes")
        payload["class_names"] = [str(name) for name in class_names]
    payload[CHECKSUM_KEY] = payload_checksum(payload)
    return payload


def payload_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 over a model file's fields (JSON, sorted keys) and each tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    fields = {key: value for key, value in payload.items() if key not in ("state_dict", CHECKSUM_KEY)}
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name in sorted(payload.get("state_dict") or {}):
        tensor = payload["state_dict"][name]
        digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    model_config: ModelConfig,
    student_config: StudentConfig | None = None,
    *,
    role: str = "model",
    metrics: dict[str, float] | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Write a self-describing model file atomically (temp name, then rename)."""
    return atomic_torch_save(model_file_payload(model, model_config, student_config, role, metrics, class_names), path)


def read_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload of a model file (local or gs://), checked; a clear error names the file otherwise."""
    from fewframes import fsio

    source: Any
    if fsio.is_gcs(path):
        if not fsio.exists(path):
            raise TrainingError(f"model file {path} does not exist")
        source = io.BytesIO(fsio.read_bytes(path))
    else:
        path = Path(path)
        if not path.is_file():
            raise TrainingError(f"model file {path} does not exist")
        source = path
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        # PyTorch's own message may advise weights_only=False: never pass that on for a file a user supplies.
        raise TrainingError(
            f"model file {path} is damaged or not a fewframes model file ({type(exc).__name__} while reading it "
            "as a PyTorch archive)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise TrainingError(f"model file {path} is not a fewframes model (format tag {MODEL_FORMAT!r} missing)")
    if not isinstance(payload.get("state_dict"), dict) or not isinstance(payload.get("model_config"), dict):
        raise TrainingError(f"model file {path} is not a fewframes model (no state_dict/model_config)")
    expected = payload.get(CHECKSUM_KEY)
    if expected is None:
        print(f"fewframes: warning: model file {path} has no checksum (written before model files carried "
              "one); loaded unchecked", file=sys.stderr)
    elif payload_checksum(payload) != expected:
        raise TrainingError(f"model file {path} is damaged: its content does not match its checksum ({CHECKSUM_KEY})")
    return payload


def check_model_config(path: Any, values: dict[str, Any]) -> ModelConfig:
    """The ModelConfig a model file describes, checked against :data:`MODEL_FILE_LIMITS` first, one line."""
    for name, limit in MODEL_FILE_LIMITS.items():
        value = values.get(name)
        if isinstance(value, bool) or (value is not None and not isinstance(value, int)):
            raise TrainingError(f"model file {path}: model_config.{name} is {value!r}, expected a whole number")
        if value is not None and value > limit:
            raise TrainingError(f"model file {path}: model_config.{name} = {value} is over the limit {limit:,}")
    try:
        return ModelConfig.from_dict(values)
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise TrainingError(f"model file {path}: model_config: {exc}") from None


def _check_weights(path: Any, model_config: ModelConfig, state_dict: dict[str, Any]) -> None:
    """The file's weights have exactly the names and shapes ``model_config`` gives, checked on PyTorch's meta
    device (no memory), so nothing real is built for a file that cannot fit."""
    from fewframes.models import build_model

    with torch.device("meta"):
        skeleton = build_model(model_config)
    wanted = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    count = sum(int(torch.Size(shape).numel()) for shape in wanted.values())
    if count > MAX_MODEL_PARAMETERS:
        raise TrainingError(
            f"model file {path}: its model_config describes {count:,} weights, over the limit {MAX_MODEL_PARAMETERS:,}"
        )
    found = {name: tuple(t.shape) for name, t in state_dict.items() if isinstance(t, torch.Tensor)}
    problems = [f"{name!r} missing" for name in wanted if name not in found]
    problems += [f"{name!r} not in a {model_config.family} model" for name in found if name not in wanted]
    problems += [
        f"{name!r} is {list(found[name])} in the file, {list(shape)} for its model_config"
        for name, shape in wanted.items() if name in found and found[name] != shape
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TrainingError(f"model file {path}: weights do not fit its model_config: {problems[0]}{more}")


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the VideoClassifier saved at ``path`` (its ModelConfig travels in the file), in eval mode.

    The file's ModelConfig and StudentConfig are also attached as ``model.model_config`` and
    ``model.student_config`` (None for a teacher), its class names as ``model.class_names`` (None when the
    file has none).
    """
    from fewframes.models import build_model

    payload = read_model_file(path)
    model_config = check_model_config(path, payload["model_config"])
    _check_weights(path, model_config, payload["state_dict"])  # before anything real is allocated
    model = build_model(model_config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise TrainingError(f"model file {path}: weights do not fit its model_config: {first}") from None
    student = payload.get("student_config")
    model.model_config = model_config  # type: ignore[assignment]
    try:
        student_config = StudentConfig.from_dict(student) if student else None
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"model file {path}: student_config: {exc}") from None
    model.student_config = student_config  # type: ignore[assignment]
    names = payload.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != model_config.num_classes):
        raise TrainingError(f"model file {path}: class_names must list {model_config.num_classes} names")
    model.class_names = [str(name) for name in names] if names is not None else None  # type: ignore[assignment]
    model.to(map_location)
    model.eval()
    return model


__all__ = [
    "CHECKSUM_KEY",
    "MAX_MODEL_PARAMETERS",
    "MODEL_FILE_LIMITS",
    "MODEL_FORMAT",
    "ParallelResult",
    "TrainResult",
    "load_model",
    "check_model_config",
    "model_file_payload",
    "payload_checksum",
    "read_model_file",
    "save_model",
]
