"""The report's figures (PNG): GAP vs k with intervals, learning curves of every model, the paper's Figure 2
(serial vs parallel validation GAP per epoch) and Figure 3 (t-SNE of encodings), and the Pareto plots.

matplotlib and scikit-learn are imported inside the functions that draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fewframes import fsio
from fewframes.config import BASELINE_SELECTIONS, DISTILL_LOSSES
from fewframes.report.claims import cost
from fewframes.report.configs import BASELINE_NAMES, LOSS_LETTERS, LOSS_NAMES, Config, Grid
from fewframes.report.intervals import Intervals

Histories = dict[str, dict[str, list[float]]]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    plt = _pyplot()
    try:
        with fsio.staged_output_file(path) as temp:  # the temp name has no .png suffix: say the format
            figure.savefig(temp, dpi=110, format="png")
    finally:
        plt.close(figure)


def figure2(grid: Grid, histories: Histories, path: Path, k: int) -> list[str]:
    """Validation GAP per epoch, serial vs parallel teacher and student, one panel per loss. Returns the
    losses drawn (empty: nothing to draw, no file written)."""
    teacher = grid.teacher()
    teacher_history = histories.get(teacher.first()["model_key"], {}) if teacher else {}
    panels = []
    for loss in DISTILL_LOSSES:
        serial, parallel = grid.student("serial", loss, k), grid.student("parallel", loss, k)
        curves = []
        if teacher_history.get("val_gap"):
            curves.append(("serial teacher", teacher_history["val_gap"], "#1f3b73", "-"))
        if serial is not None and histories.get(serial.first()["model_key"], {}).get("val_gap"):
            curves.append(("serial student", histories[serial.first()["model_key"]]["val_gap"], "#8fb3e8", "-"))
        if parallel is not None:
            history = histories.get(parallel.first()["model_key"], {})
            if history.get("teacher_val_gap"):
                curves.append(("parallel teacher", history["teacher_val_gap"], "#7a1f1f", "--"))
            if history.get("val_gap"):
                curves.append(("parallel student", history["val_gap"], "#f0a3a3", "--"))
        if any(name.endswith("student") for name, *_ in curves):
            panels.append((loss, curves))
    if not panels:
        return []
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (loss, curves) in zip(axes[0], panels):
        for name, values, colour, style in curves:
            ax.plot(range(1, len(values) + 1), values, style, color=colour, marker="o", label=name)
        ax.set_title(f"{LOSS_LETTERS[loss]} {LOSS_NAMES[loss]}, k={k}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation GAP")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    return [loss for loss, _ in panels]


def _encodings_file(config: Config) -> Path | None:
    """The sampled encodings of a configuration's evaluation (None when it kept none)."""
    from fewframes.evaluation import ENCODINGS_FILE

    folder = config.first().get("evaluation_dir")
    path = Path(folder) / ENCODINGS_FILE if folder else None
    return path if path is not None and path.is_file() else None


def figure3(teacher: Config, student: Config, path: Path) -> dict[str, Any]:
    """The t-SNE of teacher and student encodings of the same test videos (5 most frequent classes); the legend
    names the classes when the store had a vocabulary."""
    from fewframes.evaluation import class_label, encoding_tsne, plot_encoding_tsne

    _pyplot()
    embedding = encoding_tsne(_encodings_file(teacher), _encodings_file(student), num_classes=5)
    names = class_names_of(teacher)
    figure = plot_encoding_tsne(
        embedding, title=f"Teacher (dark, o) vs {student.name} k={student.k} (light, ^)", class_names=names
    )
    _save(figure, path)
    return {"videos": len(embedding.video_ids), "classes": embedding.classes,
            "class_labels": [class_label(c, names) for c in embedding.classes],
            "pair_distance_ratio": embedding.pair_distance_ratio, "mean_cosine": embedding.mean_cosine}


def class_names_of(config: Config) -> list[str] | None:
    """The class names a configuration's evaluation recorded (the store's vocabulary), or None."""
    from fewframes.evaluation import class_names_of_evaluation

    folder = config.first().get("evaluation_dir")
    return class_names_of_evaluation(folder) if folder else None


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and GAP (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, gap in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or gap > front[-1][1]:
            front.append((cost, gap))
    return front


def pareto_figure(grid: Grid, path: Path) -> dict[str, list[tuple[str, float, float]]] | None:
    """GAP vs GFLOPs and GAP vs latency of every full-data, final-matching model; the front of each.
    None (nothing drawn) when no model has benchmark figures."""
    models = [c for c in grid.configs.values() if c.train_fraction >= 1.0 and c.matching in ("", "final")
              and c.role in ("teacher", "baseline", "student") and c.mean("gap") is not None]
    if not any(cost(c, "gflops") and cost(c, "latency_ms_p50") for c in models):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    fronts: dict[str, list[tuple[str, float, float]]] = {}
    for ax, metric, label in ((axes[0], "gflops", "GFLOPs per video"), (axes[1], "latency_ms_p50", "latency p50 (ms, batch 1)")):
        points = [(c, cost(c, metric), c.mean("gap")) for c in models if cost(c, metric)]
        groups = {"teacher": ("black", "*"), "baseline": ("#888888", "s"), "student": ("#1f77b4", "o")}
        for role, (colour, marker) in groups.items():
            chosen = [(x, y) for c, x, y in points if c.role == role]
            if chosen:
                ax.scatter([p[0] for p in chosen], [p[1] for p in chosen], c=colour, marker=marker, s=28,
                           label="Teacher-Skyline" if role == "teacher" else f"{role}s", alpha=0.8)
        front = pareto_front([(x, y) for _, x, y in points])
        ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="#d62728", label="Pareto front")
        names = {(x, y): c for c, x, y in points}
        fronts[metric] = [(f"{names[p].name} k={names[p].k}" if names[p].k else names[p].name, p[0], p[1]) for p in front]
        for x, y in front:
            config = names[(x, y)]
            ax.annotate(f"k={config.k}" if config.k else "teacher", (x, y), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test GAP@20")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_title("GAP vs GFLOPs")
    axes[1].set_title("GAP vs latency")
    figure.tight_layout()
    _save(figure, path)
    return fronts




def gap_vs_k_figure(grid: Grid, intervals: Intervals, path: Path) -> dict[str, Any]:
    """Test GAP of every full-data baseline and student by k, with 95 % interval bars; the teacher as a line
    with its interval as a band. Returns what was drawn (series names, whether intervals were drawn)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    ks = grid.ks()
    series = [(BASELINE_NAMES[s], [grid.baseline(s, k) for k in ks], "--") for s in BASELINE_SELECTIONS]
    series += [(grid.student(m, loss, next(k for k in ks if grid.student(m, loss, k))).name,
                [grid.student(m, loss, k) for k in ks], "-") for m, loss in grid.variants()]
    palette = plt.get_cmap("tab20")  # up to 12 series: tab10's colours would repeat
    drawn, with_bars = [], False
    for index, (name, configs, style) in enumerate(series):
        points = [(k, c) for k, c in zip(ks, configs) if c is not None and c.mean("gap") is not None]
        if not points:
            continue
        drawn.append(name)
        xs = [k + 0.15 * (index - len(series) / 2) for k, _ in points]  # spread the bars so they don't overlap
        ys = [c.mean("gap") for _, c in points]
        found = [intervals.of(c) for _, c in points]
        if all(i is not None for i in found):
            with_bars = True
            errors = [[y - i.low for y, i in zip(ys, found)], [i.high - y for y, i in zip(ys, found)]]
            axes.errorbar(xs, ys, yerr=errors, fmt=style, marker="o", markersize=3, capsize=2, label=name,
                          color=palette(index % 20), linewidth=1)
        else:
            axes.plot(xs, ys, style, marker="o", markersize=3, label=name, color=palette(index % 20))
    teacher = grid.teacher()
    if teacher is not None and teacher.mean("gap") is not None:
        axes.axhline(teacher.mean("gap"), color="black", linestyle=":", label="Teacher-Skyline (all frames)")
        band = intervals.of(teacher)
        if band is not None:
            axes.axhspan(band.low, band.high, color="black", alpha=0.08)
    axes.set_xlabel("k (frames read)")
    axes.set_ylabel("test GAP@20")
    axes.set_title("GAP vs k (mean over seeds, 95 % interval)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    _save(figure, path)
    return {"series": drawn, "intervals": with_bars}


LEARNING_PANELS = (("teacher", "teachers and baselines"), ("student", "students"), ("control", "controls"))


def learning_curves_figure(grid: Grid, histories: Histories, path: Path) -> dict[str, list[str]]:
    """Validation GAP per epoch of every trained model (every seed), one panel per kind of model; a
    configuration's seeds share a colour. Returns the model keys drawn per panel (empty: nothing drawn)."""
    panels: dict[str, list[tuple[Config, str, list[float]]]] = {}
    for config in sorted(grid.configs.values(), key=lambda c: (c.k or 0, c.label)):
        panel = "teacher" if config.role in ("teacher", "baseline") else config.role
        for row in config.rows:
            values = histories.get(str(row.get("model_key")), {}).get("val_gap")
            if values:
                panels.setdefault(panel, []).append((config, str(row["model_key"]), values))
    if not panels:
        return {}
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    chosen = [(key, title) for key, title in LEARNING_PANELS if key in panels]
    figure, axes = plt.subplots(1, len(chosen), figsize=(5.2 * len(chosen), 4.4), sharey=True, squeeze=False)
    palette = plt.get_cmap("tab20")
    drawn: dict[str, list[str]] = {}
    for ax, (key, title) in zip(axes[0], chosen):
        colours: dict[str, Any] = {}
        for config, model_key, values in panels[key]:
            first = config.label not in colours
            colours.setdefault(config.label, palette(len(colours) % 20))
            style = "-" if config.role != "baseline" else "--"
            ax.plot(range(1, len(values) + 1), values, style, color=colours[config.label], linewidth=1,
                    label=config.label if first else None)
            drawn.setdefault(key, []).append(model_key)
        ax.set_title(f"Validation GAP per epoch: {title}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    axes[0][0].set_ylabel("validation GAP")
    figure.tight_layout()
    _save(figure, path)
    return drawn


