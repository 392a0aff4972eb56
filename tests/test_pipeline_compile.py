"""The compiled IR YAML of both pipelines: components, DAG edges, ParallelFor fan-out, Collected fan-in,
and the GPU settings on exactly the training/benchmark tasks (absent from a CPU-only compile)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fewframes.cli import main
from fewframes.cli.pipeline import parse_params
from fewframes.cluster import CPU_ONLY, DEFAULT_GPU, GpuSettings, image
from fewframes.errors import PipelineError
from fewframes.pipelines.dag import GPU_TASKS, compile_pipeline, parameter_defaults

STEP_COMPONENTS = {
    "start-tracking",
    "ingest-split",
    "plan-teachers",
    "plan-students",
    "plan-baselines",
    "plan-teacher-on-k",
    "train-teacher",
    "gather-teachers",
    "distill-student",
    "train-baseline",
    "evaluate",
    "evaluate-teacher-on-k",
    "benchmark",
    "report",
}


def _load(path: Path) -> tuple[dict, dict]:
    documents = list(yaml.safe_load_all(path.read_text()))
    spec = documents[0]
    platform = documents[1] if len(documents) > 1 else {}
    return spec, platform


@pytest.fixture(scope="module")
def compiled(compiled_pipeline) -> dict[tuple[str, str], tuple[dict, dict]]:
    results = {}
    for pipeline in ("distill", "paper"):
        for label, gpu in (("cpu", CPU_ONLY), ("gpu", DEFAULT_GPU)):
            results[(pipeline, label)] = _load(compiled_pipeline(pipeline, "demo" if pipeline == "distill" else "paper", gpu))
    return results


def _steps(spec: dict) -> dict[str, dict]:
    """The tasks of the DAG inside the exit handler (everything but the exit task, close-tracking)."""
    root = spec["root"]["dag"]["tasks"]
    (handler,) = [task for name, task in root.items() if name != "close-tracking"]
    return spec["components"][handler["componentRef"]["name"]]["dag"]["tasks"]


def _loop_bodies(spec: dict) -> dict[str, dict]:
    """ParallelFor sub-DAGs keyed by the plan task that feeds their iterator."""
    bodies = {}
    for name, task in _steps(spec).items():
        iterator = task.get("parameterIterator")
        if iterator:
            producer = task["inputs"]["parameters"][iterator["items"]["inputParameter"]]["taskOutputParameter"]
            bodies[producer["producerTask"]] = spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]
    return bodies


@pytest.mark.parametrize("pipeline", ["distill", "paper"])
def test_every_component_and_the_dag_edges(compiled, pipeline):
    spec, _ = compiled[(pipeline, "cpu")]
    assert spec["pipelineInfo"]["name"] == f"fewframes-{pipeline}"
    root = _steps(spec)
    executors = {name.removeprefix("exec-").rstrip("-0123456789") for name in spec["deploymentSpec"]["executors"]}
    assert executors == STEP_COMPONENTS | {"close-tracking"}

    def deps(task: str) -> set[str]:
        return set(root[task].get("dependentTasks", []))

    assert deps("start-tracking") == set()
    assert "start-tracking" in deps("ingest-split")
    assert "ingest-split" in deps("plan-students") and "ingest-split" in deps("plan-baselines")
    assert "ingest-split" in deps("plan-teacher-on-k")

    bodies = _loop_bodies(spec)
    assert set(bodies) == {"plan-teachers", "plan-students", "plan-baselines", "plan-teacher-on-k"}
    teachers, students = bodies["plan-teachers"], bodies["plan-students"]
    baselines, on_k = bodies["plan-baselines"], bodies["plan-teacher-on-k"]
    # One teacher per planned seed/fraction, each trained with the loop item's seed and fraction, and evaluated.
    assert set(teachers) == {"train-teacher", "evaluate"}
    assert teachers["evaluate"]["dependentTasks"] == ["train-teacher"]
    teacher_inputs = teachers["train-teacher"]["inputs"]["parameters"]
    assert "loop-item" in str(teacher_inputs["seed"]) and "loop-item" in str(teacher_inputs["train_fraction"])
    # gather-teachers waits for the teachers' loop and collects every teacher.
    teacher_loop = next(name for name, task in root.items() if task.get("parameterIterator")
                        and "plan-teachers" in task.get("dependentTasks", []))
    assert deps("gather-teachers") == {teacher_loop}
    assert "train-teacher" in str(root["gather-teachers"]["inputs"]["artifacts"]["teachers"])
    assert set(students) == {"distill-student", "evaluate-2"}
    assert students["evaluate-2"]["dependentTasks"] == ["distill-student"]
    assert set(baselines) == {"train-baseline", "evaluate-3"}
    assert set(on_k) == {"evaluate-teacher-on-k"}
    # The student reads its k, loss, mode and seed from the loop item, and the gathered teachers (it picks the
    # teacher of its own seed and fraction); so does the teacher-on-k control.
    student_inputs = students["distill-student"]["inputs"]
    assert "loop-item" in str(student_inputs["parameters"]["k"]) and "loop-item" in str(student_inputs["parameters"]["seed"])
    assert "pipelinechannel--gather-teachers-gathered" in str(student_inputs["artifacts"]["teachers"])
    on_k_inputs = on_k["evaluate-teacher-on-k"]["inputs"]
    assert "loop-item" in str(on_k_inputs["parameters"]["k"]) and "loop-item" in str(on_k_inputs["parameters"]["seed"])
    assert "pipelinechannel--gather-teachers-gathered" in str(on_k_inputs["artifacts"]["teachers"])
    assert "gather-teachers" in str(root[next(n for n, t in root.items() if t.get("parameterIterator")
                                             and "plan-students" in t.get("dependentTasks", []))]["dependentTasks"])

    # Collected fan-in: benchmark and report wait for every loop they read.
    loops = {name for name, task in root.items() if task.get("parameterIterator")}
    assert len(loops) == 4
    assert loops <= deps("report") and len(loops & deps("benchmark")) == 3  # teacher-on-k trains no model
    assert "benchmark" in deps("report")
    report_inputs = root["report"]["inputs"]["artifacts"]
    assert {"teacher_evaluations", "student_evaluations", "baseline_evaluations", "control_evaluations",
            "benchmark_results"} <= set(report_inputs)
    # Everything runs inside one exit handler whose exit task closes the MLflow parent run from KFP's
    # final status, after success or failure (no pipeline output: KFP allows none from inside it).
    top = spec["root"]["dag"]["tasks"]
    assert set(top) == {"exit-handler-1", "close-tracking"}
    close = top["close-tracking"]
    assert close["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert close["dependentTasks"] == ["exit-handler-1"]
    assert close["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert close["inputs"]["parameters"]["pipeline_run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert "outputDefinitions" not in spec["root"]


def test_parameters_and_defaults_differ_by_grid(compiled):
    distill, _ = compiled[("distill", "cpu")]
    paper, _ = compiled[("paper", "cpu")]
    distill_params = distill["root"]["inputDefinitions"]["parameters"]
    paper_params = paper["root"]["inputDefinitions"]["parameters"]
    assert set(distill_params) == set(paper_params) == set(parameter_defaults("distill", "demo"))
    for name in ("source", "ks", "losses", "modes", "max_epochs", "patience", "family", "controls", "repeat_seeds",
                 "hidden_size", "tracking_uri", "seed"):
        assert name in distill_params
    assert distill_params["ks"]["defaultValue"] == list(parameter_defaults("distill", "demo")["ks"])
    assert paper_params["ks"]["defaultValue"] == [6.0, 10.0, 15.0, 20.0, 30.0]
    assert set(paper_params["baselines"]["defaultValue"]) == {
        "uniform", "random", "first", "middle", "last", "first_middle_last"
    }
    assert paper_params["modes"]["defaultValue"] == ["serial", "parallel"]
    assert paper_params["intermediate_k"]["defaultValue"] == 30
    assert paper_params["train_fractions"]["defaultValue"] == [0.1, 0.25, 0.5]
    # 3 seeds (the pipeline's and two more) of what the claims use, at every k; the controls in both grids.
    assert paper_params["repeat_seeds"]["defaultValue"] == [1.0, 2.0] and paper_params["repeat_ks"]["defaultValue"] == []
    assert distill_params["repeat_seeds"]["defaultValue"] == []
    for params in (distill_params, paper_params):
        assert params["controls"]["defaultValue"] == ["warm_start", "teacher_on_k"]
        assert params["family"]["defaultValue"] == "hrnn"


def _executor_of(spec: dict, task_component: str) -> str:
    return spec["components"][task_component]["executorLabel"]


def _task_component(spec: dict, task: str) -> str:
    root = _steps(spec)
    if task in root:
        return root[task]["componentRef"]["name"]
    for body in _loop_bodies(spec).values():
        if task in body:
            return body[task]["componentRef"]["name"]
    raise KeyError(task)


@pytest.mark.parametrize("pipeline", ["distill", "paper"])
def test_gpu_settings_on_training_and_benchmark_tasks_only(compiled, pipeline):
    spec, platform = compiled[(pipeline, "gpu")]
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gpu_executors = {_executor_of(spec, _task_component(spec, task)) for task in GPU_TASKS}
    assert {name for name, config in k8s.items() if "nodeSelector" in config} == gpu_executors
    for name, executor in executors.items():
        container = executor["container"]
        if name in gpu_executors:
            accelerator = container["resources"]["accelerator"]
            # The Kubernetes resource name (the driver makes it a limit), not the GKE accelerator name.
            assert accelerator["resourceType"] == "nvidia.com/gpu" == DEFAULT_GPU.resource_name
            assert accelerator["resourceCount"] == str(DEFAULT_GPU.gpus)
            assert container["resources"]["resourceCpuRequest"] == DEFAULT_GPU.cpu_request
            assert container["resources"]["resourceCpuLimit"] == DEFAULT_GPU.cpu_limit
            assert container["resources"]["resourceMemoryRequest"] == DEFAULT_GPU.memory_request
            assert container["resources"]["resourceMemoryLimit"] == DEFAULT_GPU.memory_limit
            assert container["image"] == image("cuda")
            assert k8s[name]["nodeSelector"]["labels"] == {
                DEFAULT_GPU.node_selector_key: DEFAULT_GPU.accelerator_type,
                DEFAULT_GPU.capacity_label_key: "on-demand",  # --spot selects the spot pool instead
            }
            (toleration,) = k8s[name]["tolerations"]
            assert toleration == {
                "key": DEFAULT_GPU.taint_key,
                "operator": "Equal",
                "value": DEFAULT_GPU.taint_value,
                "effect": DEFAULT_GPU.taint_effect,
            }
        else:
            assert "accelerator" not in container.get("resources", {})
            assert container["image"] == image("cpu")
            assert "nodeSelector" not in k8s[name] and "tolerations" not in k8s[name]


@pytest.mark.parametrize("pipeline", ["distill", "paper"])
def test_cpu_only_compile_has_no_gpu_settings(compiled, pipeline):
    spec, platform = compiled[(pipeline, "cpu")]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert "accelerator" not in executor["container"]["resources"]  # CPU and memory only
        assert executor["container"]["image"] == image("cpu")
        assert set(k8s[name]) == {"activeDeadlineSeconds", "fieldPathAsEnv"}  # no node selector, no toleration
        # The pod's Argo workflow, by which the step finds its run's parent MLflow run (not a task input).
        assert k8s[name]["fieldPathAsEnv"] == [
            {"name": "FEWFRAMES_KFP_WORKFLOW", "fieldPath": "metadata.labels['workflows.argoproj.io/workflow']"}
        ]


@pytest.mark.parametrize("pipeline", ["distill", "paper"])
def test_every_task_has_a_retry_policy_a_timeout_and_resources_sized_by_preset(compiled, pipeline):
    from fewframes.cluster import TASK_KINDS, task_sizing

    preset = "demo" if pipeline == "distill" else "paper"
    spec, platform = compiled[(pipeline, "cpu")]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = {**_steps(spec), **{name: t for body in _loop_bodies(spec).values() for name, t in body.items()}}
    tasks["close-tracking"] = spec["root"]["dag"]["tasks"]["close-tracking"]
    seen = set()
    for task in tasks.values():
        if "parameterIterator" in task:
            continue
        component = task["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
        sizing = task_sizing(component, preset)
        seen.add(component)
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        assert (resources["resourceCpuRequest"], resources["resourceCpuLimit"]) == (sizing.cpu_request, sizing.cpu_limit)
        assert (resources["resourceMemoryRequest"], resources["resourceMemoryLimit"]) == (
            sizing.memory_request, sizing.memory_limit)  # fmt: skip
        assert int(k8s[executor]["activeDeadlineSeconds"]) == sizing.timeout_s
        if component == "start-tracking":  # a retry would make a second parent run
            assert "retryPolicy" not in task
        else:
            assert task["retryPolicy"]["maxRetryCount"] == sizing.retries >= 2
            # Argo counts the backoff's limit from the first attempt: it must outlast every attempt.
            assert task["retryPolicy"]["backoffMaxDuration"] == f"{sizing.timeout_s * (sizing.retries + 1)}s"
    assert seen == set(TASK_KINDS)
    # Bigger presets get more: the paper grid trains for longer than the demo's.
    assert task_sizing("train-teacher", "paper").timeout_s > task_sizing("train-teacher", "demo").timeout_s


def test_components_are_lightweight_and_import_fewframes(compiled):
    spec, _ = compiled[("distill", "cpu")]
    for executor in spec["deploymentSpec"]["executors"].values():
        program = " ".join(executor["container"]["command"])
        assert "pip install" not in program  # the image already has fewframes and kfp
        assert "from fewframes." in program  # thin: the work is in the package (steps, runs)
    # start-tracking creates a new parent run every time: never served from the cache.
    assert _steps(spec)["start-tracking"]["cachingOptions"] == {}
    assert spec["root"]["dag"]["tasks"]["close-tracking"]["cachingOptions"] == {}
    assert _loop_bodies(spec)["plan-teachers"]["train-teacher"]["cachingOptions"] == {"enableCache": True}


@pytest.mark.parametrize("pipeline", ["distill", "paper"])
def test_mlflow_runs_are_tagged_with_the_kfp_run_id(compiled, pipeline):
    spec, _ = compiled[(pipeline, "cpu")]
    inputs = _steps(spec)["start-tracking"]["inputs"]["parameters"]
    # KFP fills this in with the run's id; start-tracking puts it on the parent run and every child run.
    assert inputs["pipeline_run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    # The pipeline parameter, passed down through the exit handler's DAG.
    assert inputs["tracking_uri"] == {"componentInputParameter": "pipelinechannel--tracking_uri"}


def test_cli_compile_flags_set_the_gpu(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--pipeline", "distill", "--preset", "tiny", "--out", str(out),
                 "--gpus", "4", "--accelerator", "nvidia-l4", "--memory-request", "32Gi"]) == 0
    spec, platform = _load(out)
    teacher = spec["deploymentSpec"]["executors"]["exec-train-teacher"]["container"]["resources"]
    assert teacher["accelerator"]["resourceType"] == "nvidia.com/gpu"  # the model is chosen by the node selector
    assert teacher["accelerator"]["resourceCount"] == "4"
    assert teacher["resourceMemoryRequest"] == "32Gi"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-teacher"]
    assert k8s["nodeSelector"]["labels"][GpuSettings().node_selector_key] == "nvidia-l4"
    assert "GPU x4 nvidia-l4" in capsys.readouterr().out

    cpu = tmp_path / "cpu.yaml"
    assert main(["compile", "--out", str(cpu), "--gpus", "0"]) == 0
    assert "accelerator" not in cpu.read_text()


@pytest.mark.parametrize("pipeline", ["distill", "paper"])
def test_cli_compile_output_is_ir_yaml_kfp_loads_with_a_caching_policy_per_task(tmp_path, capsys, pipeline):
    from kfp import components

    out = tmp_path / f"{pipeline}.yaml"
    assert main(["compile", "--pipeline", pipeline, "--preset", "tiny", "--out", str(out)]) == 0
    capsys.readouterr()
    # What the Kubeflow UI and kfp.Client parse: a PipelineSpec (schema 2.1.0) plus the platform spec.
    loaded = components.load_component_from_file(str(out))
    assert loaded.name == f"fewframes-{pipeline}"
    assert loaded.pipeline_spec.schema_version == "2.1.0"
    assert loaded.platform_spec.platforms["kubernetes"].deployment_spec.executors  # GPU settings by default

    # Caching: every step may reuse results except start-tracking (a new MLflow parent run each time),
    # inside the ParallelFor bodies as well.
    spec, _ = _load(out)
    dags = {"root": spec["root"]["dag"]["tasks"]}  # (the exit handler's own DAG is among the components)
    dags.update({name: c["dag"]["tasks"] for name, c in spec["components"].items() if "dag" in c})
    policy = {
        task: body.get("cachingOptions")
        for dag in dags.values()
        for task, body in dag.items()
        if "parameterIterator" not in body and "dag" not in spec["components"][body["componentRef"]["name"]]
    }  # a loop or the exit handler's group itself runs nothing
    assert policy.pop("start-tracking") == {}
    assert policy.pop("close-tracking") == {}  # it closes this run's parent: never from the cache
    assert set(policy) >= {"ingest-split", "train-teacher", "distill-student", "train-baseline", "benchmark", "report"}
    assert all(option == {"enableCache": True} for option in policy.values()), policy


def test_cli_compile_bad_out_is_one_line(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path / "pipeline.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err and ".yaml" in err


def test_params_are_typed_and_unknown_ones_named():
    defaults = parameter_defaults("distill", "tiny")
    values = parse_params(["ks=6,10", "losses=[\"rep\", \"rep_ce\"]", "max_epochs=3", "patience=2",
                           "learning_rate=0.01", "family=netvlad", "controls=warm_start"], defaults)
    assert values == {"ks": [6, 10], "losses": ["rep", "rep_ce"], "max_epochs": 3, "patience": 2,
                      "learning_rate": 0.01, "family": "netvlad", "controls": ["warm_start"]}
    with pytest.raises(PipelineError, match="--param nope: unknown pipeline parameter"):
        parse_params(["nope=1"], defaults)
    with pytest.raises(PipelineError, match="--param max_epochs=many"):
        parse_params(["max_epochs=many"], defaults)
    with pytest.raises(PipelineError, match="key=value"):
        parse_params(["max_epochs"], defaults)


def test_pipeline_root_and_spot_flags(tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--preset", "tiny", "--out", str(out), "--pipeline-root", "gs://acme-fewframes/kfp/",
                 "--spot"]) == 0  # fmt: skip
    spec, platform = _load(out)
    assert spec["defaultPipelineRoot"] == "gs://acme-fewframes/kfp"  # artifacts on the project's bucket
    # ingest-split writes the frame store there for the steps to read in place (tests/test_store_in_place.py)
    store_root = spec["root"]["inputDefinitions"]["parameters"]["store_root"]
    assert store_root["defaultValue"] == "gs://acme-fewframes/kfp/frame-stores"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-teacher"]
    assert k8s["nodeSelector"]["labels"][DEFAULT_GPU.capacity_label_key] == "spot"
    # The default comes from the environment (fewframes.cluster.PIPELINE_ROOT); none: the backend's store.
    monkeypatch.setattr("fewframes.cluster.PIPELINE_ROOT", "gs://from-env/kfp")
    assert main(["compile", "--preset", "tiny", "--out", str(out)]) == 0
    assert _load(out)[0]["defaultPipelineRoot"] == "gs://from-env/kfp"
    monkeypatch.setattr("fewframes.cluster.PIPELINE_ROOT", "")
    assert main(["compile", "--preset", "tiny", "--out", str(out)]) == 0
    assert "defaultPipelineRoot" not in _load(out)[0]
    capsys.readouterr()
    for bad in ("/local/folder", "gs://", "http://x/y"):
        assert main(["compile", "--preset", "tiny", "--out", str(tmp_path / "bad.yaml"), "--pipeline-root", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--pipeline-root" in err, err
        assert not (tmp_path / "bad.yaml").exists()


def test_every_task_has_a_display_name_a_person_reads(compiled):
    # What the Kubeflow UI shows for each task (taskInfo.name). Inside a ParallelFor the name is fixed at
    # compile time, so it names the kind of task; `fewframes run` adds the loop item (tests/test_progress.py).
    spec, _ = compiled[("paper", "cpu")]
    shown = {}
    for component in [spec["root"], *spec["components"].values()]:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            if "componentRef" in task and not name.startswith("for-loop") and name != "exit-handler-1":
                shown[name] = task["taskInfo"]["name"]
    assert shown == {
        "start-tracking": "start tracking", "ingest-split": "ingest/split", "plan-teachers": "plan teachers",
        "train-teacher": "train teacher", "evaluate": "evaluate teacher", "gather-teachers": "gather teachers",
        "plan-students": "plan students", "distill-student": "distill student", "evaluate-2": "evaluate student",
        "plan-baselines": "plan baselines", "train-baseline": "train baseline", "evaluate-3": "evaluate baseline",
        "plan-teacher-on-k": "plan teacher on k", "evaluate-teacher-on-k": "evaluate teacher on k frames",
        "benchmark": "benchmark", "report": "report", "close-tracking": "close tracking",
    }
