"""Hierarchical LSTM teacher/student models (see ``hierarchical.py`` and ``docs/method.md``)."""

from __future__ import annotations

from fewframes.models.hierarchical import (
    Classifier,
    EncoderOutput,
    HierarchicalEncoder,
    ModelOutput,
    VideoClassifier,
    build_model,
    dequantize_frames,
    prepare_frames,
    student_block_length,
    student_model_config,
)

__all__ = [
    "Classifier",
    "EncoderOutput",
    "HierarchicalEncoder",
    "ModelOutput",
    "VideoClassifier",
    "build_model",
    "dequantize_frames",
    "prepare_frames",
    "student_block_length",
    "student_model_config",
]
