"""The paper-style report (``fewframes.report``): rebuilt by ``fewframes report`` from the tiny pipeline run
(the session's ``tiny_run``), checked against the metrics in that run's MLflow store; the claim rules and
the seed grouping on hand-written rows (the tiny grid has one baseline, one mode and one seed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import mlflow
import numpy as np
import pytest

from fewframes.cli import main
from fewframes.evaluation import PREDICTIONS_FILE, predictions_of, read_predictions, write_predictions
from fewframes.report import (
    CLAIM_ORDER,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    Grid,
    Intervals,
    build_report,
    claim_distillation_beats_warm_start,
    claim_k30_close,
    claim_margin_grows,
    claim_serial_parallel,
    claim_students_beat_uniform,
    claim_teacher_skyline,
    claim_uniform_best,
    fmt_config,
    pareto_front,
    recommend_student,
)
from fewframes.runs import TAG_STEP, compare_rows, local_tracking_uri

PNG = b"\x89PNG\r\n\x1a\n"


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
    assert summary["figures"] == ["gap_vs_k.png", "learning_curves.png", "pareto.png", "figure2_val_gap_per_epoch.png",
                                  "figure3_tsne.png"]
    for name in summary["figures"]:
        assert (out / name).read_bytes()[:8] == PNG
    titles = [t["title"] for t in summary["tables"]]
    paper = [t.split(":")[0] for t in titles if t.startswith("Table")]
    assert paper == ["Table 1 (GAP)", "Table 1 (mAP)", "Table 2", "Table 3", "Table 4"]
    assert "All evaluated models" in titles and any(t.startswith("Every configuration") for t in titles)
    assert titles[-1].startswith("Per-class test AP")  # the appendix ends with the per-class table (issue 15)
    # The information bounds of the tiny synthetic data, beside Table 1, with what the run measured.
    assert titles[2].startswith("Information bounds of the benchmark")
    bounds = summary["tables"][2]
    teacher_gap = next(c for c in summary["configurations"] if c["role"] == "teacher")["gap"][0]
    assert bounds["rows"][0][0] == "all frames (teacher)" and bounds["rows"][0][-1] == f"{teacher_gap:.4f}"
    assert [row[0] for row in bounds["rows"][1:]] == ["Uniform-k k=6", "Uniform-k k=30"]
    assert summary["bounds"]["rows"][0]["selection"] == "all" and 0 < summary["bounds"]["prior_gap"] < 1
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for title in titles:
        assert f"**{title}**" in markdown
    for name in summary["figures"]:
        assert f"]({name})" in markdown  # beside report.md
    assert "base64" not in markdown
    assert page.count("src='data:image/png;base64,") == len(summary["figures"])  # embedded for the KFP UI
    assert [c["key"] for c in summary["claims"]] == list(CLAIM_ORDER)
    for claim in summary["claims"]:
        if claim["verdict"] == NOT_MEASURED:
            assert f"- `{claim['key']}` — {claim['claim']}: " in markdown
        else:
            assert f"| `{claim['key']}` | {claim['claim']} | **{claim['verdict']}** |" in markdown
    # Figure 2: the serial teacher and student histories came back from MLflow (no parallel run in tiny).
    assert summary["figure2_losses"] == ["rep_pred_ce"]
    assert "This run has no parallel student" in markdown
    assert summary["tsne"]["videos"] >= 3 and -1.0 <= summary["tsne"]["mean_cosine"] <= 1.0
    # Learning curves: every trained model of the run (all but teacher-on-k controls, which train nothing).
    drawn = sorted(key for keys in summary["learning_curves"].values() for key in keys)
    trained = sorted(key for c in summary["configurations"] if c["control"] != "teacher_on_k" for key in c["model_keys"])
    assert drawn == trained


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

    claims = {c["key"]: c for c in summary["claims"]}
    mean = {k: statistics.fmean(v) for k, v in students.items()}
    # Every comparison is a seed-mean difference of the MLflow GAPs, inside its own interval, and its verdict
    # follows the rule from that interval.
    beat = claims["students_beat_uniform"]
    assert [p["label"] for p in beat["parts"]] == [f"Serial (c), L_rep+L_pred+L_CE − Uniform-k k={k}" for k in ks]
    for part, k in zip(beat["parts"], ks):
        assert part["estimate"] == pytest.approx(mean[k] - statistics.fmean(uniform[k]), abs=1e-9)
        assert part["low"] <= part["estimate"] <= part["high"]
        assert part["verdict"] == (HOLDS if part["low"] > 0 else INCONCLUSIVE if part["high"] >= 0 else part["verdict"])
    skyline = claims["teacher_skyline"]
    assert len(skyline["parts"]) == sum(len(v) > 0 for v in uniform.values())
    assert skyline["verdict"] in (HOLDS, FAILS, INCONCLUSIVE)
    close = claims["k30_within_tolerance"]
    assert close["margin"] == pytest.approx(-0.01 * teacher["gap"])
    assert close["estimate"] == pytest.approx(mean[30] - teacher["gap"], abs=1e-9)
    # The tiny grid has no other baseline, no parallel mode, no intermediate matching, no data fractions.
    for key in ("uniform_best_baseline", "serial_vs_parallel", "intermediate_no_gain", "margin_grows"):
        assert claims[key]["verdict"] == NOT_MEASURED

    expected = recommend_student([{"role": "teacher", "gap": teacher["gap"]}]
                                 + [{"role": "student", "k": k, "gap": g} for k, g in mean.items()], 0.01)
    recommended = summary["recommended"]
    assert (recommended and recommended["k"]) == (expected and expected["k"])

    table4 = next(t for t in summary["tables"] if t["title"].startswith("Table 4"))
    teacher_cost = table4["rows"][0]
    assert teacher_cost[:2] == ["Teacher (all frames)", "`teacher`"]
    assert float(teacher_cost[3]) == pytest.approx(teacher["gflops"], rel=1e-2)
    assert [row[0] for row in table4["rows"][1:]] == [f"k={k}" for k in ks]
    # Each cost row names the model whose benchmark it shows, and shows that model's figures.
    gflops = {m["model_key"]: m["gflops"] for m in models}
    for row in table4["rows"][1:]:
        assert float(row[3]) == pytest.approx(gflops[row[1].strip("`")], rel=1e-2)


@pytest.mark.slow
def test_pipeline_and_fewframes_report_write_the_same_report(tiny_run: Path, rebuilt):
    out, summary = rebuilt
    # One report: the pipeline's report step and `fewframes report --run` give the same report.md, with the
    # PNG figures beside it in both places.
    assert (tiny_run / "report.md").read_text() == (out / "report.md").read_text()
    for name in summary["figures"]:
        assert (tiny_run / name).read_bytes()[:8] == PNG
    pipeline_summary = json.loads((tiny_run / "summary.json").read_text())
    assert pipeline_summary["claims"] == summary["claims"]

    client = mlflow.MlflowClient(tracking_uri=local_tracking_uri(tiny_run))
    experiment = client.get_experiment_by_name("fewframes")
    (report_run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STEP}` = 'report'")
    artifacts = {a.path for a in client.list_artifacts(report_run.info.run_id)}
    assert {"report.md", "report.html", "summary.json", *summary["figures"]} <= artifacts
    metrics = report_run.data.metrics
    verdicts = [c["verdict"] for c in summary["claims"]]
    assert metrics["claims_hold"] == verdicts.count(HOLDS) and metrics["claims_fail"] == verdicts.count(FAILS)
    assert metrics["claims_inconclusive"] == verdicts.count(INCONCLUSIVE)
    assert metrics["claims_not_measured"] == verdicts.count(NOT_MEASURED)


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
# rules on hand-written rows with real per-video predictions (what the tiny grid cannot show)
# ----------------------------------------------------------------------------------------------------------

VIDEOS, CLASSES = 240, 12


def _labels() -> list[np.ndarray]:
    rng = np.random.default_rng(100)  # every model of a run is evaluated on the same test videos
    return [np.unique(np.r_[rng.integers(0, CLASSES), np.flatnonzero(rng.random(CLASSES) < 0.1)]) for _ in range(VIDEOS)]


def _predictions(folder: Path, signal: float, noise_seed: int) -> float:
    """Write a predictions.parquet of a model whose scores are noise + signal x labels; return its GAP."""
    labels = _labels()
    rng = np.random.default_rng(noise_seed)
    scores = rng.random((VIDEOS, CLASSES)).astype(np.float32)
    for video, classes in enumerate(labels):
        scores[video, classes] += signal
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"video{i:03d}" for i in range(VIDEOS)]
    table = predictions_of(ids, np.tile(np.arange(CLASSES), (VIDEOS, 1)), scores, labels)
    write_predictions(table, folder / PREDICTIONS_FILE)
    return read_predictions(folder / PREDICTIONS_FILE).gap()


def _row(role, k=None, gap=0.5, seed=0, selection="uniform", loss="", mode="", matching="", fraction=1.0,
         repeat=False, control="", folder=None, signal=None, noise_seed=None):
    key = f"{role}-{control}{selection}-{loss}-{mode}-{matching}-k{k}-f{fraction}" + (f"-seed{seed}" if repeat else "")
    row = {"role": role, "k": "" if k is None else k, "frame_selection": "all" if role == "teacher" else selection,
           "loss": loss, "mode": mode, "matching": matching, "train_fraction": fraction, "seed": seed,
           "model_key": key, "gap": gap, "map": gap / 2, "control": control}
    if folder is not None:  # real predictions: the row's GAP is theirs
        row["evaluation_dir"] = str(folder / key)
        row["gap"] = _predictions(folder / key, signal, seed if noise_seed is None else noise_seed)
    return row


def _student(k, gap=0.5, mode="serial", loss="rep_pred_ce", **kw):
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


@pytest.mark.parametrize("teacher_signal, baseline_signal, verdict", [
    (1.5, 0.3, HOLDS),  # far better on the same videos: every interval above 0
    (0.3, 0.3, INCONCLUSIVE),  # equally good (different noise): the intervals straddle 0
    (0.3, 1.5, FAILS),  # far worse: every interval below 0
])
def test_teacher_skyline_verdicts(tmp_path, teacher_signal, baseline_signal, verdict):
    rows = [_row("teacher", folder=tmp_path, signal=teacher_signal, noise_seed=50)]
    for k in (6, 10):
        for number, selection in enumerate(("uniform", "random")):
            rows.append(_row("baseline", k, selection=selection, folder=tmp_path, signal=baseline_signal,
                             noise_seed=50 if teacher_signal == baseline_signal else 10 * k + number))
    if verdict == INCONCLUSIVE:  # one baseline reads the same scores as the teacher: a difference of exactly 0
        rows[1]["evaluation_dir"], rows[1]["gap"] = rows[0]["evaluation_dir"], rows[0]["gap"]
    claim = claim_teacher_skyline(Grid(rows), Intervals(rows, resamples=200))
    assert claim.verdict == verdict
    assert len(claim.parts) == 4 and all(part.interval is not None for part in claim.parts)
    part = claim.parts[0]
    assert part.estimate == pytest.approx(rows[0]["gap"] - rows[1]["gap"])
    assert part.interval.low <= part.estimate <= part.interval.high
    recorded = claim.as_dict()
    assert recorded["key"] == "teacher_skyline" and recorded["verdict"] == verdict
    assert recorded["interval"]["low"] <= recorded["estimate"] <= recorded["interval"]["high"]


def test_distillation_against_the_warm_start_control_and_seeds(tmp_path):
    # Serial (c) with three seeds, clearly better than the warm-start control at k=10; at k=6 the same as
    # the control (inconclusive): the claim is inconclusive, not "holds".
    rows = []
    for seed in range(3):
        rows.append(_student(10, seed=seed, repeat=seed > 0, folder=tmp_path, signal=1.2, noise_seed=seed))
        rows.append(_student(6, seed=seed, repeat=seed > 0, folder=tmp_path, signal=0.5, noise_seed=seed + 10))
    rows += [_row("control", 10, control="warm_start", folder=tmp_path, signal=0.4, noise_seed=20),
             _row("control", 6, control="warm_start", folder=tmp_path, signal=0.5, noise_seed=21)]
    grid = Grid(rows)
    intervals = Intervals(rows, resamples=200)
    claim = claim_distillation_beats_warm_start(grid, intervals)
    assert [p.label for p in claim.parts] == ["Serial (c) − warm start k=6", "Serial (c) − warm start k=10"]
    assert [p.verdict for p in claim.parts] == [INCONCLUSIVE, HOLDS] and claim.verdict == INCONCLUSIVE
    serial10 = grid.student("serial", "rep_pred_ce", 10)
    assert serial10.n == 3
    assert claim.parts[1].estimate == pytest.approx(serial10.mean("gap") - grid.control("warm_start", 10).mean("gap"))


def test_equivalence_and_non_inferiority_claims(tmp_path):
    teacher = _row("teacher", folder=tmp_path, signal=1.0, noise_seed=1)
    serial = _student(30, folder=tmp_path, signal=1.0, noise_seed=2)
    rows = [teacher, serial, _student(30, mode="parallel", folder=tmp_path, signal=1.0, noise_seed=2)]
    rows[2]["evaluation_dir"], rows[2]["gap"] = serial["evaluation_dir"], serial["gap"]  # the same scores
    grid, intervals = Grid(rows), Intervals(rows, resamples=200)
    same = claim_serial_parallel(grid, intervals, 0.01)
    assert same.verdict == HOLDS and same.parts[0].interval.low == same.parts[0].interval.high == 0.0
    close = claim_k30_close(grid, intervals, 0.01)
    assert close.margin == pytest.approx(-0.01 * teacher["gap"])
    assert close.verdict == (HOLDS if close.parts[0].interval.low > close.margin else
                             FAILS if close.parts[0].interval.high < close.margin else INCONCLUSIVE)
    far = [teacher, _student(30, folder=tmp_path / "far", signal=0.1, noise_seed=3)]
    assert claim_k30_close(Grid(far), Intervals(far, resamples=200), 0.01).verdict == FAILS


def test_claims_without_their_models_are_not_measured_and_without_predictions_inconclusive():
    rows = [_row("teacher", gap=0.8), _row("baseline", 10, 0.6)]
    grid, intervals = Grid(rows), Intervals(rows)
    claim = claim_teacher_skyline(grid, intervals)
    assert claim.verdict == INCONCLUSIVE and "no per-video predictions" in claim.evidence
    assert claim.parts[0].estimate == pytest.approx(0.2) and claim.parts[0].interval is None
    for check in (claim_uniform_best, claim_students_beat_uniform, claim_distillation_beats_warm_start):
        assert check(grid, intervals).verdict == NOT_MEASURED
    assert claim_margin_grows(grid, intervals, 30).verdict == NOT_MEASURED


def test_margin_over_uniform_as_data_shrinks_is_one_contrast_per_step(tmp_path):
    rows = []
    for fraction, signal in ((0.1, 1.5), (0.5, 0.8), (1.0, 0.8)):
        rows += [_row("baseline", 30, fraction=fraction, folder=tmp_path, signal=0.4, noise_seed=1),
                 _student(30, fraction=fraction, folder=tmp_path, signal=signal, noise_seed=2)]
    claim = claim_margin_grows(Grid(rows), Intervals(rows, resamples=200), 30)
    assert [p.label for p in claim.parts] == ["margin at 10% − margin at 50%", "margin at 50% − margin at 100%"]
    # 10 % vs 50 %: a much larger margin (holds); 50 % vs 100 %: the same models' scores (difference 0).
    assert [p.verdict for p in claim.parts] == [HOLDS, INCONCLUSIVE] and claim.verdict == INCONCLUSIVE
    assert "10%: " in claim.evidence


def test_pareto_front_keeps_only_undominated_points():
    points = [(5.0, 0.80), (0.5, 0.78), (0.5, 0.70), (0.15, 0.74), (0.3, 0.73), (1.0, 0.77)]
    assert pareto_front(points) == [(0.15, 0.74), (0.5, 0.78), (5.0, 0.80)]


def test_report_from_rows_without_teacher_or_figures_lists_claims_not_measured(tmp_path):
    rows = [_row("baseline", 10, folder=tmp_path / "p", signal=0.2, noise_seed=1),
            _row("baseline", 10, selection="first", folder=tmp_path / "p", signal=0.7, noise_seed=2)]
    report = build_report(rows, tmp_path / "r", resamples=100)
    verdicts = {c["key"]: c["verdict"] for c in report.summary["claims"]}
    assert verdicts["uniform_best_baseline"] == FAILS
    assert all(v == NOT_MEASURED for k, v in verdicts.items() if k != "uniform_best_baseline")
    text = report.markdown.read_text()
    assert "none within 1.0% of the teacher's GAP (no teacher in this run)" in text
    assert "Figure 2: not drawn" in text and "Figure 3: not drawn" in text
    assert "**Not measured in this run**" in text and "- `teacher_skyline` — " in text
    assert "(needs a teacher and a baseline)" in text
    assert "**The verdict rule**" in text and "base64" not in text
    configuration = next(c for c in report.summary["configurations"] if c["frame_selection"] == "first")
    assert configuration["role"] == "baseline" and configuration["gap"] == [rows[1]["gap"]]
    assert configuration["interval"]["low"] < configuration["gap_mean"] < configuration["interval"]["high"]


def test_summary_schema_and_controls_table(tmp_path):
    # A run with a teacher and Serial (c) at three seeds each, a Uniform-k baseline, and both controls at k=10.
    rows = []
    for seed in range(3):
        rows.append(_row("teacher", seed=seed, repeat=seed > 0, folder=tmp_path, signal=0.7, noise_seed=seed))
        rows.append(_student(10, seed=seed, repeat=seed > 0, folder=tmp_path, signal=0.55, noise_seed=seed + 3))
    rows += [_row("baseline", 10, folder=tmp_path, signal=0.2, noise_seed=7),
             _row("control", 10, control="warm_start", folder=tmp_path, signal=0.4, noise_seed=8),
             _row("control", 10, control="teacher_on_k", folder=tmp_path, signal=0.35, noise_seed=9)]
    report = build_report(rows, tmp_path / "r", resamples=200)
    summary = report.summary

    claims = {c["key"]: c for c in summary["claims"]}
    assert list(claims) == list(CLAIM_ORDER)
    for claim in claims.values():
        assert claim["verdict"] in (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)
        assert {"key", "claim", "verdict", "evidence", "family", "kind", "margin", "estimate", "interval", "parts"} <= set(claim)
    warm = claims["distillation_beats_warm_start"]
    assert [p["label"] for p in warm["parts"]] == ["Serial (c) − warm start k=10"]
    assert warm["interval"]["low"] <= warm["estimate"] <= warm["interval"]["high"]
    assert claims["teacher_skyline"]["parts"][0]["label"] == "Teacher − Uniform-k k=10"

    configurations = {(c["role"], c["control"], c["k"]): c for c in summary["configurations"]}
    teacher = configurations[("teacher", None, None)]
    assert teacher["family"] == "hrnn" and teacher["frame_selection"] == "all" and len(teacher["gap"]) == 3
    assert teacher["seeds"] == [0, 1, 2] and teacher["gap_mean"] == pytest.approx(statistics.fmean(teacher["gap"]))
    assert teacher["interval"]["low"] < teacher["gap_mean"] < teacher["interval"]["high"]
    assert configurations[("control", "warm_start", 10)]["frame_selection"] == "uniform"

    controls = next(t for t in summary["tables"] if t["title"].startswith("Controls"))
    (row,) = controls["rows"]
    assert row[0] == "k=10" and row[2] == f"{rows[-1]['gap']:.4f}" and row[3] == f"{rows[-2]['gap']:.4f}"
    estimate = statistics.fmean(r["gap"] for r in rows if r["role"] == "student") - rows[-2]["gap"]
    assert row[7].startswith(f"{estimate:+.4f} [")  # Serial (c) − warm start, with its interval
    text = report.markdown.read_text()
    assert "**Controls: what the teacher and a warm start give without distillation**" in text
    assert "| `distillation_beats_warm_start` |" in text


def test_several_families_are_judged_and_tabled_apart(tmp_path):
    rows = []
    for family, signal in (("netvlad", 0.6), ("hrnn", 0.3)):
        for row in (_row("teacher", folder=tmp_path / family, signal=signal, noise_seed=1),
                    _row("baseline", 10, folder=tmp_path / family, signal=0.2, noise_seed=2)):
            row["family"] = family
            row["model_key"] = f"{family}-{row['model_key']}"
            rows.append(row)
    summary = build_report(rows, tmp_path / "r", resamples=100).summary
    skyline = [c for c in summary["claims"] if c["key"] == "teacher_skyline"]
    assert [c["family"] for c in skyline] == ["hrnn", "netvlad"]  # the default family first
    assert [c["estimate"] for c in skyline] == pytest.approx(
        [rows[2]["gap"] - rows[3]["gap"], rows[0]["gap"] - rows[1]["gap"]])
    titles = [t["title"] for t in summary["tables"]]
    assert "Table 1 (GAP), hierarchical LSTM: test GAP of every model by k" in titles
    assert "Table 1 (GAP), NetVLAD: test GAP of every model by k" in titles
    assert {c["family"] for c in summary["configurations"]} == {"hrnn", "netvlad"}


def test_a_model_on_other_test_videos_is_not_paired(tmp_path):
    rows = [_row("teacher", folder=tmp_path, signal=0.6, noise_seed=1), _row("baseline", 10, folder=tmp_path, signal=0.2, noise_seed=2),
            _row("baseline", 30, folder=tmp_path, signal=0.2, noise_seed=3)]
    # The second model's predictions are of another video: the two others (the most common set) are paired.
    table = predictions_of(["elsewhere"], np.zeros((1, 2), dtype=np.int64), np.ones((1, 2)), [np.array([0])])
    write_predictions(table, Path(rows[1]["evaluation_dir"]) / PREDICTIONS_FILE)
    intervals = Intervals(rows, resamples=50)
    assert intervals.missing == [f"{rows[1]['model_key']} (other test videos)"]
    claim = claim_teacher_skyline(Grid(rows), intervals)
    assert [p.interval is None for p in claim.parts] == [True, False]
    assert [p.verdict for p in claim.parts] == [INCONCLUSIVE, HOLDS] and claim.verdict == INCONCLUSIVE


def test_headline_teacher_is_the_seed_mean_and_costs_use_the_benchmarked_own_seed_teacher():
    from fewframes.run_results import headline_metrics

    def teacher(key, gap, seed, fraction=1.0, gflops=None):
        return {"role": "teacher", "model_key": key, "gap": gap, "seed": seed, "train_fraction": fraction,
                "gflops": gflops, "family": "hrnn"}

    rows = [teacher("teacher-f0.5", 0.9, 0, 0.5), teacher("teacher-seed2", 0.8, 2), teacher("teacher", 0.6, 0, gflops=4.0),
            teacher("teacher-seed1", 0.7, 1)]
    student = {"role": "student", "model_key": "student-k10", "k": 10, "gap": 0.65, "gflops": 1.0, "family": "hrnn",
               "loss": "rep_pred_ce", "mode": "serial", "train_fraction": 1.0, "seed": 0}
    metrics = headline_metrics(rows + [student], student, True)
    # Not the first or the best teacher row (0.9 is a reduced-data teacher, 0.8 one seed of three).
    assert metrics["teacher_gap"] == pytest.approx(statistics.fmean([0.6, 0.7, 0.8])) and metrics["teacher_seeds"] == 3
    assert metrics["champion_flops_ratio"] == metrics["recommended_flops_ratio"] == pytest.approx(1.0 / 4.0)


def test_table4_benchmarks_the_recommended_student_whose_speed_up_the_text_gives(tmp_path):
    # Two serial students at k=10 within tolerance: the recommendation takes the better one, Serial (a); Table 4's
    # k=10 row must be that model's benchmark (it once showed Serial (c)'s beside the text's Serial (a) figure).
    def costs(row, gflops, e2e):
        return {**row, "gflops": gflops, "e2e_throughput_videos_s": e2e, "num_parameters": 100.0}

    rows = [costs(_row("teacher", gap=0.80), 4.0, 10.0),
            costs(_student(10, 0.799, loss="rep"), 1.0, 140.0),
            costs(_student(10, 0.795, loss="rep_pred_ce"), 1.0, 100.0),
            costs(_row("baseline", 10, 0.70), 1.0, 120.0)]
    report = build_report(rows, tmp_path / "r", resamples=50)
    recommended = report.summary["recommended"]
    assert recommended["loss"] == "rep" and recommended["speedup_e2e"] == pytest.approx(14.0)
    table4 = next(t for t in report.summary["tables"] if t["title"].startswith("Table 4"))
    (k10,) = [row for row in table4["rows"] if row[0] == "k=10"]
    assert k10[1] == f"`{recommended['model_key']}`" and k10[-1] == "14.0x"
    assert "14.0x the teacher's store-to-scores throughput" in report.markdown.read_text()
