"""The hierarchical teacher/student models: shapes, masking, block edge cases, one lower-LSTM call, sharing."""

from __future__ import annotations

import pytest
import torch

from fewframes.config import FEATURE_DIM, PRESETS, ModelConfig
from fewframes.errors import FewframesError, ModelError
from fewframes.models import (
    Classifier,
    HierarchicalEncoder,
    VideoClassifier,
    build_model,
    dequantize_frames,
    prepare_frames,
    student_block_length,
    student_model_config,
)

TINY = PRESETS["tiny"]
ATOL = 2e-6


def tiny_config(block_length: int = TINY.teacher_block_length, **changes) -> ModelConfig:
    return TINY.model_config(block_length=block_length).replace(**changes)


def random_frames(batch: int, slots: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, slots, FEATURE_DIM), dtype=torch.uint8, generator=generator)


def right_padded_mask(lengths: list[int], slots: int) -> torch.Tensor:
    return torch.arange(slots).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


@pytest.fixture(scope="module")
def teacher() -> VideoClassifier:
    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


def count_calls(module: torch.nn.Module) -> list[int]:
    """Batch sizes seen by each call of ``module`` (a packed call counts its sequences)."""
    seen: list[int] = []

    def hook(_module, inputs, _output):
        data = inputs[0]
        if isinstance(data, torch.nn.utils.rnn.PackedSequence):
            seen.append(int(data.batch_sizes[0]))
        else:
            seen.append(int(data.shape[0]))

    module.register_forward_hook(hook)
    return seen


def test_shapes_of_teacher_outputs(teacher: VideoClassifier) -> None:
    config = teacher.config
    frames = random_frames(3, 45)
    out = teacher(frames, right_padded_mask([45, 30, 7], 45), return_intermediate=True)
    assert teacher.encoder.encoding_dim == 2 * config.num_layers * config.hidden_size
    assert out.logits.shape == (3, config.num_classes)
    assert out.encoding.shape == (3, teacher.encoder.encoding_dim)
    assert out.intermediate.shape == (3, 45, config.hidden_size)
    assert teacher(frames, right_padded_mask([45, 30, 7], 45)).intermediate is None
    encoded = teacher.encoder(frames, right_padded_mask([45, 30, 7], 45))
    assert encoded.block_states.shape == (3, 3, config.hidden_size)  # ceil(45 / 20) blocks
    assert encoded.block_mask.tolist() == [[True, True, True], [True, True, False], [True, False, False]]


def test_padding_never_changes_the_teacher_encoding(teacher: VideoClassifier) -> None:
    lengths = [45, 30, 7, 1]
    frames = random_frames(4, 45, seed=1)
    batched = teacher(frames, right_padded_mask(lengths, 45), return_intermediate=True)
    for row, length in enumerate(lengths):
        alone = teacher(frames[row : row + 1, :length], return_intermediate=True)  # dense path, no mask
        for extra in (1, 13, 255):  # the same video padded to other lengths, padding filled with noise
            padded = torch.cat([frames[row : row + 1, :length], random_frames(1, extra, seed=extra)], dim=1)
            again = teacher(padded, right_padded_mask([length], length + extra))
            torch.testing.assert_close(again.encoding, alone.encoding, atol=ATOL, rtol=0)
        torch.testing.assert_close(batched.encoding[row], alone.encoding[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(batched.intermediate[row, :length], alone.intermediate[0], atol=ATOL, rtol=0)
        if length < 45:  # padding slots carry no intermediate representation
            assert batched.intermediate[row, length:].abs().max().item() == 0.0


def test_padding_never_changes_a_student_encoding() -> None:
    torch.manual_seed(1)
    k = 10
    student = build_model(student_model_config(tiny_config(), k)).eval()
    assert student.config.block_length == 5
    frames = random_frames(3, k, seed=2)
    # video 0 has all k frames; videos 1 and 2 are shorter than k, so the selection pads their slots
    mask = right_padded_mask([10, 6, 2], k)
    batched = student(frames, mask, return_intermediate=True)
    for row, length in enumerate([10, 6, 2]):
        alone = student(frames[row : row + 1, :length], return_intermediate=True)
        torch.testing.assert_close(batched.encoding[row], alone.encoding[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(batched.intermediate[row, :length], alone.intermediate[0], atol=ATOL, rtol=0)


def test_padding_in_the_middle_is_squeezed_out(teacher: VideoClassifier) -> None:
    frames = random_frames(1, 30, seed=3)
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[0, [3, 17, 18, 29]] = False
    out = teacher(frames, mask, return_intermediate=True)
    real = frames[:, mask[0]]
    alone = teacher(real, return_intermediate=True)
    torch.testing.assert_close(out.encoding, alone.encoding, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.intermediate[:, mask[0]], alone.intermediate, atol=ATOL, rtol=0)
    assert out.intermediate[:, ~mask[0]].abs().max().item() == 0.0


@pytest.mark.parametrize(
    "block_length, lengths, slots",
    [
        (3, [2], 2),  # k < l: one short block
        (3, [7], 7),  # k not divisible by l: blocks of 3, 3, 1
        (20, [7, 3], 7),  # a video shorter than one teacher block
        (20, [1], 1),  # a single frame
        (5, [1, 10, 4], 10),  # ragged batch: 1 frame, two full blocks, one short block
    ],
)
def test_block_edge_cases_give_finite_padding_free_encodings(block_length: int, lengths: list[int], slots: int) -> None:
    torch.manual_seed(2)
    model = build_model(tiny_config(block_length=block_length)).eval()
    frames = random_frames(len(lengths), slots, seed=block_length)
    out = model(frames, right_padded_mask(lengths, slots), return_intermediate=True)
    assert torch.isfinite(out.encoding).all() and torch.isfinite(out.logits).all()
    for row, length in enumerate(lengths):
        alone = model(frames[row : row + 1, :length])
        torch.testing.assert_close(out.encoding[row], alone.encoding[0], atol=ATOL, rtol=0)


def test_block_encoding_is_the_lower_lstm_state_after_each_block() -> None:
    """The hierarchy by hand: run the lower LSTM per block, the upper over their last outputs."""
    torch.manual_seed(3)
    model = build_model(tiny_config(block_length=3)).eval()
    frames = random_frames(1, 7, seed=4)
    x = prepare_frames(frames)
    encoder = model.encoder
    block_states = [encoder.lower(x[:, start : start + 3])[0][:, -1] for start in (0, 3, 6)]
    _, (h_n, c_n) = encoder.upper(torch.stack(block_states, dim=1))
    expected = torch.cat([c_n[0], h_n[0], c_n[1], h_n[1]], dim=1)  # (c, h) per layer
    torch.testing.assert_close(model(frames).encoding, expected, atol=ATOL, rtol=0)
    packed = model(torch.cat([frames, frames[:, :2]], dim=1), right_padded_mask([7], 9)).encoding
    torch.testing.assert_close(packed, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("lengths", [[45, 45], [45, 21, 3]], ids=["dense", "packed"])
def test_blocks_of_a_batch_go_through_the_lower_lstm_in_one_call(teacher: VideoClassifier, lengths: list[int]) -> None:
    model = build_model(teacher.config).eval()
    lower_calls = count_calls(model.encoder.lower)
    upper_calls = count_calls(model.encoder.upper)
    model(random_frames(len(lengths), 45), right_padded_mask(lengths, 45))
    # one call each; all-padding blocks are dropped: 3 + 2 + 1 blocks hold frames in the packed batch
    expected_blocks = sum(-(-length // 20) for length in lengths)
    assert lower_calls == [expected_blocks]
    assert upper_calls == [len(lengths)]


@pytest.mark.parametrize("k, expected", [(6, 3), (10, 5), (15, 5), (20, 5), (30, 5), (12, 3), (7, 3), (2, 2), (1, 1)])
def test_student_block_length_rule(k: int, expected: int) -> None:
    assert student_block_length(k) == expected


def test_student_block_length_never_exceeds_k() -> None:
    assert all(1 <= student_block_length(k) <= k for k in range(1, 301))
    with pytest.raises(ModelError, match="k"):
        student_block_length(0)


def test_student_config_keeps_the_teacher_sizes() -> None:
    teacher_config = tiny_config()
    student_config = student_model_config(teacher_config, 6)
    assert student_config.block_length == 3
    assert student_config.replace(block_length=20) == teacher_config
    assert student_model_config(teacher_config, 30, block_length=6).block_length == 6


def test_dequantize_matches_the_youtube8m_formula() -> None:
    quantized = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    expected = torch.tensor([q * 4.0 / 255.0 + 4.0 / 512.0 - 2.0 for q in (0, 1, 128, 255)])
    torch.testing.assert_close(dequantize_frames(quantized), expected)
    assert dequantize_frames(quantized)[0].item() == pytest.approx(-1.9921875)
    floats = torch.randn(2, 3)
    assert dequantize_frames(floats) is floats
    with pytest.raises(ModelError, match="uint8"):
        dequantize_frames(torch.zeros(2, dtype=torch.int32))


def test_rgb_and_audio_are_normalised_separately() -> None:
    prepared = prepare_frames(random_frames(2, 4))
    rgb, audio = prepared[..., :1024], prepared[..., 1024:]
    torch.testing.assert_close(rgb.norm(dim=-1), torch.ones(2, 4))
    torch.testing.assert_close(audio.norm(dim=-1), torch.ones(2, 4))


def test_hidden_encoding_option() -> None:
    model = build_model(tiny_config(encoding="hidden")).eval()
    assert model.encoder.encoding_dim == model.config.hidden_size
    assert model(random_frames(2, 9)).encoding.shape == (2, model.config.hidden_size)


def test_classifier_is_shared_between_teacher_and_student() -> None:
    torch.manual_seed(4)
    teacher = build_model(tiny_config())
    student = build_model(student_model_config(tiny_config(), 6), classifier=teacher.classifier)
    assert student.classifier is teacher.classifier
    assert VideoClassifier(student.encoder, teacher.classifier).classifier is teacher.classifier
    frames = random_frames(2, 40)
    (teacher(frames).logits.sum() + student(frames[:, ::7]).logits.sum()).backward()
    weight = teacher.classifier.linear.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert student.classifier.linear.weight is weight


def test_state_dict_and_torch_save_round_trip(tmp_path, teacher: VideoClassifier) -> None:
    frames = random_frames(2, 25, seed=5)
    mask = right_padded_mask([25, 11], 25)
    expected = teacher(frames, mask).logits
    copy = build_model(teacher.config)
    copy.load_state_dict(teacher.state_dict())
    torch.testing.assert_close(copy.eval()(frames, mask).logits, expected)
    path = tmp_path / "model.pt"
    torch.save(teacher, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded.config == teacher.config
    torch.testing.assert_close(loaded(frames, mask).logits, expected)


def test_bad_inputs_raise_one_line_model_errors(teacher: VideoClassifier) -> None:
    with pytest.raises(ModelError, match=r"frames must be \[batch, frames, 1152\]"):
        teacher(torch.zeros(2, 5, 100, dtype=torch.uint8))
    with pytest.raises(ModelError, match="mask must be bool"):
        teacher(random_frames(2, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ModelError, match="mask must be bool"):
        teacher(random_frames(2, 5), torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(FewframesError, match="classifier expects encodings of size"):
        VideoClassifier(HierarchicalEncoder(tiny_config()), Classifier(7, 12))


def test_a_video_with_no_real_frame_does_not_break_the_batch(teacher: VideoClassifier) -> None:
    frames = random_frames(2, 10)
    out = teacher(frames, right_padded_mask([10, 0], 10), return_intermediate=True)
    assert torch.isfinite(out.encoding).all()
    torch.testing.assert_close(out.encoding[0], teacher(frames[:1]).encoding[0], atol=ATOL, rtol=0)
    assert out.intermediate[1].abs().max().item() == 0.0


def test_gradients_reach_both_lstms(teacher: VideoClassifier) -> None:
    model = build_model(teacher.config)
    frames = random_frames(3, 30)
    model(frames, right_padded_mask([30, 12, 5], 30)).logits.sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_cpu_bf16_autocast_runs(teacher: VideoClassifier) -> None:
    frames = random_frames(2, 25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = teacher(frames, right_padded_mask([25, 9], 25), return_intermediate=True)
    assert torch.isfinite(out.logits.float()).all()
    torch.testing.assert_close(out.logits.float(), teacher(frames, right_padded_mask([25, 9], 25)).logits, atol=0.1, rtol=0.1)
