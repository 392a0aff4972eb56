"""Build the ``distill`` and ``paper`` pipelines: one DAG shape, two sets of parameter defaults.

```
start-tracking -> ingest-split -> plan-teachers -> ParallelFor: train-teacher -> evaluate(teacher) -------------.
                      |                                 `-> gather-teachers (every teacher, one artifact)       |
                      |-> plan-students    -> ParallelFor: distill-student (its seed's teacher) -> evaluate -----+
                      |-> plan-baselines   -> ParallelFor: train-baseline -> evaluate ---------------------------+-> benchmark -> report
                      `-> plan-teacher-on-k -> ParallelFor: evaluate-teacher-on-k (its seed's teacher) ----------'
(all inside a dsl.ExitHandler whose exit task, close-tracking, ends the MLflow parent run FINISHED/FAILED)
```

The grid (issue 10): one teacher per seed (``seed`` and each of ``repeat_seeds``) on all the training data,
and one per reduced ``train_fractions`` entry (Table 3: the teacher sees only what its students see); each
student distils from the teacher of its own seed and fraction. ``controls``: ``warm_start`` (the student
architecture warm-started from its teacher's classifier, L_CE only, trained by distill-student with loss
"ce", role ``control``) at every k, and ``teacher_on_k`` (the trained teacher fed k uniform frames, no
training) at every k. The configurations the claims use — teacher, Uniform-k, Serial (c) and the controls —
run again for each of ``repeat_seeds`` at ``repeat_ks`` (empty: every k). Every model trains for at most
``max_epochs`` with early stopping after ``patience`` epochs without a better validation GAP (0: off), in
the model ``family``.

A student task cannot take one item of another ParallelFor's outputs (KFP's compiler rejects a
``dsl.Collected`` inside a loop body, and nested loops cannot be collected), so ``gather-teachers`` puts
every teacher in one artifact and each student picks its own teacher from it by seed and fraction.

``make_pipeline(name, preset, gpu)`` returns a KFP pipeline function whose parameter DEFAULTS come from
the preset (sizes, epochs, k list) and the pipeline's grid; ``gpu`` (a ``fewframes.cluster.GpuSettings``)
is applied when the DAG is built — it is a property of the compiled pipeline, not a run-time parameter:
``CPU_ONLY`` for local runs (no accelerator, node selector, toleration or image change), ``DEFAULT_GPU`` or
the ``fewframes compile/submit --gpus/--accelerator`` flags for cluster runs. Training and benchmark tasks
on a GPU ask for ``nvidia.com/gpu`` x count, CPU/memory, the GPU node pool's node selector (GPU model,
spot or on-demand) and the toleration of its taint (all from ``fewframes.cluster``), and use the CUDA
image. Every task also gets its preset's CPU/memory, pod timeout and retry policy
(``fewframes.cluster.task_sizing``), and the whole DAG runs inside a ``dsl.ExitHandler`` whose exit task
closes the MLflow parent run. ``pipeline_root`` puts KFP's artifacts (and, by default, the frame store the
steps read in place) on the project's bucket; an image lock names the images by digest.

Every task has a display name a person reads in the Kubeflow UI (``train teacher``, ``distill student``,
``evaluate baseline``). Inside a ParallelFor it cannot name the loop item (display names are fixed when the
pipeline compiles); ``fewframes run`` shows the item-specific name (``distill student serial L_rep k=10``)
from the plan's output (``fewframes.cli.progress``).

The plan steps turn the list parameters into the fan-out (``dsl.ParallelFor`` over their output), so the
grid is a run-time parameter that the KFP UI shows and ``--param`` overrides.

No ``from __future__ import annotations`` here: KFP reads the pipeline function's annotations at build time
and cannot parse postponed (string) ones.
"""

from typing import Any, Callable, Dict, Optional, Union

from fewframes.cluster import CPU_ONLY, WORKFLOW_ENV, WORKFLOW_LABEL, GpuSettings, TaskSizing, image, task_sizing
from fewframes.components.steps.common import CONTROLS
from fewframes.components.steps.train import SIZES_PARAMETERS
from fewframes.config import BASELINE_SELECTIONS, DISTILL_LOSSES, Preset, get_preset
from fewframes.errors import PipelineError

# The tasks that get GPU settings on a GPU compile.
GPU_TASKS: tuple[str, ...] = ("train-teacher", "distill-student", "train-baseline", "benchmark")



def grid_defaults(pipeline: str, preset: Preset) -> Dict[str, Any]:
    """The fan-out parameters' defaults of each pipeline."""
    if pipeline == "distill":
        return {
            "ks": list(preset.ks),
            "losses": list(preset.losses),
            "modes": ["serial"],
            "baselines": ["uniform"],
            "intermediate_k": 0,
            "fraction_k": 0,
            "train_fractions": [],
            "repeat_seeds": [],
            "repeat_ks": [],
            "controls": list(CONTROLS),
        }
    if pipeline == "paper":
        return {
            "ks": [6, 10, 15, 20, 30],
            "losses": list(DISTILL_LOSSES),
            "modes": ["serial", "parallel"],
            "baselines": list(BASELINE_SELECTIONS),
            "intermediate_k": 30,
            "fraction_k": 30,
            "train_fractions": [0.1, 0.25, 0.5],
            # Two more seeds (3 in all) of the teacher, and of Uniform-k, Serial (c) and the controls at every k:
            # what the claims' intervals need.
            "repeat_seeds": [1, 2],
            "repeat_ks": [],
            "controls": list(CONTROLS),
        }
    raise PipelineError(f"--pipeline must be one of distill, paper, got {pipeline!r}")


def parameter_defaults(pipeline: str, preset: Union[Preset, str]) -> Dict[str, Any]:
    """Every pipeline parameter and its default for ``pipeline`` built on ``preset``."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return {
        "source": f"synth:{preset.name}",
        "preset": preset.name,
        "num_classes": 0,
        "vocabulary": "",
        **grid_defaults(pipeline, preset),
        "hidden_size": preset.hidden_size,
        "num_layers": preset.num_layers,
        "teacher_block_length": preset.teacher_block_length,
        "max_epochs": preset.train.epochs,
        "patience": preset.train.patience,
        "family": preset.model_config().family,
        "batch_size": preset.train.batch_size,
        "learning_rate": preset.train.learning_rate,
        "seed": preset.train.seed,
        "device": preset.train.device,
        "validation_fraction": preset.data.validation_fraction,
        "test_fraction": preset.data.test_fraction,
        "tolerance": 0.01,
        "tracking_uri": "",
        "experiment": "fewframes",
        "parent_run_id": "",
        "run_name": "",
        # Where ingest writes the frame store for the steps to read in place ('' = inside its KFP artifact,
        # downloaded whole into every pod that uses it). A cluster compile with a pipeline root defaults it
        # to <pipeline root>/frame-stores.
        "store_root": "",
    }


def apply_gpu(task: Any, gpu: GpuSettings) -> Any:
    """Put the GPU node pool's settings on a task; a CPU-only GpuSettings leaves the task untouched."""
    if not gpu.enabled:
        return task
    from kfp import kubernetes

    # The driver makes the type a container limit name: it must be the Kubernetes resource (nvidia.com/gpu);
    # the node selector below picks the GPU model (see fewframes.cluster.GpuSettings).
    task.set_accelerator_type(gpu.resource_name)
    task.set_accelerator_limit(gpu.gpus)
    task.set_cpu_request(gpu.cpu_request)
    task.set_cpu_limit(gpu.cpu_limit)
    task.set_memory_request(gpu.memory_request)
    task.set_memory_limit(gpu.memory_limit)
    # torchrun launches one training process per GPU on multi-GPU tasks (see fewframes.components.steps).
    task.set_env_variable("FEWFRAMES_GPUS", str(gpu.gpus))
    for key, value in gpu.node_selector().items():  # the GPU model, and spot or on-demand nodes
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.add_toleration(
        task, key=gpu.taint_key, operator="Equal", value=gpu.taint_value, effect=gpu.taint_effect
    )
    return task


def apply_sizing(task: Any, sizing: TaskSizing, *, on_gpu: bool) -> Any:
    """CPU/memory requests and limits (GPU tasks have theirs from GpuSettings), the pod's timeout and the
    retry policy. Training resumes from its checkpoint, so a retried training task loses little."""
    from kfp import kubernetes

    if not on_gpu:
        task.set_cpu_request(sizing.cpu_request).set_cpu_limit(sizing.cpu_limit)
        task.set_memory_request(sizing.memory_request).set_memory_limit(sizing.memory_limit)
    if sizing.retries:
        task.set_retry(
            num_retries=sizing.retries, backoff_duration=sizing.retry_backoff, backoff_factor=2.0,
            backoff_max_duration=sizing.retry_max_duration,
        )  # fmt: skip
    kubernetes.set_timeout(task, sizing.timeout_s)
    return task


def _configure_every_task(preset: str, gpu: GpuSettings, image_lock: Optional[Dict[str, str]]) -> None:
    """On every task of the pipeline being built: its image (CUDA on a GPU, else the CPU one that also
    ingests; by digest with an image lock), apply_sizing by its component's name, and the pod's Argo
    workflow name in ``WORKFLOW_ENV`` (how a step finds its run's parent MLflow run without an input that
    changes every run; see fewframes.cluster)."""
    from kfp import kubernetes
    from kfp.dsl import pipeline_context

    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        component = task.component_spec.name.replace("_", "-")
        on_gpu = gpu.enabled and component in GPU_TASKS
        task.set_container_image(image("cuda" if on_gpu else "cpu", image_lock))
        apply_sizing(task, task_sizing(component, preset), on_gpu=on_gpu)
        kubernetes.use_field_path_as_env(task, env_name=WORKFLOW_ENV, field_path=f"metadata.labels['{WORKFLOW_LABEL}']")


def _inside_exit_handler(
    steps: Callable, close_tracking: Callable, preset: str, gpu: GpuSettings, image_lock: Optional[Dict[str, str]]
) -> Callable:
    """``steps`` (the DAG) inside a ``dsl.ExitHandler`` whose exit task, ``close-tracking``, ends the MLflow
    parent run FINISHED or FAILED from KFP's final status, on every backend. The exit task may take only
    pipeline parameters (KFP forbids it to depend on a task), so it finds the parent by run id or tag."""
    import functools
    import inspect

    from kfp import dsl

    signature = inspect.signature(steps)

    @functools.wraps(steps)
    def dag(*args: Any, **kwargs: Any) -> None:
        arguments = signature.bind(*args, **kwargs).arguments
        exit_task = close_tracking(
            tracking_uri=arguments["tracking_uri"],
            experiment=arguments["experiment"],
            parent_run_id=arguments["parent_run_id"],
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_caching_options(False).set_display_name("close tracking")
        with dsl.ExitHandler(exit_task, name="fewframes-steps"):
            steps(*args, **kwargs)
        _configure_every_task(preset, gpu, image_lock)

    # KFP reads the parameters and their annotations from here. No pipeline output: KFP allows none from
    # inside an exit handler; the report is the `report` task's Markdown/HTML artifacts in the UI.
    dag.__signature__ = signature.replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
    return dag


def make_pipeline(
    name: str = "distill",
    preset: Union[Preset, str] = "demo",
    gpu: GpuSettings = CPU_ONLY,
    pipeline_root: str = "",
    image_lock: Optional[Dict[str, str]] = None,
) -> Callable:
    """The KFP pipeline function ``fewframes-<name>`` with defaults from ``preset`` and ``gpu`` applied."""
    from typing import List

    from kfp import dsl
    from kfp.dsl import Markdown

    from fewframes.components import definitions as c

    if isinstance(preset, str):
        preset = get_preset(preset)
    d = parameter_defaults(name, preset)
    root = check_pipeline_root(pipeline_root)
    if root:
        d["store_root"] = f"{root}/frame-stores"

    def dag(
        source: str = d["source"],
        preset: str = d["preset"],
        num_classes: int = d["num_classes"],
        vocabulary: str = d["vocabulary"],
        ks: List[int] = d["ks"],
        losses: List[str] = d["losses"],
        modes: List[str] = d["modes"],
        baselines: List[str] = d["baselines"],
        intermediate_k: int = d["intermediate_k"],
        fraction_k: int = d["fraction_k"],
        train_fractions: List[float] = d["train_fractions"],
        repeat_seeds: List[int] = d["repeat_seeds"],
        repeat_ks: List[int] = d["repeat_ks"],
        controls: List[str] = d["controls"],
        family: str = d["family"],
        hidden_size: int = d["hidden_size"],
        num_layers: int = d["num_layers"],
        teacher_block_length: int = d["teacher_block_length"],
        max_epochs: int = d["max_epochs"],
        patience: int = d["patience"],
        batch_size: int = d["batch_size"],
        learning_rate: float = d["learning_rate"],
        seed: int = d["seed"],
        device: str = d["device"],
        validation_fraction: float = d["validation_fraction"],
        test_fraction: float = d["test_fraction"],
        tolerance: float = d["tolerance"],
        tracking_uri: str = d["tracking_uri"],
        experiment: str = d["experiment"],
        parent_run_id: str = d["parent_run_id"],
        run_name: str = d["run_name"],
        store_root: str = d["store_root"],
    ) -> Markdown:
        tracking_task = c.start_tracking(
            tracking_uri=tracking_uri,
            experiment=experiment,
            parent_run_id=parent_run_id,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline=name,
            run_name=run_name,
        ).set_caching_options(False).set_display_name("start tracking")  # it must create a new parent run for every pipeline run
        # Stable coordinates, not start-tracking's output, so that the steps can be cached: see
        # fewframes.components.definitions. The steps run after start-tracking through ingest-split.
        tracking = {"tracking_uri": tracking_uri, "experiment": experiment, "parent_run_id": parent_run_id}
        parameters = locals()  # not inside the comprehension: it has a scope of its own
        sizes = {name: parameters[name] for name in SIZES_PARAMETERS}  # each training step's Sizes
        ingest_task = c.ingest_split(
            source=source,
            preset=preset,
            num_classes=num_classes,
            vocabulary=vocabulary,
            seed=seed,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            store_root=store_root,
            **tracking,
        ).set_display_name("ingest/split").after(tracking_task)
        store = ingest_task.outputs["store"]

        # One teacher per seed and per reduced train fraction; each trains and is evaluated with its own seed.
        teachers_plan = c.plan_teachers(
            fraction_k=fraction_k, train_fractions=train_fractions, repeat_seeds=repeat_seeds, seed=seed
        ).set_display_name("plan teachers")
        with dsl.ParallelFor(teachers_plan.output) as planned_teacher:
            teacher_task = apply_gpu(
                c.train_teacher(
                    store=store,
                    train_fraction=planned_teacher.train_fraction,
                    repeat=planned_teacher.repeat,
                    **{**sizes, "seed": planned_teacher.seed},
                    **tracking,
                ).set_display_name("train teacher"),
                gpu,
            )
            teacher_eval = c.evaluate(
                store=store, model=teacher_task.outputs["teacher"], **tracking
            ).set_display_name("evaluate teacher")
        teachers = c.gather_teachers(
            teachers=dsl.Collected(teacher_task.outputs["teacher"])
        ).set_display_name("gather teachers").outputs["gathered"]

        students_plan = c.plan_students(
            store=store,
            ks=ks,
            losses=losses,
            modes=modes,
            intermediate_k=intermediate_k,
            fraction_k=fraction_k,
            train_fractions=train_fractions,
            repeat_seeds=repeat_seeds,
            repeat_ks=repeat_ks,
            seed=seed,
            controls=controls,
        ).set_display_name("plan students")
        # Each planned model trains with its own seed, from the teacher of that seed and data fraction.
        with dsl.ParallelFor(students_plan.output) as student:
            student_task = apply_gpu(
                c.distill_student(
                    store=store,
                    teachers=teachers,
                    k=student.k,
                    loss=student.loss,
                    mode=student.mode,
                    matching=student.matching,
                    train_fraction=student.train_fraction,
                    repeat=student.repeat,
                    **{**sizes, "seed": student.seed},
                    **tracking,
                ).set_display_name("distill student"),
                gpu,
            )
            student_eval = c.evaluate(
                store=store, model=student_task.outputs["student"], **tracking
            ).set_display_name("evaluate student")

        baselines_plan = c.plan_baselines(
            store=store, ks=ks, baselines=baselines, fraction_k=fraction_k, train_fractions=train_fractions,
            repeat_seeds=repeat_seeds, repeat_ks=repeat_ks, seed=seed,
        ).set_display_name("plan baselines")
        with dsl.ParallelFor(baselines_plan.output) as baseline:
            baseline_task = apply_gpu(
                c.train_baseline(
                    store=store,
                    k=baseline.k,
                    frame_selection=baseline.frame_selection,
                    train_fraction=baseline.train_fraction,
                    repeat=baseline.repeat,
                    **{**sizes, "seed": baseline.seed},
                    **tracking,
                ).set_display_name("train baseline"),
                gpu,
            )
            baseline_eval = c.evaluate(
                store=store, model=baseline_task.outputs["baseline"], **tracking
            ).set_display_name("evaluate baseline")

        teacher_on_k_plan = c.plan_teacher_on_k(
            store=store, ks=ks, repeat_seeds=repeat_seeds, repeat_ks=repeat_ks, seed=seed, controls=controls
        ).set_display_name("plan teacher on k")
        with dsl.ParallelFor(teacher_on_k_plan.output) as on_k:
            teacher_on_k_eval = c.evaluate_teacher_on_k(
                store=store, teachers=teachers, seed=on_k.seed, k=on_k.k, repeat=on_k.repeat, **tracking
            ).set_display_name("evaluate teacher on k frames")


        def evaluations() -> Dict[str, Any]:
            # A fresh dsl.Collected per consumer: KFP cannot share one between two tasks.
            return {
                "teacher_evaluations": dsl.Collected(teacher_eval.outputs["evaluation"]),
                "student_evaluations": dsl.Collected(student_eval.outputs["evaluation"]),
                "baseline_evaluations": dsl.Collected(baseline_eval.outputs["evaluation"]),
            }

        benchmark_task = apply_gpu(
            c.benchmark(
                store=store,
                teachers=dsl.Collected(teacher_task.outputs["teacher"]),
                students=dsl.Collected(student_task.outputs["student"]),
                baselines=dsl.Collected(baseline_task.outputs["baseline"]),
                device=device,
                **evaluations(),
                **tracking,
            ).set_display_name("benchmark"),
            gpu,
        )
        report_task = c.report(
            **evaluations(),
            control_evaluations=dsl.Collected(teacher_on_k_eval.outputs["evaluation"]),
            benchmark_results=benchmark_task.outputs["results"],
            tolerance=tolerance,
            **tracking,
        ).set_display_name("report")
        return report_task.outputs["markdown"]

    dag = _inside_exit_handler(dag, c.close_tracking, preset.name, gpu, image_lock)
    dag.__name__ = name
    description = (
        "fewframes: distil k-frame video classifiers from an all-frames teacher "
        f"({name} grid, {preset.name} sizes{', GPU x%d %s' % (gpu.gpus, gpu.accelerator_type) if gpu.enabled else ''})."
    )
    return dsl.pipeline(name=f"fewframes-{name}", description=description, pipeline_root=root or None)(dag)


def check_pipeline_root(pipeline_root: str) -> str:
    """``--pipeline-root``: an object-store URI KFP can write artifacts under ('' = the backend's default)."""
    from fewframes.cluster import PIPELINE_ROOT_SCHEMES

    root = (pipeline_root or "").strip()
    if root and (not root.startswith(PIPELINE_ROOT_SCHEMES) or root.rstrip("/") in PIPELINE_ROOT_SCHEMES):
        raise PipelineError(
            f"--pipeline-root {pipeline_root}: must be a bucket URI ({', '.join(PIPELINE_ROOT_SCHEMES)}...), "
            "e.g. gs://BUCKET/kfp"
        )
    return root.rstrip("/")


def compile_pipeline(
    name: str,
    out_path: str,
    preset: Union[Preset, str] = "demo",
    gpu: GpuSettings = CPU_ONLY,
    pipeline_root: str = "",
    image_lock: Optional[Dict[str, str]] = None,
) -> str:
    """Compile ``name`` to the IR YAML a Kubeflow UI accepts, at a local path or ``gs://``, atomically."""
    import shutil
    import tempfile
    from pathlib import PurePosixPath

    from kfp import compiler

    from fewframes import fsio

    suffix = PurePosixPath(str(out_path)).suffix
    if suffix not in (".yaml", ".yml", ".json"):
        raise PipelineError(f"--out {out_path}: the compiled pipeline must be a .yaml (or .json) file")
    # KFP picks YAML or JSON from the file name, so compile under a name with the right suffix first.
    with tempfile.TemporaryDirectory(prefix="fewframes-compile-") as scratch:
        compiled = f"{scratch}/pipeline{suffix}"
        compiler.Compiler().compile(make_pipeline(name, preset, gpu, pipeline_root, image_lock), compiled)
        with fsio.staged_output_file(out_path) as staged:
            shutil.copyfile(compiled, staged)
    return str(out_path)
