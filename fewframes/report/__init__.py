"""The paper's experiments as a report of ONE pipeline run: the claims (sanity claims first, then the
paper's) each with paired-bootstrap intervals and a three-way verdict, Tables 1-4 with the controls and the
benchmark's information bounds, the figures (GAP vs k with intervals, learning curves, Figures 2-3, Pareto
plots) and the recommended student.

One module a concern: ``configs`` (rows grouped into configurations; names; number formats), ``intervals``
(paired bootstrap between configurations, ``fewframes.stats``), ``claims``, ``tables``, ``figures``,
``render`` (Markdown and HTML), ``build`` (the run's inputs and the document).

Input: the run's evaluated models as rows (``fewframes.components.steps.report_rows``: each evaluation's
``row.json`` joined with its benchmark figures, with ``evaluation_dir`` pointing at its
``predictions.parquet`` and ``encodings.parquet``), the per-epoch validation history of each training run
(MLflow) and the benchmark's machine. Output, in one folder: ``report.md`` (figures as PNG files beside
it), ``report.html`` (figures embedded, for the Kubeflow UI) and ``summary.json``. The pipeline's report step
and ``fewframes report --run`` both go through ``report_of_run``, so they write the same report.md.
"""

from fewframes.report.build import (
    BOUNDS_FILE,
    SUMMARY_FILE,
    Report,
    build_report,
    grid_ks,
    preset_sizes,
    report_of_run,
    run_command,
    run_description,
    training_histories,
)
from fewframes.report.claims import (
    CLAIM_ORDER,
    NOT_MEASURED,
    PAPER_K,
    Claim,
    Part,
    all_claims,
    claim_distillation_beats_warm_start,
    claim_intermediate,
    claim_k30_close,
    claim_margin_grows,
    claim_serial_parallel,
    claim_students_beat_uniform,
    claim_teacher_skyline,
    claim_uniform_best,
    recommend_student,
    recommendation,
)
from fewframes.report.configs import Config, Grid, config_of, fmt_config, group_configs
from fewframes.report.figures import pareto_front
from fewframes.report.intervals import Intervals
from fewframes.stats import FAILS, HOLDS, INCONCLUSIVE

__all__ = [
    "BOUNDS_FILE",
    "CLAIM_ORDER",
    "Claim",
    "Config",
    "FAILS",
    "Grid",
    "HOLDS",
    "INCONCLUSIVE",
    "Intervals",
    "NOT_MEASURED",
    "PAPER_K",
    "Part",
    "Report",
    "SUMMARY_FILE",
    "all_claims",
    "build_report",
    "claim_distillation_beats_warm_start",
    "claim_intermediate",
    "claim_k30_close",
    "claim_margin_grows",
    "claim_serial_parallel",
    "claim_students_beat_uniform",
    "claim_teacher_skyline",
    "claim_uniform_best",
    "config_of",
    "fmt_config",
    "grid_ks",
    "group_configs",
    "pareto_front",
    "preset_sizes",
    "recommend_student",
    "recommendation",
    "report_of_run",
    "run_command",
    "run_description",
    "training_histories",
]
