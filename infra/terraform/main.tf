# GKE cluster for fewframes: a CPU pool (Kubeflow Pipelines, MLflow, CPU steps) and a GPU pool that scales
# from zero, Workload Identity so pods reach GCS without keys, a bucket for data and artifacts, and an
# Artifact Registry repository for the component images.

locals {
  workload_pool = "${var.project_id}.svc.id.goog"
  node_scopes   = ["https://www.googleapis.com/auth/cloud-platform"]
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# --- Nodes run as a minimal service account, not the Compute Engine default one ---

resource "google_service_account" "nodes" {
  account_id   = "${var.cluster_name}-nodes"
  display_name = "fewframes GKE nodes"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/artifactregistry.reader",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "main" {
  name     = var.cluster_name
  location = var.zone

  # Node pools are managed below; GKE insists on a default pool at creation, so it is removed at once.
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = var.deletion_protection

  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {}
  # Nodes get no public IP (they reach the internet through Cloud NAT below); the control plane keeps its
  # public endpoint so kubectl works from a workstation.
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }
  enable_shielded_nodes = true
  # Dataplane V2 enforces NetworkPolicy (infra/k8s/mlflow/networkpolicy.yaml) without an add-on.
  datapath_provider = "ADVANCED_DATAPATH"

  release_channel {
    channel = "REGULAR"
  }

  # kubectl authenticates through gcloud (OAuth); no long-lived client certificate is issued.
  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  resource_labels = {
    app = "fewframes"
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  depends_on = [google_project_service.apis]
}

# Private nodes pull images from ghcr.io, Docker Hub and GitHub (the KFP manifests) through Cloud NAT.
resource "google_compute_router" "nat" {
  name    = "${var.cluster_name}-nat"
  region  = var.region
  network = "default"

  depends_on = [google_project_service.apis]
}

resource "google_compute_router_nat" "nat" {
  name                               = "${var.cluster_name}-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
}

resource "google_container_node_pool" "cpu" {
  name     = "cpu-pool"
  cluster  = google_container_cluster.main.id
  location = var.zone

  autoscaling {
    min_node_count = var.cpu_min_nodes
    max_node_count = var.cpu_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.cpu_machine_type
    disk_size_gb    = 100
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_scopes
    labels = {
      "fewframes-pool" = "cpu"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# Two GPU pools, the same but for capacity: on-demand, and spot (cheaper, preemptible). A run picks one with
# `fewframes submit --spot`: GPU tasks select the pool's var.gpu_capacity_label. Training resumes from its
# checkpoint on GCS when a spot node is reclaimed and KFP retries the task.
resource "google_container_node_pool" "gpu" {
  name     = var.gpu_node_pool_name
  cluster  = google_container_cluster.main.id
  location = var.zone

  # Scale from zero: a GPU node exists only while a GPU task (which tolerates the taint) is pending or running.
  initial_node_count = 0
  autoscaling {
    min_node_count = 0
    max_node_count = var.gpu_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.gpu_machine_type
    disk_size_gb    = 200 # the CUDA image is several GB
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_scopes
    labels = {
      "fewframes-pool"         = "gpu"
      (var.gpu_capacity_label) = "on-demand"
    }

    # GKE labels these nodes <gpu_node_selector_key>=<accelerator type>; the pipeline selects on that label.
    guest_accelerator {
      type  = var.gpu_accelerator_type
      count = var.gpu_accelerator_count

      gpu_driver_installation_config {
        gpu_driver_version = var.gpu_driver_version
      }
    }

    # The same taint GKE puts on GPU nodes, declared so it is explicit and checked against fewframes.cluster.
    taint {
      key    = var.gpu_taint.key
      value  = var.gpu_taint.value
      effect = var.gpu_taint.effect
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "gpu_spot" {
  name     = var.gpu_spot_node_pool_name
  cluster  = google_container_cluster.main.id
  location = var.zone

  initial_node_count = 0
  autoscaling {
    min_node_count = 0
    max_node_count = var.gpu_spot_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    spot            = true
    machine_type    = var.gpu_machine_type
    disk_size_gb    = 200
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_scopes
    labels = {
      "fewframes-pool"         = "gpu"
      (var.gpu_capacity_label) = "spot"
    }

    guest_accelerator {
      type  = var.gpu_accelerator_type
      count = var.gpu_accelerator_count

      gpu_driver_installation_config {
        gpu_driver_version = var.gpu_driver_version
      }
    }

    taint {
      key    = var.gpu_taint.key
      value  = var.gpu_taint.value
      effect = var.gpu_taint.effect
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# --- Data and artifacts ---

resource "google_storage_bucket" "data" {
  name                        = var.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # An overwritten or deleted object (a model, a frame store) can be restored for 30 days.
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.cluster_name
  format        = "DOCKER"
  description   = "fewframes component images (containers/build.sh)"

  depends_on = [google_project_service.apis]
}

# --- Workload Identity: Kubernetes service accounts act as these GCP accounts ---

resource "google_service_account" "pipelines" {
  account_id   = "${var.cluster_name}-pipelines"
  display_name = "fewframes pipeline pods (KFP ${var.kfp_namespace}/${var.pipeline_service_account})"
}

resource "google_service_account" "mlflow" {
  account_id   = "${var.cluster_name}-mlflow"
  display_name = "fewframes MLflow server (${var.mlflow_namespace}/${var.mlflow_service_account})"
}

resource "google_storage_bucket_iam_member" "pipelines" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.pipelines.email}"
}

resource "google_storage_bucket_iam_member" "mlflow" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.mlflow.email}"
}

resource "google_service_account_iam_member" "pipelines_workload_identity" {
  service_account_id = google_service_account.pipelines.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_pool}[${var.kfp_namespace}/${var.pipeline_service_account}]"

  # The identity pool exists once the cluster does.
  depends_on = [google_container_cluster.main]
}

resource "google_service_account_iam_member" "mlflow_workload_identity" {
  service_account_id = google_service_account.mlflow.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_pool}[${var.mlflow_namespace}/${var.mlflow_service_account}]"

  depends_on = [google_container_cluster.main]
}
