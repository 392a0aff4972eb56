"""Export a trained teacher or student to ONNX for serving, check it against the eager model, log it to MLflow.

The exported graph is the model's dense path: input ``frames`` uint8 [batch, n_frames, 1152] (every slot a
real frame; dequantisation and L2 normalisation are inside the graph), output ``logits`` float32
[batch, num_classes] (apply a sigmoid for scores). The batch axis is dynamic; the frame axis is fixed at
export time because the block structure (how many blocks of l frames) is unrolled into the graph:
a student is exported at its k (it always reads exactly k frames), a teacher at ``n_frames`` (default 300,
the YouTube-8M maximum). Videos shorter than that need the PyTorch model's masked path (``predict`` uses it).

Uses the TorchScript-based ONNX exporter (``dynamo=False``): the dynamo exporter needs ``onnxscript``, which
is not a dependency. Checked with onnxruntime at a batch size other than the one traced.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fewframes import fsio
from fewframes.benchmark import resolve_model, student_config_of
from fewframes.config import MAX_FRAMES
from fewframes.errors import BenchmarkError


class _LogitsOnly(nn.Module):
    """frames -> logits through the model's dense path (mask None), the only output serving needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor) -> Tensor:
        return self.model(frames, None).logits


@dataclass(frozen=True)
class ExportResult:
    """Where the ONNX file went and how closely it reproduces the eager model."""

    path: str
    n_frames: int
    num_classes: int
    max_abs_diff: float
    tolerance: float
    opset: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_frames(model: nn.Module, n_frames: int | None = None) -> int:
    """Frames per video the exported graph takes: ``n_frames``, else the student's k, else 300."""
    if n_frames is not None:
        if n_frames < 1:
            raise BenchmarkError(f"--frames must be >= 1, got {n_frames}")
        return n_frames
    student = student_config_of(model)
    if student is not None and student.frame_selection != "all":
        return student.k
    return MAX_FRAMES


def export_onnx(
    model: nn.Module | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    n_frames: int | None = None,
    opset: int = 17,
    check_batch: int = 3,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` to the ONNX file ``out`` (atomically) and check it with onnxruntime.

    Raises ``BenchmarkError`` when the exported logits differ from the eager model's by more than
    ``tolerance`` (absolute) on random frames at ``check_batch`` videos; the bad file is not kept.
    """
    loaded = resolve_model(model).cpu().eval()
    frames_per_video = export_frames(loaded, n_frames)
    wrapper = _LogitsOnly(loaded).eval()
    feature_dim = loaded.config.feature_dim
    generator = torch.Generator().manual_seed(seed)
    example = torch.randint(0, 256, (1, frames_per_video, feature_dim), dtype=torch.uint8, generator=generator)

    out_path = os.fspath(out)
    # A local temp file: renamed over a local ``out``, uploaded to a gs:// one, only once it passed the check.
    with fsio.staged_output_file(out_path) as temp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and LSTM batch notes
            torch.onnx.export(
                wrapper,
                (example,),
                str(temp),
                dynamo=False,
                opset_version=opset,
                input_names=["frames"],
                output_names=["logits"],
                dynamic_axes={"frames": {0: "batch"}, "logits": {0: "batch"}},
            )
        check = torch.randint(
            0, 256, (check_batch, frames_per_video, feature_dim), dtype=torch.uint8, generator=generator
        )
        diff = max_abs_difference(loaded, temp, check)
        if not diff <= tolerance:
            raise BenchmarkError(
                f"exported {out_path} differs from the eager model by {diff:.3g} (> tolerance {tolerance:g})"
            )
    return ExportResult(
        path=out_path,
        n_frames=frames_per_video,
        num_classes=loaded.config.num_classes,
        max_abs_diff=diff,
        tolerance=tolerance,
        opset=opset,
    )


def onnx_logits(path: str | os.PathLike[str], frames: np.ndarray) -> np.ndarray:
    """Run an exported model with onnxruntime on uint8 frames [B, n_frames, D] -> logits [B, C]."""
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"frames": np.ascontiguousarray(frames, dtype=np.uint8)})[0]


def max_abs_difference(model: nn.Module, onnx_path: str | os.PathLike[str], frames: Tensor) -> float:
    """Largest absolute difference between the eager model's and the ONNX file's logits on ``frames``."""
    with torch.inference_mode():
        eager = model(frames, None).logits.numpy()
    return float(np.abs(onnx_logits(onnx_path, frames.numpy()) - eager).max())


def log_export(tracker: Any, result: ExportResult, model_file: str | os.PathLike[str] | None = None) -> str | None:
    """Log the ONNX file (and its export facts) to MLflow through ``fewframes.tracking.Tracker``.

    When ``model_file`` (the fewframes model file exported) is given, it is also logged as an MLflow 3 logged
    model named after the file: the same pyfunc "model from code" the pipeline logs and
    ``mlflow models serve`` serves (``fewframes.serving``), nothing pickled. Returns its model id (or None).
    """
    stem = result.path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    with fsio.local_input_file(result.path) as onnx_path, tempfile.TemporaryDirectory(prefix="fewframes-export-") as tmp:
        facts = Path(tmp) / f"{stem}.export.json"
        facts.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        tracker.log_artifact(onnx_path, "export")
        tracker.log_artifact(facts, "export")
    tracker.log_metrics({"export_max_abs_diff": result.max_abs_diff})
    if model_file is None:
        return None
    name = os.fspath(model_file).rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return tracker.log_model_file(model_file, name=name, params={"onnx_frames": result.n_frames})


__all__ = ["ExportResult", "export_frames", "export_onnx", "log_export", "max_abs_difference", "onnx_logits"]
