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
