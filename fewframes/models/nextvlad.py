"""The ``nextvlad`` family: NeXtVLAD pooling, a hidden projection and squeeze-excitation context gating.

As in linrongc/solution_youtube8m_v3 (``NeXtVLAD`` / ``NeXtVLADModel``, the YouTube-8M 2018 family; read as
reference), per part (``ModelConfig.parts``: rgb with K = ``clusters`` and G = ``groups``; audio with K // 2
and G // 2, at least 1; a one-part frame vector: the whole vector with K and G):

- expand each frame: x~ = W_e x + b_e (d -> lambda d, lambda = ``expansion``);
- per-group attention alpha_tg = sigmoid(w_g x~_t + b_g) (G groups);
- split x~ into G groups of lambda d / G; each group's piece is softly assigned to K clusters,
  a_tgk = softmax_k(W_a x~_t + b_a)[g] (one linear for all groups, as the authors);
- residuals summed over the video's REAL frames and all groups: V_k = sum_{t,g} m_t alpha_tg a_tgk
  (x~_tg - c_k) (padding adds nothing, so it never changes E), each V_k L2-normalised (intra), flattened.
- the parts are concatenated, projected to ``hidden_size`` (linear + bias) and gated: E = h * sigmoid(W_2
  relu(W_1 h + b_1) + b_2) with a reduction of 8 (the authors' ``gating_reduction``).

Differences from the reference, and why: its batch norms (over the frames' cluster logits, the VLAD, the
hidden layer and the gate) are replaced by biases: batch statistics over frames would let padding and the
other videos of a batch change E, which the teacher/student contract forbids; its dropout on the VLAD is
left out (dropout sits before the classifier, as in every family). Weights are initialised with He normal
(TF's ``variance_scaling_initializer``), biases at zero.

E = the gated hidden vector [B, hidden_size]. Intermediate (L_rep^I): each frame's attention-weighted soft
assignments alpha_tg a_tgk, [B, T, G*K + (G//2)*(K//2)], zero at padding: per-frame quantities with no
context across frames, so the teacher's value at a frame the student reads is well defined.

The pooled-encoder structure (parts, concatenation, projection, gating) is ``base.PooledEncoder``; this file
holds NeXtVLAD's pooling, its gating, its sizes and its FLOPs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewframes.config import ConfigError, ModelConfig
from fewframes.models.base import ModelFamily, PooledEncoder, same_sizes_student_config, vlad_residuals

GATING_REDUCTION = 8


def nextvlad_parts(config: ModelConfig) -> list[tuple[int, int, int]]:
    """(features, clusters, groups) of each separately pooled part: rgb (K, G), audio (K // 2, G // 2)."""
    parts = []
    for index, dim in enumerate(config.parts):
        if index == 0:
            parts.append((dim, config.clusters, config.groups))
        else:
            parts.append((dim, max(1, config.clusters // 2), max(1, config.groups // 2)))
    return parts


def check_nextvlad_config(config: ModelConfig) -> None:
    """Each part's groups must divide its expanded size (one-line ConfigError)."""
    for dim, _, groups in nextvlad_parts(config):
        if (config.expansion * dim) % groups:
            raise ConfigError(
                f"ModelConfig.groups: {groups} groups must divide expansion x {dim} features = {config.expansion * dim}"
            )


def _he_normal(linear: nn.Linear) -> nn.Linear:
    nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    nn.init.zeros_(linear.bias)
    return linear


class NeXtVladPooling(nn.Module):
    """NeXtVLAD over one part: [B, T, d] -> (VLAD [B, K * lambda d / G], weighted assignments [B, T, G*K])."""

    def __init__(self, dim: int, clusters: int, groups: int, expansion: int) -> None:
        super().__init__()
        self.clusters, self.groups = clusters, groups
        self.group_size = expansion * dim // groups
        self.expand = _he_normal(nn.Linear(dim, expansion * dim))
        self.attention = _he_normal(nn.Linear(expansion * dim, groups))
        self.assign = _he_normal(nn.Linear(expansion * dim, groups * clusters))
        self.centres = nn.Parameter(torch.randn(clusters, self.group_size) * (2.0 / self.group_size) ** 0.5)

    def forward(self, features: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
        batch, slots, _ = features.shape
        expanded = self.expand(features)  # [B, T, lambda d]
        attention = torch.sigmoid(self.attention(expanded))  # [B, T, G]
        if weights is not None:
            attention = attention * weights
        assignment = torch.softmax(self.assign(expanded).reshape(batch, slots, self.groups, self.clusters), dim=-1)
        assignment = assignment * attention.unsqueeze(-1)  # [B, T, G, K]
        vlad = vlad_residuals(
            assignment.reshape(batch, slots * self.groups, self.clusters),
            expanded.reshape(batch, slots * self.groups, self.group_size),
            self.centres,
        )
        return vlad.flatten(1), assignment.reshape(batch, slots, self.groups * self.clusters)


class SEContextGating(nn.Module):
    """h * sigmoid(W_2 relu(W_1 h + b_1) + b_2), the bottleneck W_1 of size ``size // reduction`` (at least 1)."""

    def __init__(self, size: int, reduction: int = GATING_REDUCTION) -> None:
        super().__init__()
        self.squeeze = _he_normal(nn.Linear(size, max(1, size // reduction)))
        self.excite = _he_normal(nn.Linear(max(1, size // reduction), size))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.excite(torch.relu(self.squeeze(x))))


class NeXtVLADEncoder(PooledEncoder):
    """Frames -> E: NeXtVLAD per part, concatenated, projected to hidden_size, SE-context-gated."""

    def __init__(self, config: ModelConfig) -> None:
        parts = nextvlad_parts(config)
        pools = [NeXtVladPooling(dim, clusters, groups, config.expansion) for dim, clusters, groups in parts]
        vlad_size = sum(clusters * config.expansion * dim // groups for dim, clusters, groups in parts)
        hidden = _he_normal(nn.Linear(vlad_size, config.hidden_size))
        super().__init__(config, pools, hidden, SEContextGating(config.hidden_size))
        self.parts = parts


def nextvlad_encoder_flops(config: ModelConfig, n_frames: int) -> int:
    """Matmul FLOPs for one video of n frames: per part and frame the expansion (d x lambda d), the attention
    (lambda d x G), the assignment (lambda d x G K), the aggregation (K x lambda d over the frame's G group
    rows); then the hidden projection and the two gating layers. Elementwise work is not counted."""
    lam, hidden = config.expansion, config.hidden_size
    total, vlad_size = 0, 0
    for dim, clusters, groups in nextvlad_parts(config):
        wide = lam * dim
        total += 2 * n_frames * (dim * wide + wide * groups + wide * groups * clusters + clusters * wide)
        vlad_size += clusters * wide // groups
    bottleneck = max(1, hidden // GATING_REDUCTION)
    return total + 2 * vlad_size * hidden + 2 * 2 * hidden * bottleneck


FAMILY = ModelFamily(
    name="nextvlad",
    encoder=NeXtVLADEncoder,
    encoding_dim=lambda config: config.hidden_size,
    student_config=same_sizes_student_config,
    encoder_flops=nextvlad_encoder_flops,
    intermediate="each frame's attention-weighted soft assignments per group, [B, T, G*K + (G//2)*(K//2)]",
    check=check_nextvlad_config,
)

__all__ = [
    "FAMILY",
    "GATING_REDUCTION",
    "NeXtVLADEncoder",
    "NeXtVladPooling",
    "SEContextGating",
    "check_nextvlad_config",
    "nextvlad_encoder_flops",
    "nextvlad_parts",
]
