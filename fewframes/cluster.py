"""Cluster settings: the single source of truth for image names and GPU node-pool scheduling.

The compiled pipeline's GPU settings (accelerator type and limit, node selector, toleration), the
Terraform GPU node pool (its label and taint) and the container build script all read these values, so a
taint can never drift from the toleration that is meant to match it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from fewframes.config import ConfigError, _DictMixin

# One setting names the component image; overridable for forks and private registries.
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/fewframes/fewframes"
IMAGE_REPOSITORY = os.environ.get("FEWFRAMES_IMAGE_REPOSITORY", DEFAULT_IMAGE_REPOSITORY)
IMAGE_VARIANTS = ("cpu", "cuda", "mlflow")
# A JSON file {variant: "repository:tag@sha256:<digest>"} that containers/build.sh --push writes; when it is
# given (--image-lock or this variable), the compiled pipeline names every image by digest.
IMAGE_LOCK_ENV = "FEWFRAMES_IMAGE_LOCK"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def image_tag() -> str:
    """The component images' tag: ``$FEWFRAMES_IMAGE_TAG``, else ``<package version>-g<git commit>`` (the
    commit of this checkout, so an image says which code it holds), else the version alone (an installed
    package, no git)."""
    if os.environ.get("FEWFRAMES_IMAGE_TAG"):
        return os.environ["FEWFRAMES_IMAGE_TAG"]
    import subprocess

    from fewframes import __version__

    try:
        commit = subprocess.run(
            ["git", "-C", _ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}-g{commit}" if commit else __version__


def read_image_lock(path: str) -> dict[str, str]:
    """The pinned images of an image lock file; a missing file or an entry without a digest is a ConfigError."""
    import json
    import re

    try:
        with open(path) as handle:
            pinned = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--image-lock {path}: cannot read it ({exc})") from None
    if not isinstance(pinned, dict) or not pinned:
        raise ConfigError(f"--image-lock {path}: expected a JSON object {{variant: image@sha256:...}}")
    for variant, reference in pinned.items():
        if variant not in IMAGE_VARIANTS:
            raise ConfigError(f"--image-lock {path}: unknown image {variant!r} (expected {', '.join(IMAGE_VARIANTS)})")
        if not isinstance(reference, str) or not re.fullmatch(r"[\w.:/-]+@sha256:[0-9a-f]{64}", reference):
            raise ConfigError(f"--image-lock {path}: {variant} = {reference!r} is not an image@sha256:<64 hex> reference")
    return pinned


def image(variant: str = "cpu", lock: dict[str, str] | None = None) -> str:
    """The component image: ``cpu`` (slim, ingests TFRecords) or ``cuda`` (GPU node pools, no tensorflow);
    by digest when ``lock`` (an image lock, or ``$FEWFRAMES_IMAGE_LOCK``) pins it."""
    if variant not in ("cpu", "cuda"):
        raise ValueError(f"image variant must be cpu or cuda, got {variant!r}")
    if lock is None and os.environ.get(IMAGE_LOCK_ENV):
        lock = read_image_lock(os.environ[IMAGE_LOCK_ENV])
    if lock and variant in lock:
        return lock[variant]
    return f"{IMAGE_REPOSITORY}:{image_tag()}-{variant}"


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
    """The MLflow tracking server image (MLflow + PostgreSQL driver + GCS client), built by containers/build.sh.
    Tagged with the package version only: it holds no fewframes code, and the manifests name it."""
    from fewframes import __version__

    return f"{IMAGE_REPOSITORY}-mlflow:{os.environ.get('FEWFRAMES_MLFLOW_IMAGE_TAG', __version__)}"


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
    "plan-teachers": "control",
    "plan-students": "control",
    "plan-baselines": "control",
    "plan-teacher-on-k": "control",
    "ingest-split": "ingest",
    "train-teacher": "train",
    "gather-teachers": "evaluate",  # copies every teacher file (hundreds of MB each at paper sizes)
    "distill-student": "train",
    "train-baseline": "train",
    "evaluate": "evaluate",
    "evaluate-teacher-on-k": "evaluate",
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


# --- How a step finds its pipeline run's parent MLflow run without defeating KFP's cache ---
# KFP's cache key holds a task's input parameter values and the identities of its input artifacts, so a
# run-specific input (the parent run id, the KFP run id, an artifact of the never-cached start-tracking)
# would make every task miss the cache on every run. Steps take only the stable tracking coordinates
# (tracking URI, experiment) and read the run they belong to from their pod: Argo labels every pod of a
# workflow with its name, and the Kubernetes downward API puts that label in this variable (a platform
# setting, not part of the cache key). start-tracking tags the parent run with the same name.
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
WORKFLOW_ENV = "FEWFRAMES_KFP_WORKFLOW"
