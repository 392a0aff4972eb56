"""Every model family (hrnn, netvlad, nextvlad) behind the one interface: shapes, padding invariance, the shared
classifier, the mixture-of-experts classifier, the config, training in every mode, evaluation, ONNX export,
predict and FLOPs (analytic vs counted). Real models, real tiny frame store, CPU; tiny sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fewframes.benchmark import counted_flops
from fewframes.config import FEATURE_DIM, ConfigError, ModelConfig, StudentConfig
from fewframes.errors import FewframesError
from fewframes.evaluation import evaluate
from fewframes.export import export_onnx, onnx_logits
from fewframes.losses import ce_loss, distillation_loss, pred_loss
from fewframes.models import (
    MODEL_FAMILIES,
    MoeClassifier,
    VideoClassifier,
    build_model,
    encoding_dim,
    model_flops,
    student_model_config,
)
from fewframes.predict import predict, read_predictions
from fewframes.training.results import MODEL_FORMAT
from fewframes.training import load_model, train_baseline, train_parallel, train_student, train_teacher
from training_helpers import TINY_CLASSES, build_tiny_store, tiny_train_config

FAMILIES = tuple(MODEL_FAMILIES)
VLAD_FAMILIES = ("netvlad", "nextvlad")
ATOL = 2e-5


def family_config(family: str, **changes: object) -> ModelConfig:
    """Tiny sizes: hidden 16; hrnn blocks of 10; 4 clusters (rgb; audio 2); nextvlad 4 groups (audio 2)."""
    values: dict = dict(num_classes=TINY_CLASSES, hidden_size=16, num_layers=2, block_length=10, dropout=0.2,
                        family=family, clusters=4, groups=4)
    values.update(changes)
    return ModelConfig(**values)


def random_frames(batch: int, slots: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, slots, FEATURE_DIM), dtype=torch.uint8, generator=generator)


def right_padded_mask(lengths: list[int], slots: int) -> torch.Tensor:
    return torch.arange(slots).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


@pytest.mark.parametrize("classifier", ["linear", "moe"])
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shapes(family: str, classifier: str) -> None:
    torch.manual_seed(0)
    config = family_config(family, classifier=classifier)
    model = build_model(config).eval()
    assert model.config == config and model.encoder.encoding_dim == encoding_dim(config)
    out = model(random_frames(3, 25), right_padded_mask([25, 12, 4], 25), return_intermediate=True)
    assert out.logits.shape == (3, TINY_CLASSES)
    assert out.encoding.shape == (3, encoding_dim(config))
    assert out.intermediate.shape[:2] == (3, 25)
    assert out.intermediate[1, 12:].abs().max().item() == 0.0  # zero at padding slots
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.encoding).all()
    assert model(random_frames(2, 7)).intermediate is None


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_never_changes_the_encoding(family: str) -> None:
    torch.manual_seed(1)
    model = build_model(family_config(family)).eval()
    frames = random_frames(3, 40, seed=2)
    alone = [model(frames[i : i + 1, :length]).encoding[0] for i, length in enumerate([40, 17, 5])]
    padded = model(frames, right_padded_mask([40, 17, 5], 40))
    for i in range(3):
        torch.testing.assert_close(padded.encoding[i], alone[i], atol=ATOL, rtol=0)
    # Padding in the middle: the real frames are 0..9 and 20..29 of the slots.
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, :10] = mask[0, 20:30] = True
    squeezed = torch.cat([frames[:1, :10], frames[:1, 20:30]], dim=1)
    torch.testing.assert_close(model(frames[:1], mask).encoding, model(squeezed).encoding, atol=ATOL, rtol=0)
    # Changing what sits in the padding slots changes nothing.
    noisy = frames.clone()
    noisy[1, 17:] = 255 - noisy[1, 17:]
    torch.testing.assert_close(model(noisy, right_padded_mask([40, 17, 5], 40)).encoding, padded.encoding, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_video_with_no_real_frame_stays_finite(family: str) -> None:
    model = build_model(family_config(family)).eval()
    frames = random_frames(2, 10)
    out = model(frames, right_padded_mask([10, 0], 10), return_intermediate=True)
    assert torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.encoding[0], model(frames[:1]).encoding[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("classifier", ["linear", "moe"])
@pytest.mark.parametrize("family", FAMILIES)
def test_student_plugs_in_the_teachers_classifier(family: str, classifier: str) -> None:
    torch.manual_seed(4)
    config = family_config(family, classifier=classifier)
    teacher = build_model(config)
    student_config = student_model_config(config, 6)
    if family == "hrnn":
        assert student_config.block_length == 3
    else:
        assert student_config == config  # same sizes; pooling has no blocks
    student = build_model(student_config, classifier=teacher.classifier)
    assert student.classifier is teacher.classifier
    frames = random_frames(2, 40)
    (teacher(frames).logits.sum() + student(frames[:, ::7]).logits.sum()).backward()
    for name, param in teacher.classifier.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name, param in student.encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("family", VLAD_FAMILIES)
def test_intermediate_matching_is_defined_for_the_vlad_families(family: str) -> None:
    """L_rep^I matches each frame's soft assignments at the student's frames; equal models give 0 there."""
    torch.manual_seed(5)
    config = family_config(family)
    teacher = build_model(config).eval()
    student = build_model(student_model_config(config, 6), classifier=teacher.classifier).eval()
    frames = random_frames(2, 30)
    positions = torch.tensor([[0, 5, 10, 15, 20, 25], [1, 6, 11, 16, 21, 26]])
    student_frames = frames.gather(1, positions.unsqueeze(-1).expand(-1, -1, FEATURE_DIM))
    weights = StudentConfig(k=6, matching="intermediate")
    teacher_out = teacher(frames, return_intermediate=True)
    _, parts = distillation_loss("rep_pred_ce", student(student_frames, return_intermediate=True), teacher_out,
                                 torch.zeros(2, TINY_CLASSES), weights, student_positions=positions)
    assert parts["rep_intermediate"] > 0
    student.load_state_dict(teacher.state_dict())
    _, parts = distillation_loss("rep_pred_ce", student(student_frames, return_intermediate=True), teacher_out,
                                 torch.zeros(2, TINY_CLASSES), weights, student_positions=positions)
    assert parts["rep_intermediate"].item() == pytest.approx(0.0, abs=1e-10)


def test_moe_matches_its_definition_and_its_logits_give_its_probabilities() -> None:
    torch.manual_seed(6)
    moe = MoeClassifier(5, 3, num_experts=2, dropout=0.0).eval()
    encoding = torch.randn(4, 5) * 3
    gates = (encoding @ moe.gates.weight.T + moe.gates.bias).reshape(4, 3, 3)
    experts = (encoding @ moe.experts.weight.T + moe.experts.bias).reshape(4, 3, 2)
    expected = torch.zeros(4, 3)
    for b in range(4):
        for c in range(3):
            shares = torch.exp(gates[b, c]) / torch.exp(gates[b, c]).sum()
            expected[b, c] = sum(shares[e] * torch.sigmoid(experts[b, c, e]) for e in range(2))
    probabilities = moe.probabilities(encoding)
    torch.testing.assert_close(probabilities, expected)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    torch.testing.assert_close(torch.sigmoid(moe(encoding)), expected)
    # BCE on the returned logits is BCE on p.
    labels = (torch.rand(4, 3) > 0.5).float()
    torch.testing.assert_close(
        F.binary_cross_entropy_with_logits(moe(encoding), labels, reduction="none"),
        F.binary_cross_entropy(probabilities, labels, reduction="none"), atol=1e-5, rtol=1e-5,
    )
    # Finite losses and gradients even where p is within float rounding of 0 or 1.
    with torch.no_grad():
        moe.experts.weight.mul_(1e4)
        moe.gates.weight.mul_(1e4)
    extreme = torch.randn(4, 5, requires_grad=True)
    logits = moe(extreme)
    loss = ce_loss(logits, labels) + pred_loss(logits, torch.randn(4, 3))
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss) and torch.isfinite(extreme.grad).all()


def test_config_fields_are_checked_and_old_files_load_as_hrnn(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ModelConfig.family must be one of hrnn, netvlad, nextvlad"):
        ModelConfig(num_classes=3, family="lstm")
    with pytest.raises(ConfigError, match="ModelConfig.classifier must be one of linear, moe"):
        ModelConfig(num_classes=3, classifier="mlp")
    for field in ("clusters", "expansion", "groups", "moe_experts"):
        with pytest.raises(ConfigError, match=f"ModelConfig.{field} must be >= 1"):
            ModelConfig(num_classes=3, **{field: 0})
    with pytest.raises(ConfigError, match="ModelConfig.groups: 3 groups must divide expansion x 1024"):
        ModelConfig(num_classes=3, family="nextvlad", groups=3)
    ModelConfig(num_classes=3, family="netvlad", groups=3)  # groups mean nothing to netvlad
    config = family_config("nextvlad", classifier="moe", moe_experts=3)
    assert ModelConfig.from_dict(config.to_dict()) == config
    # A model file written before the families existed has no family/classifier fields: it is an hrnn.
    old = family_config("hrnn")
    old_fields = {k: v for k, v in old.to_dict().items()
                  if k not in ("family", "clusters", "expansion", "groups", "classifier", "moe_experts")}
    model = build_model(old)
    path = tmp_path / "old.pt"
    # What such a file holds (written before model files carried checksums, too: loaded with a warning).
    torch.save({"format": MODEL_FORMAT, "role": "teacher", "model_config": old_fields, "student_config": None,
                "state_dict": model.state_dict(), "metrics": {}}, path)
    loaded = load_model(path)
    assert loaded.config.family == "hrnn" and loaded.config.classifier == "linear"
    frames = random_frames(2, 12)
    torch.testing.assert_close(loaded(frames).logits, model.eval()(frames).logits)


def test_a_classifier_of_the_wrong_size_is_refused() -> None:
    encoder = build_model(family_config("netvlad")).encoder
    with pytest.raises(FewframesError, match="classifier expects encodings of size 7"):
        VideoClassifier(encoder, MoeClassifier(7, TINY_CLASSES))


@pytest.mark.parametrize("classifier", ["linear", "moe"])
@pytest.mark.parametrize("family", FAMILIES)
def test_analytic_flops_match_the_counter(family: str, classifier: str) -> None:
    config = family_config(family, classifier=classifier)
    teacher = build_model(config).eval()
    assert counted_flops(teacher, random_frames(2, 30)) == 2 * model_flops(config, 30)
    student = build_model(student_model_config(config, 6)).eval()
    assert counted_flops(student, random_frames(3, 6)) == 3 * model_flops(student.config, 6)
    assert model_flops(student.config, 6) < model_flops(config, 30)


# ---------------------------------------------------------------------------------------------------------
# Training, evaluation, export and predict of the VLAD families (the hrnn's: test_training, test_export, ...)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("families") / "store", videos=48)


def vlad_config(family: str) -> ModelConfig:
    return family_config(family, classifier="moe" if family == "nextvlad" else "linear")


@pytest.fixture(scope="module", params=VLAD_FAMILIES)
def trained_teacher(request: pytest.FixtureRequest, store: Path, tmp_path_factory: pytest.TempPathFactory):
    return train_teacher(store, vlad_config(request.param), tiny_train_config(epochs=2),
                         out_dir=tmp_path_factory.mktemp(f"teacher-{request.param}"), progress=False)


def assert_trained(result, family: str) -> None:
    """Every epoch recorded a finite loss and a GAP; the saved best model reloads as the same family."""
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) and 0.0 <= r["val_gap"] <= 1.0 for r in result.history)
    assert result.best_val_gap == max(r["val_gap"] for r in result.history)
    reloaded = load_model(result.model_path)
    assert reloaded.config.family == family
    frames = random_frames(2, 20)
    result.model.eval()
    torch.testing.assert_close(reloaded(frames).logits, result.model(frames).logits)


def test_teacher_trains_evaluates_and_learns(trained_teacher, store: Path) -> None:
    family = trained_teacher.model_config.family
    assert_trained(trained_teacher, family)
    losses = [r["train_loss"] for r in trained_teacher.history]
    assert losses[1] < losses[0], losses
    result = evaluate(load_model(trained_teacher.model_path), store, "validation", progress=False)
    assert result["gap"] == pytest.approx(trained_teacher.best_val_gap, abs=1e-6)


@pytest.mark.parametrize("matching", ["final", "intermediate"])
def test_serial_student(trained_teacher, store: Path, tmp_path: Path, matching: str) -> None:
    family = trained_teacher.model_config.family
    config = StudentConfig(k=6, loss="rep_pred_ce", matching=matching)
    result = train_student(store, trained_teacher.model_path, config, tiny_train_config(epochs=2), out_dir=tmp_path,
                           progress=False)
    assert_trained(result, family)
    assert all(r["train_rep"] > 0 and r["train_pred"] >= 0 for r in result.history)
    assert all((r.get("train_rep_intermediate", 0) > 0) == (matching == "intermediate") for r in result.history)
    assert load_model(result.model_path).student_config.k == 6


def test_baseline_and_parallel(trained_teacher, store: Path, tmp_path: Path) -> None:
    family = trained_teacher.model_config.family
    config = trained_teacher.model_config
    baseline = train_baseline(store, StudentConfig(k=6), config, tiny_train_config(epochs=2),
                              out_dir=tmp_path / "baseline", progress=False)
    assert_trained(baseline, family)
    parallel = train_parallel(store, config, StudentConfig(k=6, mode="parallel"), tiny_train_config(epochs=2),
                              out_dir=tmp_path / "parallel", progress=False)
    assert_trained(parallel.student, family)
    assert_trained(parallel.teacher, family)
    final = torch.load(sorted((tmp_path / "parallel" / "checkpoints").glob("ckpt-*.pt"))[-1], weights_only=True)
    shared = [name for name in final["models"]["teacher"] if name.startswith("classifier.")]
    assert shared and all(torch.equal(final["models"]["teacher"][n], final["models"]["student"][n]) for n in shared)


def test_export_matches_eager_and_predict_writes_top_k(trained_teacher, store: Path, tmp_path: Path) -> None:
    teacher = load_model(trained_teacher.model_path)
    exported = export_onnx(trained_teacher.model_path, tmp_path / "teacher.onnx", n_frames=50)
    assert exported.max_abs_diff <= exported.tolerance
    frames = random_frames(2, 50, seed=9)
    with torch.inference_mode():
        eager = teacher(frames).logits.numpy()
    assert abs(onnx_logits(tmp_path / "teacher.onnx", frames.numpy()) - eager).max() <= 1e-4
    student = build_model(student_model_config(teacher.config, 6), classifier=teacher.classifier).eval()
    student.student_config = StudentConfig(k=6)
    assert export_onnx(student, tmp_path / "student.onnx").n_frames == 6
    written = predict(student, store, tmp_path / "predictions.csv", top_k=3, progress=False)
    predictions = read_predictions(tmp_path / "predictions.csv")
    assert written == len(predictions) == 48
    assert all(len(pairs) == 3 for pairs in predictions.values())


def test_benchmark_rows_carry_the_family_and_both_flop_counts(trained_teacher, store: Path) -> None:
    from fewframes.benchmark import benchmark_models

    teacher = load_model(trained_teacher.model_path)
    student = build_model(student_model_config(teacher.config, 6), classifier=teacher.classifier).eval()
    rows = benchmark_models(
        {"teacher": trained_teacher.model_path, "student": student}, store, batch_size=4, n_videos=4, rounds=1,
        latency_videos=1, min_seconds=0.0, students={"student": StudentConfig(k=6)}, progress=False,
    )
    by_name = {row["name"]: row for row in rows}
    assert {row["family"] for row in rows} == {teacher.config.family}
    # The student's 6 frames are all real: analytic == counted. The teacher's batch pads the shorter videos,
    # which a pooling family executes (masked), so its counted figure is at least the analytic one.
    assert by_name["student"]["gflops_counted"] == pytest.approx(model_flops(student.config, 6) / 1e9, rel=1e-9)
    assert by_name["student"]["gflops_per_video"] == pytest.approx(by_name["student"]["gflops_counted"], rel=1e-9)
    assert by_name["teacher"]["gflops_counted"] >= by_name["teacher"]["gflops_per_video"] * (1 - 1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_runs_close_to_fp32(family: str) -> None:
    """CPU autocast is how the mixed-precision path is tested here; the CUDA run below needs a GPU."""
    model = build_model(family_config(family, classifier="moe")).eval()
    frames, mask = random_frames(2, 25), right_padded_mask([25, 9], 25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(frames, mask, return_intermediate=True)
    assert torch.isfinite(out.logits.float()).all()
    torch.testing.assert_close(out.logits.float(), model(frames, mask).logits, atol=0.1, rtol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_forward_matches_cpu(family: str) -> None:
    model = build_model(family_config(family, classifier="moe")).eval()
    frames, mask = random_frames(2, 25), right_padded_mask([25, 9], 25)
    expected = model(frames, mask).logits
    on_gpu = model.to("cuda")(frames.cuda(), mask.cuda()).logits.cpu()
    torch.testing.assert_close(on_gpu, expected, atol=1e-3, rtol=1e-3)
