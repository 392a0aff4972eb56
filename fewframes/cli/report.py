"""``fewframes report``: rebuild the report of a finished local run folder (``fewframes run --out RUN_DIR``)
without retraining: the evaluations and the benchmark under ``RUN_DIR/kfp``, the training histories in the
run's MLflow store, the run's parameters and wall time in ``RUN_DIR/run.json``.

So the committed report (``docs/results/``) can be regenerated after the report code changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fewframes.errors import PipelineError


def _pipeline_root(run_dir: Path) -> Path:
    """The kfp.local output folder of the run (the newest one if the folder holds several)."""
    roots = sorted((p for p in (run_dir / "kfp").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not roots:
        raise PipelineError(f"--run {run_dir}: no kfp/<pipeline run> folder (not a `fewframes run --out` folder?)")
    return roots[-1]


def run_command(summary: dict[str, Any]) -> str:
    """The ``fewframes run`` command that made the run: pipeline, preset, folder, and every parameter that
    differs from the pipeline's defaults for that preset."""
    from fewframes.pipelines.dag import parameter_defaults

    pipeline, preset = summary.get("pipeline", "distill"), summary.get("preset", "demo")
    command = f"fewframes run --pipeline {pipeline} --preset {preset} --out {summary.get('out', 'RUN_DIR')}"
    defaults = parameter_defaults(pipeline, preset)
    local = ("tracking_uri", "parent_run_id", "run_name", "experiment")
    for name, value in summary.get("arguments", {}).items():
        if name in defaults and name not in local and value != defaults[name]:
            shown = ",".join(str(v) for v in value) if isinstance(value, list) else value
            command += f" --param {name}={shown}"
    return command


def preset_sizes(preset_name: str) -> str:
    from fewframes.config import get_preset

    preset = get_preset(preset_name)
    data, train = preset.data, preset.train
    return (f"{data.videos} synthetic videos (seed {data.seed}), {data.classes} classes, split "
            f"{1 - data.validation_fraction - data.test_fraction:.0%}/{data.validation_fraction:.0%}/"
            f"{data.test_fraction:.0%} train/validation/test; LSTMs {preset.num_layers} x {preset.hidden_size} "
            f"cells, teacher blocks of {preset.teacher_block_length} frames; {train.epochs} epochs, batch "
            f"{train.batch_size}, learning rate {train.learning_rate:g} (x{train.lr_decay:g} per epoch)")


def rebuild_report(run_dir: str, out: str, tolerance: float | None = None, notes_file: str | None = None) -> Any:
    """Build the report of ``run_dir`` into ``out``; returns the ``fewframes.report.Report``."""
    from fewframes.components.steps import BENCHMARK_FILE, ROW_FILE, benchmark_machine, report_rows
    from fewframes.report import build_report, grid_ks, training_histories
    from fewframes.runs import check_tracking, local_tracking_uri

    notes = []
    if notes_file:  # read first: a missing file is a one-line error before any work
        if not Path(notes_file).is_file():
            raise PipelineError(f"--notes {notes_file}: no such file")
        text = Path(notes_file).read_text()
        notes = [" ".join(part.split()) for part in text.split("\n\n") if part.strip()]
    folder = Path(run_dir)
    if not folder.is_dir():
        raise PipelineError(f"--run {run_dir}: no such folder")
    root = _pipeline_root(folder)
    evaluation_dirs = sorted(str(p.parent) for p in root.glob(f"**/evaluation/{ROW_FILE}"))
    if not evaluation_dirs:
        raise PipelineError(f"--run {run_dir}: no evaluated models under {root}")
    benchmarks = sorted(root.glob(f"**/{BENCHMARK_FILE}"))
    benchmark_dir = str(benchmarks[-1].parent) if benchmarks else None

    summary: dict[str, Any] = {}
    if (folder / "run.json").is_file():
        summary = json.loads((folder / "run.json").read_text())
    uri = summary.get("tracking_uri")
    if uri is None:
        uri = local_tracking_uri(folder) if (folder / "mlflow.db").is_file() else ""
    check_tracking(uri)
    arguments = summary.get("arguments", {})
    run_info: dict[str, Any] = {key: summary[key] for key in ("pipeline", "preset", "run_id", "seconds") if key in summary}
    if summary:
        run_info["arguments"] = arguments
        run_info["command"] = run_command({**summary, "out": str(folder)})
    if summary.get("preset"):
        run_info["preset_sizes"] = preset_sizes(summary["preset"])
    if tolerance is None:
        tolerance = float(arguments.get("tolerance", 0.01))
    rows = report_rows(evaluation_dirs, benchmark_dir)
    intermediate_k, fraction_k = grid_ks(arguments)
    return build_report(
        rows, out, tolerance=tolerance, histories=training_histories(uri, rows),
        machine=benchmark_machine(benchmark_dir), run_info=run_info,
        intermediate_k=intermediate_k, fraction_k=fraction_k, notes=notes,
    )


def _cmd_report(args: argparse.Namespace) -> int:
    report = rebuild_report(args.run, args.out, args.tolerance, args.notes)
    print(f"report of {args.run}: {report.markdown} (HTML: {report.html})")
    for claim in report.summary["claims"]:
        print(f"  {claim['verdict']:<14} {claim['claim']}")
    recommended = report.summary["recommended"]
    print(f"  recommended student: {recommended['model_key'] if recommended else 'none within tolerance'}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="rebuild the paper-style report of a finished local run folder")
    parser.add_argument("--run", required=True, help="the run folder (`fewframes run --out RUN_DIR`)")
    parser.add_argument("--out", required=True, help="folder for report.md, report.html, figures, summary.json")
    parser.add_argument("--tolerance", type=float, help="relative GAP tolerance vs the teacher (default: the run's)")
    parser.add_argument("--notes", help="a text file whose paragraphs become the report's Discussion section")
    parser.set_defaults(handler=_cmd_report)
