"""The training objectives, one ``nn.Module`` per mode, so DistributedDataParallel can wrap each as a whole.

Each objective's ``forward`` takes the batch (or the (teacher_batch, student_batch) pair of the same
videos) and returns ``(loss, parts)``: the scalar to minimise and its detached unweighted terms for logging.
Frozen models (the serial teacher) are kept out of ``parameters()``-based optimisation by
``requires_grad=False`` and stay in eval mode whatever mode the objective is put in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fewframes.config import StudentConfig
from fewframes.losses import ce_loss, distillation_loss


def _positions(batch: Any) -> Tensor | None:
    return getattr(batch, "positions", None)


class CrossEntropyObjective(nn.Module):
    """L_CE of one model: the teacher, a from-scratch baseline, stage 2 of serial (a)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.model(batch.frames, batch.mask)
        loss = ce_loss(output.logits, batch.labels)
        return loss, {"ce": loss.detach()}


class SerialDistillObjective(nn.Module):
    """A student against a frozen, already trained teacher that reads all frames of the same videos.

    ``variant`` is the distillation loss ("rep" for stage 1 of (a), "rep_ce", "rep_pred_ce").
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, student_config: StudentConfig, variant: str) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.student_config = student_config
        self.variant = variant
        self.intermediate = student_config.matching == "intermediate"
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> SerialDistillObjective:
        super().train(mode)
        self.teacher.eval()  # the frozen teacher never uses dropout
        return self

    def forward(self, teacher_batch: Any, student_batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            teacher_out = self.teacher(teacher_batch.frames, teacher_batch.mask, return_intermediate=self.intermediate)
        student_out = self.student(student_batch.frames, student_batch.mask, return_intermediate=self.intermediate)
        return distillation_loss(
            self.variant,
            student_out,
            teacher_out,
            student_batch.labels,
            self.student_config,
            student_positions=_positions(student_batch),
            teacher_positions=_positions(teacher_batch),
            student_mask=student_batch.mask,
        )


class CachedTeacherDistillObjective(nn.Module):
    """``SerialDistillObjective`` with the frozen teacher's outputs looked up in a ``TeacherOutputs`` cache
    by the batch's store indices instead of computed: unpaired student batches, final matching only."""

    def __init__(self, student: nn.Module, outputs: Any, student_config: StudentConfig, variant: str) -> None:
        super().__init__()
        if student_config.matching != "final":
            raise ValueError("cached teacher outputs hold no intermediate representations (matching='final' only)")
        self.student = student
        self.outputs = outputs  # fewframes.training.teacher_cache.TeacherOutputs (tensors on the CPU)
        self.student_config = student_config
        self.variant = variant

    def forward(self, student_batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_out = self.outputs.lookup(student_batch.indices, student_batch.frames.device)
        student_out = self.student(student_batch.frames, student_batch.mask)
        return distillation_loss(
            self.variant,
            student_out,
            teacher_out,
            student_batch.labels,
            self.student_config,
            student_positions=_positions(student_batch),
            student_mask=student_batch.mask,
        )


class ParallelObjective(nn.Module):
    """Teacher and student trained together; one optimizer step updates both.

    The teacher minimises its L_CE; the student its distillation variant, where the matching terms
    (L_rep, L_rep^I, L_pred) see the teacher's outputs detached, so they move the student only. The
    classifier is ONE module held by both models, so it learns from the teacher's L_CE and, for
    "rep_ce"/"rep_pred_ce", from the student's L_CE too.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, student_config: StudentConfig) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.student_config = student_config
        self.intermediate = student_config.matching == "intermediate"

    def forward(self, teacher_batch: Any, student_batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_out = self.teacher(teacher_batch.frames, teacher_batch.mask, return_intermediate=self.intermediate)
        teacher_ce = ce_loss(teacher_out.logits, teacher_batch.labels)
        student_out = self.student(student_batch.frames, student_batch.mask, return_intermediate=self.intermediate)
        student_loss, parts = distillation_loss(
            self.student_config.loss,
            student_out,
            teacher_out,
            student_batch.labels,
            self.student_config,
            student_positions=_positions(student_batch),
            teacher_positions=_positions(teacher_batch),
            student_mask=student_batch.mask,
        )
        parts = {f"student_{name}": value for name, value in parts.items()}
        parts["teacher_ce"] = teacher_ce.detach()
        return teacher_ce + student_loss, parts


__all__ = ["CachedTeacherDistillObjective", "CrossEntropyObjective", "ParallelObjective", "SerialDistillObjective"]
