"""Benchmark library: FLOP formulas against the executed-matmul counter, and the model/e2e timing rows."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
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
    compare_plain_lstm,
    count_parameters,
    counted_flops,
    describe_machine,
    e2e_run,
    hierarchical_flops,
    lstm_flops,
    precision_context,
    read_batch,
    resolve_device,
    time_call,
    _cudnn_rnn_flops,
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

    from fewframes.runs import TAG_MODEL_KEY, TAG_MODEL_RUN, TAG_STEP

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("fewframes").experiment_id
    # No pipeline made these files: each gets a model run of its own (fewframes/benchmark_runs.py).
    runs = {run.data.tags[TAG_MODEL_KEY]: run for run in client.search_runs([experiment_id], f"tags.`{TAG_MODEL_RUN}` = 'true'")}
    assert set(runs) == {"teacher", "student-serial-rep_pred_ce-final-k6"}
    student_run = runs["student-serial-rep_pred_ce-final-k6"]
    assert student_run.data.metrics["gflops"] == pytest.approx(payload["rows"][1]["gflops_per_video"])
    assert student_run.data.metrics["speedup_e2e"] == pytest.approx(1 / payload["rows"][1]["time_ratio_e2e"])
    (run,) = client.search_runs([experiment_id], f"tags.`{TAG_STEP}` = 'benchmark' and attributes.run_name = 'benchmark'")
    assert not run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "benchmark")] == ["benchmark/benchmark.json"]
    assert cli_main(["benchmark", "--models", str(tmp_path / "nope.pt"), "--store", str(bench_store)]) == 2
    assert cli_main(["benchmark", "--models", str(tmp_path / "teacher.pt"), "--store", str(bench_store),
                     "--device", "tpu"]) == 2


# --- the CUDA and bf16 code paths, as far as a CPU-only machine can take them --------------------------------


class _FakeCudaEvent:
    """Stands in for ``torch.cuda.Event`` (no GPU here): records calls in a shared log, fixed elapsed time."""

    def __init__(self, log: list[str], enable_timing: bool = False) -> None:
        assert enable_timing  # elapsed_time needs timing events
        self.log = log

    def record(self) -> None:
        self.log.append("record")

    def synchronize(self) -> None:
        self.log.append("event.synchronize")

    def elapsed_time(self, end: "_FakeCudaEvent") -> float:
        return 250.0  # milliseconds, as CUDA reports them


def test_time_call_on_cuda_times_with_synchronised_events_fake_cuda_mock(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("cuda.synchronize"))
    monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing=False: _FakeCudaEvent(log, enable_timing))
    seconds = time_call(lambda: log.append("work"), torch.device("cuda"))
    assert seconds == pytest.approx(0.25)  # event milliseconds -> seconds
    # Pending GPU work drains first; the end event is waited on before reading the time.
    assert log == ["cuda.synchronize", "record", "work", "record", "event.synchronize"]


def test_cudnn_lstm_flop_formula_on_the_kernels_argument_shapes() -> None:
    """The CUDA counter formula (``aten._cudnn_rnn``) cannot run here; checked on the shapes cuDNN receives:
    its flat weight list for every layer (biases skipped) and a padded [T, B, in] or packed [rows, in] input."""
    assert _rnn_flop_formulas()[torch.ops.aten._cudnn_rnn] is _cudnn_rnn_flops
    lstm = torch.nn.LSTM(24, 8, num_layers=2)
    weight_shapes = [tuple(w.shape) for w in lstm._flat_weights]  # the list nn.LSTM hands to cuDNN
    assert len(weight_shapes) == 8 and sum(len(shape) == 1 for shape in weight_shapes) == 4  # 4 biases
    assert _cudnn_rnn_flops((7, 3, 24), weight_shapes, out_shape=None) == lstm_flops(7 * 3, 24, 8, 2)
    assert _cudnn_rnn_flops((17, 24), weight_shapes, out_shape=None) == lstm_flops(17, 24, 8, 2)  # packed rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_is_refused_in_one_line_without_a_gpu(tmp_path: Path, bench_store: Path) -> None:
    from fewframes.cli import main as cli_main
    from fewframes.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match=r"^--device cuda: CUDA is not available"):
        resolve_device("cuda")
    teacher, _ = _teacher_and_student(6)
    with pytest.raises(BenchmarkError, match="--device cuda"):
        benchmark_models({"teacher": teacher}, bench_store, device="cuda", progress=False)
    with pytest.raises(BenchmarkError, match="--device cuda:0"):
        compare_plain_lstm(teacher, 20, 2, "cuda:0")

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inference.py"
    out, store = tmp_path / "results.json", tmp_path / "store"
    done = subprocess.run([sys.executable, str(script), "--device", "cuda", "--store", str(store), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "bench_inference: error: --device cuda: CUDA is not available on this machine"
    assert not out.exists() and not store.exists()  # refused before building the store or writing results
    assert cli_main(["benchmark", "--models", "x.pt", "--store", str(bench_store), "--device", "cuda"]) == 2


def test_bf16_precision_runs_under_autocast_on_cpu(bench_store: Path) -> None:
    from fewframes.errors import BenchmarkError

    teacher, student = _teacher_and_student(6)
    frames = _frames(2, 6)
    with torch.inference_mode(), precision_context(torch.device("cpu"), "bf16"):
        assert student(frames).logits.dtype == torch.bfloat16  # autocast really is on
    with torch.inference_mode(), precision_context(torch.device("cpu"), "fp32"):
        assert student(frames).logits.dtype == torch.float32

    rows = benchmark_models({"teacher": teacher, "student": student}, bench_store, batch_size=3, n_videos=6,
                            rounds=1, latency_videos=2, min_seconds=0.0, progress=False, precision="bf16")
    by_name = {row["name"]: row for row in rows}
    assert all(row["precision"] == "bf16" for row in rows)
    assert by_name["student"]["bytes_read_per_video"] == 6 * 1152  # the data path does not change
    assert all(row["e2e_throughput_videos_s"] > 0 and row["throughput_videos_s"] > 0 for row in rows)
    plain = compare_plain_lstm(teacher, 40, 2, "cpu", rounds=1, min_seconds=0.0, precision="bf16")
    assert plain["precision"] == "bf16" and plain["hierarchical_videos_s"] > 0 and plain["plain_lstm_videos_s"] > 0
    with pytest.raises(BenchmarkError, match="--precision must be one of fp32, bf16, got 'fp16'"):
        benchmark_models({"teacher": teacher}, bench_store, precision="fp16", progress=False)


# --- the reproducible script behind benchmarks/results/inference_<device>.json ------------------------------


def test_bench_inference_script_writes_results_with_command_machine_and_load(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference_under_test", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "inference.json"
    argv = ["--hidden", "8", "--classes", "5", "--videos", "3", "--batch", "2", "--ks", "10", "30",
            "--rounds", "1", "--threads", "1", "--store", str(tmp_path / "store"), "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--threads", "0", "--out", str(out)]) == 2 and not out.exists()
        assert bench.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # the script sets it for its process; this one goes on
    payload = json.loads(out.read_text())
    assert payload["command"] == "python benchmarks/bench_inference.py " + " ".join(argv)
    assert payload["machine"]["cpu_cores"] >= 1 and payload["machine"]["torch"] == torch.__version__
    assert payload["machine"]["torch_threads"] == payload["sizes"]["torch_threads"] == 1
    assert payload["load_average"]["samples"] >= 1 and payload["load_average"]["load_1min_max"] >= 0
    assert [row["name"] for row in payload["rows"]] == ["teacher", "student_k10", "student_k30"]
    k30 = next(row for row in payload["rows"] if row["k"] == 30)
    assert k30["bytes_read_per_video"] == 30 * 1152 and payload["summary"]["k30_bytes_ratio"] == pytest.approx(0.1)
    assert payload["summary"]["k30_e2e_time_ratio"] == pytest.approx(k30["time_ratio_e2e"])
    assert payload["summary"]["k30_e2e_time_ratio_met"] == (k30["time_ratio_e2e"] <= 0.15)
    plain = payload["plain_lstm"]
    assert payload["summary"]["teacher_vs_plain_lstm_met"] == (plain["hierarchical_videos_s"] >= plain["plain_lstm_videos_s"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_benchmark_cli_names_plain_model_paths_from_their_metadata(tmp_path: Path, bench_store: Path) -> None:
    """The paths `fewframes run` prints (every student file is called student.pt) work as they are: each row
    is named from its model file (the pipeline's model key); the same model twice gets its file name added."""
    from fewframes.cli import main as cli_main
    from fewframes.training import save_model

    teacher, student6 = _teacher_and_student(6)
    _, student3 = _teacher_and_student(3)
    paths = {"teacher": tmp_path / "t" / "teacher.pt", "k6": tmp_path / "a" / "student.pt",
             "k3": tmp_path / "b" / "student.pt", "k6again": tmp_path / "c" / "student6.pt"}
    for path in paths.values():
        path.parent.mkdir()
    save_model(teacher, paths["teacher"], teacher.config, role="teacher")
    save_model(student6, paths["k6"], student6.config, StudentConfig(k=6), role="student")
    save_model(student3, paths["k3"], student3.config, StudentConfig(k=3, loss="rep"), role="student")
    save_model(student6, paths["k6again"], student6.config, StudentConfig(k=6), role="student")
    out = tmp_path / "bench.json"
    code = cli_main(["benchmark", "--models", *map(str, paths.values()), "--store", str(bench_store),
                     "--batch", "3", "--videos", "3", "--rounds", "1", "--out", str(out)])
    assert code == 0
    assert [row["name"] for row in json.loads(out.read_text())["rows"]] == [
        "teacher", "student-serial-rep_pred_ce-final-k6", "student-serial-rep-final-k3",
        "student-serial-rep_pred_ce-final-k6@student6",
    ]


@pytest.mark.slow
def test_benchmark_cli_logs_each_models_figures_on_its_own_run(tiny_run: Path, tmp_path: Path) -> None:
    """`fewframes benchmark --tracking-uri` against a real mlflow server (tests/mlflow_server.py) serving a copy
    of the tiny pipeline run's database: the models `fewframes run` printed get the figures on their own model
    runs (found through model.json), their logged models and their evaluate runs, under the pipeline's metric
    names; a copy of a model file without model.json gets a model run of its own, reused the next time; the
    command's 'benchmark' run holds the machine and the JSON, no per-model metrics."""
    import shutil

    import mlflow
    from mlflow_server import running_mlflow_server

    from fewframes.benchmark import model_figures
    from fewframes.benchmark_runs import TAG_MODEL_CHECKSUM
    from fewframes.cli import main as cli_main
    from fewframes.cli.benchmark import model_name_of
    from fewframes.run_results import logged_model_of, model_run_name
    from fewframes.runs import TAG_MODEL_KEY, TAG_MODEL_RUN, TAG_PIPELINE_RUN, TAG_ROLE, TAG_STEP, compare_rows

    summary = json.loads((tiny_run / "run.json").read_text())
    student_key = next(key for key in sorted(summary["models"]) if key.startswith("student-"))
    teacher_file, student_file = summary["models"]["teacher"], summary["models"][student_key]
    model_runs = {key: json.loads((Path(summary["models"][key]).parent / "model.json").read_text())["mlflow_run_id"]
                  for key in ("teacher", student_key)}
    copy = tmp_path / "elsewhere" / "student.pt"  # no model.json beside it: no pipeline run to find
    copy.parent.mkdir()
    shutil.copy(student_file, copy)
    shutil.copy(tiny_run / "mlflow.db", tmp_path / "mlflow.db")  # the shared run's own database stays as it is

    with running_mlflow_server(tmp_path / "server", f"sqlite:///{tmp_path / 'mlflow.db'}") as uri:
        client = mlflow.MlflowClient(uri)
        history_before = len(client.get_metric_history(model_runs[student_key], "latency_ms_p50"))
        out = tmp_path / "bench.json"
        command = ["benchmark", "--store", summary["store"], "--batch", "3", "--videos", "3", "--rounds", "1",
                   "--tracking-uri", uri, "--experiment", "standalone-benchmark"]
        assert cli_main([*command, "--models", teacher_file, student_file, f"copy={copy}", "--out", str(out)]) == 0
        rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
        assert set(rows) == {"teacher", student_key, "copy"}

        for key in ("teacher", student_key):
            figures = model_figures(rows[key])
            assert {"gflops", "latency_ms_p50", "throughput_videos_s", "flops_ratio", "speedup_e2e"} <= set(figures)
            run = client.get_run(model_runs[key])
            for name, value in figures.items():  # the latest value of each: this benchmark's
                assert run.data.metrics[name] == pytest.approx(value), (key, name)
            logged = client.get_logged_model(logged_model_of(uri, model_runs[key], key))
            assert {m.key: m.value for m in logged.metrics}["latency_ms_p50"] == pytest.approx(figures["latency_ms_p50"])
            (evaluate,) = client.search_runs(
                [run.info.experiment_id], f"tags.`{TAG_STEP}` = 'evaluate' and tags.`{TAG_MODEL_KEY}` = '{key}' "
                f"and tags.`{TAG_PIPELINE_RUN}` = '{summary['run_id']}'")
            assert evaluate.data.metrics["latency_ms_p50"] == pytest.approx(figures["latency_ms_p50"])
        # The pipeline's own figures stay in the metric's history; `fewframes compare` shows the new ones.
        assert len(client.get_metric_history(model_runs[student_key], "latency_ms_p50")) == history_before + 1
        compared = {row["model_key"]: row for row in compare_rows(uri, summary["experiment"], "latency_ms_p50")}
        assert compared[student_key]["latency_ms_p50"] == pytest.approx(rows[student_key]["latency_ms_p50"])

        experiment = client.get_experiment_by_name("standalone-benchmark")
        (created,) = client.search_runs([experiment.experiment_id], f"tags.`{TAG_MODEL_RUN}` = 'true'")
        tags, params = created.data.tags, created.data.params
        assert tags[TAG_MODEL_KEY] == model_name_of(str(copy)) == student_key and tags[TAG_ROLE] == "student"
        assert tags[TAG_STEP] == "benchmark" and tags[TAG_MODEL_CHECKSUM]
        student_params = client.get_run(model_runs[student_key]).data.params
        for name in ("role", "family", "k", "loss", "mode", "matching", "frame_selection"):
            assert params[name] == student_params[name], name
        assert params["seed"] == "" and created.info.run_name == model_run_name(params).replace(" seed ?", "")
        for name, value in model_figures(rows["copy"]).items():
            assert created.data.metrics[name] == pytest.approx(value), name

        (bench_run,) = client.search_runs([experiment.experiment_id], f"tags.`{TAG_STEP}` = 'benchmark' and "
                                          f"attributes.run_name = 'benchmark'")
        assert not bench_run.data.metrics  # the figures are on the model runs, not `<model>.<figure>` here
        assert int(bench_run.data.tags["machine.cpu_cores"]) >= 1 and bench_run.data.params["videos"] == "3"
        logged_json = json.loads(Path(client.download_artifacts(bench_run.info.run_id, "benchmark/benchmark.json",
                                                                str(tmp_path))).read_text())
        assert {row["name"]: row["mlflow_run_id"] for row in logged_json["rows"]} == {
            "teacher": model_runs["teacher"], student_key: model_runs[student_key], "copy": created.info.run_id}

        # The same file again: the run created for it is found by its content, not made twice.
        assert cli_main([*command, "--models", f"again={copy}"]) == 0
        (again,) = client.search_runs([experiment.experiment_id], f"tags.`{TAG_MODEL_RUN}` = 'true'")
        assert again.info.run_id == created.info.run_id
        assert len(client.get_metric_history(created.info.run_id, "latency_ms_p50")) == 2
