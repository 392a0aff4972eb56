"""Cluster settings: the single source of truth for image names and GPU node-pool scheduling.

The compiled pipeline's GPU settings (accelerator type and limit, node selector, toleration), the
Terraform GPU node pool (its label and taint) and the container build script all read these values, so a
taint can never drift from the toleration that is meant to match it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fewframes.config import _DictMixin

# One setting names the component image; overridable for forks and private registries.
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/fewframes/fewframes"
IMAGE_REPOSITORY = os.environ.get("FEWFRAMES_IMAGE_REPOSITORY", DEFAULT_IMAGE_REPOSITORY)
IMAGE_TAG = os.environ.get("FEWFRAMES_IMAGE_TAG", "0.1.0")


def image(variant: str = "cpu") -> str:
    """The component image: ``cpu`` (slim) or ``cuda`` (GPU node pools)."""
    if variant not in ("cpu", "cuda"):
        raise ValueError(f"image variant must be cpu or cuda, got {variant!r}")
    return f"{IMAGE_REPOSITORY}:{IMAGE_TAG}-{variant}"


@dataclass(frozen=True)
class GpuSettings(_DictMixin):
    """How a training or benchmark task asks for a GPU on the cluster. ``gpus == 0`` means a CPU task.

    Two names for the GPU, on purpose: the open-source KFP v2 driver turns the task's accelerator *type* into
    the name of a container resource limit (``limits: {<type>: <count>}``), so the type the pipeline asks
    for must be the Kubernetes extended resource that the NVIDIA device plugin advertises,
    ``resource_name`` (``nvidia.com/gpu``). The GPU *model* is chosen by the node selector on GKE's label
    ``cloud.google.com/gke-accelerator=<accelerator_type>``, the pool's guest accelerator.
    """

    gpus: int = 0
    accelerator_type: str = "nvidia-tesla-t4"  # GKE accelerator name; also the node pool's guest accelerator
    resource_name: str = "nvidia.com/gpu"  # the container resource the driver puts in limits (count = gpus)
    cpu_request: str = "4"
    memory_request: str = "16Gi"
    # Limits: room above the requests on the 8-vCPU/30 GB node that carries one GPU (one GPU task per node).
    cpu_limit: str = "7"
    memory_limit: str = "24Gi"
    node_pool: str = "gpu-pool"
    # GKE puts this label on GPU nodes; the pipeline's node selector uses it.
    node_selector_key: str = "cloud.google.com/gke-accelerator"
    # The GPU node pool's taint, and the toleration GPU tasks carry (one definition for both).
    taint_key: str = "nvidia.com/gpu"
    taint_value: str = "present"
    taint_effect: str = "NoSchedule"
    # Spot or on-demand GPU nodes, chosen per run (--spot): two pools carry this node label with either value.
    spot: bool = False
    spot_node_pool: str = "gpu-spot-pool"
    capacity_label_key: str = "fewframes-capacity"

    @property
    def capacity(self) -> str:
        """The value of ``capacity_label_key`` on the pool the GPU tasks go to."""
        return "spot" if self.spot else "on-demand"

    def node_selector(self) -> dict[str, str]:
        """The node labels a GPU task selects: the GPU model (GKE's label) and spot or on-demand capacity."""
        return {self.node_selector_key: self.accelerator_type, self.capacity_label_key: self.capacity}

    @property
    def enabled(self) -> bool:
        return self.gpus > 0


DEFAULT_GPU = GpuSettings(gpus=1)
CPU_ONLY = GpuSettings(gpus=0)


# --- Cluster services (read by infra/, docs/cluster.md and the components' defaults) ---
# Kubeflow Pipelines backend (standalone manifests); its major version must match the kfp SDK's.
KFP_BACKEND_VERSION = "2.17.3"
KFP_NAMESPACE = "kubeflow"
# The Kubernetes service account KFP runs pipeline pods as; Workload Identity maps it to a GCP account.
PIPELINE_SERVICE_ACCOUNT = "pipeline-runner"

# The MLflow tracking server on the cluster (Service name, namespace, port) and its image.
MLFLOW_NAMESPACE = "mlflow"
MLFLOW_SERVICE = "mlflow"
MLFLOW_PORT = 5000
MLFLOW_TRACKING_URI = f"http://{MLFLOW_SERVICE}.{MLFLOW_NAMESPACE}.svc.cluster.local:{MLFLOW_PORT}"
MLFLOW_SERVICE_ACCOUNT = "mlflow"


def mlflow_server_image() -> str:
    """The MLflow tracking server image (MLflow + PostgreSQL driver + GCS client), built by containers/build.sh."""
    return f"{IMAGE_REPOSITORY}-mlflow:{IMAGE_TAG}"


# --- Sizing, retries and timeouts of every task, by preset ---


@dataclass(frozen=True)
class TaskSizing(_DictMixin):
    """CPU/memory requests and limits, the pod's timeout and the retries of one kind of task.

    ``timeout_s`` is the pod's ``activeDeadlineSeconds`` (kfp-kubernetes ``set_timeout``; the v2 SDK has no
    task timeout of its own). Retries wait ``retry_backoff``, doubling each time. The backoff's maximum
    duration (KFP's default is one hour) counts from the first attempt, so it is set to the timeout times the
    attempts: a long training task preempted late is still retried (and resumes from its checkpoint)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    timeout_s: int
    retries: int
    retry_backoff: str = "60s"

    @property
    def retry_max_duration(self) -> str:
        return f"{self.timeout_s * (self.retries + 1)}s"


# What each task does, for its sizing: bookkeeping (tracking, plans), ingest, training, evaluation,
# benchmark (all models, latency), report. GPU tasks take CPU and memory from GpuSettings instead.
TASK_KINDS: dict[str, str] = {
    "start-tracking": "control",
    "close-tracking": "control",
    "plan-students": "control",
    "plan-baselines": "control",
    "ingest-split": "ingest",
    "train-teacher": "train",
    "distill-student": "train",
    "train-baseline": "train",
    "evaluate": "evaluate",
    "benchmark": "benchmark",
    "report": "report",
}

_HOUR = 3600
# Small presets (tiny, demo: minutes on a laptop) and the larger ones (report: an hour on 2 cores; paper:
# YouTube-8M-sized, many hours). CPU tasks fit the CPU pool's e2-standard-8 (8 vCPU, 32 GB) with room left.
_SIZING: dict[str, dict[str, TaskSizing]] = {
    "small": {
        "control": TaskSizing("250m", "1", "512Mi", "1Gi", 15 * 60, 2),
        "ingest": TaskSizing("1", "2", "2Gi", "4Gi", _HOUR, 2),
        "train": TaskSizing("2", "4", "4Gi", "8Gi", 2 * _HOUR, 3),
        "evaluate": TaskSizing("1", "2", "2Gi", "4Gi", _HOUR, 2),
        "benchmark": TaskSizing("2", "4", "4Gi", "8Gi", _HOUR, 2),
        "report": TaskSizing("500m", "2", "2Gi", "4Gi", 30 * 60, 2),
    },
    "large": {
        "control": TaskSizing("250m", "1", "512Mi", "1Gi", 30 * 60, 2),
        "ingest": TaskSizing("4", "7", "8Gi", "24Gi", 12 * _HOUR, 2),
        "train": TaskSizing("4", "7", "12Gi", "24Gi", 24 * _HOUR, 3),
        "evaluate": TaskSizing("2", "4", "8Gi", "16Gi", 6 * _HOUR, 2),
        "benchmark": TaskSizing("4", "7", "8Gi", "24Gi", 6 * _HOUR, 2),
        "report": TaskSizing("1", "2", "4Gi", "8Gi", _HOUR, 2),
    },
}
_PRESET_SIZING = {"tiny": "small", "demo": "small", "report": "large", "paper": "large"}
# start-tracking makes a new parent run each attempt: a retry would leave a second, orphaned one.
_NO_RETRY = {"start-tracking"}


def task_sizing(task: str, preset: str) -> TaskSizing:
    """The sizing of ``task`` (a component name, e.g. ``train-teacher``) for ``preset``."""
    sizing = _SIZING[_PRESET_SIZING.get(preset, "large")][TASK_KINDS[task]]
    return sizing.replace(retries=0) if task in _NO_RETRY else sizing


# --- Where KFP keeps the artifacts of a cluster run ---
# gs://BUCKET/kfp (Terraform output `pipeline_root`) puts them on the project's bucket instead of the
# backend's in-cluster object store; empty = the backend's default.
PIPELINE_ROOT = os.environ.get("FEWFRAMES_PIPELINE_ROOT", "")
PIPELINE_ROOT_SCHEMES = ("gs://", "s3://", "minio://")
