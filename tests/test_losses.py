"""The losses on hand-made tensors with hand-computed values, and where their gradients go."""

from __future__ import annotations

import math

import pytest
import torch

from fewframes.config import FEATURE_DIM, PRESETS, StudentConfig
from fewframes.errors import ModelError
from fewframes.losses import ce_loss, distillation_loss, intermediate_rep_loss, pred_loss, rep_loss
from fewframes.models import ModelOutput, build_model, student_model_config

LN3 = math.log(3.0)


def test_ce_loss_sums_classes_and_averages_videos() -> None:
    logits = torch.tensor([[0.0, LN3], [-LN3, 0.0]])  # sigmoids: [0.5, 0.75], [0.25, 0.5]
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # video 0: -ln 0.5 - ln 0.25 = ln 8; video 1: -ln 0.75 - ln 0.5 = ln(8/3)
    expected = (math.log(8.0) + math.log(8.0 / 3.0)) / 2
    assert ce_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_ce_loss_is_stable_for_large_logits() -> None:
    loss = ce_loss(torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 1.0]]))
    assert loss.item() == pytest.approx(400.0)


def test_rep_loss_is_the_batch_mean_of_squared_distances() -> None:
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert rep_loss(student, teacher).item() == pytest.approx((5.0 + 25.0) / 2)


def test_intermediate_rep_loss_matches_student_slots_to_teacher_frames() -> None:
    student = torch.tensor([[[1.0], [2.0]], [[4.0], [0.0]]])  # [B=2, k=2, H=1]
    teacher = torch.tensor([[[0.0], [5.0], [5.0]], [[1.0], [1.0], [3.0]]])  # [B=2, T=3, H=1]
    positions = torch.tensor([[0, 2], [2, -1]])  # video 1's second slot is padding
    # video 0: (1-0)^2 + (2-5)^2 = 10; video 1: (4-3)^2 = 1
    assert intermediate_rep_loss(student, teacher, positions).item() == pytest.approx(5.5)
    # the teacher's slots in another order, found by position
    teacher_positions = torch.tensor([[2, 0, 1], [1, 2, 0]])
    shuffled = torch.tensor([[[5.0], [0.0], [5.0]], [[1.0], [3.0], [1.0]]])
    assert intermediate_rep_loss(student, shuffled, positions, teacher_positions).item() == pytest.approx(5.5)
    # a student mask can exclude slots too; a frame the teacher never saw is excluded
    mask = torch.tensor([[True, False], [True, True]])
    assert intermediate_rep_loss(student, teacher, positions, student_mask=mask).item() == pytest.approx(1.0)
    beyond = torch.tensor([[0, 7], [2, -1]])
    assert intermediate_rep_loss(student, teacher, beyond).item() == pytest.approx(1.0)


def test_pred_loss_kl_is_a_sum_of_bernoulli_kls() -> None:
    student = torch.tensor([[LN3, 0.0]])  # p_S = [0.75, 0.5]
    teacher = torch.tensor([[0.0, 0.0]])  # p_T = [0.5, 0.5]
    # KL(0.5 || 0.75) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3); the second class matches: 0
    assert pred_loss(student, teacher, "kl").item() == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-6)
    assert pred_loss(teacher, teacher, "kl").item() == pytest.approx(0.0, abs=1e-7)
    assert pred_loss(student, teacher, "mse").item() == pytest.approx(0.25**2)
    extreme = pred_loss(torch.tensor([[-100.0]]), torch.tensor([[100.0]]), "kl")
    # p_T ~ 1, so KL ~ -log p_S = -log sigmoid(-100) ~ 100
    assert math.isfinite(extreme.item()) and extreme.item() == pytest.approx(100.0, rel=1e-3)
    with pytest.raises(ModelError, match="kl or mse"):
        pred_loss(student, teacher, "l1")


def test_shape_mismatches_are_named() -> None:
    with pytest.raises(ModelError, match="logits .* and labels"):
        ce_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ModelError, match="student_encoding"):
        rep_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ModelError, match="student_positions"):
        intermediate_rep_loss(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4), torch.zeros(2, 2, dtype=torch.long))


def hand_outputs() -> tuple[ModelOutput, ModelOutput, torch.Tensor]:
    student = ModelOutput(logits=torch.tensor([[LN3, 0.0]]), encoding=torch.tensor([[1.0, 2.0]]), intermediate=None)
    teacher = ModelOutput(logits=torch.tensor([[0.0, 0.0]]), encoding=torch.tensor([[0.0, 0.0]]), intermediate=None)
    return student, teacher, torch.tensor([[1.0, 0.0]])


@pytest.mark.parametrize("variant", ["rep", "rep_ce", "rep_pred_ce"])
def test_distillation_loss_weights_and_parts(variant: str) -> None:
    student, teacher, labels = hand_outputs()
    weights = StudentConfig(k=10, loss=variant, rep_weight=0.001, pred_weight=0.01, ce_weight=1.0)
    rep = 5.0
    pred = 0.5 * math.log(4.0 / 3.0)
    ce = -math.log(0.75) - math.log(0.5)  # class 0: label 1, p 0.75; class 1: label 0, p 0.5
    expected = {"rep": 0.001 * rep, "rep_ce": 0.001 * rep + ce, "rep_pred_ce": 0.001 * rep + 0.01 * pred + ce}
    total, parts = distillation_loss(variant, student, teacher, labels, weights)
    assert total.item() == pytest.approx(expected[variant], rel=1e-6)
    assert parts["rep"].item() == pytest.approx(rep)
    assert parts["total"].item() == pytest.approx(expected[variant], rel=1e-6)
    assert ("pred" in parts) == (variant == "rep_pred_ce")
    assert ("ce" in parts) == (variant != "rep")
    if variant == "rep_pred_ce":
        mse = distillation_loss(variant, student, teacher, labels, weights.replace(pred_distance="mse"))[1]["pred"]
        assert mse.item() == pytest.approx(0.0625)


def test_distillation_loss_rejects_unknown_variants_and_missing_inputs() -> None:
    student, teacher, labels = hand_outputs()
    with pytest.raises(ModelError, match="loss variant"):
        distillation_loss("ce", student, teacher, labels, StudentConfig(k=10))
    with pytest.raises(ModelError, match="needs labels"):
        distillation_loss("rep_ce", student, teacher, None, StudentConfig(k=10))
    with pytest.raises(ModelError, match="intermediate"):
        distillation_loss("rep", student, teacher, labels, StudentConfig(k=10, matching="intermediate"))


def random_frames(batch: int, slots: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, slots, FEATURE_DIM), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def teacher_and_student():
    torch.manual_seed(0)
    tiny = PRESETS["tiny"]
    teacher = build_model(tiny.model_config())
    student = build_model(student_model_config(teacher.config, 6), classifier=teacher.classifier)
    return teacher, student


@pytest.mark.parametrize("variant", ["rep", "rep_ce", "rep_pred_ce"])
@pytest.mark.parametrize("matching", ["final", "intermediate"])
def test_matching_losses_train_the_student_only(teacher_and_student, variant: str, matching: str) -> None:
    teacher, student = teacher_and_student
    teacher.zero_grad(set_to_none=True)
    student.zero_grad(set_to_none=True)
    frames = random_frames(3, 40, seed=1)
    mask = torch.arange(40).unsqueeze(0) < torch.tensor([[40], [25], [12]])
    positions = torch.stack([torch.linspace(0, n - 1, 6).round().long() for n in (40, 25, 12)])
    student_frames = frames.gather(1, positions.unsqueeze(-1).expand(-1, -1, FEATURE_DIM))
    teacher_out = teacher(frames, mask, return_intermediate=True)
    student_out = student(student_frames, return_intermediate=True)
    labels = (torch.rand(3, teacher.config.num_classes) > 0.7).float()
    # only the matching losses: no L_CE, whose gradient reaches the shared classifier legitimately
    weights = StudentConfig(k=6, loss=variant, matching=matching, ce_weight=0.0)
    total, parts = distillation_loss(variant, student_out, teacher_out, labels, weights, student_positions=positions)
    assert total.item() > 0 and (matching == "final") != ("rep_intermediate" in parts)
    total.backward()
    for name, param in teacher.encoder.named_parameters():
        assert param.grad is None, f"teacher {name} got a gradient"
    lower_grad = sum(p.grad.abs().sum().item() for p in student.encoder.lower.parameters())
    upper_grad = sum(p.grad.abs().sum().item() for p in student.encoder.upper.parameters())
    assert lower_grad > 0 and upper_grad > 0
    shared_grad = teacher.classifier.linear.weight.grad
    assert (shared_grad is not None and shared_grad.abs().sum() > 0) == (variant == "rep_pred_ce")


def test_intermediate_alignment_is_exact_for_a_student_reading_a_teacher_block_prefix() -> None:
    """A student with the teacher's weights and l that reads frames 0..9 sees what the teacher saw there."""
    torch.manual_seed(1)
    teacher = build_model(PRESETS["tiny"].model_config()).eval()
    frames = random_frames(2, 30, seed=2)
    teacher_out = teacher(frames, return_intermediate=True)
    student_out = teacher(frames[:, :10], return_intermediate=True)
    positions = torch.arange(10).expand(2, -1)
    assert intermediate_rep_loss(student_out.intermediate, teacher_out.intermediate, positions).item() < 1e-10
    sparse = torch.arange(0, 30, 3).expand(2, -1)  # every 3rd frame: different block context, non-zero
    sparse_out = teacher(frames[:, ::3], return_intermediate=True)
    assert intermediate_rep_loss(sparse_out.intermediate, teacher_out.intermediate, sparse).item() > 1e-4
