"""What each pipeline step does, as plain functions of paths and values (no KFP here).

The KFP components in ``definitions.py`` are thin: each turns its artifacts into paths, calls one of these
functions, and writes the returned metrics/metadata back onto its KFP outputs. Keeping the work here means
the steps are importable, testable and reusable without KFP, and the component bodies stay a few lines.

Every step logs one MLflow run (``fewframes.runs.step_run``) tied to the pipeline's parent run (a model's
own run, its training step's, is top-level in the experiment; the others nest under the parent), except
the ``plan_*`` steps and ``gather_teachers_step``: they are pure bookkeeping (the fan-out lists, checked
against the store; the teachers put in one artifact) and log nothing.

Artifacts written here:
- a frame store (``ingest_split_step``) — a directory, as ``fewframes.data.store`` writes it;
- a model directory holding the library's self-describing model file (``model.json`` beside it says which);
- a teachers directory (``gather_teachers_step``: each teacher's model directory and ``teachers.json``);
- an evaluation directory: the library's metrics.json, per_class_ap.parquet, encodings.parquet,
  predictions.parquet and our ``row.json`` (the model's parameters + metrics + MLflow run ids), which
  benchmark and report read. Every row has ``role`` (teacher | student | baseline | control), ``control``
  (warm_start | teacher_on_k for role control, else blank), ``family``, ``k`` (blank for a teacher),
  ``frame_selection``, ``loss``, ``mode``, ``matching``, ``train_fraction``, ``seed``, ``teacher_run_id``,
  ``model_key``, ``teacher_key`` (students and controls: the model key of their teacher) and the metrics;
- a benchmark directory (``benchmark.json``: one row per model);
- the report (``fewframes.report``: Markdown + HTML, figures, summary.json).

One module a step (``tracking``, ``ingest_split``, ``plan``, ``train``, ``evaluate``, ``benchmark``,
``report``) over ``common``; this package re-exports their public names, so callers import from
``fewframes.components.steps``.

Choices where the contracts were silent:
- Each teacher seed trains its own teacher; a serial student (and the warm-start control) distils from the
  teacher of its own seed and train fraction. On a fraction of the training split (the paper's Table 3)
  the teacher and its students see the same subset (the subset is drawn with the shared seed).
- A parallel-mode student trains its own teacher alongside (``train_parallel``); the pipeline's
  ``train-teacher`` output is then unused by that task, except as the record of ``teacher_run_id``.
- "Within 1% GAP of the teacher" is relative: student GAP >= teacher GAP * (1 - tolerance).
"""

from __future__ import annotations

from .common import (
    BENCHMARK_FILE,
    CONTROLS,
    ROLES,
    TEACHER_ON_K,
    WARM_START,
    WARM_START_LOSS,
    ERROR_FILE_ENV,
    MODEL_INFO_FILE,
    PendingTracking,
    model_key,
    model_params,
    read_model_info,
    reports_errors,
    ROW_FILE,
    StepResult,
    STORE_LOCATION_FILE,
    TORCH_THREADS_ENV,
    store_location,
    tracking_context,
)
from .tracking import (
    close_tracking_step,
    start_tracking_step,
)
from .ingest_split import (
    ingest_split_step,
    parse_source,
)
from .plan import (
    plan_baselines,
    plan_baselines_step,
    plan_students,
    plan_students_step,
    plan_teacher_on_k,
    plan_teacher_on_k_step,
    plan_teachers,
    plan_teachers_step,
)
from .train import (
    CPU_PROCESSES_ENV,
    distill_student_step,
    gather_teachers_step,
    resolve_teacher,
    TEACHERS_FILE,
    GPUS_ENV,
    Sizes,
    train_baseline_step,
    train_teacher_step,
    training_launch,
    TrainingLaunch,
)
from .evaluate import (
    evaluate_step,
    evaluate_teacher_on_k_step,
    EVALUATION_METRICS,
    read_row,
)
from .benchmark import (
    BENCHMARK_BATCH,
    BENCHMARK_LATENCY_VIDEOS,
    BENCHMARK_METRICS,
    benchmark_step,
    BENCHMARK_VIDEOS,
)
from .report import (
    benchmark_machine,
    report_rows,
    report_step,
)

__all__ = [
    "CONTROLS",
    "ROLES",
    "TEACHER_ON_K",
    "WARM_START",
    "WARM_START_LOSS",
    "plan_teacher_on_k",
    "plan_teacher_on_k_step",
    "plan_teachers",
    "plan_teachers_step",
    "gather_teachers_step",
    "resolve_teacher",
    "TEACHERS_FILE",
    "evaluate_teacher_on_k_step",
    "BENCHMARK_BATCH",
    "BENCHMARK_FILE",
    "BENCHMARK_LATENCY_VIDEOS",
    "BENCHMARK_METRICS",
    "BENCHMARK_VIDEOS",
    "CPU_PROCESSES_ENV",
    "ERROR_FILE_ENV",
    "EVALUATION_METRICS",
    "GPUS_ENV",
    "MODEL_INFO_FILE",
    "ROW_FILE",
    "Sizes",
    "StepResult",
    "TORCH_THREADS_ENV",
    "TrainingLaunch",
    "benchmark_machine",
    "benchmark_step",
    "close_tracking_step",
    "distill_student_step",
    "evaluate_step",
    "ingest_split_step",
    "model_key",
    "model_params",
    "parse_source",
    "plan_baselines",
    "plan_baselines_step",
    "plan_students",
    "plan_students_step",
    "read_model_info",
    "read_row",
    "report_rows",
    "report_step",
    "reports_errors",
    "start_tracking_step",
    "store_location",
    "STORE_LOCATION_FILE",
    "tracking_context",
    "PendingTracking",
    "train_baseline_step",
    "train_teacher_step",
    "training_launch",
]
