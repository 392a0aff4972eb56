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
