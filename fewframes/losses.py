"""The paper's losses: L_CE, L_rep, L_rep^I, L_pred, and the combinations the student variants train on.

Every loss is a sum over its vector (classes, encoding dimensions, frames) and a mean over the batch.
Matching losses detach the teacher side, so their gradients flow through the student only (in parallel
training the teacher learns from its own L_CE alone). Losses are computed in float32 even when the model
ran under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fewframes.config import DISTILL_LOSSES, StudentConfig
from fewframes.errors import ModelError
from fewframes.models.base import ModelOutput


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ModelError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """L_CE: binary cross-entropy of each class's sigmoid against the 0/1 labels, summed over classes,
    averaged over the batch. ``logits`` and ``labels`` are [B, C]; BCE-with-logits for stability."""
    _check_same_shape("logits", logits, "labels", labels)
    per_class = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return per_class.sum(dim=1).mean()


def rep_loss(student_encoding: Tensor, teacher_encoding: Tensor) -> Tensor:
    """L_rep = ||E_T - E_S||^2: squared difference summed over dimensions, averaged over the batch.
    The teacher's encoding is detached."""
    _check_same_shape("student_encoding", student_encoding, "teacher_encoding", teacher_encoding)
    diff = student_encoding.float() - teacher_encoding.detach().float()
    return diff.pow(2).sum(dim=1).mean()


def intermediate_rep_loss(
    student_intermediate: Tensor,
    teacher_intermediate: Tensor,
    student_positions: Tensor,
    teacher_positions: Tensor | None = None,
    student_mask: Tensor | None = None,
) -> Tensor:
    """L_rep^I: squared distance between teacher and student intermediate representations at the frames the
    student sees, summed over those frames and the dimensions, averaged over the batch. Teacher detached.

    Alignment for the hierarchical model: the intermediate representation of a frame is the lower LSTM's
    top-layer output at that frame (``EncoderOutput.intermediate``). Student slot i of video b holds frame
    p = ``student_positions[b, i]``; it is matched with the teacher's output at frame p, i.e. the teacher
    slot t with ``teacher_positions[b, t] == p`` (``teacher_positions=None``: the teacher reads every frame
    in order from 0, so slot t holds frame t). Student slots with position -1 (padding), False in
    ``student_mask``, or whose frame the teacher did not see are left out.

    For the VLAD families (``netvlad``, ``nextvlad``) a frame's vector is its soft assignment to the clusters,
    a function of that frame alone, so teacher and student vectors at the same frame are directly comparable.

    For the hierarchical model the two vectors come from different block contexts: the teacher's is its LSTM state after the frames
    of a block of ``l_T`` (20) CONSECUTIVE frames up to p; the student's after the earlier frames of its
    block of ``l_S`` (3 or 5) SPARSE frames up to p. Matching asks the student to summarise its sparse
    context the way the teacher summarises the dense one.

    Shapes: student_intermediate [B, k, H], teacher_intermediate [B, T, H], student_positions int [B, k],
    teacher_positions int [B, T] or None, student_mask bool [B, k] or None.
    """
    if student_intermediate.dim() != 3 or teacher_intermediate.dim() != 3:
        raise ModelError("student_intermediate and teacher_intermediate must be [batch, slots, hidden]")
    if student_intermediate.shape[0] != teacher_intermediate.shape[0] or (
        student_intermediate.shape[2] != teacher_intermediate.shape[2]
    ):
        raise ModelError(
            f"student_intermediate {tuple(student_intermediate.shape)} and teacher_intermediate "
            f"{tuple(teacher_intermediate.shape)} must agree on batch and hidden size"
        )
    if tuple(student_positions.shape) != tuple(student_intermediate.shape[:2]):
        raise ModelError(
            f"student_positions {tuple(student_positions.shape)} must be [batch, k] = "
            f"{tuple(student_intermediate.shape[:2])}"
        )
    hidden = teacher_intermediate.shape[2]
    teacher_slots = teacher_intermediate.shape[1]
    valid = student_positions >= 0
    if student_mask is not None:
        valid = valid & student_mask
    if teacher_positions is None:
        valid = valid & (student_positions < teacher_slots)
        slot = student_positions.clamp(0, teacher_slots - 1)
    else:
        if tuple(teacher_positions.shape) != tuple(teacher_intermediate.shape[:2]):
            raise ModelError(
                f"teacher_positions {tuple(teacher_positions.shape)} must be [batch, T] = "
                f"{tuple(teacher_intermediate.shape[:2])}"
            )
        # [B, k, T]: which teacher slot holds the student's frame (padding -1 never matches a real frame).
        same = (student_positions.unsqueeze(2) == teacher_positions.unsqueeze(1)) & (teacher_positions >= 0).unsqueeze(1)
        valid = valid & same.any(dim=2)
        slot = same.to(torch.int8).argmax(dim=2)
    teacher_at_student = teacher_intermediate.detach().gather(1, slot.unsqueeze(-1).expand(-1, -1, hidden))
    diff = student_intermediate.float() - teacher_at_student.float()
    per_slot = diff.pow(2).sum(dim=2) * valid.to(torch.float32)
    return per_slot.sum(dim=1).mean()


def pred_loss(student_logits: Tensor, teacher_logits: Tensor, distance: str = "kl") -> Tensor:
    """L_pred = d(P_T, P_S) between the per-class sigmoid probabilities, summed over classes, batch mean.

    ``distance="kl"``: KL(P_T || P_S) of each class's Bernoulli (is / is not this class), summed over
    classes: p_T log(p_T/p_S) + (1-p_T) log((1-p_T)/(1-p_S)). Sound for multi-label sigmoid outputs, which
    are not one distribution over classes; the authors' code instead normalised over classes, which
    ignores how many labels a video has. Computed from logits with log-sigmoid, so it never takes log(0).
    ``distance="mse"``: squared difference of the probabilities. The teacher's logits are detached.
    """
    _check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    student = student_logits.float()
    teacher = teacher_logits.detach().float()
    if distance == "kl":
        p_teacher = torch.sigmoid(teacher)
        kl = p_teacher * (F.logsigmoid(teacher) - F.logsigmoid(student)) + (1.0 - p_teacher) * (
            F.logsigmoid(-teacher) - F.logsigmoid(-student)
        )
        return kl.sum(dim=1).mean()
    if distance == "mse":
        return (torch.sigmoid(student) - torch.sigmoid(teacher)).pow(2).sum(dim=1).mean()
    raise ModelError(f"pred distance must be kl or mse, got {distance!r}")


def distillation_loss(
    variant: str,
    student: ModelOutput,
    teacher: ModelOutput,
    labels: Tensor | None,
    weights: StudentConfig,
    *,
    student_positions: Tensor | None = None,
    teacher_positions: Tensor | None = None,
    student_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The student's training loss for a variant of the paper, and its parts for logging.

    variant "rep": w_rep·L_rep (stage 1 of (a); stage 2 fine-tunes with ``ce_loss`` alone);
    "rep_ce": w_rep·L_rep + w_ce·L_CE; "rep_pred_ce": w_rep·L_rep + w_pred·L_pred + w_ce·L_CE.
    Weights, the L_pred distance (``pred_distance``) and the matching (``matching``) come from ``weights``
    (a StudentConfig). With ``matching="intermediate"`` the rep term is L_rep + L_rep^I (the paper adds the
    intermediate match to the final one) and needs both outputs' ``intermediate`` and ``student_positions``.
    Returns ``(total, parts)``; parts holds the detached unweighted terms ("rep", "rep_intermediate",
    "pred", "ce" as they apply) and "total".
    """
    if variant not in DISTILL_LOSSES:
        raise ModelError(f"loss variant must be one of {', '.join(DISTILL_LOSSES)}, got {variant!r}")
    parts: dict[str, Tensor] = {}
    rep = rep_loss(student.encoding, teacher.encoding)
    parts["rep"] = rep
    if weights.matching == "intermediate":
        if student.intermediate is None or teacher.intermediate is None or student_positions is None:
            raise ModelError(
                "matching=intermediate needs student and teacher outputs with intermediate "
                "(return_intermediate=True) and student_positions"
            )
        rep_intermediate = intermediate_rep_loss(
            student.intermediate, teacher.intermediate, student_positions, teacher_positions, student_mask
        )
        parts["rep_intermediate"] = rep_intermediate
        rep = rep + rep_intermediate
    total = weights.rep_weight * rep
    if variant == "rep_pred_ce":
        pred = pred_loss(student.logits, teacher.logits, weights.pred_distance)
        parts["pred"] = pred
        total = total + weights.pred_weight * pred
    if variant in ("rep_ce", "rep_pred_ce"):
        if labels is None:
            raise ModelError(f"loss variant {variant} needs labels")
        ce = ce_loss(student.logits, labels)
        parts["ce"] = ce
        total = total + weights.ce_weight * ce
    parts["total"] = total
    return total, {name: value.detach() for name, value in parts.items()}


__all__ = ["ce_loss", "distillation_loss", "intermediate_rep_loss", "pred_loss", "rep_loss"]
