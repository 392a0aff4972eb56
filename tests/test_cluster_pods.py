"""Every task of both compiled pipelines, rendered into the Pod the KFP v2 backend would create for it
(``tests/kfp_driver.py``: the driver's resource rules, the Kubernetes platform config), must be a Pod the
Kubernetes API server accepts: resource names and quantities by the API server's own rules, the rest by
kubernetes-validate in strict mode, for the oldest and newest Kubernetes versions we support.

No Kubeflow cluster runs here: the driver is reproduced from its source (kubeflow/pipelines
``backend/src/v2/driver``), which turns the accelerator *type* into a container limit *name*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fewframes.cluster import DEFAULT_GPU
from fewframes.pipelines.dag import compile_pipeline
from kfp_driver import container_resources, executor_pod, pods, resource_errors, simulate_runs

KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


@pytest.fixture(scope="module")
def gpu_pods(compiled_pipeline) -> dict[str, dict[str, dict[str, Any]]]:
    # The same compiles test_pipeline_compile checks (conftest's compiled_pipeline: once per session).
    return {pipeline: pods(_documents(compiled_pipeline(pipeline, preset, DEFAULT_GPU)))
            for pipeline, preset in (("distill", "demo"), ("paper", "paper"))}


def _validate_strict(pod: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(pod, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{pod['metadata']['name']} invalid for Kubernetes {version}: {error.message}") from None


@pytest.mark.parametrize("pipeline", ["distill", "paper"])
def test_every_task_pod_is_one_the_api_server_accepts(gpu_pods, pipeline):
    rendered = gpu_pods[pipeline]
    gpu_tasks = {name: pod for name, pod in rendered.items() if "nodeSelector" in pod["spec"]}
    assert gpu_tasks, "no GPU task in the GPU compile"
    for name, pod in rendered.items():
        assert resource_errors(pod) == [], name
        _validate_strict(pod)
    for name, pod in gpu_tasks.items():
        (container,) = pod["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits[DEFAULT_GPU.resource_name] == str(DEFAULT_GPU.gpus), name
        assert DEFAULT_GPU.accelerator_type not in limits, name
        assert requests == {"cpu": DEFAULT_GPU.cpu_request, "memory": DEFAULT_GPU.memory_request}, name
        assert limits["cpu"] == DEFAULT_GPU.cpu_limit and limits["memory"] == DEFAULT_GPU.memory_limit, name
        # The GPU model comes from the node selector on GKE's label; the pool's taint is tolerated.
        assert pod["spec"]["nodeSelector"] == DEFAULT_GPU.node_selector()
        assert pod["spec"]["nodeSelector"][DEFAULT_GPU.node_selector_key] == DEFAULT_GPU.accelerator_type
        assert {"key": DEFAULT_GPU.taint_key, "operator": "Equal", "value": DEFAULT_GPU.taint_value,
                "effect": DEFAULT_GPU.taint_effect} in pod["spec"]["tolerations"]  # fmt: skip


def test_the_check_rejects_the_gke_accelerator_name_as_a_limit():
    """What the pipeline compiled before: `accelerator: {resourceType: nvidia-tesla-t4}`; the driver makes it
    `limits: {nvidia-tesla-t4: 1}`, which the API server refuses (not standard, not fully qualified), although
    the JSON schema alone would let it through."""
    old_ir = {"accelerator": {"resourceType": "nvidia-tesla-t4", "resourceCount": "1"},
              "resourceCpuRequest": "4", "resourceMemoryRequest": "16Gi"}  # fmt: skip
    assert container_resources(old_ir) == {"limits": {"nvidia-tesla-t4": "1"}, "requests": {"cpu": "4", "memory": "16Gi"}}
    pod = executor_pod("exec-train-teacher", {"container": {"image": "x", "resources": old_ir}}, None)
    _validate_strict(pod)  # the schema does not look at resource names...
    (error,) = resource_errors(pod)  # ...the API server does
    assert "nvidia-tesla-t4" in error and "standard resource" in error
    # The driver's other rules, checked the same way: a reserved domain, a fractional GPU, request > limit.
    for resources, expected in (
        ({"accelerator": {"resourceType": "kubernetes.io/gpu", "resourceCount": "1"}}, "extended resource"),
        ({"accelerator": {"resourceType": "nvidia.com/gpu", "resourceCount": "0.5"}}, "whole numbers"),
        ({"resourceCpuRequest": "4", "resourceCpuLimit": "2"}, "exceeds the limit"),
    ):
        rendered = executor_pod("exec-x", {"container": {"image": "x", "resources": resources}}, None)
        assert any(expected in message for message in resource_errors(rendered)), (resources, resource_errors(rendered))


def test_old_numeric_resource_fields_render_as_the_driver_formats_them():
    assert container_resources({"cpuLimit": 2.0, "memoryLimit": 8.0, "memoryRequest": 0.5}) == {
        "limits": {"memory": "8G", "cpu": "2"},
        "requests": {"memory": "0.5G"},
    }


def _compiled_spec(path: Path) -> dict[str, Any]:
    compile_pipeline("distill", str(path), "demo", DEFAULT_GPU)
    return next(d for d in _documents(path) if "deploymentSpec" in d)


def test_a_second_run_with_the_same_inputs_is_served_from_the_cache(tmp_path, compiled_pipeline):
    """The pipeline compiled twice and run twice with the same arguments (as `fewframes submit` does: a new
    KFP run id, the same tracking server and experiment): by the driver's cache key every step of the
    second run is a cache hit; only start-tracking and close-tracking (caching off) run again."""
    from fewframes.cluster import MLFLOW_TRACKING_URI

    # One compile is the session's (conftest's compiled_pipeline), the other a fresh one of the same inputs.
    spec_a = next(d for d in _documents(compiled_pipeline("distill", "demo", DEFAULT_GPU)) if "deploymentSpec" in d)
    spec_b = _compiled_spec(tmp_path / "b.yaml")
    arguments = {"tracking_uri": MLFLOW_TRACKING_URI, "run_name": "demo-t4"}
    run_a, run_b = simulate_runs(spec_a, spec_b, arguments)
    uncached = {path for path in run_b.keys if path.rsplit("/", 1)[-1] in ("start-tracking", "close-tracking")}
    steps = set(run_b.keys) - uncached
    assert len(steps) >= 9 and any("distill-student" in path for path in steps)
    assert run_b.cached == steps
    assert all(run_a.keys[path] == run_b.keys[path] for path in steps)
    # A real change is a miss for what it touches and what depends on it, nothing else.
    _, changed = simulate_runs(spec_a, spec_b, arguments, {**arguments, "max_epochs": 7})
    assert any(path.endswith("/ingest-split") for path in changed.cached)
    assert not any("train-teacher" in path or "distill-student" in path or "report" in path for path in changed.cached)


def test_the_cache_check_sees_a_run_specific_input(compiled_pipeline):
    """The simulation is not blind: with start-tracking's artifact as an input of ingest-split (as every
    step had before), ingest-split and everything downstream misses on every run."""
    spec = next(d for d in _documents(compiled_pipeline("distill", "demo", DEFAULT_GPU)) if "deploymentSpec" in d)
    (handler,) = [t for n, t in spec["root"]["dag"]["tasks"].items() if n != "close-tracking"]
    steps = spec["components"][handler["componentRef"]["name"]]["dag"]["tasks"]
    ingest = steps["ingest-split"]
    ingest.setdefault("inputs", {}).setdefault("artifacts", {})["tracking"] = {
        "taskOutputArtifact": {"producerTask": "start-tracking", "outputArtifactKey": "tracking"}
    }
    _, run_b = simulate_runs(spec, spec, {"tracking_uri": "http://mlflow:5000"})
    assert not any(path.endswith(("ingest-split", "train-teacher", "report")) for path in run_b.cached)
    # And a run id as a parameter (the exit task takes one) changes the key as well.
    close = spec["root"]["dag"]["tasks"]["close-tracking"]
    close["cachingOptions"] = {"enableCache": True}
    run_a, run_b = simulate_runs(spec, spec, {})
    assert run_a.keys["close-tracking"] != run_b.keys["close-tracking"]
