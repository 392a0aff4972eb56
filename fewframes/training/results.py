"""What a training run returns, and the self-describing model file it leaves behind.

A model file (``teacher.pt``, ``student.pt``, ``baseline.pt``) is a plain ``torch.save`` dict, loadable with
``weights_only=True``: the format tag, the ModelConfig (the model's own block length), the StudentConfig for
students and baselines (k, frame selection, loss, ...) or None for a teacher, the role, the state dict and the
validation metrics of the epoch it comes from. :func:`load_model` rebuilds the model from it alone.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fewframes.checkpoint import atomic_torch_save
from fewframes.config import ModelConfig, StudentConfig
from fewframes.errors import TrainingError

MODEL_FORMAT = "fewframes-model/1"


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
) -> dict[str, Any]:
    """The dict a model file holds (tensors on the CPU)."""
    return {
        "format": MODEL_FORMAT,
        "role": role,
        "model_config": model_config.to_dict(),
        "student_config": student_config.to_dict() if student_config else None,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "metrics": dict(metrics or {}),
    }


def save_model(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    model_config: ModelConfig,
    student_config: StudentConfig | None = None,
    *,
    role: str = "model",
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write a self-describing model file atomically (temp name, then rename)."""
    return atomic_torch_save(model_file_payload(model, model_config, student_config, role, metrics), path)


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
        raise TrainingError(f"model file {path} cannot be read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise TrainingError(f"model file {path} is not a fewframes model (format tag {MODEL_FORMAT!r} missing)")
    return payload


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the VideoClassifier saved at ``path`` (its ModelConfig travels in the file), in eval mode.

    The file's ModelConfig and StudentConfig are also attached as ``model.model_config`` and
    ``model.student_config`` (None for a teacher).
    """
    from fewframes.models import build_model

    payload = read_model_file(path)
    model_config = ModelConfig.from_dict(payload["model_config"])
    model = build_model(model_config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise TrainingError(f"model file {path}: weights do not fit its ModelConfig: {exc}") from exc
    student = payload.get("student_config")
    model.model_config = model_config  # type: ignore[assignment]
    model.student_config = StudentConfig.from_dict(student) if student else None  # type: ignore[assignment]
    model.to(map_location)
    model.eval()
    return model


__all__ = [
    "MODEL_FORMAT",
    "ParallelResult",
    "TrainResult",
    "load_model",
    "model_file_payload",
    "read_model_file",
    "save_model",
]
