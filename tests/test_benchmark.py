"""Benchmark library: FLOP formulas against the executed-matmul counter, and the model/e2e timing rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fewframes.benchmark import (
    PlainLSTMClassifier,
    count_parameters,
    counted_flops,
    describe_machine,
    hierarchical_flops,
    lstm_flops,
    _rnn_flop_formulas,
)
from fewframes.config import PRESETS, ModelConfig
from fewframes.models import build_model, student_model_config

TINY = PRESETS["tiny"]


def _frames(batch: int, n: int, dim: int = 1152) -> torch.Tensor:
    return torch.randint(0, 256, (batch, n, dim), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))


def test_lstm_counter_formula_matches_an_unrolled_cell() -> None:
    """The formula registered for aten LSTM kernels equals FlopCounterMode's own count of an unrolled LSTM."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(24, 8, num_layers=2, batch_first=True)
    x = torch.randn(3, 7, 24)

    kernel_counter = FlopCounterMode(display=False, custom_mapping=_rnn_flop_formulas())
    with torch.inference_mode(), kernel_counter:
        reference, _ = lstm(x)

    def unrolled(inputs: torch.Tensor) -> torch.Tensor:
        for layer in range(lstm.num_layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
            h = c = inputs.new_zeros(inputs.shape[0], lstm.hidden_size)
            outputs = []
            for t in range(inputs.shape[1]):
                i, f, g, o = (F.linear(inputs[:, t], w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            inputs = torch.stack(outputs, dim=1)
        return inputs

    cell_counter = FlopCounterMode(display=False)
    with torch.inference_mode(), cell_counter:
        unrolled_out = unrolled(x)
    torch.testing.assert_close(unrolled_out, reference, atol=1e-5, rtol=1e-5)  # really the same computation
    assert kernel_counter.get_total_flops() == cell_counter.get_total_flops() == lstm_flops(3 * 7, 24, 8, 2)


def test_analytic_flops_match_counter_for_teacher_and_students() -> None:
    torch.manual_seed(0)
    teacher_config = TINY.model_config()
    teacher = build_model(teacher_config).eval()
    for n in (300, 45, 20, 7):  # full blocks, a short last block (padded on the dense path), one short block
        assert counted_flops(teacher, _frames(2, n)) == 2 * hierarchical_flops(teacher_config, n, padded=True)
    for k in (6, 10, 30):
        student = build_model(student_model_config(teacher_config, k)).eval()
        assert counted_flops(student, _frames(3, k)) == 3 * hierarchical_flops(student.config, k)


def test_analytic_flops_match_counter_on_the_packed_path() -> None:
    """With padding in the batch the model packs: only real frames and non-empty blocks execute."""
    torch.manual_seed(0)
    config = TINY.model_config()
    teacher = build_model(config).eval()
    mask = torch.zeros(2, 50, dtype=torch.bool)
    mask[0, :50] = True
    mask[1, :23] = True
    expected = hierarchical_flops(config, 50, padded=False) + hierarchical_flops(config, 23, padded=False)
    assert counted_flops(teacher, _frames(2, 50), mask) == expected


def test_flops_scale_with_frames_and_student_is_cheaper() -> None:
    config = ModelConfig(num_classes=3862)  # the paper's sizes: formula only, nothing runs
    teacher = hierarchical_flops(config, 300)
    student = hierarchical_flops(student_model_config(config, 30), 30)
    assert 0.05 < student / teacher < 0.15
    assert hierarchical_flops(config, 40) < hierarchical_flops(config, 300)


def test_plain_lstm_reference_and_parameter_count() -> None:
    config = TINY.model_config()
    plain = PlainLSTMClassifier(config).eval()
    with torch.inference_mode():
        logits = plain(_frames(2, 30))
    assert logits.shape == (2, config.num_classes)
    lstm_params = 4 * 16 * (1152 + 16 + 2) + 4 * 16 * (16 + 16 + 2)
    assert count_parameters(plain) == lstm_params + (4 * 16 + 1) * config.num_classes


def test_describe_machine_names_cpu_and_torch() -> None:
    info = describe_machine("cpu")
    assert info["cpu_cores"] >= 1 and info["torch"] == torch.__version__
    assert info["cpu_model"]
