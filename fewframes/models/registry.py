"""The model families, by name (``ModelConfig.family``), and the functions that go through them.

A new family is one file in ``fewframes/models/`` defining a ``FAMILY`` (``base.ModelFamily``) and one line
in ``MODEL_FAMILIES`` below. Everything else (training, evaluation, export, predict, the benchmark's FLOPs,
model files) reaches the family through ``build_model``, ``student_model_config`` and ``model_flops``.
"""

from __future__ import annotations

from torch import nn

from fewframes.config import ModelConfig
from fewframes.errors import ModelError
from fewframes.models import hierarchical, netvlad, nextvlad
from fewframes.models.base import ModelFamily, VideoClassifier, build_classifier, classifier_flops

MODEL_FAMILIES: dict[str, ModelFamily] = {
    "hrnn": hierarchical.FAMILY,  # the paper's hierarchical LSTM (recurrent)
    "netvlad": netvlad.FAMILY,  # cluster-and-aggregate (antoine77340/Youtube-8M-WILLOW)
    "nextvlad": nextvlad.FAMILY,  # memory-efficient cluster-and-aggregate (linrongc/solution_youtube8m_v3)
}


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name`` (a one-line ModelError naming the choices otherwise)."""
    try:
        return MODEL_FAMILIES[name]
    except KeyError:
        raise ModelError(f"model family must be one of {', '.join(MODEL_FAMILIES)}, got {name!r}") from None


def build_model(config: ModelConfig, classifier: nn.Module | None = None) -> VideoClassifier:
    """A VideoClassifier of ``config.family``; pass ``classifier`` to share one (a student plugging in the
    teacher's); otherwise a new ``config.classifier`` is built."""
    encoder = get_family(config.family).encoder(config)
    if classifier is None:
        classifier = build_classifier(encoder.encoding_dim, config)
    return VideoClassifier(encoder, classifier)


def student_model_config(teacher_config: ModelConfig, k: int, block_length: int | None = None) -> ModelConfig:
    """The ModelConfig of a k-frame student (or baseline) of the teacher's family: the teacher's sizes, so E
    and the classifier match. hrnn: l = ``student_block_length(k)`` unless ``block_length`` is given; the VLAD
    families have no blocks, so the teacher's config itself."""
    return get_family(teacher_config.family).student_config(teacher_config, k, block_length)


def encoding_dim(config: ModelConfig) -> int:
    """Size of E (what L_rep matches and the classifier reads) for ``config``."""
    return get_family(config.family).encoding_dim(config)


def model_flops(config: ModelConfig, n_frames: int) -> int:
    """Analytic FLOPs (2 per multiply-add of every matrix product) to classify one video of ``n_frames``
    frames: the family's encoder plus the classifier. A student reads n = k, a teacher the video's length."""
    if n_frames < 1:
        raise ModelError(f"n_frames must be >= 1, got {n_frames}")
    family = get_family(config.family)
    return family.encoder_flops(config, n_frames) + classifier_flops(family.encoding_dim(config), config)


__all__ = ["MODEL_FAMILIES", "build_model", "encoding_dim", "get_family", "model_flops", "student_model_config"]
