# Project-specific settings (set in terraform.tfvars or with -var). The GPU pool's scheduling settings
# come from fewframes.auto.tfvars.json, generated from fewframes/cluster.py by infra/gen_values.py.

variable "project_id" {
  description = "GCP project that holds the cluster and the bucket."
  type        = string
}

variable "region" {
  description = "Region of the bucket and of the cluster's control plane location."
  type        = string
  default     = "us-central1"
}

variable "zone" {
  description = "Zone of the (zonal) cluster and its node pools; it must offer the GPU accelerator type."
  type        = string
  default     = "us-central1-a"
}

variable "cluster_name" {
  description = "GKE cluster name."
  type        = string
  default     = "fewframes"
}

variable "bucket_name" {
  description = "GCS bucket for TFRecords, frame stores, pipeline artifacts and MLflow artifacts (globally unique)."
  type        = string
}

variable "cpu_machine_type" {
  description = "Machine type of the CPU node pool (KFP, MLflow, PostgreSQL and CPU pipeline steps)."
  type        = string
  default     = "e2-standard-8"
}

variable "cpu_min_nodes" {
  description = "Minimum CPU nodes (KFP's own services need a node at all times)."
  type        = number
  default     = 1
}

variable "cpu_max_nodes" {
  description = "Maximum CPU nodes."
  type        = number
  default     = 4
}

variable "gpu_max_nodes" {
  description = "Maximum on-demand GPU nodes; the pool scales from zero, so idle GPUs cost nothing."
  type        = number
  default     = 2
}

variable "gpu_spot_max_nodes" {
  description = "Maximum spot GPU nodes (fewframes submit --spot); also scales from zero."
  type        = number
  default     = 4
}

variable "master_ipv4_cidr_block" {
  description = "Private /28 range of the GKE control plane (private nodes); must not overlap the VPC's ranges."
  type        = string
  default     = "172.16.0.0/28"
}

variable "gpu_driver_version" {
  description = "GKE-managed NVIDIA driver: LATEST (CUDA 13 needs driver >= 580) or DEFAULT."
  type        = string
  default     = "LATEST"
}

# --- Generated from fewframes.cluster (fewframes.auto.tfvars.json); edit cluster.py, then run gen_values.py ---

variable "gpu_node_pool_name" {
  description = "GPU node pool name (fewframes.cluster.GpuSettings.node_pool)."
  type        = string
}

variable "gpu_spot_node_pool_name" {
  description = "Spot GPU node pool name (fewframes.cluster.GpuSettings.spot_node_pool)."
  type        = string
}

variable "gpu_capacity_label" {
  description = "Node label whose value (on-demand or spot) GPU tasks select (GpuSettings.capacity_label_key)."
  type        = string
}

variable "gpu_accelerator_type" {
  description = "GKE accelerator type (GpuSettings.accelerator_type); GKE labels GPU nodes with it."
  type        = string
}

variable "gpu_accelerator_count" {
  description = "GPUs per GPU node (GpuSettings.gpus)."
  type        = number
}

variable "gpu_machine_type" {
  description = "Machine type that carries the accelerator and fits a GPU task's CPU and memory requests."
  type        = string
}

variable "gpu_taint" {
  description = "Taint of the GPU pool; GPU tasks carry the matching toleration (GpuSettings.taint_*)."
  type = object({
    key    = string
    value  = string
    effect = string
  })

  validation {
    condition     = contains(["NO_SCHEDULE", "PREFER_NO_SCHEDULE", "NO_EXECUTE"], var.gpu_taint.effect)
    error_message = "gpu_taint.effect must be NO_SCHEDULE, PREFER_NO_SCHEDULE or NO_EXECUTE (GKE spelling)."
  }
}

variable "kfp_namespace" {
  description = "Namespace of Kubeflow Pipelines (fewframes.cluster.KFP_NAMESPACE)."
  type        = string
}

variable "pipeline_service_account" {
  description = "Kubernetes service account that runs pipeline pods (fewframes.cluster.PIPELINE_SERVICE_ACCOUNT)."
  type        = string
}

variable "mlflow_namespace" {
  description = "Namespace of the MLflow tracking server (fewframes.cluster.MLFLOW_NAMESPACE)."
  type        = string
}

variable "mlflow_service_account" {
  description = "Kubernetes service account of the MLflow server (fewframes.cluster.MLFLOW_SERVICE_ACCOUNT)."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the cluster; set false before tearing everything down."
  type        = bool
  default     = true
}
