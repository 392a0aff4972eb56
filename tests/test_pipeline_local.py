"""``fewframes run``: the whole DAG through kfp.local (SubprocessRunner, this venv), its artifacts and its
MLflow runs; and the one-line errors for bad input, end to end and step by step."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import mlflow
import pytest

from fewframes.cli import main
from fewframes.components.steps import (
    ERROR_FILE_ENV,
    Sizes,
    distill_student_step,
    plan_baselines_step,
    plan_students_step,
)
from fewframes.config import PRESETS
from fewframes.errors import PipelineError
from fewframes.runs import MODEL_PARAMS, TAG_MODEL_KEY, TAG_PIPELINE_RUN, TAG_STEP, TrackingContext, local_tracking_uri


@pytest.mark.slow
def test_tiny_run_writes_every_steps_artifacts(tiny_run: Path, capsys):
    summary = json.loads((tiny_run / "run.json").read_text())
    preset = PRESETS["tiny"]
    # The distill grid: serial students (final matching), Uniform-k, and both controls at every k; one seed.
    students = len(preset.ks) * len(preset.losses)
    controls = len(preset.ks)  # warm-start controls (trained by distill-student)
    baselines = len(preset.ks)  # Uniform-k
    on_k = len(preset.ks)  # teacher-on-k controls (evaluations only)
    assert summary["pipeline"] == "distill" and summary["preset"] == "tiny"
    assert set(summary["models"]) == {"teacher"} | {
        f"student-serial-{loss}-final-k{k}" for loss in preset.losses for k in preset.ks
    } | {f"baseline-uniform-k{k}" for k in preset.ks} | {f"control-warm_start-k{k}" for k in preset.ks}
    for path in summary["models"].values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0

    (root,) = (tiny_run / "kfp").iterdir()
    store = root / "ingest-split" / "store"
    assert (store / "split.parquet").is_file() and (store / "store.json").is_file()
    (teacher_file,) = root.glob("*/train-teacher/teacher/model.json")  # inside the teachers' loop
    teacher = json.loads(teacher_file.read_text())
    assert teacher["role"] == "teacher" and teacher["mlflow_run_id"] and teacher["model_key"] == "teacher"
    evaluations = sorted(root.glob("**/evaluation/row.json"))
    assert len(evaluations) == 1 + students + controls + baselines + on_k
    rows = []
    for row_file in evaluations:
        folder = row_file.parent
        for name in ("metrics.json", "per_class_ap.parquet", "encodings.parquet"):
            assert (folder / name).is_file(), folder / name
        row = json.loads(row_file.read_text())
        assert 0.0 <= row["gap"] <= 1.0 and 0.0 <= row["map"] <= 1.0
        rows.append(row)
    # What the report's claims group by, on every row.
    for row in rows:
        assert {"role", "family", "k", "frame_selection", "seed", "control", "train_fraction", "model_key"} <= set(row)
        assert row["family"] == "hrnn" and row["seed"] == preset.train.seed
    by_key = {row["model_key"]: row for row in rows}
    for k in preset.ks:
        warm = by_key[f"control-warm_start-k{k}"]
        assert (warm["role"], warm["control"], warm["loss"], warm["k"]) == ("control", "warm_start", "ce", k)
        assert warm["teacher_run_id"] == teacher["mlflow_run_id"] and warm["teacher_key"] == "teacher"
        on = by_key[f"control-teacher_on_k-k{k}"]
        assert (on["role"], on["control"], on["frame_selection"], on["k"]) == ("control", "teacher_on_k", "uniform", k)
        assert on["teacher_key"] == "teacher" and on["teacher_run_id"] == teacher["mlflow_run_id"]
        assert on["mlflow_run_id"] == ""  # it trains nothing
        assert by_key[f"student-serial-rep_pred_ce-final-k{k}"]["teacher_key"] == "teacher"
    bench = json.loads((root / "benchmark" / "results" / "benchmark.json").read_text())
    assert len(bench["rows"]) == 1 + students + controls + baselines
    assert all(r["latency_ms_p50"] > 0 and r["gflops"] > 0 for r in bench["rows"])
    # KFP Metrics, as the Kubeflow UI shows them: every step with a metrics output wrote some.
    expected_metrics = {
        "ingest-split": {"videos", "classes"},
        "train-teacher": {"best_val_gap"},
        "distill-student": {"best_val_gap"},
        "train-baseline": {"best_val_gap"},
        "evaluate": {"gap", "map", "hit_at_1", "perr"},
        "evaluate-teacher-on-k": {"gap", "map", "hit_at_1", "perr"},
        "benchmark": {"teacher.gflops", "teacher.latency_ms_p50"},
        "report": set(),  # its figures are the report module's; any will do here
    }
    seen_steps: dict[str, int] = {}
    for executor_file in root.glob("**/executor_output.json"):
        step = executor_file.parent.name.rstrip("-0123456789")  # evaluate-2 (in a loop) -> evaluate
        artifacts = json.loads(executor_file.read_text()).get("artifacts", {})
        if step not in expected_metrics:
            assert "metrics" not in artifacts, step
            continue
        (logged,) = artifacts["metrics"]["artifacts"]
        assert logged["metadata"] and expected_metrics[step] <= set(logged["metadata"]), (executor_file, logged)
        seen_steps[step] = seen_steps.get(step, 0) + 1
    assert seen_steps == {"ingest-split": 1, "train-teacher": 1, "distill-student": students + controls,
                          "train-baseline": baselines, "evaluate": 1 + students + controls + baselines,
                          "evaluate-teacher-on-k": on_k, "benchmark": 1, "report": 1}

    report = (tiny_run / "report.md").read_text()
    assert report.startswith("# fewframes report") and "Recommended student" in report
    assert all(f"| {key} |" in report for key in summary["models"])  # the report's table of every model
    assert "<table>" in (tiny_run / "report.html").read_text()


@pytest.mark.slow
def test_tiny_run_mlflow_parent_and_children(tiny_run: Path, capsys):
    summary = json.loads((tiny_run / "run.json").read_text())
    uri = local_tracking_uri(tiny_run)
    assert summary["tracking_uri"] == uri
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fewframes")
    assert experiment.artifact_location.startswith((tiny_run / "mlartifacts").resolve().as_uri())
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_STEP] == "pipeline"
    assert parent.data.params["ks"] == str(list(PRESETS["tiny"].ks))
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert all(r.data.tags["fewframes.parent_run_id"] == parent.info.run_id for r in children)
    assert all(r.data.tags[TAG_PIPELINE_RUN] == summary["run_id"] for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    # Models' own runs are top-level (one row per model in the runs table); the other steps nest under the
    # pipeline run (tests/test_mlflow_layout.py checks the layout through the REST API).
    for run in children:
        top_level = run.data.tags[TAG_STEP] in ("train-teacher", "distill-student", "train-baseline") or (
            run.data.tags[TAG_STEP] == "evaluate" and run.data.params["control"] == "teacher_on_k")
        assert run.data.tags.get("mlflow.parentRunId") == (None if top_level else parent.info.run_id), run.info.run_name

    by_step: dict[str, list] = {}
    for run in children:
        by_step.setdefault(run.data.tags[TAG_STEP], []).append(run)
    preset = PRESETS["tiny"]
    n_students, n_baselines = len(preset.ks) * len(preset.losses), len(preset.ks)
    n_controls = 2 * len(preset.ks)  # warm-start (trained) and teacher-on-k (evaluated) at every k
    assert {step: len(found) for step, found in by_step.items()} == {
        "ingest-split": 1,
        "train-teacher": 1,
        "distill-student": n_students + len(preset.ks),
        "train-baseline": n_baselines,
        "evaluate": 1 + n_students + n_baselines + n_controls,
        "benchmark": 1,
        "report": 1,
    }
    (benchmark_run,) = by_step["benchmark"]
    # Cost figures live on each model's run, not flattened into <model>.<figure> keys on the benchmark run.
    assert not any("." in name for name in benchmark_run.data.metrics), sorted(benchmark_run.data.metrics)
    assert {a.path for a in client.list_artifacts(benchmark_run.info.run_id, "benchmark")} == {"benchmark/benchmark.json"}
    (teacher_run,) = by_step["train-teacher"]
    for run in by_step["distill-student"]:
        params = run.data.params
        assert params["mode"] == "serial" and params["loss"] in (*preset.losses, "ce")
        assert params["role"] == ("control" if params["loss"] == "ce" else "student")
        assert int(params["k"]) in preset.ks
        assert params["teacher_run_id"] == teacher_run.info.run_id
        assert "best_val_gap" in run.data.metrics
    for run in by_step["evaluate"]:
        metrics = run.data.metrics
        assert {"gap", "map", "hit_at_1", "perr"} <= set(metrics)
        if run.data.params["control"] != "teacher_on_k":  # benchmark figures: for each trained model
            assert {"gflops", "latency_ms_p50"} <= set(metrics)
        assert run.data.params["role"] in ("teacher", "student", "baseline", "control")
    # The same parameter names on every run about a model, so runs compare column by column.
    for step in ("train-teacher", "distill-student", "train-baseline", "evaluate"):
        for run in by_step[step]:
            assert set(MODEL_PARAMS) <= set(run.data.params), (step, sorted(run.data.params))
    for run in by_step["train-baseline"]:
        assert run.data.params["role"] == "baseline" and run.data.params["frame_selection"] == "uniform"
    # Each trained model is an MLflow 3 logged model of its training run (a pyfunc; tests/test_mlflow_layout.py).
    for step in ("train-teacher", "distill-student", "train-baseline"):
        for run in by_step[step]:
            (output,) = run.outputs.model_outputs
            logged = client.get_logged_model(output.model_id)
            # Named by the model's key (readable, unique in the run), e.g. student-serial-rep_pred_ce-final-k6.
            assert logged.name == run.data.tags[TAG_MODEL_KEY] and logged.source_run_id == run.info.run_id
    (report_run,) = by_step["report"]
    assert {a.path for a in client.list_artifacts(report_run.info.run_id)} >= {"report.md", "report.html", "gap_vs_k.png"}

    # compare reads the same runs: one row per evaluated model.
    csv_path = tiny_run / "compare.csv"
    assert main(["compare", "--tracking-uri", uri, "--csv", str(csv_path)]) == 0
    assert len(csv_path.read_text().strip().splitlines()) == 2 + n_students + n_baselines + n_controls
    capsys.readouterr()


@pytest.mark.slow
def test_tiny_run_prints_where_everything_is_and_its_mlflow_ui_command_works(tiny_run: Path):
    summary = json.loads((tiny_run / "run.json").read_text())
    printed = (tiny_run.parent / "printed.txt").read_text()
    assert f"report      {tiny_run / 'report.md'}" in printed and str(tiny_run / "report.html") in printed
    for key, path in summary["models"].items():
        assert re.search(rf"^    {re.escape(key)} +{re.escape(path)}$", printed, re.MULTILINE), key
    uri = local_tracking_uri(tiny_run)
    assert f"MLflow      {uri}" in printed and summary["parent_run_id"] in printed
    assert f"artifacts (models, reports, figures) in {tiny_run / 'mlartifacts'}" in printed
    # The frame store predict, benchmark and inspect need: printed, and a complete store.
    (store_line,) = [line for line in printed.splitlines() if line.startswith("  store       ")]
    assert store_line.split()[1] == summary["store"] and (Path(summary["store"]) / "store.json").is_file()
    (ui_line,) = [line for line in printed.splitlines() if line.startswith("  MLflow UI   ")]
    command = shlex.split(ui_line.removeprefix("  MLflow UI   "))
    assert command[:2] == ["mlflow", "ui"]

    # The printed command, as a user would run it, serves this run's MLflow runs.
    from fewframes.serving import free_loopback_port, start_loopback_server

    port = free_loopback_port()
    executable = Path(sys.executable).parent / "mlflow"
    with start_loopback_server(
        [str(executable), *command[1:], "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        port, "/health", tiny_run.parent / "mlflow_ui.log", cwd=tiny_run.parent, start_timeout_s=90,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    ) as ui:  # fmt: skip
        server = ui.url
        client = mlflow.MlflowClient(tracking_uri=server)
        parent = client.get_run(summary["parent_run_id"])
        assert parent.data.tags[TAG_STEP] == "pipeline"
        (report_run,) = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`{TAG_STEP}` = 'report'"
        )
        assert "report.md" in {a.path for a in client.list_artifacts(report_run.info.run_id)}


def test_mlflow_ui_hint_for_a_tracking_server_and_a_local_database(tmp_path):
    from fewframes.cli.pipeline import mlflow_ui_hint

    # A server is its own UI; `mlflow ui --backend-store-uri http://...` would not work.
    assert mlflow_ui_hint("http://127.0.0.1:5000") == "open http://127.0.0.1:5000 in a browser (the tracking server is the MLflow UI)"
    database = local_tracking_uri(tmp_path / "run folder")  # a space survives copy-paste into a shell
    assert shlex.split(mlflow_ui_hint(database)) == ["mlflow", "ui", "--backend-store-uri", database]


def test_run_fails_at_start_when_tracking_is_unreachable(tmp_path, capsys):
    from mlflow_server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    assert main(["run", "--preset", "tiny", "--out", str(tmp_path / "run"), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and uri in err
    assert not (tmp_path / "run" / "kfp").exists()  # nothing ran


def test_run_tracks_to_the_tracking_uri_server_and_marks_a_failed_run(mlflow_server, tmp_path, capsys):
    """--tracking-uri: the runs land on that (real, loopback) server, none in the run folder; a failing
    step leaves its child run and the parent run FAILED, and its error is the one last line of stderr. The
    missing source fails in ingest-split, so this runs two steps of the DAG, not all of it."""
    import uuid

    experiment = f"run-uri-{uuid.uuid4().hex[:8]}"
    run_dir = tmp_path / "run"
    code = main(["run", "--preset", "tiny", "--out", str(run_dir), "--tracking-uri", mlflow_server,
                 "--experiment", experiment, "--param", f"source={tmp_path / 'nowhere' / '*.tfrecord'}"])
    assert code == 2
    # Above it, only the progress display; the error itself is one line naming the step and the cause.
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("fewframes: error: ingest-split: ") and "nowhere" in error
    assert not (run_dir / "mlflow.db").exists() and not (run_dir / "mlartifacts").exists()

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    by_step = {run.data.tags[TAG_STEP]: run for run in runs}
    assert set(by_step) == {"pipeline", "ingest-split"}
    parent, ingest = by_step["pipeline"], by_step["ingest-split"]
    assert parent.info.status == "FAILED" and ingest.info.status == "FAILED"
    assert ingest.data.tags["mlflow.parentRunId"] == parent.info.run_id  # a step run: nested
    assert ingest.data.tags[TAG_PIPELINE_RUN] == parent.data.tags[TAG_PIPELINE_RUN]
    assert parent.data.params["preset"] == "tiny"


@pytest.mark.parametrize(
    "param, named",
    [("nope=1", "--param nope"), ("ks=6,301", "k=301"), ("modes=serial,both", "modes: 'both'")],
)
def test_run_bad_parameters_are_one_line(tmp_path, capsys, param, named):
    assert main(["run", "--preset", "tiny", "--out", str(tmp_path / "run"), "--param", param]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err


@pytest.fixture(scope="module")
def tiny_store(tiny_tfrecords: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fewframes.data.ingest import ingest
    from fewframes.data.split import write_split

    store = tmp_path_factory.mktemp("store") / "store"
    ingest(str(tiny_tfrecords), str(store), num_classes=PRESETS["tiny"].data.classes, progress=False)
    write_split(store, seed=0)
    return store


def test_plan_rejects_k_longer_than_the_longest_video(tiny_store: Path, tmp_path, monkeypatch):
    from fewframes.data.store import FrameStore

    longest = int(max(FrameStore.open(tiny_store).lengths))
    errors = tmp_path / "errors.log"
    monkeypatch.setenv(ERROR_FILE_ENV, str(errors))
    plan = plan_students_step(str(tiny_store), [6, longest], ["rep", "rep_ce"], ["serial", "parallel"], 0, 0, [])
    assert len(plan) == 2 * 2 * 2
    with pytest.raises(PipelineError, match=rf"k={longest + 1} is larger than the longest video \({longest} frames\)"):
        plan_baselines_step(str(tiny_store), [6, longest + 1], ["uniform"], 0, [])
    assert errors.read_text().startswith(f"plan-baselines: ks: k={longest + 1}")


def test_paper_grid_plan(tiny_store: Path):
    plan = plan_students_step(str(tiny_store), [6, 10, 15, 20, 30], ["rep", "rep_ce", "rep_pred_ce"],
                              ["serial", "parallel"], 30, 30, [0.1, 0.25, 0.5])
    assert len(plan) == 5 * 3 * 2 + 3 * 2 + 3
    assert sum(1 for s in plan if s["matching"] == "intermediate") == 6
    assert sorted(s["train_fraction"] for s in plan if s["train_fraction"] < 1) == [0.1, 0.25, 0.5]
    baselines = plan_baselines_step(str(tiny_store), [6, 30], ["uniform", "random", "first"], 30, [0.5])
    assert len(baselines) == 3 * 2 + 1


def test_repeat_seeds_add_serial_c_and_uniform_k_entries_each_with_its_seed(tiny_store: Path):
    from fewframes.components.steps import model_key

    plan = plan_students_step(str(tiny_store), [6, 10, 30], ["rep", "rep_pred_ce"], ["serial"], 0, 0, [],
                              [3, 1, 2, 1], [10, 30], 3)
    assert [(s["k"], s["seed"], s["repeat"]) for s in plan if s["repeat"]] == [(10, 1, True), (30, 1, True),
                                                                                 (10, 2, True), (30, 2, True)]
    assert all(s["seed"] == 3 for s in plan if not s["repeat"])  # the pipeline's seed; 3 is not repeated
    assert {(s["loss"], s["mode"], s["matching"]) for s in plan if s["repeat"]} == {("rep_pred_ce", "serial", "final")}
    keys = [model_key("student", **s) for s in plan]
    assert len(set(keys)) == len(keys) and "student-serial-rep_pred_ce-final-k30-seed2" in keys
    baselines = plan_baselines_step(str(tiny_store), [6, 30], ["uniform", "first"], 0, [], [1, 2], [30], 0)
    assert [(b["frame_selection"], b["k"], b["seed"]) for b in baselines if b["repeat"]] == [("uniform", 30, 1),
                                                                                            ("uniform", 30, 2)]
    with pytest.raises(PipelineError, match="repeat_seeds: a seed must be >= 0"):
        plan_baselines_step(str(tiny_store), [6], ["uniform"], 0, [], [-1], [6], 0)


def test_missing_teacher_artifact_is_named(tiny_store: Path, tmp_path):
    empty_teacher = tmp_path / "teacher"
    empty_teacher.mkdir()
    sizes = Sizes(hidden_size=8, num_layers=1, teacher_block_length=20, max_epochs=1, batch_size=8,
                  learning_rate=1e-3, seed=0)
    with pytest.raises(PipelineError, match=rf"teacher artifact {re.escape(str(empty_teacher))} is missing"):
        distill_student_step(
            str(tiny_store), str(empty_teacher), str(tmp_path / "student"), k=6, loss="rep_ce", mode="serial",
            matching="final", train_fraction=1.0, sizes=sizes, tracking=TrackingContext(),
        )


def test_run_names_are_unique_within_one_second():
    """Run ids, names and folders: the UTC second plus a random suffix, so runs started together differ."""
    from fewframes.cli.pipeline import unique_name

    names = [unique_name("local-distill") for _ in range(10)]  # well within one or two seconds
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"local-distill-\d{8}-\d{6}-[0-9a-f]{6}", name) for name in names), names


def test_grid_plan_teachers_per_seed_and_fraction_controls_and_seeds(tiny_store: Path):
    """The paper grid's plan (issue 10): a teacher per seed and per reduced fraction, every serial student and
    warm-start control with a teacher of its own seed and fraction, 3 seeds of what the claims use at every k."""
    from fewframes.components.steps import model_key, plan_teacher_on_k_step, plan_teachers_step

    ks, seeds, fractions = [6, 10, 30], [0, 1, 2], [0.1, 0.25, 0.5]
    teachers = plan_teachers_step(30, [*fractions, 1.0], [1, 2, 0], 0)
    assert [(t["seed"], t["train_fraction"], t["repeat"]) for t in teachers] == [
        (0, 1.0, False), (1, 1.0, True), (2, 1.0, True), (0, 0.1, False), (0, 0.25, False), (0, 0.5, False)]
    assert plan_teachers_step(0, fractions, [], 0) == [teachers[0]]  # no Table 3 without fraction_k

    controls = ["warm_start", "teacher_on_k"]
    students = plan_students_step(str(tiny_store), ks, ["rep", "rep_ce", "rep_pred_ce"], ["serial", "parallel"],
                                  30, 30, fractions, [1, 2], [], 0, controls)
    have_teacher = {(t["seed"], t["train_fraction"]) for t in teachers}
    serial = [s for s in students if s["mode"] == "serial"]
    assert all((s["seed"], s["train_fraction"]) in have_teacher for s in serial)
    # Table 3: Serial (c) on each reduced fraction, the pipeline's seed, from that fraction's teacher.
    assert sorted((s["train_fraction"], s["seed"]) for s in students if s["train_fraction"] < 1) == [
        (f, 0) for f in fractions]
    serial_c = {(s["k"], s["seed"]) for s in serial if s["role"] == "student" and s["loss"] == "rep_pred_ce"
                and s["matching"] == "final" and s["train_fraction"] == 1.0}
    warm = [s for s in students if s["role"] == "control"]
    assert serial_c == {(k, seed) for k in ks for seed in seeds}
    assert {(s["k"], s["seed"]) for s in warm} == {(k, seed) for k in ks for seed in seeds}
    assert all((s["control"], s["loss"], s["mode"], s["train_fraction"]) == ("warm_start", "ce", "serial", 1.0)
               for s in warm)
    # Other variants: the pipeline's seed only.
    assert all(s["seed"] == 0 for s in students if s["loss"] != "rep_pred_ce" and s["role"] == "student")
    keys = [model_key(s["role"], **s) for s in students]
    assert len(set(keys)) == len(keys) and "control-warm_start-k10-seed2" in keys

    baselines = plan_baselines_step(str(tiny_store), ks, ["uniform", "random"], 30, fractions, [1, 2], [], 0)
    assert {(b["k"], b["seed"]) for b in baselines if b["frame_selection"] == "uniform" and b["train_fraction"] == 1} == {
        (k, seed) for k in ks for seed in seeds}
    assert {b["seed"] for b in baselines if b["frame_selection"] == "random"} == {0}

    on_k = plan_teacher_on_k_step(str(tiny_store), ks, [1, 2], [], 0, controls)
    assert {(e["k"], e["seed"]) for e in on_k} == {(k, seed) for k in ks for seed in seeds}
    assert all((e["role"], e["control"], e["frame_selection"]) == ("control", "teacher_on_k", "uniform") for e in on_k)
    # repeat_ks narrows the extra seeds; no controls asked, none planned; a wrong name is one line.
    assert {(e["k"], e["seed"]) for e in plan_teacher_on_k_step(str(tiny_store), ks, [1], [30], 0, controls)} == {
        (6, 0), (10, 0), (30, 0), (30, 1)}
    assert plan_teacher_on_k_step(str(tiny_store), ks, [1], [], 0, ["warm_start"]) == []
    assert not [s for s in plan_students_step(str(tiny_store), ks, ["rep"], ["serial"], 0, 0, [], [1], [], 0, [])
                if s["role"] == "control"]
    with pytest.raises(PipelineError, match="controls: 'warm' is not one of warm_start, teacher_on_k"):
        plan_students_step(str(tiny_store), ks, ["rep"], ["serial"], 0, 0, [], [], [], 0, ["warm"])


def test_each_student_and_control_uses_the_teacher_of_its_own_seed_and_fraction(tiny_store: Path, tmp_path):
    """Real (tiny) teachers for seeds 0 and 1 and for half of the data, gathered into one artifact: a student,
    a warm-start control and the teacher-on-k control each take the teacher of their own seed and fraction."""
    from fewframes.components.steps import (
        evaluate_teacher_on_k_step,
        gather_teachers_step,
        read_model_info,
        read_row,
        resolve_teacher,
        train_teacher_step,
    )

    def sizes(seed: int) -> Sizes:
        return Sizes(hidden_size=8, num_layers=1, teacher_block_length=20, max_epochs=1, batch_size=16,
                     learning_rate=5e-3, seed=seed, device="cpu", preset="tiny")

    off = TrackingContext()
    teacher_dirs = []
    for seed, fraction in ((0, 1.0), (1, 1.0), (0, 0.5)):
        folder = tmp_path / f"teacher-{seed}-{fraction}"
        train_teacher_step(str(tiny_store), str(folder), sizes(seed), off, train_fraction=fraction, repeat=seed != 0)
        teacher_dirs.append(folder)
    infos = [read_model_info(d) for d in teacher_dirs]
    assert [i["model_key"] for i in infos] == ["teacher", "teacher-seed1", "teacher-frac0.5"]
    assert [(i["seed"], i["train_fraction"], i["family"]) for i in infos] == [(0, 1.0, "hrnn"), (1, 1.0, "hrnn"),
                                                                              (0, 0.5, "hrnn")]
    gathered = tmp_path / "gathered"
    gather_teachers_step([str(d) for d in teacher_dirs], str(gathered))
    index = (gathered / "teachers.json").read_text()
    # `fewframes run --resume` runs the task again in the same folder (cut short, or its code changed since)
    gather_teachers_step([str(d) for d in teacher_dirs], str(gathered))
    assert (gathered / "teachers.json").read_text() == index
    assert read_model_info(resolve_teacher(gathered, 1))["model_key"] == "teacher-seed1"
    assert read_model_info(resolve_teacher(gathered, 0, 0.5))["model_key"] == "teacher-frac0.5"
    with pytest.raises(PipelineError, match="has no teacher for seed 2 on train fraction 1"):
        resolve_teacher(gathered, 2)
    with pytest.raises(PipelineError, match="two teachers are named teacher"):
        gather_teachers_step([str(teacher_dirs[0])] * 2, str(tmp_path / "twice"))

    def distil(name: str, seed: int, loss: str, fraction: float = 1.0) -> dict:
        out = tmp_path / name
        distill_student_step(str(tiny_store), str(gathered), str(out), k=6, loss=loss, mode="serial", matching="final",
                             train_fraction=fraction, sizes=sizes(seed), tracking=off, repeat=seed != 0)
        return read_model_info(out)

    student = distil("student", 1, "rep_pred_ce")
    assert (student["role"], student["teacher_key"], student["seed"]) == ("student", "teacher-seed1", 1)
    assert student["model_key"] == "student-serial-rep_pred_ce-final-k6-seed1"
    half = distil("half", 0, "rep_pred_ce", 0.5)
    assert half["teacher_key"] == "teacher-frac0.5" and half["model_key"].endswith("-frac0.5")
    warm = distil("warm", 1, "ce")
    assert (warm["role"], warm["control"], warm["loss"], warm["teacher_key"]) == ("control", "warm_start", "ce",
                                                                                  "teacher-seed1")
    assert warm["model_key"] == "control-warm_start-k6-seed1"

    on_k = tmp_path / "on-k"
    evaluate_teacher_on_k_step(str(tiny_store), str(gathered), str(on_k), off, seed=1, k=6, repeat=True)
    row = read_row(on_k)
    assert (row["role"], row["control"], row["k"], row["frame_selection"], row["seed"]) == (
        "control", "teacher_on_k", 6, "uniform", 1)
    assert row["model_key"] == "control-teacher_on_k-k6-seed1" and row["teacher_key"] == "teacher-seed1"
    assert 0.0 <= row["gap"] <= 1.0
