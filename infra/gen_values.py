"""Derive the infrastructure's values from ``fewframes.cluster``, the one source of truth.

Writes ``infra/terraform/fewframes.auto.tfvars.json`` (the GPU node pool's name, accelerator, machine type and
taint; the namespaces and service accounts that Workload Identity binds), which Terraform loads by itself.
The file is committed; ``tests/test_infra.py`` fails when it is out of date with ``fewframes/cluster.py``.

    python infra/gen_values.py            # rewrite the file
    python infra/gen_values.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from fewframes import cluster
from fewframes.cluster import DEFAULT_GPU, GpuSettings
from fewframes.fsio import write_bytes_atomic

INFRA = Path(__file__).resolve().parent
TFVARS_PATH = INFRA / "terraform" / "fewframes.auto.tfvars.json"

# Kubernetes taint effects (what tolerations name) -> the GKE API / Terraform spelling.
GKE_TAINT_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}


@dataclass(frozen=True)
class MachineType:
    name: str
    vcpus: int
    memory_gib: float


# The smallest GCE machine type that carries one GPU of each accelerator type (GPU machine families).
ONE_GPU_MACHINE_TYPES: dict[str, MachineType] = {
    "nvidia-tesla-t4": MachineType("n1-standard-8", 8, 30),
    "nvidia-tesla-v100": MachineType("n1-standard-8", 8, 30),
    "nvidia-l4": MachineType("g2-standard-8", 8, 32),
    "nvidia-tesla-a100": MachineType("a2-highgpu-1g", 12, 85),
    "nvidia-a100-80gb": MachineType("a2-ultragpu-1g", 12, 170),
    "nvidia-h100-80gb": MachineType("a3-highgpu-1g", 26, 234),
}

# What kubelet and system pods keep for themselves on such a node (GKE reserves about this much).
SYSTEM_RESERVED_CPU = 0.5
SYSTEM_RESERVED_MEMORY_FRACTION = 0.2


class ValuesError(ValueError):
    """fewframes.cluster holds a value the infrastructure cannot express; the message names the field."""


def parse_cpu(quantity: str) -> float:
    """Kubernetes CPU quantity ("4", "500m") in cores."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", quantity.strip())
    if not match:
        raise ValuesError(f"GpuSettings.cpu_request: not a CPU quantity: {quantity!r}")
    return float(match[1]) / (1000 if match[2] else 1)


def parse_memory_gib(quantity: str) -> float:
    """Kubernetes memory quantity ("16Gi", "16G", "512Mi") in GiB."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "": 1}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|)", quantity.strip())
    if not match:
        raise ValuesError(f"GpuSettings.memory_request: not a memory quantity: {quantity!r}")
    return float(match[1]) * units[match[2]] / 2**30


def gpu_machine_type(settings: GpuSettings) -> MachineType:
    """The machine type of the GPU pool: carries the accelerator and fits one GPU task's requests."""
    if settings.gpus != 1:
        raise ValuesError(f"GpuSettings.gpus: the node pool is sized for 1 GPU per task, got {settings.gpus}")
    try:
        machine = ONE_GPU_MACHINE_TYPES[settings.accelerator_type]
    except KeyError:
        known = ", ".join(sorted(ONE_GPU_MACHINE_TYPES))
        raise ValuesError(f"GpuSettings.accelerator_type: {settings.accelerator_type!r} is not one of {known}") from None
    cpu_room = machine.vcpus - SYSTEM_RESERVED_CPU
    memory_room = machine.memory_gib * (1 - SYSTEM_RESERVED_MEMORY_FRACTION)
    if parse_cpu(settings.cpu_request) > cpu_room:
        raise ValuesError(f"GpuSettings.cpu_request {settings.cpu_request} does not fit {machine.name}")
    if parse_memory_gib(settings.memory_request) > memory_room:
        raise ValuesError(f"GpuSettings.memory_request {settings.memory_request} does not fit {machine.name}")
    if not parse_cpu(settings.cpu_request) <= parse_cpu(settings.cpu_limit) <= cpu_room:
        raise ValuesError(f"GpuSettings.cpu_limit {settings.cpu_limit} must be >= the request and fit {machine.name}")
    if not parse_memory_gib(settings.memory_request) <= parse_memory_gib(settings.memory_limit) <= memory_room:
        raise ValuesError(
            f"GpuSettings.memory_limit {settings.memory_limit} must be >= the request and fit {machine.name}"
        )
    return machine


def terraform_values(settings: GpuSettings = DEFAULT_GPU) -> dict[str, object]:
    """The variables of infra/terraform that fewframes.cluster decides."""
    if settings.taint_effect not in GKE_TAINT_EFFECTS:
        raise ValuesError(
            f"GpuSettings.taint_effect must be one of {', '.join(GKE_TAINT_EFFECTS)}, got {settings.taint_effect!r}"
        )
    return {
        "gpu_node_pool_name": settings.node_pool,
        "gpu_spot_node_pool_name": settings.spot_node_pool,
        "gpu_capacity_label": settings.capacity_label_key,
        "gpu_accelerator_type": settings.accelerator_type,
        "gpu_accelerator_count": settings.gpus,
        "gpu_machine_type": gpu_machine_type(settings).name,
        "gpu_taint": {
            "key": settings.taint_key,
            "value": settings.taint_value,
            "effect": GKE_TAINT_EFFECTS[settings.taint_effect],
        },
        "kfp_namespace": cluster.KFP_NAMESPACE,
        "pipeline_service_account": cluster.PIPELINE_SERVICE_ACCOUNT,
        "mlflow_namespace": cluster.MLFLOW_NAMESPACE,
        "mlflow_service_account": cluster.MLFLOW_SERVICE_ACCOUNT,
    }


def render(values: dict[str, object]) -> str:
    return json.dumps(values, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write infra values derived from fewframes.cluster.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    args = parser.parse_args(argv)
    try:
        text = render(terraform_values())
    except ValuesError as exc:
        print(f"gen_values: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = TFVARS_PATH.read_text() if TFVARS_PATH.exists() else ""
        if current != text:
            print(f"{TFVARS_PATH} is out of date with fewframes/cluster.py: run python infra/gen_values.py", file=sys.stderr)
            return 1
        print(f"{TFVARS_PATH} is up to date")
        return 0
    write_bytes_atomic(TFVARS_PATH, text.encode())
    print(f"wrote {TFVARS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
