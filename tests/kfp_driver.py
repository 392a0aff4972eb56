"""What the open-source KFP v2 backend makes of a compiled pipeline's tasks: the pod of each executor.

No Kubeflow cluster runs here, so the pod is built the way the backend builds it, from its documented code
(kubeflow/pipelines 2.x, ``backend/src/v2/driver``), and then checked the way the Kubernetes API server
checks it:

- ``initPodSpecPatch`` (driver): container ``main`` with the executor's image; resources from the
  executor's ``resources``: ``resourceCpuRequest``/``resourceCpuLimit``/``resourceMemoryRequest``/
  ``resourceMemoryLimit`` as quantities (the old numeric ``cpuLimit``/``memoryLimit`` fields as ``%v`` and
  ``%vG``), and the accelerator as ``limits[<resourceType>] = <resourceCount>`` - the accelerator *type*
  becomes the *name* of a container resource limit, unchanged.
- the Kubernetes platform config (``kfp-kubernetes``): ``nodeSelector``, ``tolerations``,
  ``activeDeadlineSeconds`` (``set_timeout``), field-path environment variables and pod labels.
- the API server: container resource names must be standard (``cpu``, ``memory``, ``ephemeral-storage``,
  ``hugepages-*``) or fully qualified extended resources (``vendor/name``, outside ``kubernetes.io``)
  (``validateContainerResourceName`` in ``pkg/apis/core/validation``); quantities must parse and be
  non-negative; extended resources are integers; a request may not exceed its limit. The schema itself
  (field names and types) is checked by kubernetes-validate, strictly. The JSON schema does not check
  resource names, which is why the API server's rule is written out here.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

# Quantity grammar of k8s.io/apimachinery/pkg/api/resource (sign, number, then a suffix).
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE]?)$")
_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip
_STANDARD_CONTAINER_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
# IsQualifiedName: an optional DNS-1123 subdomain prefix and a name of [A-Za-z0-9_.-], alphanumeric at the ends.
_QUALIFIED_NAME = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def parse_quantity(value: str) -> Decimal:
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    return Decimal(number) * _SUFFIX[suffix]


def _quantity(new: Any, old: Any, old_format: str) -> str | None:
    """getPodResource: the string field wins; else the old numeric field (``%v``, ``%vG``); else unset."""
    if new not in (None, ""):
        parse_quantity(str(new))  # the driver fails the task on an unparsable quantity
        return str(new)
    if old not in (None, 0, 0.0):
        number = float(old)
        return old_format % (int(number) if number.is_integer() else number)
    return None


def container_resources(executor_resources: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The ``resources`` the driver puts on container ``main`` for an executor's IR ``resources``."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    for target, name, new, old, fmt in (
        (limits, "memory", "resourceMemoryLimit", "memoryLimit", "%sG"),
        (requests, "memory", "resourceMemoryRequest", "memoryRequest", "%sG"),
        (limits, "cpu", "resourceCpuLimit", "cpuLimit", "%s"),
        (requests, "cpu", "resourceCpuRequest", "cpuRequest", "%s"),
    ):
        value = _quantity(executor_resources.get(new), executor_resources.get(old), fmt)
        if value is not None:
            target[name] = value
    accelerator = executor_resources.get("accelerator")
    if accelerator:
        kind = accelerator.get("resourceType") or accelerator.get("type") or ""
        count = accelerator.get("resourceCount") or (str(accelerator["count"]) if accelerator.get("count") else "")
        if kind and count:
            parse_quantity(count)
            limits[kind] = count  # the accelerator type, verbatim, is the limit's resource name
    return {key: value for key, value in (("limits", limits), ("requests", requests)) if value}


def executor_pod(name: str, executor: dict[str, Any], platform: dict[str, Any] | None) -> dict[str, Any]:
    """The Pod the backend would create for ``executor`` (IR) with its Kubernetes platform config."""
    container_spec = executor["container"]
    container: dict[str, Any] = {
        "name": "main",
        "image": container_spec["image"],
        "command": ["/kfp-launcher/launch", "--"],
        "args": [*container_spec.get("command", []), *container_spec.get("args", [])],
    }
    resources = container_resources(container_spec.get("resources", {}))
    if resources:
        container["resources"] = resources
    env = [{"name": e["name"], "value": e.get("value", "")} for e in container_spec.get("env", [])]
    platform = platform or {}
    for field in platform.get("fieldPathAsEnv", []):
        env.append({"name": field["name"], "valueFrom": {"fieldRef": {"fieldPath": field["fieldPath"]}}})
    if env:
        container["env"] = env
    spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if platform.get("nodeSelector", {}).get("labels"):
        spec["nodeSelector"] = dict(platform["nodeSelector"]["labels"])
    if platform.get("tolerations"):
        spec["tolerations"] = [dict(t) for t in platform["tolerations"]]
    if platform.get("activeDeadlineSeconds"):
        spec["activeDeadlineSeconds"] = int(platform["activeDeadlineSeconds"])
    metadata: dict[str, Any] = {"name": name.removeprefix("exec-")[:63].strip("-") or "task"}
    labels = platform.get("podMetadata", {}).get("labels")
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def pods(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every executor of a compiled pipeline (its YAML documents) as the Pod the backend makes of it."""
    spec = next(d for d in documents if "deploymentSpec" in d)
    platform = next((d for d in documents if "platforms" in d), {})
    configs = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    return {
        name: executor_pod(name, executor, configs.get(name))
        for name, executor in spec["deploymentSpec"]["executors"].items()
    }


def _resource_name_errors(name: str) -> list[str]:
    if not _QUALIFIED_NAME.match(name):
        return [f"{name!r}: not a qualified name"]
    if "/" not in name:
        if name in _STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-"):
            return []
        return [f"{name!r}: must be a standard resource for containers (or a fully qualified extended resource)"]
    domain = name.split("/", 1)[0]
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        return [f"{name!r}: doesn't follow extended resource name standard (kubernetes.io is reserved)"]
    return []


def resource_errors(pod: dict[str, Any]) -> list[str]:
    """What the API server's container-resource validation says about ``pod`` (empty = accepted)."""
    errors: list[str] = []
    for container in pod["spec"]["containers"]:
        resources = container.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        for kind, values in (("limits", limits), ("requests", requests)):
            for name, value in values.items():
                where = f"{container['name']}.resources.{kind}"
                errors += [f"{where}: {message}" for message in _resource_name_errors(name)]
                try:
                    quantity = parse_quantity(str(value))
                except ValueError as exc:
                    errors.append(f"{where}[{name}]: {exc}")
                    continue
                if quantity < 0:
                    errors.append(f"{where}[{name}]: must be non-negative")
                if "/" in name and quantity != quantity.to_integral_value():
                    errors.append(f"{where}[{name}]: extended resources must be whole numbers")
        for name, value in requests.items():
            if name in limits:
                request, limit = parse_quantity(str(value)), parse_quantity(str(limits[name]))
                if "/" in name and request != limit:
                    errors.append(f"{container['name']}: requests[{name}] must equal the limit (extended resource)")
                elif request > limit:
                    errors.append(f"{container['name']}: requests[{name}] {value} exceeds the limit {limits[name]}")
    return errors


# --- The cache key, as the driver derives it --------------------------------------------------------------
#
# backend/src/v2/driver/cache.go (getFingerPrint) and backend/src/v2/cacheutils/cache.go (GenerateCacheKey,
# GenerateFingerPrint): sha256 of the JSON of
#   inputArtifactNames    input name -> the names (MLMD identities) of the artifacts bound to it,
#   inputParameterValues  input name -> its resolved value (pipeline arguments, runtime placeholders such
#                         as {{$.pipeline_job_uuid}}, task outputs),
#   outputArtifactsSpec   output name -> its type and metadata (the URI wiped),
#   outputParametersSpec  output name -> its type,
#   containerSpec         image, command + args, PVC names, the executor's env.
# A task is served from the cache when caching is on for it and an earlier execution has the same key.
# An artifact's identity is new whenever its producer executes (a cache miss, or caching off), which is
# how one uncached task upstream makes everything downstream of its artifacts miss.

import hashlib
import json

_PLACEHOLDERS = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}", "{{$.pipeline_task_uuid}}")


def _fingerprint(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _Run:
    """One simulated run of a compiled pipeline; ``previous`` is an earlier run whose executions it may reuse."""

    def __init__(self, spec: dict[str, Any], arguments: dict[str, Any], run_id: str, previous: "_Run | None") -> None:
        self.spec, self.run_id, self.previous = spec, run_id, previous
        self.keys: dict[str, str] = {}  # task path -> fingerprint
        self.cached: set[str] = set()
        self.outputs: dict[str, Any] = {}  # "task path/output" -> identity (artifact name or parameter value)
        defaults = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
        self._dag("", spec["root"]["dag"], {"parameters": {**defaults, **arguments}, "artifacts": {}})

    def _resolve_parameter(self, source: dict[str, Any], scope: dict[str, Any], path: str) -> Any:
        if "componentInputParameter" in source:
            return scope["parameters"][source["componentInputParameter"]]
        if "runtimeValue" in source:
            value = source["runtimeValue"]["constant"]
            for placeholder in _PLACEHOLDERS:
                if isinstance(value, str):
                    value = value.replace(placeholder, f"{self.run_id}:{placeholder}")
            return value
        if "taskOutputParameter" in source:
            out = source["taskOutputParameter"]
            return self.outputs[f"{path}{out['producerTask']}/{out['outputParameterKey']}"]
        if "taskFinalStatus" in source:
            return f"{self.run_id}:final-status"
        raise ValueError(f"unsupported parameter source {source}")

    def _resolve_artifact(self, source: dict[str, Any], scope: dict[str, Any], path: str) -> Any:
        if "componentInputArtifact" in source:
            return scope["artifacts"][source["componentInputArtifact"]]
        out = source["taskOutputArtifact"]
        return self.outputs[f"{path}{out['producerTask']}/{out['outputArtifactKey']}"]

    def _dag(self, path: str, dag: dict[str, Any], scope: dict[str, Any]) -> None:
        tasks = dag["tasks"]
        done: set[str] = set()
        while len(done) < len(tasks):  # dependency order
            ready = [n for n, t in tasks.items() if n not in done and set(t.get("dependentTasks", [])) <= done]
            assert ready, f"cycle in {path or 'root'}"
            for name in sorted(ready):
                self._task(path, name, tasks[name], scope)
                done.add(name)

    def _task(self, path: str, name: str, task: dict[str, Any], scope: dict[str, Any]) -> None:
        inputs = task.get("inputs", {})
        parameters = {k: self._resolve_parameter(v, scope, path) for k, v in inputs.get("parameters", {}).items()}
        artifacts = {k: self._resolve_artifact(v, scope, path) for k, v in inputs.get("artifacts", {}).items()}
        component = self.spec["components"][task["componentRef"]["name"]]
        here = f"{path}{name}"
        if "dag" in component:  # a group (exit handler, loop): its tasks in its own scope
            inner_path = f"{here}/"
            if "parameterIterator" in task:  # one iteration: the item is the plan's output, element 0
                iterator = task["parameterIterator"]
                items = parameters[iterator["items"]["inputParameter"]]
                parameters[iterator["itemInput"]] = f"{items}[0]"
            self._dag(inner_path, component["dag"], {"parameters": parameters, "artifacts": artifacts})
            for key, selectors in component["dag"].get("outputs", {}).get("artifacts", {}).items():
                self.outputs[f"{here}/{key}"] = [
                    self.outputs[f"{inner_path}{s['producerSubtask']}/{s['outputArtifactKey']}"]
                    for s in selectors["artifactSelectors"]
                ]
            return
        container = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        outputs = component.get("outputDefinitions", {})
        key = {
            "inputArtifactNames": {k: v if isinstance(v, list) else [v] for k, v in artifacts.items()},
            "inputParameterValues": parameters,
            "outputArtifactsSpec": {k: v.get("artifactType", {}) for k, v in outputs.get("artifacts", {}).items()},
            "outputParametersSpec": {k: v.get("parameterType") for k, v in outputs.get("parameters", {}).items()},
            "containerSpec": {
                "image": container["image"],
                "cmdArgs": [*container.get("command", []), *container.get("args", [])],
                "env": container.get("env", []),
            },
        }
        fingerprint = _fingerprint(key)
        self.keys[here] = fingerprint
        reuse = (
            task.get("cachingOptions", {}).get("enableCache", False)
            and self.previous is not None
            and self.previous.keys.get(here) == fingerprint
        )
        if reuse:
            self.cached.add(here)
        for kind in ("artifacts", "parameters"):
            for output in outputs.get(kind, {}):
                source = self.previous.outputs if reuse else None
                self.outputs[f"{here}/{output}"] = (
                    source[f"{here}/{output}"] if source else f"{self.run_id}:{here}/{output}"
                )


def simulate_runs(
    spec_a: dict[str, Any], spec_b: dict[str, Any], arguments: dict[str, Any], arguments_b: dict[str, Any] | None = None
) -> tuple[_Run, _Run]:
    """Run A of ``spec_a``, then run B of ``spec_b`` (the same pipeline compiled again) with the same
    arguments (or ``arguments_b``): B's tasks whose key equals A's are served from the cache (``run_b.cached``)."""
    run_a = _Run(spec_a, arguments, "run-a", None)
    return run_a, _Run(spec_b, arguments if arguments_b is None else arguments_b, "run-b", run_a)
