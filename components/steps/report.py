"""report: the paper's tables, figures and claims for one pipeline run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fewframes.runs import TrackingContext, step_run

from .common import BENCHMARK_FILE, StepResult, _atomic_text, reports_errors
from .evaluate import read_row


def report_rows(evaluation_dirs: list[str], benchmark_dir: str | None) -> list[dict[str, Any]]:
    """Every evaluated model's row (with its ``evaluation_dir``), joined with its benchmark figures (and the
    end-to-end throughput); teacher first, then by GAP."""
    rows = [{**read_row(d), "evaluation_dir": str(d)} for d in evaluation_dirs]
    if benchmark_dir and (Path(benchmark_dir) / BENCHMARK_FILE).is_file():
        payload = json.loads((Path(benchmark_dir) / BENCHMARK_FILE).read_text())
        bench = {r["model_key"]: r for r in payload["rows"]}
        for row in rows:
            extra = bench.get(row["model_key"], {})
            row.update({k: v for k, v in extra.items() if k not in row and k != "raw"})
            raw = extra.get("raw") or {}
            if raw.get("e2e_throughput_videos_s") is not None:
                row.setdefault("e2e_throughput_videos_s", float(raw["e2e_throughput_videos_s"]))
    rows.sort(key=lambda r: (r["role"] != "teacher", -float(r.get("gap") or 0.0), str(r.get("model_key", ""))))
    return rows


def benchmark_machine(benchmark_dir: str | None) -> dict[str, Any]:
    """The machine the benchmark step measured on ({} when there is no benchmark)."""
    path = Path(benchmark_dir) / BENCHMARK_FILE if benchmark_dir else None
    return json.loads(path.read_text()).get("machine", {}) if path is not None and path.is_file() else {}


def _parent_run_info(tracking: TrackingContext) -> dict[str, Any]:
    """The pipeline run's parameters as its parent MLflow run recorded them ({} when not recorded)."""
    if not tracking.enabled or not tracking.parent_run_id:
        return {}
    import mlflow

    import ast

    run = mlflow.MlflowClient(tracking_uri=tracking.uri).get_run(tracking.parent_run_id)
    arguments: dict[str, Any] = {}
    for name, value in run.data.params.items():
        # Parameters were logged as str(value) (fewframes.runs._clean_params): literal_eval reads them back,
        # quotes, True/False and all; anything else (a plain string such as a path) stays as it is.
        try:
            arguments[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            arguments[name] = value
    from fewframes.report import run_description

    return run_description(tracking.pipeline, str(arguments.get("preset", "")), tracking.pipeline_run_id, arguments)


@reports_errors("report")
def report_step(
    evaluation_dirs: list[str],
    benchmark_dir: str | None,
    markdown_path: str,
    html_path: str,
    tracking: TrackingContext,
    tolerance: float = 0.01,
) -> StepResult:
    """The paper's tables, figures and claims for this run (``fewframes.report.report_of_run``, the same
    report ``fewframes report --run`` writes): report.md with the PNG figures beside it, the self-contained
    HTML and summary.json in the HTML artifact's folder; the Markdown artifact is that report.md; all of it
    goes to the report step's MLflow run."""
    from fewframes.report import report_of_run

    rows = report_rows(evaluation_dirs, benchmark_dir)
    markdown_file, html_file = Path(markdown_path), Path(html_path)
    report = report_of_run(evaluation_dirs, benchmark_dir, html_file.parent, tracking_uri=tracking.uri,
                           run_info=_parent_run_info(tracking), tolerance=tolerance)
    if report.markdown != markdown_file:
        _atomic_text(markdown_file, report.markdown.read_text())
    if report.html != html_file:
        _atomic_text(html_file, report.html.read_text())

    summary = report.summary
    verdicts = [c["verdict"] for c in summary["claims"]]
    metrics = {
        "models": float(len(rows)),
        "claims_hold": float(verdicts.count("holds")),
        "claims_fail": float(verdicts.count("does not hold")),
        "claims_inconclusive": float(verdicts.count("inconclusive")),
        "claims_not_measured": float(verdicts.count("not measured")),
    }
    # The teacher the report compares with: the seed mean of the full-data teachers (as on the parent run).
    from fewframes.run_results import headline_metrics

    metrics.update({k: v for k, v in headline_metrics(rows, None, False).items() if k.startswith("teacher_")})
    recommended = summary["recommended"]
    if recommended is not None:
        metrics["recommended_k"] = float(recommended["k"])
        metrics["recommended_gap"] = float(recommended["gap"])
    files = [report.markdown, report.html, report.folder / "summary.json", *report.figures]
    with step_run(tracking, "report", params={"tolerance": tolerance}) as tracker:
        tracker.log_metrics(metrics)
        for path in files:
            tracker.log_artifact(path)
    # The parent run: headline metrics, the report (folder ``report``), the registered champion student.
    from fewframes.run_results import publish_to_parent

    publish_to_parent(tracking, rows, recommended["model_key"] if recommended else None, files)
    return StepResult(
        metrics=metrics,
        metadata={"recommended": recommended["model_key"] if recommended else "",
                  "figures": [p.name for p in report.figures]},
    )
