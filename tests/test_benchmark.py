"""Benchmark library: FLOP formulas against the executed-matmul counter, and the model/e2e timing rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fewframes.benchmark import (
    PlainLSTMClassifier,
    add_ratios,
    benchmark_models,
    e2e_run,
    read_batch,
    count_parameters,
    counted_flops,
    describe_machine,
    hierarchical_flops,
    lstm_flops,
    _rnn_flop_formulas,
)
from fewframes.config import PRESETS, ModelConfig, StudentConfig
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


def test_analytic_flops_match_counter_on_the_masked_path() -> None:
    """With padding in the batch, all-padding blocks are dropped; a short last block still runs l steps."""
    torch.manual_seed(0)
    config = TINY.model_config()
    teacher = build_model(config).eval()
    mask = torch.zeros(2, 50, dtype=torch.bool)
    mask[0, :50] = True
    mask[1, :23] = True
    expected = hierarchical_flops(config, 50) + hierarchical_flops(config, 23)
    assert expected < hierarchical_flops(config, 50) * 2  # the 23-frame video's padding blocks never ran
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


# --- end to end: frame store -> class scores ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 60-frame videos and one 4-frame video of random quantised frames."""
    from fewframes.data.store import FrameStoreWriter

    path = tmp_path_factory.mktemp("bench") / "store"
    rng = np.random.default_rng(0)
    with FrameStoreWriter(path, num_classes=TINY.data.classes) as writer:
        for i, length in enumerate([60] * 6 + [4]):
            frames = rng.integers(0, 256, (length, 1152), dtype=np.uint8)
            writer.add(f"v{i}", [0], frames[:, :1024], frames[:, 1024:])
    return path


def _teacher_and_student(k: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = build_model(TINY.model_config()).eval()
    student = build_model(student_model_config(teacher.config, k), classifier=teacher.classifier).eval()
    student.student_config = StudentConfig(k=k)
    return teacher, student


def test_student_data_path_reads_only_k_frames(bench_store: Path) -> None:
    from fewframes.data.store import FrameStore

    store = FrameStore.open(bench_store)
    frames, mask = read_batch(store, range(6), StudentConfig(k=6), np.random.default_rng(0))
    assert store.bytes_read == 6 * 6 * 1152  # k frames of each 60-frame video, nothing else
    assert frames.shape == (6, 6, 1152) and mask is None  # all k real: the model's dense path, no packing
    uniform = [store.read_frames(i, np.arange(6) * 60 // 6) for i in range(6)]
    np.testing.assert_array_equal(frames, np.stack(uniform))

    teacher, student = _teacher_and_student(6)
    before = store.bytes_read
    _, student_bytes = e2e_run(student, store, list(range(7)), StudentConfig(k=6), torch.device("cpu"), 4)
    _, teacher_bytes = e2e_run(teacher, store, list(range(7)), None, torch.device("cpu"), 4)
    assert student_bytes == (6 * 6 + 4) * 1152  # the 4-frame video gives its 4 frames, padded, masked
    assert teacher_bytes == (6 * 60 + 4) * 1152
    assert store.bytes_read - before == student_bytes + teacher_bytes


def test_benchmark_models_rows_side_by_side(bench_store: Path) -> None:
    teacher, student = _teacher_and_student(6)
    rows = add_ratios(benchmark_models({"teacher": teacher, "student": student}, bench_store, batch_size=3,
                                       n_videos=6, rounds=1, latency_videos=2, min_seconds=0.0, progress=False))
    by_name = {row["name"]: row for row in rows}
    assert by_name["teacher"]["k"] is None and by_name["student"]["k"] == 6
    assert by_name["teacher"]["bytes_read_per_video"] == 60 * 1152
    assert by_name["student"]["bytes_read_per_video"] == 6 * 1152
    assert by_name["student"]["bytes_ratio"] == pytest.approx(0.1)
    for row in rows:  # same-length videos: the counter's per-video FLOPs equal the formula's
        assert row["gflops_counted"] == pytest.approx(row["gflops_per_video"])
        for key in ("latency_ms_p50", "latency_ms_p95", "throughput_videos_s", "e2e_latency_ms_p50",
                    "e2e_throughput_videos_s"):
            assert row[key] > 0, key
    assert by_name["student"]["flops_ratio"] < 0.2


def test_benchmark_cli_writes_json(tmp_path: Path, bench_store: Path) -> None:
    from fewframes.cli import main as cli_main
    from fewframes.training import save_model

    teacher, student = _teacher_and_student(6)
    save_model(teacher, tmp_path / "teacher.pt", teacher.config, role="teacher")
    save_model(student, tmp_path / "student.pt", student.config, StudentConfig(k=6), role="student")
    out = tmp_path / "bench.json"
    code = cli_main(["benchmark", "--models", str(tmp_path / "teacher.pt"), f"s6={tmp_path / 'student.pt'}",
                     "--store", str(bench_store), "--batch", "3", "--videos", "3", "--rounds", "1",
                     "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 0
    payload = json.loads(out.read_text())
    assert [row["name"] for row in payload["rows"]] == ["teacher", "s6"]
    assert payload["rows"][1]["k"] == 6 and payload["machine"]["cpu_cores"] >= 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fewframes").experiment_id])
    assert run.data.metrics["s6.bytes_read_per_video"] == 6 * 1152
    assert run.data.metrics["teacher.e2e_throughput_videos_s"] == pytest.approx(
        payload["rows"][0]["e2e_throughput_videos_s"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "benchmark")] == ["benchmark/bench.json"]
    assert cli_main(["benchmark", "--models", str(tmp_path / "nope.pt"), "--store", str(bench_store)]) == 2
    assert cli_main(["benchmark", "--models", str(tmp_path / "teacher.pt"), "--store", str(bench_store),
                     "--device", "tpu"]) == 2
