"""``fewframes report``: rebuild the report of a finished local run folder (``fewframes run --out RUN_DIR``)
without retraining: the evaluations and the benchmark under ``RUN_DIR/kfp``, the training histories in the
run's MLflow store, the run's parameters and wall time in ``RUN_DIR/run.json`` (and, if present, the
information bounds in ``RUN_DIR/bounds.json``; else they are computed from the generator for synthetic data,
as the pipeline's report step does). It goes through ``fewframes.report.report_of_run`` like the step, so
report.md comes out the same (the wall time, known only after the run, goes to summary.json).

So the committed report (``docs/results/``) can be regenerated after the report code changes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewframes.errors import PipelineError


def _pipeline_root(run_dir: Path) -> Path:
    """The kfp.local output folder of the run (the newest one if the folder holds several)."""
    roots = sorted(
        (p for p in (run_dir / "kfp").glob("*") if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    if not roots:
        raise PipelineError(f"--run {run_dir}: no kfp/<pipeline run> folder (not a `fewframes run --out` folder?)")
    return roots[-1]


@dataclass
class RunFolder:
    """What a ``fewframes run --out`` folder gives its report."""

    evaluation_dirs: list[str]  # one per evaluated model, under the run's kfp.local output folder
    benchmark_dir: str | None
    summary: dict[str, Any]  # RUN_DIR/run.json; {} for a run that did not finish
    tracking_uri: str
    bounds: dict[str, Any] | None  # RUN_DIR/bounds.json, if present

    @property
    def incomplete(self) -> bool:  # fewframes run writes run.json last, when every step finished
        return not self.summary


def read_run_folder(run_dir: str) -> RunFolder:
    """The report's inputs in ``run_dir``, with one-line errors for a folder that holds none."""
    from fewframes.components.steps import BENCHMARK_FILE, ROW_FILE
    from fewframes.report import BOUNDS_FILE
    from fewframes.runs import check_tracking, local_tracking_uri

    folder = Path(run_dir)
    if not folder.is_dir():
        raise PipelineError(f"--run {run_dir}: no such folder")
    root = _pipeline_root(folder)
    evaluation_dirs = sorted(str(p.parent) for p in root.glob(f"**/evaluation/{ROW_FILE}"))
    if not evaluation_dirs:
        unfinished = "" if (folder / "run.json").is_file() else f" ({incomplete_note(run_dir)})"
        raise PipelineError(f"--run {run_dir}: no evaluated models under {root}{unfinished}")
    benchmarks = sorted(root.glob(f"**/{BENCHMARK_FILE}"))
    summary = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    uri = summary.get("tracking_uri")
    if uri is None:
        uri = local_tracking_uri(folder) if (folder / "mlflow.db").is_file() else ""
    check_tracking(uri)
    bounds_path = folder / BOUNDS_FILE
    return RunFolder(evaluation_dirs=evaluation_dirs, benchmark_dir=str(benchmarks[-1].parent) if benchmarks else None,
                     summary=summary, tracking_uri=uri,
                     bounds=json.loads(bounds_path.read_text()) if bounds_path.is_file() else None)


def rebuild_report(run_dir: str, out: str, tolerance: float | None = None, notes_file: str | None = None) -> Any:
    """Build the report of ``run_dir`` into ``out`` (``fewframes.report.report_of_run``, as the pipeline's
    report step does); returns the ``fewframes.report.Report``."""
    from fewframes.report import report_of_run, run_description

    notes = []
    if notes_file:  # read first: a missing file is a one-line error before any work
        if not Path(notes_file).is_file():
            raise PipelineError(f"--notes {notes_file}: no such file")
        text = Path(notes_file).read_text()
        notes = [" ".join(part.split()) for part in text.split("\n\n") if part.strip()]
    run = read_run_folder(run_dir)
    summary = run.summary
    if run.incomplete:
        notes = [incomplete_note(run_dir)] + notes
    arguments = summary.get("arguments", {})
    run_info = run_description(summary.get("pipeline", ""), summary.get("preset", ""), summary.get("run_id", ""),
                               arguments) if summary else {}
    if tolerance is None:
        tolerance = float(arguments.get("tolerance", 0.01))
    report = report_of_run(run.evaluation_dirs, run.benchmark_dir, out, tracking_uri=run.tracking_uri,
                           run_info=run_info, tolerance=tolerance, notes=notes, bounds=run.bounds)
    if summary.get("seconds") is not None or run.incomplete:  # known only after the run: summary.json, not report.md
        if summary.get("seconds") is not None:
            report.summary["run"]["seconds"] = summary["seconds"]
        report.summary["run"]["incomplete"] = run.incomplete
        from fewframes.fsio import write_bytes_atomic

        write_bytes_atomic(report.folder / "summary.json", json.dumps(report.summary, indent=2, default=str).encode())
    return report


def incomplete_note(run_dir: str) -> str:
    """The paragraph that marks the report of a run that did not finish (no run.json)."""
    return (
        f"INCOMPLETE RUN: {run_dir} has no run.json, so `fewframes run` did not finish (interrupted, failed, or "
        f"still running); this report covers only the models evaluated so far. `fewframes run --resume {run_dir}` "
        "goes on with it."
    )


def _cmd_report(args: argparse.Namespace) -> int:
    report = rebuild_report(args.run, args.out, args.tolerance, args.notes)
    print(f"report of {args.run}: {report.markdown} (HTML: {report.html})")
    if report.summary["run"].get("incomplete"):
        print(f"  {incomplete_note(args.run)}")
    for claim in report.summary["claims"]:
        print(f"  {claim['verdict']:<14} {claim['key']}: {claim['claim']}")
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
