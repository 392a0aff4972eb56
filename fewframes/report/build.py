"""Build the report of one pipeline run: gather its inputs (``report_of_run``, the one entry both the
pipeline's report step and ``fewframes report --run`` use, so they write the same report), then the blocks,
figures and summary (``build_report``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewframes import fsio
from fewframes.config import BASELINE_SELECTIONS
from fewframes.errors import PipelineError
from fewframes.report.claims import NOT_MEASURED, PAPER_K, all_claims, recommendation, seed_noise
from fewframes.report.configs import FAMILY_NAMES, Grid, families
from fewframes.report.figures import (
    LEARNING_PANELS,
    figure2,
    figure3,
    gap_vs_k_figure,
    learning_curves_figure,
    pareto_figure,
    _encodings_file,
)
from fewframes.report.intervals import Intervals
from fewframes.report.render import Block, Figure, Table, render_html, render_markdown
from fewframes.report.tables import (
    all_models_table,
    bounds_table,
    configurations_table,
    controls_table,
    per_class_table,
    table1,
    table2,
    table3,
    table4,
)
from fewframes.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, VERDICT_RULE

SUMMARY_FILE = "summary.json"
LEARNING_PANEL_TITLES = dict(LEARNING_PANELS)
BOUNDS_FILE = "bounds.json"
# The per-epoch metrics the report reads back from each training run.
HISTORY_METRICS = ("val_gap", "teacher_val_gap")
# The run facts the report shows: the same in both paths (the step cannot know the wall time).
SHOWN_ARGUMENTS = ("source", "family", "families", "ks", "losses", "modes", "baselines", "intermediate_k", "fraction_k",
                   "train_fractions", "seed", "repeat_seeds", "repeat_ks", "controls", "max_epochs",
                   "epochs",  # the name of max_epochs in runs made before early stopping
                   "patience", "batch_size",
                   "learning_rate", "hidden_size", "num_layers", "validation_fraction", "test_fraction")


# What a run needs for each claim to be measured (the grid parameters that add the models it compares).
CLAIM_NEEDS = {
    "teacher_skyline": "a teacher and a baseline",
    "distillation_beats_warm_start": "the warm-start control beside serial students: controls=warm_start",
    "uniform_best_baseline": "other frame selections beside Uniform-k: baselines=uniform,random,first,middle,last,"
                             "first_middle_last, as the paper grid has",
    "students_beat_uniform": "a student and Uniform-k at the same k",
    "k30_within_tolerance": "a teacher and a Serial (c) student at k=30: ks including 30, losses including rep_pred_ce",
    "serial_vs_parallel": "parallel students beside the serial ones: modes=serial,parallel",
    "intermediate_no_gain": "students with intermediate matching: intermediate_k=30",
    "margin_grows": "students and Uniform-k on reduced training data: train_fractions=0.1,0.25,0.5 and fraction_k=30",
}


@dataclass
class Report:
    folder: Path
    markdown: Path
    html: Path
    summary: dict[str, Any]
    figures: list[Path]


def grid_ks(arguments: dict[str, Any]) -> tuple[int, int]:
    """``intermediate_k`` and ``fraction_k`` of a pipeline run's arguments (the paper's k where a run set
    none or 0), for ``build_report``."""
    return int(arguments.get("intermediate_k") or PAPER_K), int(arguments.get("fraction_k") or PAPER_K)


# ----------------------------------------------------------------------------------------------------------
# the run's inputs
# ----------------------------------------------------------------------------------------------------------


def training_histories(tracking_uri: str, rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per model key, the per-epoch ``val_gap`` (and, for parallel training, ``teacher_val_gap``) of its
    training run (the ``mlflow_run_id`` of its row), ordered by epoch. Empty when tracking is off."""
    if not tracking_uri:
        return {}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    histories: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        run_id = row.get("mlflow_run_id")
        if not run_id:
            continue
        found = {}
        for metric in HISTORY_METRICS:
            points = sorted(client.get_metric_history(run_id, metric), key=lambda m: (m.step, m.timestamp))
            by_step = {m.step: m.value for m in points}  # a resumed run may log an epoch twice: keep the last
            if by_step:
                found[metric] = [by_step[s] for s in sorted(by_step)]
        histories[row["model_key"]] = found
    return histories


def run_command(pipeline: str, preset: str, arguments: dict[str, Any]) -> str:
    """The ``fewframes run`` command that made the run: every parameter that differs from the pipeline's
    defaults for its preset (the run folder is left as RUN_DIR: the report step does not know it)."""
    from fewframes.pipelines.dag import parameter_defaults

    command = f"fewframes run --pipeline {pipeline} --preset {preset} --out RUN_DIR"
    try:
        defaults = parameter_defaults(pipeline, preset)
    except Exception:  # an unknown preset of an older run: show the command without parameters
        return command
    local = ("tracking_uri", "parent_run_id", "run_name", "experiment", "preset")
    for name, value in arguments.items():
        if name in defaults and name not in local and value != defaults[name]:
            shown = ",".join(str(v) for v in value) if isinstance(value, list) else value
            command += f" --param {name}={shown}"
    return command


def preset_sizes(preset_name: str) -> str:
    from fewframes.config import get_preset

    try:
        preset = get_preset(preset_name)
    except Exception:
        return ""
    data, train = preset.data, preset.train
    return (f"{data.videos} synthetic videos (seed {data.seed}), {data.classes} classes, split "
            f"{1 - data.validation_fraction - data.test_fraction:.0%}/{data.validation_fraction:.0%}/"
            f"{data.test_fraction:.0%} train/validation/test; hidden size {preset.hidden_size}, {preset.num_layers} "
            f"layers, teacher blocks of {preset.teacher_block_length} frames; at most {train.epochs} epochs"
            + (f" (early stopping after {train.patience} epochs without a better validation GAP)" if train.patience else "")
            + f", batch "
            f"{train.batch_size}, learning rate {train.learning_rate:g} (x{train.lr_decay:g} per epoch)")


def run_description(pipeline: str, preset: str, run_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """What the report says about the run that made it (the same from the step and from ``fewframes report``)."""
    info: dict[str, Any] = {"pipeline": pipeline, "preset": preset, "run_id": run_id, "arguments": arguments}
    if pipeline and preset:
        info["command"] = run_command(pipeline, preset, arguments)
        info["preset_sizes"] = preset_sizes(preset)
    return info


def synthetic_bounds(arguments: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The information bounds of the run's data (``fewframes.data.bounds``), for the run's ks and baseline
    selections, when the data is the bundled synthetic benchmark with its own vocabulary; else None."""
    source, preset = str(arguments.get("source") or ""), str(arguments.get("preset") or "")
    if source and not source.startswith("synth:"):
        return None
    name = source.split(":", 1)[1] if source else preset
    ks = sorted({int(r["k"]) for r in rows if r.get("k") not in (None, "")})
    found = {str(r.get("frame_selection")) for r in rows if r.get("role") == "baseline"} | {"uniform"}
    selections = [s for s in BASELINE_SELECTIONS if s in found]
    if not name or not ks:
        return None
    from fewframes.config import get_preset
    from fewframes.data.bounds import information_bounds

    try:
        data = get_preset(name).data
    except Exception:  # a preset this version does not know: no bounds rather than wrong ones
        return None
    if int(arguments.get("num_classes") or data.classes) != data.classes:
        return None
    data = data.replace(validation_fraction=float(arguments.get("validation_fraction", data.validation_fraction)),
                        test_fraction=float(arguments.get("test_fraction", data.test_fraction)))
    return information_bounds(data, ks=ks, selections=selections)


def report_of_run(
    evaluation_dirs: list[str],
    benchmark_dir: str | None,
    out_dir: str | os.PathLike[str],
    *,
    tracking_uri: str,
    run_info: dict[str, Any],
    tolerance: float,
    notes: list[str] | None = None,
    bounds: dict[str, Any] | None = None,
) -> Report:
    """The report of a run from its evaluations, benchmark and MLflow store: the one path both the pipeline's
    report step and ``fewframes report`` take."""
    from fewframes.components.steps import benchmark_machine, report_rows

    rows = report_rows(evaluation_dirs, benchmark_dir)
    arguments = run_info.get("arguments", {})
    intermediate_k, fraction_k = grid_ks(arguments)
    if bounds is None:
        bounds = synthetic_bounds(arguments, rows)
    return build_report(rows, out_dir, tolerance=tolerance, histories=training_histories(tracking_uri, rows),
                        machine=benchmark_machine(benchmark_dir), run_info=run_info, intermediate_k=intermediate_k,
                        fraction_k=fraction_k, notes=notes, bounds=bounds)


# ----------------------------------------------------------------------------------------------------------
# the document
# ----------------------------------------------------------------------------------------------------------


def _describe_run(run_info: dict[str, Any], machine: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    items = []
    arguments = run_info.get("arguments", {})
    if run_info.get("command"):
        items.append(f"command: `{run_info['command']}`")
    if run_info.get("pipeline") or run_info.get("preset"):
        items.append(f"pipeline `{run_info.get('pipeline', '?')}`, preset `{run_info.get('preset', '?')}`"
                     + (f", run `{run_info['run_id']}`" if run_info.get("run_id") else ""))
    if run_info.get("preset_sizes"):
        items.append("sizes: " + run_info["preset_sizes"])
    if arguments:
        items.append("parameters: " + ", ".join(f"{k}={arguments[k]}" for k in SHOWN_ARGUMENTS if k in arguments))
    if machine:
        items.append(f"machine (benchmark step): {machine.get('cpu_model', '?')}, {machine.get('cpu_cores', '?')} cores, "
                     f"{machine.get('memory_gib', '?')} GiB, device {machine.get('device', '?')}, torch "
                     f"{machine.get('torch', '?')}, {machine.get('torch_threads', '?')} torch thread(s)")
    seeds = sorted({str(r.get("seed", "")) for r in rows} - {""})
    configs = [c for f in families(rows) for c in Grid(rows, f).configs.values()]
    repeated = [c for c in configs if c.n > 1]
    items.append(f"{len(rows)} evaluated models in {len(configs)} configurations; seeds {', '.join(seeds) or '?'}; "
                 + (f"{len(repeated)} configurations ran with several seeds" if repeated
                    else "every configuration ran with one seed"))
    return items


def _claims_table(claims: list[Any], several_families: bool) -> Table:
    rows = []
    for claim in claims:
        deciding = claim.as_dict()
        interval = deciding["interval"]
        numbers = "–" if deciding["estimate"] is None else f"{deciding['estimate']:+.4f}"
        if interval is not None:
            numbers += f" [{interval['low']:+.4f}, {interval['high']:+.4f}] ({interval['part']})"
        name = claim.claim + (f" ({FAMILY_NAMES.get(claim.family, claim.family)})" if several_families else "")
        rows.append([f"`{claim.key}`", name, f"**{claim.verdict}**", numbers, claim.evidence])
    return Table("Claims and verdicts", ["key", "claim", "verdict", "d [95 % interval] (deciding comparison)",
                                        "evidence"], rows)


def _parts_tables(claims: list[Any]) -> list[Table]:
    tables = []
    for claim in claims:
        if not claim.parts:
            continue
        rule = f"d > {claim.margin:+.4f}" if claim.kind == "greater" else f"|d| < {claim.margin:.4f}"
        several = len(claim.parts) > 1
        level = 1.0 - 0.05 / len(claim.parts)
        tables.append(Table(f"`{claim.key}` ({claim.family}): every comparison, rule {rule}",
                            ["comparison d", "d", "95 % interval"]
                            + ([f"{level:.2%} interval (decides 'does not hold')"] if several else []) + ["verdict"],
                            [[p.label, "–" if p.estimate is None else f"{p.estimate:+.4f}",
                              "–" if p.interval is None else f"[{p.interval.low:+.4f}, {p.interval.high:+.4f}]"]
                             + ([("–" if p.refute is None else f"[{p.refute[0]:+.4f}, {p.refute[1]:+.4f}]")]
                                if several else []) + [p.verdict] for p in claim.parts]))
    return tables


def build_report(
    rows: list[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    tolerance: float = 0.01,
    histories: dict[str, dict[str, list[float]]] | None = None,
    machine: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
    intermediate_k: int = PAPER_K,
    fraction_k: int = PAPER_K,
    notes: list[str] | None = None,
    bounds: dict[str, Any] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = DEFAULT_SEED,
) -> Report:
    """Write report.md (figures as PNG files beside it), report.html (figures embedded), the figures and
    summary.json for ``rows`` into ``out_dir``.

    ``rows``: one per evaluated model (``report_rows``), each with ``evaluation_dir`` (its
    ``predictions.parquet`` for the intervals, ``encodings.parquet`` for Figure 3).
    ``notes``: paragraphs of discussion (e.g. the committed run's), shown after the claims.
    ``bounds``: the benchmark's information bounds (``bounds.json``), shown beside Table 1.
    """
    if not rows:
        raise PipelineError("report: no evaluated models to report on")
    if not 0.0 <= tolerance < 1.0:
        raise PipelineError(f"report: tolerance must be in [0, 1), got {tolerance}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: str(r.get("model_key", "")))  # the same order whoever gathered them
    histories = histories or {}
    machine = machine or {}
    run_info = run_info or {}
    intervals = Intervals(rows, resamples=resamples, seed=bootstrap_seed)
    run_families = families(rows)
    several = len(run_families) > 1
    grids = [Grid(rows, f) for f in run_families]
    main = grids[0]

    blocks: list[Block] = [("h1", "fewframes report: the paper's experiments on this run")]
    blocks.append(("ul", _describe_run(run_info, machine, rows)))

    recommended = recommendation(main, tolerance)
    teacher = main.teacher()
    if recommended is not None:
        speed = [f"{recommended['flops_ratio']:.1%} of the teacher's FLOPs" if recommended.get("flops_ratio") else "",
                 f"{recommended['speedup_e2e']:.1f}x the teacher's store-to-scores throughput"
                 if recommended.get("speedup_e2e") else ""]
        blocks.append(("p", f"**Recommended student:** `{recommended['model_key']}` — {recommended['name']}, "
                            f"k={recommended['k']}: GAP {recommended['gap']:.4f} vs the teacher's "
                            f"{recommended['teacher_gap']:.4f} (tolerance {tolerance:.1%}; "
                            f"{recommended['seeds']} seed(s))" + "".join(f"; {s}" for s in speed if s) + "."))
    else:
        blocks.append(("p", f"**Recommended student:** none within {tolerance:.1%} of the teacher's GAP"
                            + (f" ({teacher.mean('gap'):.4f})." if teacher else " (no teacher in this run).")))

    claims = [c for grid in grids for c in all_claims(grid, intervals, tolerance, intermediate_k, fraction_k)]
    measured = [c for c in claims if c.verdict != NOT_MEASURED]
    unmeasured = [c for c in claims if c.verdict == NOT_MEASURED]
    blocks.append(("h2", "Claims on this run"))
    blocks.append(("p", "**The verdict rule** (fixed before the run): " + VERDICT_RULE
                   + f" Here B = {resamples} resamples of the {intervals.num_videos} test videos, bootstrap seed "
                   f"{bootstrap_seed}; \"within tolerance\", \"≈\" and \"no gain\" use {tolerance:g} × the teacher's "
                   "GAP as the margin x."))
    if measured:
        blocks.append(("table", _claims_table(measured, several)))
    else:
        blocks.append(("p", "No claim could be measured on this run."))
    if unmeasured:
        blocks.append(("p", "**Not measured in this run** (its grid lacks the models these claims compare; what "
                            "would measure each is in brackets):"))
        blocks.append(("ul", [f"`{c.key}`" + (f" ({c.family})" if several else "") + f" — {c.claim}: {c.evidence} "
                              f"(needs {CLAIM_NEEDS.get(c.key, 'the models it compares')})" for c in unmeasured]))
    if intervals.missing:
        blocks.append(("p", f"{len(intervals.missing)} model(s) have no per-video predictions (evaluated before "
                            "they were written), so comparisons with them have no interval and are inconclusive."))
    if notes:
        blocks.append(("h2", "Discussion"))
        blocks += [("p", note) for note in notes]

    tables: list[Table] = []
    for grid in grids:
        suffix = f", {FAMILY_NAMES.get(grid.family, grid.family)}" if several else ""
        tables += [table1(grid, "gap", suffix), table1(grid, "map", suffix)]
    bounds_tab = bounds_table(bounds, main)
    tables += [bounds_tab] if bounds_tab is not None else []
    for grid in grids:
        control_tab = controls_table(grid, intervals)
        tables += [control_tab] if control_tab is not None else []
    tables += [table2(main, intermediate_k), table3(main, fraction_k), table4(main, recommended)]
    blocks.append(("h2", "Tables"))
    blocks += [("table", t) for t in tables]

    figures: list[Figure] = []
    ks = main.ks()
    figure_k = PAPER_K if PAPER_K in ks else (max(ks) if ks else 0)
    drawn_k = gap_vs_k_figure(main, intervals, folder / "gap_vs_k.png")
    figures.append(Figure("GAP vs k", "gap_vs_k.png",
                          "Test GAP@20 of every full-data baseline (dashed) and teacher–student variant (solid) by "
                          f"k (here: {', '.join(drawn_k['series']) or 'none'}), mean over seeds" + (", with the 95 % paired-bootstrap interval of the mean as bars; "
                                                  "the teacher (all frames) is the dotted line, its interval the band. "
                                                  "Overlapping bars do not mean no difference: the claims use paired "
                                                  "differences on the same videos."
                                                  if drawn_k["intervals"] else "; the teacher is the dotted line.")))
    curves = learning_curves_figure(main, histories, folder / "learning_curves.png")
    if curves:
        figures.append(Figure("Learning curves: validation GAP per epoch of every model", "learning_curves.png",
                              "One line per trained model (every seed; a configuration's seeds share a colour): "
                              + "; ".join(f"{LEARNING_PANEL_TITLES[panel]}: {len(keys)} model(s)"
                                          for panel, keys in curves.items())
                              + ". Baselines dashed. The best epoch by validation GAP is the model kept."))
    fronts = pareto_figure(main, folder / "pareto.png")
    if fronts is not None:
        figures.append(Figure("Pareto plot: GAP vs GFLOPs and vs latency", "pareto.png",
                              "Every full-data teacher, baseline and student (own-seed benchmark); the front (no model "
                              "both cheaper and better), by GFLOPs: "
                              + ", ".join(f"{n} ({g:.4f})" for n, _, g in fronts["gflops"])
                              + "; by latency: " + ", ".join(f"{n} ({g:.4f})" for n, _, g in fronts["latency_ms_p50"])))
    drawn = figure2(main, histories, folder / "figure2_val_gap_per_epoch.png", figure_k)
    if drawn:
        parallel = any(main.student("parallel", loss, figure_k) for loss in drawn)
        figures.append(Figure("Figure 2: validation GAP per epoch, serial" + (" vs parallel" if parallel else ""),
                              "figure2_val_gap_per_epoch.png",
                              f"k={figure_k}, one panel per loss drawn ({', '.join(drawn)}); dark = teacher, light = "
                              "student; solid = serial (the teacher trained alone first)"
                              + ("; dashed = parallel (teacher and student trained together)." if parallel
                                 else ". This run has no parallel student at this k.")))
    tsne: dict[str, Any] | None = None
    student_for_tsne = main.student("serial", "rep_pred_ce", figure_k) or next(iter(main.students()), None)
    if teacher is not None and student_for_tsne is not None and all(
            _encodings_file(c) is not None for c in (teacher, student_for_tsne)):
        tsne = figure3(teacher, student_for_tsne, folder / "figure3_tsne.png")
        tsne["student"] = student_for_tsne.first().get("model_key")
        figures.append(Figure("Figure 3: t-SNE of teacher and student encodings", "figure3_tsne.png",
                              f"Teacher `{teacher.first().get('model_key')}` (dark, o) and student `{tsne['student']}` "
                              f"(light, ^) on {tsne['videos']} test videos of the 5 most frequent classes "
                              f"({', '.join(tsne['class_labels'])}). Mean cosine of the same video's teacher and student encodings "
                              f"{tsne['mean_cosine']:.3f}; teacher-student distance / teacher-teacher distance in the "
                              f"plane {tsne['pair_distance_ratio']:.3f} (0 = overlapping)."))
    blocks.append(("h2", "Figures"))
    blocks += [("figure", f) for f in figures]
    missing = []
    if not curves:
        missing.append("Learning curves: not drawn — no per-epoch validation history in MLflow for this run.")
    if not drawn:
        missing.append("Figure 2: not drawn — no per-epoch validation history of a student in MLflow for this run.")
    if fronts is None:
        missing.append("Pareto plot and Table 4: no benchmark figures in this run.")
    if tsne is None:
        missing.append("Figure 3: not drawn — no teacher and student evaluations with encodings.")
    rules = [
        "GAP is GAP@20 and mAP the mean per-class AP on the test split. Configurations run with several seeds "
        "show mean ± sample standard deviation (n = seeds); claims use the seed means and intervals that resample "
        "videos and seeds.",
        f"The recommended student is the smallest-k student whose mean GAP ≥ teacher GAP × (1 − {tolerance:g}) "
        "(a point-estimate choice, not a claim).",
    ]
    noise = seed_noise(main)
    blocks.append(("h2", "Notes"))
    blocks.append(("ul", missing + rules + ([noise] if noise else [])))
    blocks.append(("h2", "Appendix"))
    appendix = [configurations_table(g, intervals) for g in grids] + _parts_tables(measured) + [all_models_table(rows)]
    classes_tab = per_class_table(teacher, student_for_tsne)
    appendix += [classes_tab] if classes_tab is not None else []
    blocks += [("table", t) for t in appendix]

    markdown = render_markdown(blocks)
    page = render_html(blocks, folder, "fewframes report")
    summary = {
        "tolerance": tolerance,
        "verdict_rule": VERDICT_RULE,
        "bootstrap": {"resamples": resamples, "seed": bootstrap_seed, "videos": intervals.num_videos,
                      "level": 0.95, "models_without_predictions": intervals.missing},
        "run": run_info,
        "machine": machine,
        "claims": [c.as_dict() for c in claims],
        "recommended": recommended,
        "tables": [t.as_dict() for t in tables + appendix],
        "figures": [f.file for f in figures],
        "learning_curves": curves,
        "figure2_losses": drawn,
        "tsne": tsne,
        "pareto_front": fronts,
        "seed_noise": noise,
        "bounds": bounds,
        "configurations": [_configuration(c, intervals) for g in grids for c in g.configs.values()],
    }
    paths = {}
    for name, text in (("report.md", markdown), ("report.html", page),
                       (SUMMARY_FILE, json.dumps(summary, indent=2, default=str))):
        paths[name] = folder / name
        fsio.write_bytes_atomic(paths[name], text.encode())
    return Report(folder, paths["report.md"], paths["report.html"], summary, [folder / f.file for f in figures])


def _configuration(config: Any, intervals: Intervals) -> dict[str, Any]:
    interval = intervals.of(config)
    return {
        "name": config.name, "role": config.role, "family": config.family, "control": config.control or None,
        "k": config.k, "frame_selection": config.frame_selection, "loss": config.loss, "mode": config.mode,
        "matching": config.matching, "train_fraction": config.train_fraction, "seeds": config.seeds,
        "model_keys": config.model_keys, "gap": config.values("gap"), "map": config.values("map"),
        "gap_mean": config.mean("gap"), "gap_std": config.spread("gap"), "map_mean": config.mean("map"),
        "interval": None if interval is None else {"low": interval.low, "high": interval.high,
                                                   "level": interval.level},
    }
