"""Teacher/student models of three families (``ModelConfig.family``), one file each, named in ``registry.py``:
``hrnn`` (the paper's hierarchical LSTM, ``hierarchical.py``), ``netvlad`` and ``nextvlad``. Shared parts
(frame preparation, classifiers, ``VideoClassifier``) in ``base.py``. See ``docs/method.md``."""

from __future__ import annotations

from fewframes.models.base import (
    Classifier,
    EncoderOutput,
    ModelFamily,
    ModelOutput,
    MoeClassifier,
    VideoClassifier,
    build_classifier,
    dequantize_frames,
    prepare_frames,
)
from fewframes.models.hierarchical import HierarchicalEncoder, student_block_length
from fewframes.models.netvlad import NetVLADEncoder
from fewframes.models.nextvlad import NeXtVLADEncoder
from fewframes.models.registry import (
    MODEL_FAMILIES,
    build_model,
    encoding_dim,
    get_family,
    model_flops,
    student_model_config,
)

__all__ = [
    "MODEL_FAMILIES",
    "Classifier",
    "EncoderOutput",
    "HierarchicalEncoder",
    "ModelFamily",
    "ModelOutput",
    "MoeClassifier",
    "NeXtVLADEncoder",
    "NetVLADEncoder",
    "VideoClassifier",
    "build_classifier",
    "build_model",
    "dequantize_frames",
    "encoding_dim",
    "get_family",
    "model_flops",
    "prepare_frames",
    "student_block_length",
    "student_model_config",
]
