"""The ``netvlad`` family: NetVLAD pooling of the frames, a hidden projection and context gating.

As in antoine77340/Youtube-8M-WILLOW's ``NetVLADModelLF`` (the YouTube-8M 2017 winner; read as reference):

- Frames are prepared as for every family (``prepare_frames``: dequantise, L2-normalise rgb and audio).
- rgb (1024) and audio (128) are pooled separately (``ModelConfig.parts``: another extractor's widths as
  the store says, or the whole vector), rgb with K = ``ModelConfig.clusters`` centres, audio with K // 2
  (at least 1), as the authors did.
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

The pooled-encoder structure (parts, concatenation, projection, gating) is ``base.PooledEncoder``; this file
holds NetVLAD's pooling, its gating, its sizes and its FLOPs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewframes.config import ModelConfig
from fewframes.models.base import (
    ModelFamily,
    PooledEncoder,
    mask_weights,
    same_sizes_student_config,
    vlad_residuals,
)


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
            for index, dim in enumerate(config.parts)]


class NetVLADEncoder(PooledEncoder):
    """Frames -> E: NetVLAD per part, concatenated, projected to hidden_size, context-gated."""

    def __init__(self, config: ModelConfig) -> None:
        parts = netvlad_parts(config)
        pools = [VladPooling(dim, clusters) for dim, clusters in parts]
        hidden = nn.Linear(sum(dim * clusters for dim, clusters in parts), config.hidden_size)
        with torch.no_grad():
            hidden.weight.normal_(0.0, 1.0 / math.sqrt(config.clusters))
        super().__init__(config, pools, hidden, ContextGating(config.hidden_size))
        self.parts = parts


def netvlad_encoder_flops(config: ModelConfig, n_frames: int) -> int:
    """Matmul FLOPs for one video of n frames: per part the assignment (n x d x K) and the aggregation
    (K x n x d); then the hidden projection and the gating. Softmax, normalisations and the centre terms
    (O(K d) elementwise) are not counted, like the LSTM families' elementwise gate arithmetic."""
    per_part = sum(2 * n_frames * dim * clusters * 2 for dim, clusters in netvlad_parts(config))
    vlad_size = sum(dim * clusters for dim, clusters in netvlad_parts(config))
    return per_part + 2 * vlad_size * config.hidden_size + 2 * config.hidden_size * config.hidden_size


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
