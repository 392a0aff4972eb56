"""The ``paper`` pipeline with ``family`` set to each model family (issue 10: "the paper pipeline runs with
``family`` set to each"), end to end through kfp.local (``fewframes run``), one run per family on the smallest
grid that still has every kind of model of the family: a teacher, students serial and parallel with final and
intermediate matching (L_rep^I of the family), Uniform-k, both controls, the benchmark and the report; then
export and predict on the run's student. NetVLAD (the committed run's family) also runs the paper grid's own
parts once: a second seed (each student distils from its seed's teacher) and a teacher and student on half
the data (Table 3, whose keys ``teacher-frac0.5`` MLflow refused as model names until 2026-11-29). The full
runs of each family and what they took are in docs/method.md, "Model families"."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from fewframes.cli import main
from fewframes.report import CLAIM_ORDER, NOT_MEASURED
from fewframes.stats import VERDICTS

K = 6
FRACTION = 0.5
EXTRA_SEED = 1
LEAN_GRID = {
    "ks": [K],
    "losses": ["rep_pred_ce"],
    "modes": ["serial", "parallel"],
    "baselines": ["uniform"],
    "intermediate_k": K,
    "fraction_k": 0,
    "train_fractions": [],
    "repeat_seeds": [],
    "controls": ["warm_start", "teacher_on_k"],
}
# The paper grid's seeds and data fractions, once (they do not depend on the family).
FULL_GRID = {**LEAN_GRID, "fraction_k": K, "train_fractions": [FRACTION], "repeat_seeds": [EXTRA_SEED]}
GRIDS = {"netvlad": FULL_GRID, "hrnn": LEAN_GRID, "nextvlad": LEAN_GRID}


def _param(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@pytest.fixture(scope="module", params=list(GRIDS))
def family_paper_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    family = request.param
    grid = {"family": family, **GRIDS[family]}
    run_dir = tmp_path_factory.mktemp(f"paper_{family}") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["run", "--pipeline", "paper", "--preset", "tiny", "--out", str(run_dir),
                     *[arg for name, value in grid.items() for arg in ("--param", f"{name}={_param(value)}")]])
    assert code == 0, printed.getvalue()
    return family, grid, run_dir, printed.getvalue()


def _expected_models(grid: dict) -> set[str]:
    c = f"rep_pred_ce-final-k{K}"
    models = {
        "teacher", f"student-serial-{c}", f"student-parallel-{c}",
        f"student-serial-rep_pred_ce-intermediate-k{K}", f"student-parallel-rep_pred_ce-intermediate-k{K}",
        f"control-warm_start-k{K}", f"baseline-uniform-k{K}",
    }
    for seed in grid["repeat_seeds"]:
        models |= {f"teacher-seed{seed}", f"student-serial-{c}-seed{seed}", f"control-warm_start-k{K}-seed{seed}",
                   f"baseline-uniform-k{K}-seed{seed}"}
    for fraction in grid["train_fractions"]:
        models |= {f"teacher-frac{fraction}", f"student-serial-{c}-frac{fraction}",
                   f"baseline-uniform-k{K}-frac{fraction}"}
    return models


@pytest.mark.slow
# One run a family (2026-11-29): netvlad's full grid 2.6 min at load 2-5 (13 min at load 7-15); hrnn's lean
# grid 8.4 min and nextvlad's 10.1 min at load 7-9 (NeXtVLAD's K=64, 1024->2048 expansion is the dearest).
@pytest.mark.timeout(1800)
def test_paper_pipeline_runs_with_each_family(family_paper_run):
    family, grid, run_dir, printed = family_paper_run
    expected = _expected_models(grid)
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["pipeline"] == "paper" and summary["preset"] == "tiny"
    assert summary["arguments"]["family"] == family
    assert set(summary["models"]) == expected
    assert "finished in" in printed and str(run_dir) in printed

    # Every model file, evaluation row and MLflow parameter says the family; the teacher-on-k rows included.
    (root,) = (run_dir / "kfp").iterdir()
    infos = [json.loads(p.read_text()) for p in root.glob("**/model.json")]
    assert infos and {i["family"] for i in infos} == {family}
    rows = {r["model_key"]: r for r in (json.loads(p.read_text()) for p in root.glob("**/evaluation/row.json"))}
    seeds = [0, *grid["repeat_seeds"]]
    on_k = {f"control-teacher_on_k-k{K}" + ("" if seed == 0 else f"-seed{seed}") for seed in seeds}
    assert set(rows) == expected | on_k
    assert {r["family"] for r in rows.values()} == {family}
    assert all(0.0 <= r["gap"] <= 1.0 for r in rows.values())
    # Each student and control reads the teacher of its own seed and fraction.
    teachers = {(r["seed"], r["train_fraction"]): r["model_key"] for r in rows.values() if r["role"] == "teacher"}
    assert set(teachers) == {(seed, 1.0) for seed in seeds} | {(0, f) for f in grid["train_fractions"]}
    for key, row in rows.items():
        if row["role"] == "control" or row["role"] == "student" and row["mode"] == "serial":
            assert row["teacher_key"] == teachers[(row["seed"], row["train_fraction"])], key

    # Each model is its own MLflow run with the family as a parameter and a logged model.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=summary["tracking_uri"])
    experiment = client.get_experiment_by_name(summary["experiment"])
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    assert {r.data.params.get("family") for r in runs if "fewframes.model_key" in r.data.tags} == {family}
    with_model = {r.data.tags.get("fewframes.model_key") for r in runs if r.outputs and r.outputs.model_outputs}
    assert with_model == expected

    # The benchmark measured every trained model of the family (FLOPs analytic and counted).
    bench = json.loads((root / "benchmark" / "results" / "benchmark.json").read_text())
    assert {r["model_key"] for r in bench["rows"]} == expected
    assert {r["raw"]["family"] for r in bench["rows"]} == {family}
    assert all(r["gflops"] > 0 and r["raw"]["gflops_counted"] > 0 and r["latency_ms_p50"] > 0 for r in bench["rows"])

    # The report judges the family's claims: every claim gets a verdict, those this grid has models for are
    # measured (intervals), and every configuration is of the family.
    report = json.loads((run_dir / "summary.json").read_text())
    claims = {c["key"]: c for c in report["claims"]}
    assert list(claims) == list(CLAIM_ORDER)
    assert all(c["family"] == family and c["verdict"] in (*VERDICTS, NOT_MEASURED) for c in claims.values())
    measured = ["teacher_skyline", "distillation_beats_warm_start", "students_beat_uniform", "serial_vs_parallel",
                "intermediate_no_gain"] + (["margin_grows"] if grid["train_fractions"] else [])
    for key in measured:
        assert claims[key]["verdict"] in VERDICTS, claims[key]
    assert claims["k30_within_tolerance"]["verdict"] == NOT_MEASURED  # no k=30 in this grid
    assert {c["family"] for c in report["configurations"]} == {family}
    assert {c["role"] for c in report["configurations"]} == {"teacher", "student", "baseline", "control"}
    markdown = (run_dir / "report.md").read_text()
    assert "teacher_skyline" in markdown and "intermediate_no_gain" in markdown


@pytest.mark.slow
def test_the_runs_student_exports_and_predicts(family_paper_run, tmp_path: Path):
    """What a user does next with a family's run: export the serial student to ONNX (checked against PyTorch by
    the command itself) and classify the run's store with it."""
    family, _, run_dir, _ = family_paper_run
    summary = json.loads((run_dir / "run.json").read_text())
    student = summary["models"][f"student-serial-rep_pred_ce-final-k{K}"]
    assert json.loads((Path(student).parent / "model.json").read_text())["family"] == family
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", "--model", student, "--out", str(tmp_path / "student.onnx")]) == 0
        assert main(["predict", "--model", student, "--src", summary["store"], "--out",
                     str(tmp_path / "predictions.csv"), "--top-k", "3"]) == 0
    assert (tmp_path / "student.onnx").stat().st_size > 0
    from fewframes.data.store import FrameStore
    from fewframes.predict import read_predictions

    predictions = read_predictions(tmp_path / "predictions.csv")
    assert len(predictions) == len(FrameStore.open(summary["store"]).lengths)
    assert all(len(pairs) == 3 for pairs in predictions.values())
