"""The KFP v2 components: one per pipeline step, each a thin lightweight Python component.

Each body imports ``fewframes`` (the component image already has it: ``install_kfp_package=False``,
``packages_to_install=[]``), turns its typed artifacts into paths, calls one step of
``fewframes.components.steps`` and writes the step's metrics (``Metrics.log_metric``, shown in the KFP UI)
and metadata back. The same definitions run under ``kfp.local.SubprocessRunner(use_venv=False)`` in the
current environment and, compiled, on a Kubeflow cluster in the image named by ``fewframes.cluster.image``.

This module deliberately has no ``from __future__ import annotations``: KFP reads the parameter annotations
(``Input[Dataset]``, ``List[int]``) at decoration time and cannot parse postponed (string) annotations.

Every step is deterministic given its inputs (seeded), so KFP caching can reuse results. The MLflow
coordinates reach each step as pipeline parameters that do not change from run to run (``tracking_uri``,
``experiment``, and ``parent_run_id``, which only ``fewframes run`` sets), never as start-tracking's
output: KFP's cache key holds every input parameter value and input artifact, and start-tracking runs
afresh each time, so any of its outputs as an input would make every step miss the cache on every run.
On a cluster a step finds its run's parent MLflow run by its pod's Argo workflow label
(``fewframes.runs.resolve_tracking``, ``fewframes.cluster.WORKFLOW_ENV``). A step served from the cache
logs no new MLflow child run: the run that computed it has it.
"""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from fewframes.cluster import image

BASE_IMAGE = image("cpu")


def _component(function):  # noqa: ANN001, ANN202 - a decorator
    return dsl.component(base_image=BASE_IMAGE, install_kfp_package=False, packages_to_install=[])(function)


@_component
def start_tracking(
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    pipeline_run_id: str,
    pipeline: str,
    run_name: str,
    tracking: Output[Artifact],
):
    """Create (cluster) or tag (local) the pipeline run's parent MLflow run, tagged with the KFP run id and
    the pod's Argo workflow (how the later steps and the exit task find it). The ``tracking`` artifact
    records the coordinates for the KFP UI; no step takes it as an input (it would defeat their caching)."""
    from fewframes.components.steps import start_tracking_step

    parent = start_tracking_step(tracking_uri, experiment, parent_run_id, pipeline_run_id, pipeline, run_name, tracking.path)
    tracking.metadata["parent_run_id"] = parent


@_component
def close_tracking(
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    pipeline_run_id: str,
    status: dsl.PipelineTaskFinalStatus,
):
    """The DAG's exit handler: end the parent MLflow run FINISHED, FAILED or KILLED as the pipeline ended.

    Runs on every backend after everything else, success or failure. It takes no task outputs (KFP forbids
    an exit task to depend on other tasks), so on a cluster it finds the parent run by the KFP run id that
    ``start-tracking`` tagged it with; locally ``fewframes run`` passes the parent's id."""
    from fewframes.components.steps import close_tracking_step

    failure = ""
    if status.error_message:
        failure = f"{status.pipeline_task_name or 'pipeline'}: {status.error_message}"
    parent, ended = close_tracking_step(tracking_uri, experiment, parent_run_id, pipeline_run_id, status.state, failure)
    print(f"pipeline ended {status.state}; MLflow parent run {parent or '(none)'}: {ended or 'left as it was'}")


@_component
def ingest_split(
    source: str,
    preset: str,
    num_classes: int,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    store_root: str,
    vocabulary: str,
    store: Output[Dataset],
    metrics: Output[Metrics],
):
    """Synthesize (source 'synth:<preset>' or '') or ingest YouTube-8M TFRecords; write the frame store + split.

    With ``store_root`` (a cluster run: ``gs://BUCKET/...``) the store is written there and ``store`` is a
    small pointer to it (``metadata['uri']``); the consumers open the URI and read only the frames they
    need, instead of the backend downloading the whole store into every pod."""
    from fewframes.components.steps import ingest_split_step, tracking_context

    result = ingest_split_step(
        source,
        store.path,
        preset=preset,
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        tracking=tracking_context(tracking_uri, experiment, parent_run_id),
        num_classes=num_classes,
        store_root=store_root,
        vocabulary=vocabulary,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    store.metadata.update(result.metadata)


@_component
def plan_teachers(
    fraction_k: int,
    train_fractions: List[float],
    repeat_seeds: List[int],
    seed: int,
) -> List[dict]:
    """The teachers to train: one per seed on all the data, one per reduced train fraction (Table 3)."""
    from fewframes.components.steps import plan_teachers_step

    return plan_teachers_step(fraction_k, train_fractions, repeat_seeds, seed)


@_component
def plan_students(
    store: Input[Dataset],
    ks: List[int],
    losses: List[str],
    modes: List[str],
    intermediate_k: int,
    fraction_k: int,
    train_fractions: List[float],
    repeat_seeds: List[int],
    repeat_ks: List[int],
    seed: int,
    controls: List[str],
) -> List[dict]:
    """The students (and warm-start controls) to train, one dict per ParallelFor iteration, each with its seed,
    checked against the store."""
    from fewframes.components.steps import plan_students_step, store_location

    return plan_students_step(
        store_location(store.path), ks, losses, modes, intermediate_k, fraction_k, train_fractions, repeat_seeds, repeat_ks, seed,
        controls,
    )


@_component
def plan_teacher_on_k(
    store: Input[Dataset],
    ks: List[int],
    repeat_seeds: List[int],
    repeat_ks: List[int],
    seed: int,
    controls: List[str],
) -> List[dict]:
    """The teacher-on-k control evaluations (a teacher seed and a k each), checked against the store."""
    from fewframes.components.steps import plan_teacher_on_k_step, store_location

    return plan_teacher_on_k_step(store_location(store.path), ks, repeat_seeds, repeat_ks, seed, controls)


@_component
def plan_baselines(
    store: Input[Dataset],
    ks: List[int],
    baselines: List[str],
    fraction_k: int,
    train_fractions: List[float],
    repeat_seeds: List[int],
    repeat_ks: List[int],
    seed: int,
) -> List[dict]:
    """The from-scratch k-frame baselines (one dict per ParallelFor iteration, each with its seed), checked
    against the store."""
    from fewframes.components.steps import plan_baselines_step, store_location

    return plan_baselines_step(store_location(store.path), ks, baselines, fraction_k, train_fractions, repeat_seeds, repeat_ks, seed)


@_component
def train_teacher(
    store: Input[Dataset],
    hidden_size: int,
    num_layers: int,
    teacher_block_length: int,
    max_epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str,
    family: str,
    preset: str,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    teacher: Output[Model],
    metrics: Output[Metrics],
    train_fraction: float = 1.0,
    repeat: bool = False,
):
    """Train a teacher (``family``) on all frames of ``train_fraction`` of the training data, with ``seed``."""
    from fewframes.components.steps import Sizes, store_location, tracking_context, train_teacher_step

    sizes = Sizes.from_parameters(locals())  # every Sizes field is a parameter of this component
    result = train_teacher_step(store_location(store.path), teacher.path, sizes, tracking_context(tracking_uri, experiment, parent_run_id),
                                train_fraction=train_fraction, repeat=repeat)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    teacher.metadata.update(result.metadata)


@_component
def gather_teachers(
    teachers: Input[List[Model]],
    gathered: Output[Model],
):
    """Every trained teacher in one artifact, so each student takes the teacher of its own seed and fraction."""
    from fewframes.components.steps import gather_teachers_step

    result = gather_teachers_step([t.path for t in teachers], gathered.path)
    gathered.metadata.update(result.metadata)


@_component
def distill_student(
    store: Input[Dataset],
    teachers: Input[Model],
    k: int,
    loss: str,
    mode: str,
    matching: str,
    train_fraction: float,
    hidden_size: int,
    num_layers: int,
    teacher_block_length: int,
    max_epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str,
    family: str,
    preset: str,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    student: Output[Model],
    metrics: Output[Metrics],
    repeat: bool = False,
):
    """Distil a student that reads k frames from the teacher of its seed and fraction (serial; ``teachers``: the
    gathered teachers) or alongside one (parallel); loss "ce" is the warm-start control."""
    from fewframes.components.steps import Sizes, distill_student_step, store_location, tracking_context

    sizes = Sizes.from_parameters(locals())  # every Sizes field is a parameter of this component
    result = distill_student_step(
        store_location(store.path),
        teachers.path,
        student.path,
        k=k,
        loss=loss,
        mode=mode,
        matching=matching,
        train_fraction=train_fraction,
        sizes=sizes,
        tracking=tracking_context(tracking_uri, experiment, parent_run_id),
        repeat=repeat,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    student.metadata.update(result.metadata)


@_component
def train_baseline(
    store: Input[Dataset],
    k: int,
    frame_selection: str,
    train_fraction: float,
    hidden_size: int,
    num_layers: int,
    teacher_block_length: int,
    max_epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str,
    family: str,
    preset: str,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    baseline: Output[Model],
    metrics: Output[Metrics],
    repeat: bool = False,
):
    """Train a k-frame baseline from scratch (no teacher)."""
    from fewframes.components.steps import Sizes, tracking_context, train_baseline_step, store_location

    sizes = Sizes.from_parameters(locals())  # every Sizes field is a parameter of this component
    result = train_baseline_step(
        store_location(store.path),
        baseline.path,
        k=k,
        frame_selection=frame_selection,
        train_fraction=train_fraction,
        sizes=sizes,
        tracking=tracking_context(tracking_uri, experiment, parent_run_id),
        repeat=repeat,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    baseline.metadata.update(result.metadata)


@_component
def evaluate(
    store: Input[Dataset],
    model: Input[Model],
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
):
    """GAP@20, mAP, Hit@1, PERR on the test split (+ per-class AP and encodings)."""
    from fewframes.components.steps import evaluate_step, tracking_context, store_location

    result = evaluate_step(store_location(store.path), model.path, evaluation.path, tracking_context(tracking_uri, experiment, parent_run_id))
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    evaluation.metadata.update(result.metadata)


@_component
def evaluate_teacher_on_k(
    store: Input[Dataset],
    teachers: Input[Model],
    seed: int,
    k: int,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    repeat: bool = False,
):
    """The teacher-on-k control: the all-data teacher of ``seed`` fed k uniform frames, no training."""
    from fewframes.components.steps import evaluate_teacher_on_k_step, store_location, tracking_context

    result = evaluate_teacher_on_k_step(
        store_location(store.path), teachers.path, evaluation.path, tracking_context(tracking_uri, experiment, parent_run_id),
        seed=seed, k=k, repeat=repeat,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    evaluation.metadata.update(result.metadata)


@_component
def benchmark(
    store: Input[Dataset],
    teachers: Input[List[Model]],
    students: Input[List[Model]],
    baselines: Input[List[Model]],
    teacher_evaluations: Input[List[Dataset]],
    student_evaluations: Input[List[Dataset]],
    baseline_evaluations: Input[List[Dataset]],
    device: str,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    results: Output[Dataset],
    metrics: Output[Metrics],
):
    """Parameters, FLOPs and latency of every model (GPU node pool on the cluster, CPU locally)."""
    from fewframes.components.steps import benchmark_step, tracking_context, store_location

    result = benchmark_step(
        store_location(store.path),
        [m.path for m in teachers] + [m.path for m in students] + [m.path for m in baselines],
        [e.path for e in teacher_evaluations] + [e.path for e in student_evaluations]
        + [e.path for e in baseline_evaluations],
        results.path,
        tracking_context(tracking_uri, experiment, parent_run_id),
        device=device,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    results.metadata.update(result.metadata)


@_component
def report(
    teacher_evaluations: Input[List[Dataset]],
    student_evaluations: Input[List[Dataset]],
    baseline_evaluations: Input[List[Dataset]],
    control_evaluations: Input[List[Dataset]],
    benchmark_results: Input[Dataset],
    tolerance: float,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    markdown: Output[Markdown],
    html: Output[HTML],
    metrics: Output[Metrics],
):
    """The run's table of every evaluated model, the GAP-vs-k plot and the recommended student."""
    from fewframes.components.steps import report_step, tracking_context

    result = report_step(
        [e.path for e in teacher_evaluations] + [e.path for e in student_evaluations]
        + [e.path for e in baseline_evaluations] + [e.path for e in control_evaluations],
        benchmark_results.path,
        markdown.path,
        html.path,
        tracking_context(tracking_uri, experiment, parent_run_id),
        tolerance=tolerance,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    markdown.metadata.update(result.metadata)


# Task names in the compiled pipeline (KFP derives them from the function names).
COMPONENTS = {
    "start-tracking": start_tracking,
    "close-tracking": close_tracking,
    "ingest-split": ingest_split,
    "plan-teachers": plan_teachers,
    "plan-students": plan_students,
    "plan-baselines": plan_baselines,
    "plan-teacher-on-k": plan_teacher_on_k,
    "train-teacher": train_teacher,
    "gather-teachers": gather_teachers,
    "distill-student": distill_student,
    "train-baseline": train_baseline,
    "evaluate": evaluate,
    "evaluate-teacher-on-k": evaluate_teacher_on_k,
    "benchmark": benchmark,
    "report": report,
}
