output "cluster_name" {
  value = google_container_cluster.main.name
}

output "zone" {
  value = google_container_cluster.main.location
}

output "bucket" {
  description = "gs:// root for data, pipeline artifacts and MLflow artifacts."
  value       = "gs://${google_storage_bucket.data.name}"
}

output "pipeline_root" {
  description = "Set FEWFRAMES_PIPELINE_ROOT to this (or pass --pipeline-root): KFP keeps run artifacts on the bucket."
  value       = "gs://${google_storage_bucket.data.name}/kfp"
}

output "image_repository" {
  description = "Set FEWFRAMES_IMAGE_REPOSITORY to this before containers/build.sh and fewframes compile/submit."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/fewframes"
}

output "pipelines_service_account" {
  description = "GCP account of pipeline pods (Workload Identity annotation of the KFP pipeline-runner KSA)."
  value       = google_service_account.pipelines.email
}

output "mlflow_service_account" {
  description = "GCP account of the MLflow server (Workload Identity annotation of its KSA)."
  value       = google_service_account.mlflow.email
}

output "get_credentials" {
  description = "Point kubectl at the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.main.name} --zone ${google_container_cluster.main.location} --project ${var.project_id}"
}
