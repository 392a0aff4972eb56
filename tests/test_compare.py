"""``fewframes compare`` and the report step, against a real MLflow server (the ``mlflow_server`` fixture)."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import mlflow
import pytest

from fewframes.cli import main
from fewframes.components.steps import (
    BENCHMARK_FILE,
    ROW_FILE,
    model_key,
    model_params,
    report_step,
)
from fewframes.report import recommend_student
from fewframes.runs import (
    MODEL_PARAMS,
    TAG_MODEL_KEY,
    TAG_PARENT_RUN,
    TAG_ROLE,
    TAG_STEP,
    TrackingContext,
    log_metrics_to_run,
    start_parent_run,
    step_run,
)

# (role, k, frame_selection, loss, mode, gap, map, gflops): a made-up but plausible pipeline run.
MODELS = [
    ("teacher", None, "all", "", "", 0.80, 0.40, 5.0),
    ("student", 10, "uniform", "rep_pred_ce", "serial", 0.77, 0.35, 0.15),
    ("student", 30, "uniform", "rep_pred_ce", "serial", 0.795, 0.38, 0.50),
    ("student", 30, "uniform", "rep", "parallel", 0.79, 0.37, 0.50),
    ("baseline", 30, "uniform", "", "", 0.75, 0.33, 0.50),
    ("control", 10, "uniform", "ce", "serial", 0.76, 0.34, 0.15),  # the warm-start control
]
FAMILY = "netvlad"


def _key(role, k, selection, loss, mode):
    if role == "teacher":
        return "teacher"
    if role == "student":
        return model_key("student", k, loss=loss, mode=mode, matching="final")
    if role == "control":
        return model_key("control", k, control="warm_start")
    return model_key("baseline", k, frame_selection=selection)


@pytest.fixture(scope="module")
def experiment(mlflow_server):
    """One pipeline run's MLflow runs, logged as the steps log them: parent, evaluate children, benchmark."""
    name = f"compare-{uuid.uuid4().hex[:8]}"
    context = TrackingContext(uri=mlflow_server, experiment=name, pipeline_run_id="local-test", pipeline="distill")
    parent = start_parent_run(context, "pipeline", params={"preset": "tiny"})
    context = TrackingContext(mlflow_server, name, parent, "local-test", "distill")
    for role, k, selection, loss, mode, gap, map_, gflops in MODELS:
        key = _key(role, k, selection, loss, mode)
        params = model_params(role, k, selection, loss, mode, "final" if role == "student" else "", seed=len(key) % 3,
                              family=FAMILY, control="warm_start" if role == "control" else "")
        with step_run(context, "evaluate", f"evaluate {key}", params=params,
                      tags={TAG_ROLE: role, TAG_MODEL_KEY: key}) as tracker:
            tracker.log_metrics({"gap": gap, "map": map_, "hit_at_1": gap + 0.05, "perr": gap - 0.1})
            run_id = tracker.run_id
        # As the benchmark step does, after the evaluate run has ended.
        log_metrics_to_run(mlflow_server, run_id, {"gflops": gflops, "latency_ms_p50": gflops * 10})
    # A model's own run, as the training steps start it: top-level, tied to the pipeline run by tags.
    with step_run(context, "train-teacher", "teacher seed 0", params=model_params("teacher", frame_selection="all"),
                  nested=False):
        pass
    return mlflow_server, name, parent


def test_step_runs_are_tied_to_the_pipeline_run_with_shared_names(experiment):
    uri, name, parent = experiment
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    steps = [r for r in runs if r.info.run_id != parent]
    assert len(steps) == len(MODELS) + 1
    for run in steps:
        assert run.data.tags[TAG_PARENT_RUN] == parent
        assert run.data.tags["fewframes.pipeline_run_id"] == "local-test"
        assert set(MODEL_PARAMS) <= set(run.data.params)
        # Evaluate runs nest under the pipeline run; a model's own run is top-level.
        nested = run.data.tags[TAG_STEP] == "evaluate"
        assert run.data.tags.get("mlflow.parentRunId") == (parent if nested else None), run.info.run_name
    assert client.get_run(parent).data.tags[TAG_STEP] == "pipeline"


def test_compare_table_sorted_by_gap_with_csv(experiment, tmp_path, capsys):
    uri, name, _ = experiment
    out = tmp_path / "compare.csv"
    code = main(["compare", "--experiment", name, "--tracking-uri", uri, "--csv", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{len(MODELS)} evaluated models" in printed
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(MODELS)
    gaps = [float(r["gap"]) for r in rows]
    assert gaps == sorted(gaps, reverse=True)
    assert sorted(r["model_key"] for r in rows) == sorted(_key(*m[:5]) for m in MODELS)

    # The terminal table: the columns, whole (never squeezed to "0.…" when piped), same order.
    assert "…" not in printed
    lines = [line for line in printed.splitlines() if line.startswith(("┃", "│"))]
    header = [cell.strip() for cell in lines[0].strip("┃").split("┃")]
    assert {"k", "selection", "loss", "mode", "seed", "GAP", "mAP", "GFLOPs", "latency p50 ms"} <= set(header)
    cells = [[cell.strip() for cell in line.strip("│").split("│")] for line in lines[1:]]
    assert [float(row[header.index("GAP")]) for row in cells] == pytest.approx(gaps, abs=1e-4)
    assert [row[header.index("selection")] for row in cells] == [r["frame_selection"] for r in rows]
    # Seeds tell repeated configurations apart (the report groups them as mean ± spread).
    assert [int(r["seed"]) for r in rows] == [len(r["model_key"]) % 3 for r in rows]
    assert [row[header.index("seed")] for row in cells] == [r["seed"] for r in rows]
    # Family and control columns: which kind of model, and which rows are controls (yardsticks, not candidates).
    assert [row[header.index("family")] for row in cells] == [r["family"] for r in rows] == [FAMILY] * len(MODELS)
    assert [(row[header.index("role")], row[header.index("control")]) for row in cells
            if row[header.index("role")] == "control"] == [("control", "warm_start")]
    assert all(row[header.index("control")] == "" for row in cells if row[header.index("role")] != "control")
    teacher_row = cells[[r["role"] for r in rows].index("teacher")]
    assert float(teacher_row[header.index("GFLOPs")]) == pytest.approx(5.0)
    assert float(teacher_row[header.index("latency p50 ms")]) == pytest.approx(50.0)
    assert gaps[0] == pytest.approx(max(m[5] for m in MODELS))
    teacher = next(r for r in rows if r["role"] == "teacher")
    assert float(teacher["gflops"]) == pytest.approx(5.0)
    assert float(teacher["latency_ms_p50"]) == pytest.approx(50.0)
    student = next(r for r in rows if r["mode"] == "parallel")
    assert (student["k"], student["loss"], student["frame_selection"]) == ("30", "rep", "uniform")


def test_compare_sorts_cost_metrics_ascending(experiment, tmp_path, capsys):
    uri, name, _ = experiment
    out = tmp_path / "by_flops.csv"
    assert main(["compare", "--experiment", name, "--tracking-uri", uri, "--metric", "gflops", "--csv", str(out)]) == 0
    capsys.readouterr()
    with out.open() as handle:
        flops = [float(r["gflops"]) for r in csv.DictReader(handle)]
    assert flops == sorted(flops)


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--experiment", "no-such-experiment"], "--experiment 'no-such-experiment'"),
        (["--metric", "speed"], "--metric"),
    ],
)
def test_compare_bad_input_is_one_line(experiment, capsys, argv, named):
    uri, name, _ = experiment
    base = ["compare", "--tracking-uri", uri, "--experiment", name]
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err


def test_compare_unreachable_tracking_server(capsys):
    from mlflow_server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    assert main(["compare", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and uri in err and "unreachable" in err


def _write_rows(folder: Path) -> list[str]:
    """Evaluation artifacts (row.json) and a benchmark.json, as the evaluate/benchmark steps leave them."""
    evaluation_dirs = []
    bench_rows = []
    for role, k, selection, loss, mode, gap, map_, gflops in MODELS:
        key = _key(role, k, selection, loss, mode)
        row = {**model_params(role, k, selection, loss, mode, "final" if role == "student" else ""),
               "model_key": key, "gap": gap, "map": map_, "hit_at_1": gap, "perr": gap}
        target = folder / key
        target.mkdir(parents=True)
        (target / ROW_FILE).write_text(json.dumps(row))
        evaluation_dirs.append(str(target))
        bench_rows.append({"model_key": key, "role": role, "gflops": gflops, "latency_ms_p50": gflops * 10,
                           "num_parameters": 1000.0})
    (folder / "bench").mkdir()
    (folder / "bench" / BENCHMARK_FILE).write_text(json.dumps({"machine": {}, "rows": bench_rows}))
    return evaluation_dirs


def test_report_step_writes_table_plot_and_recommendation(mlflow_server, tmp_path):
    evaluation_dirs = _write_rows(tmp_path)
    name = f"report-{uuid.uuid4().hex[:8]}"
    context = TrackingContext(uri=mlflow_server, experiment=name, pipeline_run_id="local-report")
    parent = start_parent_run(context, "pipeline")
    context = TrackingContext(mlflow_server, name, parent, "local-report")
    markdown, html = tmp_path / "report" / "markdown", tmp_path / "report" / "html"
    result = report_step(evaluation_dirs, str(tmp_path / "bench"), str(markdown), str(html), context, tolerance=0.01)

    # Teacher 0.80; within 1%: GAP >= 0.792 -> the serial k=30 student (0.795); k=10 (0.77) is not.
    expected = model_key("student", 30, loss="rep_pred_ce", mode="serial", matching="final")
    assert result.metadata["recommended"] == expected
    assert result.metrics["recommended_k"] == 30
    text = markdown.read_text()
    assert f"`{expected}`" in text
    for role, k, selection, loss, mode, gap, *_ in MODELS:
        assert _key(role, k, selection, loss, mode) in text
    # The claims: measured ones in the table (no per-video predictions here: no interval, inconclusive), the
    # others listed apart.
    assert "| `students_beat_uniform` | every teacher–student variant beats Uniform-k at the same k | **inconclusive** |" in text
    assert "- `uniform_best_baseline` — Uniform-k is the best baseline (at every k): " in text
    assert "(needs other frame selections beside Uniform-k: baselines=uniform,random," in text
    assert "base64" not in text and "](gap_vs_k.png)" in text  # the report.md, PNG figures beside it
    assert text == (tmp_path / "report" / "report.md").read_text()
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page
    assert (tmp_path / "report" / "gap_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    (report_run,) = client.search_runs(
        [client.get_experiment_by_name(name).experiment_id], filter_string=f"tags.`{TAG_STEP}` = 'report'"
    )
    assert report_run.data.tags["mlflow.parentRunId"] == parent
    assert {a.path for a in client.list_artifacts(report_run.info.run_id)} >= {
        "report.md", "report.html", "summary.json", "gap_vs_k.png", "pareto.png"
    }
    assert report_run.data.metrics["recommended_gap"] == pytest.approx(0.795)


def test_recommendation_tolerance():
    rows = [
        {"role": "teacher", "gap": 0.80, "k": None},
        {"role": "student", "gap": 0.70, "k": 6, "matching": "final", "train_fraction": 1.0},
        {"role": "student", "gap": 0.78, "k": 10, "matching": "final", "train_fraction": 1.0},
        {"role": "student", "gap": 0.79, "k": 10, "matching": "final", "train_fraction": 1.0},
        {"role": "student", "gap": 0.799, "k": 6, "matching": "final", "train_fraction": 0.5},  # less data: not
        {"role": "baseline", "gap": 0.80, "k": 6},
    ]
    assert recommend_student(rows, 0.01) is None  # 0.79 < 0.792
    assert recommend_student(rows, 0.05)["gap"] == 0.79  # k=10 qualifies; ties on k go to the higher GAP
    assert recommend_student(rows, 0.2)["k"] == 6
    assert recommend_student([r for r in rows if r["role"] != "teacher"], 0.5) is None
