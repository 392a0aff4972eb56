"""The ``netvlad`` family: NetVLAD pooling of the frames, a hidden projection and context gating.

As in antoine77340/Youtube-8M-WILLOW's ``NetVLADModelLF`` (the YouTube-8M 2017 winner; read as reference):

- Frames are prepared as for every family (``prepare_frames``: dequantise, L2-normalise rgb and audio).
- rgb (1024) and audio (128) are pooled separately (with another ``feature_dim``: the whole vector), rgb
  with K = ``ModelConfig.clusters`` centres, audio with K // 2 (at least 1), as the authors did.
- Per part: each frame x_t is softly assigned to the K centres, a_t = softmax(W x_t + b); the residuals
  are summed over the video's REAL frames, V_k = sum_t m_t a_tk (x_t - c_k) (m_t the mask: padding slots
  add nothing, so padding never changes E), each V_k is L2-normalised (intra-normalisation), then the
  flattened K x d vector is L2-normalised.
- The parts' VLADs are concatenated and projected to ``hidden_size`` (linear + bias: WILLOW's variant
  without batch norm; batch statistics over frames would let padding and the other videos of the batch
  change E), then context gating: E = h * sigmoid(W_g h + b_g) (WILLOW's ``gating=True``; its best
  configuration ran without the ReLU after the projection, so none here).
- E = the gated hidden vector [B, hidden_size]: the aggregated representation L_rep matches.
- Intermediate (L_rep^I): the soft assignments a_t of every frame, [B, T, K + K // 2], zero at padding.
  The only learned per-frame quantity of NetVLAD (no context across frames), so the teacher's value at a
  frame the student reads is well defined: the student is asked to cluster its frames as the teacher does.
- Initialisation as WILLOW: assignment weights/biases and centres ~ N(0, 1/sqrt(d)), the hidden projection
  ~ N(0, 1/sqrt(K)), the gating ~ N(0, 1/sqrt(hidden)). A video with no real frame pools to zero (finite E).
- Students read k frames with the same model sizes (no blocks: ``block_length`` is not used).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewframes.config import ModelConfig, feature_parts
from fewframes.models.base import EncoderOutput, ModelFamily, check_frames, prepare_frames


def vlad_residuals(assignment: Tensor, features: Tensor, centres: Tensor) -> Tensor:
    """Intra-normalised VLAD: sum_n a_nk (x_n - c_k), each cluster's vector L2-normalised.

    assignment [B, N, K] (zero for rows that must not count), features [B, N, d], centres [K, d] -> [B, K, d].
    """
    aggregated = torch.bmm(assignment.transpose(1, 2), features)  # one matmul: [B, K, N] @ [B, N, d]
    aggregated = aggregated - assignment.sum(dim=1).unsqueeze(-1) * centres
    return F.normalize(aggregated, dim=-1)


def mask_weights(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """[B, T, 1] weights (1 real, 0 padding) in ``like``'s dtype, or None when every slot is real."""
    return None if mask is None else mask.unsqueeze(-1).to(like.dtype)


class VladPooling(nn.Module):
    """NetVLAD over one part of the frame vector: [B, T, d] -> (VLAD [B, K*d], assignments [B, T, K])."""

    def __init__(self, dim: int, clusters: int) -> None:
        super().__init__()
        self.assign = nn.Linear(dim, clusters)
        self.centres = nn.Parameter(torch.empty(clusters, dim))
        with torch.no_grad():
            for tensor in (self.assign.weight, self.assign.bias, self.centres):
                tensor.normal_(0.0, 1.0 / math.sqrt(dim))

    def forward(self, features: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
        assignment = torch.softmax(self.assign(features), dim=-1)
        if weights is not None:
            assignment = assignment * weights
        vlad = vlad_residuals(assignment, features, self.centres)
        return F.normalize(vlad.flatten(1), dim=-1), assignment


class ContextGating(nn.Module):
    """x * sigmoid(W x + b) (WILLOW's context gating)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.gate = nn.Linear(size, size)
        with torch.no_grad():
            self.gate.weight.normal_(0.0, 1.0 / math.sqrt(size))
            self.gate.bias.normal_(0.0, 1.0 / math.sqrt(size))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.gate(x))


def netvlad_parts(config: ModelConfig) -> list[tuple[int, int]]:
    """(features, clusters) of each separately pooled part: rgb K, audio K // 2 (at least 1)."""
    return [(dim, config.clusters if index == 0 else max(1, config.clusters // 2))
            for index, dim in enumerate(feature_parts(config.feature_dim))]


class NetVLADEncoder(nn.Module):
    """Frames -> E: NetVLAD per part, concatenated, projected to hidden_size, context-gated."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_dim = config.feature_dim
        self.parts = netvlad_parts(config)
        self.pools = nn.ModuleList(VladPooling(dim, clusters) for dim, clusters in self.parts)
        self.hidden = nn.Linear(sum(dim * clusters for dim, clusters in self.parts), config.hidden_size)
        with torch.no_grad():
            self.hidden.weight.normal_(0.0, 1.0 / math.sqrt(config.clusters))
        self.gating = ContextGating(config.hidden_size)

    @property
    def encoding_dim(self) -> int:
        return self.config.hidden_size

    def forward(self, frames: Tensor, mask: Tensor | None = None, return_intermediate: bool = False) -> EncoderOutput:
        """frames uint8/float [B, T, D], mask bool [B, T] (True = real) or None (all real) -> EncoderOutput."""
        check_frames(frames, mask, self.feature_dim)
        features = prepare_frames(frames)
        weights = mask_weights(mask, features)
        pieces = features.split([dim for dim, _ in self.parts], dim=-1)
        vlads, assignments = zip(*(pool(piece, weights) for pool, piece in zip(self.pools, pieces)))
        encoding = self.gating(self.hidden(torch.cat(vlads, dim=-1)))
        intermediate = torch.cat(assignments, dim=-1) if return_intermediate else None
        return EncoderOutput(encoding, intermediate)


def netvlad_encoder_flops(config: ModelConfig, n_frames: int) -> int:
    """Matmul FLOPs for one video of n frames: per part the assignment (n x d x K) and the aggregation
    (K x n x d); then the hidden projection and the gating. Softmax, normalisations and the centre terms
    (O(K d) elementwise) are not counted, like the LSTM families' elementwise gate arithmetic."""
    per_part = sum(2 * n_frames * dim * clusters * 2 for dim, clusters in netvlad_parts(config))
    vlad_size = sum(dim * clusters for dim, clusters in netvlad_parts(config))
    return per_part + 2 * vlad_size * config.hidden_size + 2 * config.hidden_size * config.hidden_size


def same_sizes_student_config(teacher_config: ModelConfig, k: int, block_length: int | None = None) -> ModelConfig:
    """A pooling family's student: the teacher's config itself (pooling has no blocks; k is not a size)."""
    return teacher_config


FAMILY = ModelFamily(
    name="netvlad",
    encoder=NetVLADEncoder,
    encoding_dim=lambda config: config.hidden_size,
    student_config=same_sizes_student_config,
    encoder_flops=netvlad_encoder_flops,
    intermediate="each frame's soft assignment to the clusters (rgb K, audio K // 2), [B, T, K + K // 2]",
)

__all__ = [
    "FAMILY",
    "ContextGating",
    "NetVLADEncoder",
    "VladPooling",
    "mask_weights",
    "netvlad_encoder_flops",
    "netvlad_parts",
    "same_sizes_student_config",
    "vlad_residuals",
]
