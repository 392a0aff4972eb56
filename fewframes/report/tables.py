"""The report's tables: the paper's Tables 1-4, the controls, the information bounds of the benchmark, every
configuration with its interval, and every evaluated model."""

from __future__ import annotations

from typing import Any

from fewframes.config import BASELINE_SELECTIONS, DISTILL_LOSSES, TRAINING_MODES
from fewframes.report.claims import cost
from fewframes.report.configs import (
    BASELINE_NAMES,
    LOSS_LETTERS,
    LOSS_NAMES,
    TEACHER_ON_K,
    WARM_START,
    Config,
    Grid,
    fmt,
    fmt_config,
    fmt_cost,
    fmt_interval,
)
from fewframes.report.intervals import Intervals
from fewframes.report.render import Table


def table1(grid: Grid, metric: str, title_suffix: str = "") -> Table:
    """Teacher-Skyline, every baseline and every teacher-student variant, one column per k."""
    ks = grid.ks()
    label = "GAP" if metric == "gap" else "mAP"
    rows: list[list[str]] = []
    teacher = grid.teacher()
    if teacher is not None:
        rows.append([teacher.name] + [fmt_config(teacher, metric)] * len(ks))
    for selection in BASELINE_SELECTIONS:
        configs = [grid.baseline(selection, k) for k in ks]
        if any(configs):
            rows.append([BASELINE_NAMES[selection]] + [fmt_config(c, metric) for c in configs])
    for mode, loss in grid.variants():
        configs = [grid.student(mode, loss, k) for k in ks]
        rows.append([configs[[c is not None for c in configs].index(True)].name] + [fmt_config(c, metric) for c in configs])
    return Table(f"Table 1 ({label}){title_suffix}: test {label} of every model by k", ["model"] + [f"k={k}" for k in ks],
                 rows, "Teacher-Skyline reads all frames (the same value in every column). Students use final "
                 "matching and all the training data. Cells: mean ± sample standard deviation over seeds (n).")


def table2(grid: Grid, k: int) -> Table:
    rows = []
    for mode in TRAINING_MODES:
        for loss in DISTILL_LOSSES:
            final, inter = grid.student(mode, loss, k), grid.student(mode, loss, k, "intermediate")
            if final is None and inter is None:
                continue
            delta = None if final is None or inter is None else inter.mean("gap") - final.mean("gap")
            rows.append([f"{mode.capitalize()} {LOSS_LETTERS[loss]}, {LOSS_NAMES[loss]}",
                         fmt_config(final, "gap"), fmt_config(inter, "gap"), fmt(delta),
                         fmt_config(final, "map"), fmt_config(inter, "map")])
    return Table(f"Table 2: final vs intermediate matching at k={k}",
                 ["variant", "GAP final", "GAP intermediate", "Δ GAP (inter − final)", "mAP final", "mAP intermediate"],
                 rows)


def table3(grid: Grid, k: int) -> Table:
    rows = []
    for fraction in grid.fractions(k):
        serial, uniform = grid.student("serial", "rep_pred_ce", k, fraction=fraction), grid.baseline("uniform", k, fraction)
        teacher = grid.teacher(fraction)
        margin = None if serial is None or uniform is None else serial.mean("gap") - uniform.mean("gap")
        rows.append([f"{fraction:.0%}", fmt_config(teacher, "gap"), fmt_config(serial, "gap"), fmt_config(uniform, "gap"),
                     fmt(margin), fmt_config(serial, "map"), fmt_config(uniform, "map")])
    return Table(f"Table 3: Serial (c) vs Uniform-k at k={k} on part of the training data",
                 ["training data", "GAP teacher (same data)", "GAP Serial (c)", "GAP Uniform-k", "margin",
                  "mAP Serial (c)", "mAP Uniform-k"], rows,
                 "A student on part of the data distils from the teacher trained on the same part where the run "
                 "has one (its GAP in the second column; '–': the run's students used the full-data teacher).")


def cost_model(grid: Grid, k: int, preferred: dict[str, Any] | None = None) -> Config | None:
    """The k-frame model whose benchmark a cost row shows: the recommended student at its k, else Serial (c),
    else Uniform-k, else any k-frame model (same architecture, same cost)."""
    if preferred is not None and preferred.get("k") == k:
        chosen = grid.student(preferred.get("mode", ""), preferred.get("loss", ""), k)
        if chosen is not None:
            return chosen
    return grid.student("serial", "rep_pred_ce", k) or grid.baseline("uniform", k) or next(
        (c for c in grid.configs.values() if c.k == k and c.role != "teacher" and cost(c, "gflops") is not None), None)


def table4(grid: Grid, recommended: dict[str, Any] | None = None) -> Table:
    teacher = grid.teacher()
    models: list[tuple[str, Config | None]] = [("Teacher (all frames)", teacher)]
    for k in grid.ks():
        models.append((f"k={k}", cost_model(grid, k, recommended)))
    t_flops, t_e2e = cost(teacher, "gflops"), cost(teacher, "e2e_throughput_videos_s")
    rows = []
    for name, config in models:
        flops, e2e = cost(config, "gflops"), cost(config, "e2e_throughput_videos_s")
        rows.append([
            name, f"`{config.first().get('model_key', '')}`" if config is not None else "–",
            fmt_cost(cost(config, "num_parameters")), fmt_cost(flops),
            "–" if flops is None or not t_flops else f"{flops / t_flops:.1%}",
            fmt_cost(cost(config, "latency_ms_p50")), fmt_cost(cost(config, "throughput_videos_s")),
            fmt_cost(e2e), "–" if not e2e else f"{1000.0 / e2e:.2f}",
            "–" if not e2e or not t_e2e else f"{e2e / t_e2e:.1f}x",
        ])
    return Table("Table 4: cost per video (benchmark step, this run's machine)",
                 ["model", "benchmarked model", "params", "GFLOPs/video", "FLOPs vs teacher",
                  "latency p50 (ms, batch 1)", "throughput (videos/s, model only)",
                  "throughput (videos/s, store → scores)", "evaluation time per 1,000 videos (s)",
                  "speed-up vs teacher"], rows,
                 "Each row is the benchmark of the model named in its second column (the recommended student at "
                 "its k, else Serial (c), else Uniform-k: k-frame models share one architecture). FLOPs count 2 per "
                 "multiply-add (the paper's GFLOPs count multiply-adds: half of ours). Store → scores reads each "
                 "model's frames from the frame store on disk: a k-frame model reads only its k frames.")


def _difference(intervals: Intervals, a: Config | None, b: Config | None) -> str:
    interval = intervals.difference(a, b)
    if interval is None:
        return "–" if a is None or b is None or a.mean("gap") is None or b.mean("gap") is None else \
            f"{a.mean('gap') - b.mean('gap'):+.4f} (no interval)"
    return f"{interval.estimate:+.4f} {fmt_interval(interval.low, interval.high)}"


def controls_table(grid: Grid, intervals: Intervals) -> Table | None:
    """Per k: the teacher on all frames and on the student's k frames, the warm-start control, Serial (c) and
    Uniform-k; the differences the sanity claims rest on, with their 95 % intervals. None without controls."""
    ks = [k for k in grid.ks() if grid.control(WARM_START, k) or grid.control(TEACHER_ON_K, k)]
    if not ks:
        return None
    teacher = grid.teacher()
    rows = []
    for k in ks:
        on_k, warm = grid.control(TEACHER_ON_K, k), grid.control(WARM_START, k)
        serial, uniform = grid.student("serial", "rep_pred_ce", k), grid.baseline("uniform", k)
        rows.append([f"k={k}", fmt_config(teacher, "gap"), fmt_config(on_k, "gap"), fmt_config(warm, "gap"),
                     fmt_config(serial, "gap"), fmt_config(uniform, "gap"), _difference(intervals, teacher, on_k),
                     _difference(intervals, serial, warm), _difference(intervals, warm, uniform)])
    return Table("Controls: what the teacher and a warm start give without distillation",
                 ["k", "Teacher (all frames)", "Teacher on k frames", "Warm-start control", "Serial (c)", "Uniform-k",
                  "Teacher − teacher on k", "Serial (c) − warm start", "Warm start − Uniform-k"], rows,
                 "Teacher on k frames: the trained teacher fed the student's k uniformly spaced frames, no training. "
                 "Warm-start control: the student architecture started from the teacher's classifier and trained with "
                 "L_CE only, same stopping rule. Differences: seed means, 95 % paired bootstrap interval.")


def bounds_table(bounds: dict[str, Any] | None, grid: Grid | None = None) -> Table | None:
    """The benchmark's information bounds (``fewframes.data.bounds.information_bounds``: ``rows`` of
    ``selection``, ``k``, ``label_coverage``, ``oracle_gap``, ``oracle_map``; ``prior_gap``) beside the GAP the
    run's teacher or baseline measured at the same frames. None when the run has none."""
    if not bounds or not bounds.get("rows"):
        return None
    rows = bounds["rows"]
    skip = ("selection", "frame_selection", "k")
    columns = [c for c in dict.fromkeys(key for row in rows for key in row) if c not in skip]
    body = []
    for row in rows:
        selection, k = row.get("selection", row.get("frame_selection", "")), row.get("k")
        if selection == "all":
            name, measured = "all frames (teacher)", grid.teacher() if grid is not None else None
        else:
            name = f"{BASELINE_NAMES.get(selection, selection)} k={k}"
            measured = grid.baseline(selection, int(k)) if grid is not None and k is not None else None
        body.append([name] + [fmt(row.get(c)) if isinstance(row.get(c), (int, float)) else str(row.get(c, "–"))
                              for c in columns] + [fmt_config(measured, "gap")])
    note = " ".join(str(part) for part in (
        bounds.get("what", bounds.get("description", "")),
        f"Label-prior GAP (a model that learned nothing from the frames): {bounds['prior_gap']:.4f}."
        if isinstance(bounds.get("prior_gap"), (int, float)) else "",
        f"{bounds['videos']} test videos." if bounds.get("videos") else "") if part)
    return Table("Information bounds of the benchmark (from the generator, before any training)",
                 ["frames"] + [c.replace("_", " ") for c in columns] + ["GAP measured (this run)"], body, note)


def configurations_table(grid: Grid, intervals: Intervals) -> Table:
    """Every configuration with its seeds' GAP and the 95 % interval of its mean GAP."""
    rows = []
    order = {"teacher": 0, "control": 1, "baseline": 2, "student": 3}
    for config in sorted(grid.configs.values(), key=lambda c: (order.get(c.role, 9), c.k or 0, c.label)):
        interval = intervals.of(config)
        rows.append([config.label, config.role, ", ".join(f"{g:.4f}" for g in config.values("gap")),
                     fmt_config(config, "gap"),
                     "–" if interval is None else fmt_interval(interval.low, interval.high).replace("+", "")])
    return Table("Every configuration: GAP of each seed and the 95 % interval of the mean",
                 ["configuration", "role", "GAP per seed", "mean ± sd (n)", "95 % interval"], rows,
                 f"Intervals: paired bootstrap over the {intervals.num_videos} test videos and the seeds "
                 f"({intervals.resamples} resamples, seed {intervals.seed}).")


ALL_MODELS_COLUMNS = (
    ("model_key", "model"), ("family", "family"), ("seed", "seed"), ("gap", "GAP"), ("map", "mAP"),
    ("hit_at_1", "Hit@1"), ("perr", "PERR"), ("num_parameters", "params"), ("gflops", "GFLOPs"),
    ("latency_ms_p50", "latency p50 (ms)"),
)


def all_models_table(rows: list[dict[str, Any]]) -> Table:
    """One row per evaluated model (every seed), teacher first, then by GAP."""
    ordered = sorted(rows, key=lambda r: (r["role"] != "teacher", -float(r.get("gap") or 0.0), str(r.get("model_key"))))
    body = []
    for row in ordered:
        cells = []
        for name, _ in ALL_MODELS_COLUMNS:
            value = row.get(name, "hrnn" if name == "family" else None)
            if isinstance(value, float):
                cells.append(fmt_cost(value) if name in ("num_parameters", "gflops", "latency_ms_p50") else fmt(value))
            else:
                cells.append("" if value is None else str(value))
        body.append(cells)
    return Table("All evaluated models", [label for _, label in ALL_MODELS_COLUMNS], body)


def per_class_table(teacher: Config | None, student: Config | None, top: int = 10) -> Table | None:
    """Test AP per class of the teacher and a student (their pipeline seed's evaluations) on the ``top`` classes
    with the most test videos, each class by number and name (the store's vocabulary; numbers only without one).
    None when the teacher's evaluation wrote no per-class file."""
    import numpy as np
    import pyarrow.parquet as pq

    from fewframes.evaluation import PER_CLASS_AP_FILE

    def per_class(config: Config | None) -> Any:
        folder = config.first().get("evaluation_dir") if config is not None else None
        path = f"{folder}/{PER_CLASS_AP_FILE}" if folder else None
        try:
            return pq.read_table(path).to_pydict() if path else None
        except OSError:
            return None

    ours, theirs = per_class(teacher), per_class(student)
    if ours is None or teacher is None:
        return None
    positives = np.asarray(ours["num_positives"], dtype=np.int64)
    names = ours.get("name") or [""] * len(positives)
    chosen = [int(c) for c in np.argsort(-positives, kind="stable")[:top] if positives[c] > 0]
    header = ["class", "name", "test videos", f"{teacher.name} AP"]
    header += [f"{student.label} AP"] if theirs is not None and student is not None else []
    rows = []
    for c in chosen:
        row = [str(c), names[c] or "—", str(int(positives[c])), fmt(ours["ap"][c])]
        rows.append(row + ([fmt(theirs["ap"][c])] if len(header) == 5 else []))
    note = ("Names from the vocabulary the store was ingested with." if any(names) else
            "The store was ingested without a vocabulary: classes by number only (`fewframes data ingest --vocabulary`).")
    return Table(f"Per-class test AP: the {len(rows)} classes with the most test videos", header, rows, note)
