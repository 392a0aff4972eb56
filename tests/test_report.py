"""The paper-style report (``fewframes.report``): rebuilt by ``fewframes report`` from the tiny pipeline run
(the session's ``tiny_run``), checked against the metrics in that run's MLflow store; the claim rules and
the seed grouping on hand-written rows (the tiny grid has one baseline, one mode and one seed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import mlflow
import pytest

from fewframes.cli import main
from fewframes.report import (
    FAILS,
    HOLDS,
    NOT_MEASURED,
    Grid,
    build_report,
    claim_intermediate,
    claim_margin_grows,
    claim_serial_parallel,
    claim_uniform_best,
    fmt_config,
    pareto_front,
    recommend_student,
)
from fewframes.runs import TAG_STEP, compare_rows, local_tracking_uri

PNG = b"\x89PNG\r\n\x1a\n"
CLAIM_KEYS = ["uniform_best_baseline", "students_beat_uniform", "k30_within_tolerance", "serial_vs_parallel",
              "intermediate_no_gain", "margin_grows"]


@pytest.fixture(scope="module")
def rebuilt(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report") / "report"
    assert main(["report", "--run", str(tiny_run), "--out", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text())


def _mlflow_models(tiny_run: Path) -> list[dict]:
    """The evaluate runs of the tiny run, as MLflow holds them (one per model)."""
    return compare_rows(local_tracking_uri(tiny_run), "fewframes")


@pytest.mark.slow
def test_report_files_tables_and_figures(rebuilt):
    out, summary = rebuilt
    for name in ("report.md", "report.html", "summary.json"):
        assert (out / name).stat().st_size > 0
    assert summary["figures"] == ["gap_vs_k.png", "pareto.png", "figure2_val_gap_per_epoch.png", "figure3_tsne.png"]
    for name in summary["figures"]:
        assert (out / name).read_bytes()[:8] == PNG
    titles = [t["title"] for t in summary["tables"]]
    assert [t.split(":")[0] for t in titles] == ["Table 1 (GAP)", "Table 1 (mAP)", "Table 2", "Table 3", "Table 4",
                                                "All evaluated models"]
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for title in titles:
        assert f"**{title}**" in markdown
    for name in summary["figures"]:
        assert f"]({name})" in markdown  # beside report.md
    assert page.count("src='data:image/png;base64,") == len(summary["figures"])  # embedded for the KFP UI
    assert [c["key"] for c in summary["claims"]] == CLAIM_KEYS
    for claim in summary["claims"]:
        assert f"| {claim['claim']} | **{claim['verdict']}** |" in markdown
    # Figure 2: the serial teacher and student histories came back from MLflow (no parallel run in tiny).
    assert summary["figure2_losses"] == ["rep_pred_ce"]
    assert summary["tsne"]["videos"] >= 3 and -1.0 <= summary["tsne"]["mean_cosine"] <= 1.0


def _cell(values: list[float]) -> str:
    """A Table 1 cell as the report writes it: the mean, and ± the spread over seeds when several ran."""
    mean = statistics.fmean(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


@pytest.mark.slow
def test_report_numbers_and_verdicts_match_mlflow(tiny_run: Path, rebuilt):
    _, summary = rebuilt
    models = _mlflow_models(tiny_run)
    (teacher,) = [m for m in models if m["role"] == "teacher"]
    uniform: dict[int, list[float]] = {}
    students: dict[int, list[float]] = {}  # the tiny grid distils Serial (c) only
    for m in models:
        if m["role"] == "baseline" and m["frame_selection"] == "uniform":
            uniform.setdefault(int(m["k"]), []).append(m["gap"])
        elif m["role"] == "student":
            students.setdefault(int(m["k"]), []).append(m["gap"])
    ks = sorted(uniform)

    table = next(t for t in summary["tables"] if t["title"].startswith("Table 1 (GAP)"))
    assert table["header"] == ["model"] + [f"k={k}" for k in ks]
    cells = {row[0]: row[1:] for row in table["rows"]}
    assert cells["Teacher-Skyline"] == [f"{teacher['gap']:.4f}"] * len(ks)
    assert cells["Uniform-k"] == [_cell(uniform[k]) for k in ks]
    assert cells["Serial (c), L_rep+L_pred+L_CE"] == [_cell(students[k]) for k in ks]
    table_map = next(t for t in summary["tables"] if t["title"].startswith("Table 1 (mAP)"))
    assert {row[0]: row[1:] for row in table_map["rows"]}["Teacher-Skyline"][0] == f"{teacher['map']:.4f}"

    verdicts = {c["key"]: c["verdict"] for c in summary["claims"]}
    mean = {k: statistics.fmean(v) for k, v in students.items()}
    beats = all(mean[k] > statistics.fmean(uniform[k]) for k in ks)
    assert verdicts["students_beat_uniform"] == (HOLDS if beats else FAILS)
    assert verdicts["k30_within_tolerance"] == (HOLDS if mean[30] >= teacher["gap"] * (1 - 0.01) else FAILS)
    # The tiny grid has no other baseline, no parallel mode, no intermediate matching, no data fractions.
    for key in ("uniform_best_baseline", "serial_vs_parallel", "intermediate_no_gain", "margin_grows"):
        assert verdicts[key] == NOT_MEASURED

    expected = recommend_student([{"role": "teacher", "gap": teacher["gap"]}]
                                 + [{"role": "student", "k": k, "gap": g} for k, g in mean.items()], 0.01)
    recommended = summary["recommended"]
    assert (recommended and recommended["k"]) == (expected and expected["k"])

    table4 = next(t for t in summary["tables"] if t["title"].startswith("Table 4"))
    teacher_cost = table4["rows"][0]
    assert teacher_cost[0] == "Teacher (all frames)" and float(teacher_cost[2]) == pytest.approx(teacher["gflops"], rel=1e-2)
    assert [row[0] for row in table4["rows"][1:]] == [f"k={k} (student or baseline)" for k in ks]


@pytest.mark.slow
def test_pipeline_report_step_logged_the_same_report_to_mlflow(tiny_run: Path, rebuilt):
    _, summary = rebuilt
    client = mlflow.MlflowClient(tracking_uri=local_tracking_uri(tiny_run))
    experiment = client.get_experiment_by_name("fewframes")
    (report_run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STEP}` = 'report'")
    artifacts = {a.path for a in client.list_artifacts(report_run.info.run_id)}
    assert {"report.md", "report.html", "summary.json", *summary["figures"]} <= artifacts
    metrics = report_run.data.metrics
    verdicts = [c["verdict"] for c in summary["claims"]]
    assert metrics["claims_hold"] == verdicts.count(HOLDS) and metrics["claims_fail"] == verdicts.count(FAILS)
    assert metrics["claims_not_measured"] == verdicts.count(NOT_MEASURED)
    # The KFP Markdown artifact is self-contained (figures inlined); the HTML one too.
    markdown = (tiny_run / "report.md").read_text()
    assert markdown.count("](data:image/png;base64,") == len(summary["figures"])


def test_report_of_a_missing_run_folder_is_one_line(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--run" in err and "nowhere" in err
    assert not (tmp_path / "out").exists()


def test_report_with_a_missing_notes_file_is_one_line(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--notes", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--notes" in err and "notes.txt" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# rules on hand-written rows (what the tiny grid cannot show)
# ----------------------------------------------------------------------------------------------------------


def _row(role, k=None, gap=0.5, seed=0, selection="uniform", loss="", mode="", matching="", fraction=1.0, repeat=False):
    key = f"{role}-{selection}-{loss}-{mode}-{matching}-k{k}-f{fraction}" + (f"-seed{seed}" if repeat else "")
    return {"role": role, "k": "" if k is None else k, "frame_selection": "all" if role == "teacher" else selection,
            "loss": loss, "mode": mode, "matching": matching, "train_fraction": fraction, "seed": seed,
            "model_key": key, "gap": gap, "map": gap / 2}


def _student(k, gap, mode="serial", loss="rep_pred_ce", **kw):
    return _row("student", k, gap, loss=loss, mode=mode, matching=kw.pop("matching", "final"), **kw)


def test_seeds_of_one_configuration_give_mean_spread_and_count():
    rows = [_row("baseline", 10, 0.60), _row("baseline", 10, 0.62, seed=1, repeat=True),
            _row("baseline", 10, 0.64, seed=2, repeat=True), _row("baseline", 30, 0.7)]
    grid = Grid(rows)
    uniform10 = grid.baseline("uniform", 10)
    assert uniform10.n == 3 and uniform10.seeds == [0, 1, 2]
    assert uniform10.mean("gap") == pytest.approx(0.62) and uniform10.spread("gap") == pytest.approx(0.02)
    assert fmt_config(uniform10, "gap") == "0.6200 ± 0.0200 (n=3)"
    assert fmt_config(grid.baseline("uniform", 30), "gap") == "0.7000"
    assert fmt_config(grid.baseline("first", 30), "gap") == "–"
    assert uniform10.first()["seed"] == 0  # per-model facts come from the pipeline's own seed


def test_claim_rules_on_a_paper_shaped_grid():
    teacher = _row("teacher", gap=0.80)
    rows = [teacher, _row("baseline", 30, 0.70), _row("baseline", 30, 0.72, selection="random"),
            _student(30, 0.75), _student(30, 0.76, mode="parallel"),
            _student(30, 0.78, matching="intermediate"), _student(30, 0.751, mode="parallel", matching="intermediate")]
    grid = Grid(rows)
    beaten = claim_uniform_best(grid)
    assert beaten.verdict == FAILS and "Random-k 0.7200 > Uniform-k 0.7000" in beaten.evidence
    # |0.75 - 0.76| = 0.01 > 1% of 0.80 = 0.008: not "about equal"; with 2% it is.
    assert claim_serial_parallel(grid, 0.01).verdict == FAILS
    assert claim_serial_parallel(grid, 0.02).verdict == HOLDS
    # intermediate - final: serial +0.03, parallel -0.009; mean +0.0105 > 0.008: a gain.
    assert claim_intermediate(grid, 0.01, 30).verdict == FAILS
    assert claim_intermediate(grid, 0.02, 30).verdict == HOLDS
    assert claim_margin_grows(grid, 30).verdict == NOT_MEASURED


@pytest.mark.parametrize("margins, verdict", [
    ({1.0: 0.01, 0.5: 0.02, 0.25: 0.03, 0.1: 0.05}, HOLDS),
    ({1.0: 0.01, 0.5: 0.04, 0.25: 0.03, 0.1: 0.05}, FAILS),  # not at every step
    ({1.0: 0.03, 0.5: 0.02, 0.25: 0.01, 0.1: 0.00}, FAILS),
])
def test_margin_over_uniform_as_data_shrinks(margins, verdict):
    rows = []
    for fraction, margin in margins.items():
        rows += [_row("baseline", 30, 0.6, fraction=fraction), _student(30, 0.6 + margin, fraction=fraction)]
    claim = claim_margin_grows(Grid(rows), 30)
    assert claim.verdict == verdict and f"10%: {margins[0.1]:+.4f}" in claim.evidence


def test_pareto_front_keeps_only_undominated_points():
    points = [(5.0, 0.80), (0.5, 0.78), (0.5, 0.70), (0.15, 0.74), (0.3, 0.73), (1.0, 0.77)]
    assert pareto_front(points) == [(0.15, 0.74), (0.5, 0.78), (5.0, 0.80)]


def test_report_from_rows_without_teacher_or_figures_says_not_measured(tmp_path):
    report = build_report([_row("baseline", 10, 0.6), _row("baseline", 10, 0.65, selection="first")], tmp_path / "r")
    verdicts = {c["key"]: c["verdict"] for c in report.summary["claims"]}
    assert verdicts["uniform_best_baseline"] == FAILS
    assert all(v == NOT_MEASURED for k, v in verdicts.items() if k != "uniform_best_baseline")
    text = report.markdown.read_text()
    assert "none within 1.0% of the teacher's GAP (no teacher in this run)" in text
    assert "Figure 2: not drawn" in text and "Figure 3: not drawn" in text
