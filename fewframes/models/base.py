"""What every model family shares: frame preparation, the outputs, the classifiers, the model around them.

A family (``fewframes/models/<family>.py``) supplies an encoder: an ``nn.Module`` built from a ``ModelConfig``
with an ``encoding_dim`` and ``forward(frames, mask=None, return_intermediate=False) -> EncoderOutput``. The
registry (``fewframes.models.registry``) names it. ``VideoClassifier`` pairs an encoder with a classifier
(possibly shared: a student plugs in the teacher's), and every training mode, the losses, evaluation,
export, predict and the benchmark see only ``VideoClassifier`` / ``ModelOutput``.

The cluster-and-aggregate families (netvlad, nextvlad) share ``PooledEncoder``: each part of the frame
vector (rgb, audio) pooled by its own pooling module over the video's real frames, the poolings
concatenated, projected to ``hidden_size`` and gated; the family file holds its pooling, its gating and its
sizes. ``vlad_residuals`` and ``mask_weights`` are their common arithmetic.

Frame widths: ``ModelConfig.feature_dim`` bytes per frame, split into parts by ``ModelConfig.parts``
(YouTube-8M's 1024 + 128 by default; another extractor's, e.g. 2048 + 128, as the frame store says).

Classifiers (``ModelConfig.classifier``):

- ``"linear"``: dropout then one linear layer, a logit per class (the paper's "feedforward network with a
  sigmoid per class").
- ``"moe"``: dropout then the authors' mixture of experts (google/youtube-8m ``MoeModel``): per class a
  softmax gate over ``moe_experts`` experts plus a dummy expert that always says 0, each expert a sigmoid;
  p = sum_e gate_e * sigmoid(expert_e). It returns logit(p) = log p - log(1 - p), computed exactly from
  log-softmax and log-sigmoid terms (1 - p = gate_dummy + sum_e gate_e * sigmoid(-expert_e), since the
  gates sum to 1), so sigmoid(logits) == p and every loss written on logits (BCE with logits, the L_pred
  KL from log-sigmoids) is the loss on p, with no clamping and no log(0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewframes.config import ModelConfig, feature_parts
from fewframes.errors import ModelError

# YouTube-8M quantisation: x = q * (4/255) + (4/512 - 2), range about [-2, 2].
_QUANT_SCALE = 4.0 / 255.0
_QUANT_BIAS = 4.0 / 512.0 - 2.0


def dequantize_frames(frames: Tensor) -> Tensor:
    """uint8 YouTube-8M frame features -> float32 with the official formula; float input passes through."""
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32) * _QUANT_SCALE + _QUANT_BIAS
    if not frames.is_floating_point():
        raise ModelError(f"frames must be uint8 (quantised) or float, got dtype {frames.dtype}")
    return frames


def prepare_frames(frames: Tensor, parts: Sequence[int] | None = None) -> Tensor:
    """Dequantise, then L2-normalise rgb and audio separately per frame (as the authors' code does).

    ``parts``: the widths normalised separately (``ModelConfig.parts``); None: YouTube-8M's rule for the
    frame's width (1024 + 128 for 1152, else the whole vector).

    Returns a new float tensor. uint8 input (the frames of every batch) takes a fast path: the scale 4/255 of
    the dequantisation formula cancels in the normalisation, so only the offset is added, into a contiguous
    copy normalised in place: the frames are the largest tensor of the model and this saves several passes
    over them. Float input (already dequantised, maybe requiring grad) and tracing take the functional path.
    """
    widths = list(parts) if parts is not None else list(feature_parts(frames.shape[-1]))
    if sum(widths) != frames.shape[-1]:
        raise ModelError(f"frames have {frames.shape[-1]} features, the parts {widths} add up to {sum(widths)}")
    # Tracing (ONNX/TorchScript export) records in-place ops on split views wrongly: functional path there.
    if frames.dtype != torch.uint8 or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        features = dequantize_frames(frames)
        if len(widths) == 1:
            return F.normalize(features, dim=-1)
        return torch.cat([F.normalize(piece, dim=-1) for piece in features.split(widths, dim=-1)], dim=-1)
    features = frames.to(torch.float32, memory_format=torch.contiguous_format).add_(_QUANT_BIAS / _QUANT_SCALE)
    pieces = features.split(widths, dim=-1) if len(widths) > 1 else (features,)
    for part in pieces:
        part.div_(torch.linalg.vector_norm(part, dim=-1, keepdim=True).clamp_min_(1e-12))
    return features


def check_frames(frames: Tensor, mask: Tensor | None, feature_dim: int) -> None:
    """One-line ModelErrors for frames that are not [B, T>=1, feature_dim] or a mask that is not bool [B, T]."""
    if frames.dim() != 3 or frames.shape[-1] != feature_dim:
        raise ModelError(f"frames must be [batch, frames, {feature_dim}], got shape {tuple(frames.shape)}")
    if frames.shape[1] < 1:
        raise ModelError("frames holds no frame slot (shape[1] == 0)")
    if mask is not None:
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(frames.shape[:2]):
            raise ModelError(
                f"mask must be bool [batch, frames] = {tuple(frames.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )


def all_real(mask: Tensor | None) -> bool:
    """True when every slot is a real frame: no mask, or (eager mode only) an all-True one."""
    if mask is None:
        return True
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return bool(mask.all())


def mask_weights(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """[B, T, 1] weights (1 real, 0 padding) in ``like``'s dtype, or None when every slot is real."""
    return None if mask is None else mask.unsqueeze(-1).to(like.dtype)


def vlad_residuals(assignment: Tensor, features: Tensor, centres: Tensor) -> Tensor:
    """Intra-normalised VLAD: sum_n a_nk (x_n - c_k), each cluster's vector L2-normalised.

    assignment [B, N, K] (zero for rows that must not count), features [B, N, d], centres [K, d] -> [B, K, d].
    """
    aggregated = torch.bmm(assignment.transpose(1, 2), features)  # one matmul: [B, K, N] @ [B, N, d]
    aggregated = aggregated - assignment.sum(dim=1).unsqueeze(-1) * centres
    return F.normalize(aggregated, dim=-1)


class EncoderOutput(NamedTuple):
    """What an encoder returns.

    encoding: E, [B, encoding_dim]. intermediate: [B, T, d] per-slot representations for L_rep^I (zero at
    padding slots), or None unless asked for. block_states / block_mask: the hierarchical family's block
    encodings [B, nblocks, hidden] and which blocks hold a real frame [B, nblocks]; None for other families.
    """

    encoding: Tensor
    intermediate: Tensor | None
    block_states: Tensor | None = None
    block_mask: Tensor | None = None


class ModelOutput(NamedTuple):
    """What ``VideoClassifier`` returns: logits [B, C] (sigmoid in the loss/at inference), E, intermediate."""

    logits: Tensor
    encoding: Tensor
    intermediate: Tensor | None


class Classifier(nn.Module):
    """Dropout then one linear layer: a logit per class (one sigmoid per class lives in the loss/inference).

    A separate module so a teacher and a student can hold the very same object (parameter sharing).
    """

    def __init__(self, encoding_dim: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(encoding_dim, num_classes)

    @property
    def encoding_dim(self) -> int:
        return self.linear.in_features

    def forward(self, encoding: Tensor) -> Tensor:
        """E [B, encoding_dim] -> logits [B, num_classes]."""
        return self.linear(self.dropout(encoding))


class MoeClassifier(nn.Module):
    """Dropout then a mixture of ``num_experts`` sigmoid experts per class (youtube-8m's MoeModel).

    ``probabilities(E)`` gives p [B, C]; ``forward(E)`` gives logit(p), exactly (see the module docstring).
    """

    def __init__(self, encoding_dim: int, num_classes: int, num_experts: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        if num_experts < 1:
            raise ModelError(f"num_experts must be >= 1, got {num_experts}")
        self.num_classes = num_classes
        self.num_experts = num_experts
        self.dropout = nn.Dropout(dropout)
        self.gates = nn.Linear(encoding_dim, num_classes * (num_experts + 1))  # + the dummy expert
        self.experts = nn.Linear(encoding_dim, num_classes * num_experts)

    @property
    def encoding_dim(self) -> int:
        return self.gates.in_features

    def _log_terms(self, encoding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.dropout(encoding)
        batch = x.shape[0]
        log_gates = F.log_softmax(self.gates(x).reshape(batch, self.num_classes, self.num_experts + 1), dim=-1)
        experts = self.experts(x).reshape(batch, self.num_classes, self.num_experts)
        return log_gates[..., :-1], log_gates[..., -1:], experts

    def probabilities(self, encoding: Tensor) -> Tensor:
        """E -> p [B, C] = sum_e softmax-gate_e * sigmoid(expert_e) (the dummy expert contributes 0)."""
        log_gates, _, experts = self._log_terms(encoding)
        return (log_gates.exp() * torch.sigmoid(experts)).sum(dim=-1)

    def forward(self, encoding: Tensor) -> Tensor:
        """E [B, encoding_dim] -> logit(p) [B, num_classes]."""
        log_gates, log_dummy, experts = self._log_terms(encoding)
        log_p = torch.logsumexp(log_gates + F.logsigmoid(experts), dim=-1)
        log_not_p = torch.logsumexp(torch.cat([log_dummy, log_gates + F.logsigmoid(-experts)], dim=-1), dim=-1)
        return log_p - log_not_p


CLASSIFIERS: dict[str, Callable[[int, ModelConfig], nn.Module]] = {
    "linear": lambda dim, config: Classifier(dim, config.num_classes, config.dropout),
    "moe": lambda dim, config: MoeClassifier(dim, config.num_classes, config.moe_experts, config.dropout),
}


def build_classifier(encoding_dim: int, config: ModelConfig) -> nn.Module:
    """The classifier ``config.classifier`` names, mapping E (``encoding_dim``) to ``config.num_classes`` logits."""
    return CLASSIFIERS[config.classifier](encoding_dim, config)


def classifier_flops(encoding_dim: int, config: ModelConfig) -> int:
    """Matmul FLOPs (2 per multiply-add) of ``config.classifier`` for one video."""
    if config.classifier == "moe":
        return 2 * encoding_dim * config.num_classes * (2 * config.moe_experts + 1)
    return 2 * encoding_dim * config.num_classes


class VideoClassifier(nn.Module):
    """An encoder of any family and a (possibly shared) classifier: the teacher, a student or a baseline."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        if classifier.encoding_dim != encoder.encoding_dim:
            raise ModelError(
                f"classifier expects encodings of size {classifier.encoding_dim}, "
                f"the encoder gives {encoder.encoding_dim}"
            )
        self.encoder = encoder
        self.classifier = classifier

    @property
    def config(self) -> ModelConfig:
        """The encoder's ModelConfig (for the hierarchical family block_length is the model's own l)."""
        return self.encoder.config

    def forward(self, frames: Tensor, mask: Tensor | None = None, return_intermediate: bool = False) -> ModelOutput:
        """frames uint8/float [B, T, D], mask bool [B, T] or None (all real) -> ModelOutput."""
        encoded = self.encoder(frames, mask, return_intermediate=return_intermediate)
        return ModelOutput(self.classifier(encoded.encoding), encoded.encoding, encoded.intermediate)


class PooledEncoder(nn.Module):
    """Frames -> E for the cluster-and-aggregate families: part p of each frame (``config.parts``: rgb, audio)
    pooled by ``pools[p]``, the poolings concatenated, ``hidden`` (a projection to ``hidden_size``), ``gating``.

    A pooling module maps (features [B, T, d], weights [B, T, 1] or None) to (its pooled vector [B, *],
    per-frame assignments [B, T, *] zero at padding); the assignments, concatenated, are the intermediate
    representation (L_rep^I). The family builds the modules (in its own order: that fixes the initial
    weights a seed gives) and passes them here."""

    def __init__(self, config: ModelConfig, pools: Sequence[nn.Module], hidden: nn.Module, gating: nn.Module) -> None:
        super().__init__()
        if len(pools) != len(config.parts):
            raise ModelError(f"{len(pools)} pooling modules for {len(config.parts)} parts of the frame")
        self.config = config
        self.feature_dim = config.feature_dim
        self.pools = nn.ModuleList(pools)
        self.hidden = hidden
        self.gating = gating

    @property
    def encoding_dim(self) -> int:
        return self.config.hidden_size

    def forward(self, frames: Tensor, mask: Tensor | None = None, return_intermediate: bool = False) -> EncoderOutput:
        """frames uint8/float [B, T, D], mask bool [B, T] (True = real) or None (all real) -> EncoderOutput."""
        check_frames(frames, mask, self.feature_dim)
        widths = self.config.parts
        features = prepare_frames(frames, widths)
        weights = mask_weights(mask, features)
        pieces = features.split(list(widths), dim=-1)
        pooled, assignments = zip(*(pool(piece, weights) for pool, piece in zip(self.pools, pieces)))
        encoding = self.gating(self.hidden(torch.cat(pooled, dim=-1)))
        intermediate = torch.cat(assignments, dim=-1) if return_intermediate else None
        return EncoderOutput(encoding, intermediate)


def same_sizes_student_config(teacher_config: ModelConfig, k: int, block_length: int | None = None) -> ModelConfig:
    """A pooling family's student: the teacher's config itself (pooling has no blocks; k is not a size)."""
    return teacher_config


@dataclass(frozen=True)
class ModelFamily:
    """One model family, as the registry holds it.

    encoder: ModelConfig -> encoder module. encoding_dim: size of E for a config. student_config:
    (teacher ModelConfig, k, block_length or None) -> the student's ModelConfig (same E size as the teacher's).
    encoder_flops: (config, frames of one video) -> analytic matmul FLOPs of the encoder, 2 per multiply-add,
    counting what the model executes (the classifier is added by ``registry.model_flops``).
    intermediate: what ``EncoderOutput.intermediate`` holds (for L_rep^I), one line for docs and errors.
    check: the family's own constraints on a ModelConfig (raises a one-line ConfigError), called by
    ``ModelConfig.__post_init__``.
    """

    name: str
    encoder: Callable[[ModelConfig], nn.Module]
    encoding_dim: Callable[[ModelConfig], int]
    student_config: Callable[[ModelConfig, int, "int | None"], ModelConfig]
    encoder_flops: Callable[[ModelConfig, int], int]
    intermediate: str
    check: Callable[[ModelConfig], None] = lambda config: None


__all__ = [
    "CLASSIFIERS",
    "Classifier",
    "EncoderOutput",
    "ModelFamily",
    "ModelOutput",
    "MoeClassifier",
    "PooledEncoder",
    "VideoClassifier",
    "all_real",
    "build_classifier",
    "check_frames",
    "classifier_flops",
    "dequantize_frames",
    "mask_weights",
    "prepare_frames",
    "same_sizes_student_config",
    "vlad_residuals",
]
