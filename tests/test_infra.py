"""infra/ checked offline with real tools, and checked against fewframes.cluster (the one source of truth).

- Terraform: HashiCorp's own parser (`terraform fmt -check`, `terraform providers`, which loads the whole
  configuration) when the binary is on PATH, and python-hcl2 everywhere for structural checks. `terraform
  validate` is not possible offline: it needs the google provider plugin, which only the Terraform registry serves.
- Kubernetes: manifests rendered by kustomize (`kubectl kustomize`, when kubectl is on PATH) and validated
  against the Kubernetes API schemas with kubernetes-validate (strict: unknown fields are errors).
- One source of truth: the GPU node pool's taint (Terraform, through the generated tfvars) equals the
  toleration the compiled pipeline puts on GPU tasks, and both equal fewframes.cluster.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from fewframes import cluster
from fewframes.cluster import DEFAULT_GPU

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
TERRAFORM = INFRA / "terraform"
K8S = INFRA / "k8s"
TFVARS = TERRAFORM / "fewframes.auto.tfvars.json"
# GKE versions the manifests must be valid for: the oldest we support and the newest schema we have.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")

TERRAFORM_BINARY = shutil.which("terraform")
KUBECTL_BINARY = shutil.which("kubectl")
needs_terraform = pytest.mark.skipif(
    TERRAFORM_BINARY is None,
    reason="terraform is not on PATH (HashiCorp's APT repo and registry are unreachable here; python-hcl2 checks still run)",
)
needs_kubectl = pytest.mark.skipif(
    KUBECTL_BINARY is None, reason="kubectl (with its built-in kustomize) is not on PATH: apt-get install kubectl"
)


def _gen_values() -> Any:
    """infra/gen_values.py as a module (it is a script, not part of the package)."""
    if "fewframes_infra_gen_values" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fewframes_infra_gen_values", INFRA / "gen_values.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules["fewframes_infra_gen_values"]


def _hcl(path: Path) -> dict[str, Any]:
    import hcl2

    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    with path.open() as stream:
        return hcl2.load(stream, serialization_options=options)


def _terraform() -> dict[str, Any]:
    """All .tf files merged: {'variable': {name: body}, 'resource': {type: {name: body}}, ...}."""
    merged: dict[str, Any] = {"variable": {}, "resource": {}, "output": {}, "locals": {}, "terraform": [], "provider": []}
    for path in sorted(TERRAFORM.glob("*.tf")):
        document = _hcl(path)
        for block in document.get("variable", []):
            merged["variable"].update(block)
        for block in document.get("output", []):
            merged["output"].update(block)
        for block in document.get("resource", []):
            for kind, named in block.items():
                merged["resource"].setdefault(kind, {}).update(named)
        for block in document.get("locals", []):
            merged["locals"].update(block)
        merged["terraform"] += document.get("terraform", [])
        merged["provider"] += document.get("provider", [])
    return merged


def _one(block: Any) -> Any:
    """A nested block as python-hcl2 gives it (a one-element list) -> its body."""
    if isinstance(block, list):
        assert len(block) == 1, block
        return block[0]
    return block


def _terraform_text() -> str:
    return "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))


def _resolve(expression: Any, values: dict[str, Any]) -> Any:
    """The value of a plain `${var.a.b}` reference given the variables' values (other expressions unchanged)."""
    if isinstance(expression, str):
        match = re.fullmatch(r"\$\{var\.([\w.]+)\}", expression)
        if match:
            value: Any = values
            for part in match[1].split("."):
                value = value[part]
            return value
    return expression


def _terraform_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TF_CLI_CONFIG_FILE"}
    env.update(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1")
    return env


# --- The generated values -------------------------------------------------------------------------------


def test_generated_tfvars_are_up_to_date_with_fewframes_cluster() -> None:
    result = subprocess.run([sys.executable, str(INFRA / "gen_values.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(TFVARS.read_text()) == _gen_values().terraform_values(DEFAULT_GPU)


def test_generated_values_follow_the_settings() -> None:
    gen_values = _gen_values()
    values = gen_values.terraform_values(DEFAULT_GPU.replace(accelerator_type="nvidia-l4", taint_effect="NoExecute"))
    assert values["gpu_machine_type"] == "g2-standard-8"
    assert values["gpu_accelerator_type"] == "nvidia-l4"
    assert values["gpu_taint"] == {"key": DEFAULT_GPU.taint_key, "value": DEFAULT_GPU.taint_value, "effect": "NO_EXECUTE"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"accelerator_type": "nvidia-tesla-k9000"}, "accelerator_type"),
        ({"memory_request": "64Gi"}, "memory_request"),
        ({"cpu_request": "8"}, "cpu_request"),
        ({"cpu_limit": "2"}, "cpu_limit"),
        ({"memory_limit": "40Gi"}, "memory_limit"),
        ({"taint_effect": "NO_SCHEDULE"}, "taint_effect"),
        ({"gpus": 2}, "gpus"),
    ],
)
def test_generator_rejects_settings_the_pool_cannot_serve(change: dict[str, Any], field: str) -> None:
    gen_values = _gen_values()
    with pytest.raises(gen_values.ValuesError, match=f"GpuSettings.{field}"):
        gen_values.terraform_values(DEFAULT_GPU.replace(**change))


# --- Terraform ------------------------------------------------------------------------------------------


def test_terraform_variables_are_declared_and_provided() -> None:
    config = _terraform()
    declared = set(config["variable"])
    referenced = set(re.findall(r"\bvar\.(\w+)", _terraform_text()))
    assert referenced <= declared, f"undeclared: {sorted(referenced - declared)}"
    generated = set(json.loads(TFVARS.read_text()))
    assert generated <= declared, f"tfvars sets undeclared variables {sorted(generated - declared)}"
    example = set(re.findall(r"^(\w+)\s*=", (TERRAFORM / "terraform.tfvars.example").read_text(), re.M))
    required = {name for name, body in config["variable"].items() if "default" not in body}
    assert required <= generated | example, f"no value for {sorted(required - generated - example)}"
    assert not (generated & example), "a generated value must not also be set by hand"


def test_terraform_references_name_declared_resources() -> None:
    config = _terraform()
    text = _terraform_text()
    for kind, name in set(re.findall(r"\b(google_[a-z_]+)\.(\w+)\.", text)):
        assert name in config["resource"].get(kind, {}), f"{kind}.{name} is referenced but not declared"
    for name in set(re.findall(r"\blocal\.(\w+)", text)):
        assert name in config["locals"], f"local.{name}"


def test_google_provider_is_pinned() -> None:
    (block,) = _terraform()["terraform"]
    (providers,) = block["required_providers"]
    google = providers["google"]
    assert google["source"] == "hashicorp/google"
    assert re.fullmatch(r"\d+\.\d+\.\d+", google["version"]), f"not an exact pin: {google['version']}"


def test_gpu_node_pool_is_the_one_fewframes_cluster_describes() -> None:
    pools = _terraform()["resource"]["google_container_node_pool"]
    values = json.loads(TFVARS.read_text())
    gpu = pools["gpu"]
    assert _resolve(gpu["name"], values) == DEFAULT_GPU.node_pool
    assert _one(gpu["autoscaling"])["min_node_count"] == 0, "the GPU pool must scale from zero"
    assert gpu["initial_node_count"] == 0
    node = _one(gpu["node_config"])
    accelerator = _one(node["guest_accelerator"])
    assert _resolve(accelerator["type"], values) == DEFAULT_GPU.accelerator_type
    assert _resolve(accelerator["count"], values) == DEFAULT_GPU.gpus
    assert "gpu_driver_installation_config" in accelerator  # GKE installs the driver, no DaemonSet to apply
    taint = {key: _resolve(_one(node["taint"])[key], values) for key in ("key", "value", "effect")}
    gke_effect = _gen_values().GKE_TAINT_EFFECTS[DEFAULT_GPU.taint_effect]
    assert taint == {"key": DEFAULT_GPU.taint_key, "value": DEFAULT_GPU.taint_value, "effect": gke_effect}
    # GKE's own label on GPU nodes is what the pipeline's node selector uses.
    assert DEFAULT_GPU.node_selector_key == "cloud.google.com/gke-accelerator"
    cpu_node = _one(pools["cpu"]["node_config"])
    assert "taint" not in cpu_node and "guest_accelerator" not in cpu_node


def test_spot_and_on_demand_gpu_pools_differ_only_in_capacity() -> None:
    """`fewframes submit --spot` selects the spot pool by its capacity label, otherwise the on-demand one;
    both carry the same GPU, taint and scale-from-zero, so the same GPU tasks run on either."""
    pools = _terraform()["resource"]["google_container_node_pool"]
    values = json.loads(TFVARS.read_text())
    on_demand, spot = _one(pools["gpu"]["node_config"]), _one(pools["gpu_spot"]["node_config"])
    assert _resolve(pools["gpu_spot"]["name"], values) == DEFAULT_GPU.spot_node_pool
    assert spot.get("spot") is True and "spot" not in on_demand
    assert _one(pools["gpu_spot"]["autoscaling"])["min_node_count"] == 0
    for key in ("guest_accelerator", "taint", "machine_type"):
        assert spot[key] == on_demand[key], key
    assert values["gpu_capacity_label"] == DEFAULT_GPU.capacity_label_key
    label = "${(var.gpu_capacity_label)}"  # a key computed from the variable, as HCL writes it
    assert on_demand["labels"][label] == DEFAULT_GPU.capacity == "on-demand"
    assert spot["labels"][label] == DEFAULT_GPU.replace(spot=True).capacity == "spot"
    assert DEFAULT_GPU.replace(spot=True).node_selector()[DEFAULT_GPU.capacity_label_key] == "spot"


def test_cheap_hardening_private_shielded_nodes_and_bucket_versioning() -> None:
    """checkov's findings that cost little: nodes without public IPs (egress through Cloud NAT), shielded
    nodes with secure boot, a versioned bucket (old versions kept 30 days)."""
    resources = _terraform()["resource"]
    (gke,) = resources["google_container_cluster"].values()
    private = _one(gke["private_cluster_config"])
    assert private["enable_private_nodes"] is True and private["enable_private_endpoint"] is False
    assert gke["enable_shielded_nodes"] is True
    assert "google_compute_router_nat" in resources  # private nodes still pull public images
    for name, pool in resources["google_container_node_pool"].items():
        shielded = _one(_one(pool["node_config"])["shielded_instance_config"])
        assert shielded == {"enable_secure_boot": True, "enable_integrity_monitoring": True}, name
    bucket = resources["google_storage_bucket"]["data"]
    assert _one(bucket["versioning"])["enabled"] is True


def test_workload_identity_binds_the_service_accounts_the_cluster_uses() -> None:
    config = _terraform()
    resources = config["resource"]
    (gke,) = resources["google_container_cluster"].values()
    assert gke["datapath_provider"] == "ADVANCED_DATAPATH"  # enforces the MLflow NetworkPolicy
    assert _one(gke["workload_identity_config"])["workload_pool"] == "${local.workload_pool}"
    assert config["locals"]["workload_pool"] == "${var.project_id}.svc.id.goog"
    for pool in resources["google_container_node_pool"].values():
        assert _one(_one(pool["node_config"])["workload_metadata_config"])["mode"] == "GKE_METADATA"
    values = json.loads(TFVARS.read_text())
    members = {
        member["member"]
        .replace("${var.kfp_namespace}", values["kfp_namespace"])
        .replace("${var.pipeline_service_account}", values["pipeline_service_account"])
        .replace("${var.mlflow_namespace}", values["mlflow_namespace"])
        .replace("${var.mlflow_service_account}", values["mlflow_service_account"])
        for member in resources["google_service_account_iam_member"].values()
        if member["role"] == "roles/iam.workloadIdentityUser"
    }
    assert members == {
        f"serviceAccount:${{local.workload_pool}}[{cluster.KFP_NAMESPACE}/{cluster.PIPELINE_SERVICE_ACCOUNT}]",
        f"serviceAccount:${{local.workload_pool}}[{cluster.MLFLOW_NAMESPACE}/{cluster.MLFLOW_SERVICE_ACCOUNT}]",
    }
    bucket = resources["google_storage_bucket"]["data"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    granted = {grant["member"] for grant in resources["google_storage_bucket_iam_member"].values()}
    assert granted == {
        "serviceAccount:${google_service_account.pipelines.email}",
        "serviceAccount:${google_service_account.mlflow.email}",
    }


@needs_terraform
def test_terraform_fmt_accepts_the_configuration() -> None:
    result = subprocess.run(
        [TERRAFORM_BINARY, "fmt", "-check", "-diff", "-recursive", "-no-color", str(TERRAFORM)],
        capture_output=True,
        text=True,
        env=_terraform_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_terraform
def test_terraform_loads_the_configuration(tmp_path: Path) -> None:
    """`terraform providers` runs Terraform's full configuration loader (no plugins needed)."""
    result = subprocess.run(
        [TERRAFORM_BINARY, f"-chdir={TERRAFORM}", "providers", "-no-color"],
        capture_output=True,
        text=True,
        env=_terraform_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Error" not in result.stdout + result.stderr
    assert "hashicorp/google] 6." in result.stdout or "hashicorp/google]" in result.stdout
    # The loader really rejects bad configuration (a guard against a no-op check).
    broken = tmp_path / "broken"
    shutil.copytree(TERRAFORM, broken)
    (broken / "broken.tf").write_text('output "x" {\n  description = "${var.zone}"\n  value = 1\n}\n')
    failed = subprocess.run(
        [TERRAFORM_BINARY, f"-chdir={broken}", "providers", "-no-color"], capture_output=True, text=True, env=_terraform_env()
    )
    assert failed.returncode != 0 and "Variables not allowed" in failed.stderr


# --- Kubernetes -----------------------------------------------------------------------------------------


def _validate(documents: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    assert documents
    for version in KUBERNETES_VERSIONS:
        for document in documents:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                raise AssertionError(
                    f"{document['kind']}/{document['metadata']['name']} invalid for Kubernetes {version}: {error.message}"
                ) from None


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([KUBECTL_BINARY, "kustomize", str(directory)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def _manifest_files() -> list[Path]:
    return [
        path
        for path in sorted(K8S.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
    ]


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda path: str(path.relative_to(K8S)))
def test_each_manifest_file_is_valid_against_the_api_schema(path: Path) -> None:
    _validate([document for document in yaml.safe_load_all(path.read_text()) if document])


def test_third_party_images_are_pinned_by_digest() -> None:
    """Images we do not build (PostgreSQL) are pinned by tag and digest; ours carry fewframes.cluster's tag."""
    images = []
    for path in _manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            for container in (document or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                images.append(container["image"].split(" ")[0])
    assert images
    for image in images:
        if image.startswith(cluster.DEFAULT_IMAGE_REPOSITORY):
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image


def test_schema_validation_really_rejects_bad_manifests() -> None:
    with pytest.raises(AssertionError, match="invalid"):
        _validate([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": "http"}]}}])
    with pytest.raises(AssertionError, match="invalid"):  # strict: a misspelt field is an error
        _validate([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x", "anotations": {}}}])


def _cluster_env(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
    )


# A cluster's own values, as docs/cluster.md step 3 writes them: distinct from the committed placeholders so
# the test proves kustomize puts each one in place.
SITE_VALUES = {
    "PIPELINES_GCP_SERVICE_ACCOUNT": "fewframes-pipelines@acme-ml.iam.gserviceaccount.com",
    "MLFLOW_GCP_SERVICE_ACCOUNT": "fewframes-mlflow@acme-ml.iam.gserviceaccount.com",
    "MLFLOW_ARTIFACTS_DESTINATION": "gs://acme-ml-fewframes/mlflow",
    "MLFLOW_IMAGE": "us-central1-docker.pkg.dev/acme-ml/fewframes/fewframes-mlflow:0.1.0",
}


def test_committed_cluster_env_names_every_value_and_the_default_image() -> None:
    committed = _cluster_env(K8S / "cluster-env" / "cluster.env")
    assert set(committed) == set(SITE_VALUES)
    if not ({"FEWFRAMES_IMAGE_REPOSITORY", "FEWFRAMES_IMAGE_TAG"} & set(os.environ)):
        assert committed["MLFLOW_IMAGE"] == cluster.mlflow_server_image()
    assert committed["MLFLOW_IMAGE"].startswith(f"{cluster.DEFAULT_IMAGE_REPOSITORY}-mlflow:")


@needs_kubectl
def test_mlflow_server_renders_valid_and_matches_fewframes_cluster(tmp_path: Path) -> None:
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s)
    (k8s / "cluster-env" / "cluster.env").write_text("".join(f"{k}={v}\n" for k, v in SITE_VALUES.items()))
    documents = _kustomize(k8s / "mlflow")
    _validate(documents)
    by_kind = {(document["kind"], document["metadata"]["name"]): document for document in documents}
    assert "ConfigMap" not in {kind for kind, _ in by_kind}, "the cluster.env ConfigMap is local-config only"
    for (kind, _), document in by_kind.items():
        if kind != "Namespace":
            assert document["metadata"]["namespace"] == cluster.MLFLOW_NAMESPACE
    # The address the components use: http://<service>.<namespace>.svc.cluster.local:<port>
    service = by_kind[("Service", cluster.MLFLOW_SERVICE)]
    assert [port["port"] for port in service["spec"]["ports"]] == [cluster.MLFLOW_PORT]
    assert cluster.MLFLOW_TRACKING_URI == (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{cluster.MLFLOW_PORT}"
    )
    deployment = by_kind[("Deployment", "mlflow")]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == cluster.MLFLOW_SERVICE_ACCOUNT
    (container,) = pod["containers"]
    assert container["image"] == SITE_VALUES["MLFLOW_IMAGE"]
    assert "--port" in container["args"] and str(cluster.MLFLOW_PORT) in container["args"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"] == SITE_VALUES["MLFLOW_ARTIFACTS_DESTINATION"]
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith(
        "postgresql+psycopg://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@mlflow-postgres:5432/"
    )
    # Kubernetes expands $(VAR) only from variables defined earlier in the list.
    names = [variable["name"] for variable in container["env"]]
    uses = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    assert max(names.index(name) for name in uses) < names.index("MLFLOW_BACKEND_STORE_URI")
    secrets = {variable["valueFrom"]["secretKeyRef"]["name"] for variable in container["env"] if "valueFrom" in variable}
    assert secrets == {"mlflow-postgres"}
    account = by_kind[("ServiceAccount", cluster.MLFLOW_SERVICE_ACCOUNT)]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == SITE_VALUES["MLFLOW_GCP_SERVICE_ACCOUNT"]
    postgres = by_kind[("StatefulSet", "mlflow-postgres")]
    assert postgres["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "mlflow-postgres"}}]
    assert ("Service", "mlflow-postgres") in by_kind
    # Only the MLflow server's pods may reach PostgreSQL, and the policy selects the pods it means to.
    policy = by_kind[("NetworkPolicy", "mlflow-postgres-from-mlflow-only")]["spec"]
    postgres_labels = postgres["spec"]["template"]["metadata"]["labels"]
    mlflow_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= postgres_labels.items()
    (rule,) = policy["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= mlflow_labels.items()
    assert not policy["podSelector"]["matchLabels"].items() <= mlflow_labels.items()
    assert not any("set-from-cluster-env" in yaml.safe_dump(document) for document in documents)


def test_mlflow_server_answers_the_host_names_the_cluster_uses() -> None:
    """MLflow's own DNS-rebinding guard, fed the Deployment's MLFLOW_SERVER_ALLOWED_HOSTS."""
    from urllib.parse import urlsplit

    from mlflow.server.security_utils import is_allowed_host_header

    (deployment,) = [d for d in yaml.safe_load_all((K8S / "mlflow" / "mlflow.yaml").read_text()) if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    allowed = next(v["value"] for v in container["env"] if v["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS").split(",")
    assert is_allowed_host_header(allowed, urlsplit(cluster.MLFLOW_TRACKING_URI).netloc)
    assert is_allowed_host_header(allowed, "localhost:5000")  # kubectl port-forward
    assert not is_allowed_host_header(allowed, "attacker.example:5000")


def test_kubeflow_pipelines_is_the_pinned_upstream_release_matching_the_sdk() -> None:
    import kfp

    urls = []
    for path in (K8S / "kubeflow-pipelines" / "cluster-scoped", K8S / "kubeflow-pipelines"):
        kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
        urls += [resource for resource in kustomization["resources"] if "://" in resource or resource.startswith("github.com/")]
    assert [url.split("?")[0] for url in urls] == [
        "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources",
        "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic",
    ]
    refs = {re.search(r"\?ref=([\w.\-]+)$", url)[1] for url in urls}
    assert refs == {cluster.KFP_BACKEND_VERSION}
    assert cluster.KFP_BACKEND_VERSION.split(".")[0] == kfp.__version__.split(".")[0], (
        f"KFP backend {cluster.KFP_BACKEND_VERSION} vs kfp SDK {kfp.__version__}"
    )
    docs = (ROOT / "docs" / "cluster.md").read_text()
    assert cluster.KFP_BACKEND_VERSION in docs


@needs_kubectl
def test_gcp_component_annotates_the_pipeline_runner(tmp_path: Path) -> None:
    """The upstream KFP manifests cannot be fetched here, so the component is applied to a stand-in of
    upstream's pipeline-runner ServiceAccount (same kind, name and namespace) by the real kustomize."""
    (tmp_path / "pipeline-runner.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": cluster.PIPELINE_SERVICE_ACCOUNT, "namespace": cluster.KFP_NAMESPACE}}
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["pipeline-runner.yaml"], "components": [os.path.relpath(K8S / "cluster-env", tmp_path)]})
    )
    documents = _kustomize(tmp_path)
    _validate(documents)
    (account,) = documents
    expected = _cluster_env(K8S / "cluster-env" / "cluster.env")["PIPELINES_GCP_SERVICE_ACCOUNT"]
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": expected}
    kustomization = yaml.safe_load((K8S / "kubeflow-pipelines" / "kustomization.yaml").read_text())
    assert kustomization["components"] == ["../cluster-env"]


# --- One source of truth: Terraform taint == compiled toleration == fewframes.cluster ---------------------


@pytest.fixture(scope="module")
def compiled_gpu_pipeline(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    dag = pytest.importorskip("fewframes.pipelines.dag", reason="the pipeline (fewframes.pipelines.dag) has not landed")
    out = tmp_path_factory.mktemp("compiled") / "distill-gpu.yaml"
    dag.compile_pipeline("distill", str(out), preset="tiny", gpu=DEFAULT_GPU)
    return [document for document in yaml.safe_load_all(out.read_text()) if document]


def test_compiled_gpu_tasks_tolerate_exactly_the_terraform_taint(compiled_gpu_pipeline: list[dict[str, Any]]) -> None:
    platform = next(d for d in compiled_gpu_pipeline if "platforms" in d)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tolerations = {
        (t["key"], t.get("operator", "Equal"), t.get("value"), t["effect"]) for spec in executors.values() for t in spec.get("tolerations", [])
    }
    values = json.loads(TFVARS.read_text())
    gen_values = _gen_values()
    kubernetes_effect = {gke: k8s for k8s, gke in gen_values.GKE_TAINT_EFFECTS.items()}[values["gpu_taint"]["effect"]]
    terraform_taint = (values["gpu_taint"]["key"], "Equal", values["gpu_taint"]["value"], kubernetes_effect)
    assert tolerations == {terraform_taint}
    assert terraform_taint == (DEFAULT_GPU.taint_key, "Equal", DEFAULT_GPU.taint_value, DEFAULT_GPU.taint_effect)
    selectors = [spec["nodeSelector"] for spec in executors.values() if "nodeSelector" in spec]
    assert selectors, "no GPU task selects the GPU node pool"
    for selector in selectors:
        assert selector["labels"][DEFAULT_GPU.node_selector_key] == values["gpu_accelerator_type"]
        assert selector["labels"][values["gpu_capacity_label"]] == "on-demand"  # the on-demand pool's label
    # Every tolerating task asks for the accelerator the pool carries, and runs the CUDA image.
    spec = next(d for d in compiled_gpu_pipeline if "deploymentSpec" in d)
    tolerating = {name for name, executor in executors.items() if executor.get("tolerations")}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        if name not in tolerating:  # CPU steps: the slim image, and no GPU request that nothing could serve
            assert container["image"] == cluster.image("cpu"), name
            assert "accelerator" not in container.get("resources", {}), name
            continue
        assert container["image"] == cluster.image("cuda")
        accelerator = container["resources"]["accelerator"]
        # The driver turns the type into a limit name: the device plugin's resource, never the GKE model name.
        assert accelerator["resourceType"] == DEFAULT_GPU.resource_name == "nvidia.com/gpu"
        assert accelerator["resourceCount"] == str(values["gpu_accelerator_count"])


# --- The MLflow server, run for real with the Deployment's own settings -----------------------------------


def _deployment_container() -> dict[str, Any]:
    documents = yaml.safe_load_all((K8S / "mlflow" / "mlflow.yaml").read_text())
    (deployment,) = [document for document in documents if document["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _get(port: int, path: str, host_header: str) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host_header})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server binaries (initdb, pg_ctl), or None where PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@contextlib.contextmanager
def _running_postgres(user: str, password: str, database: str) -> Iterator[int]:
    """A throwaway PostgreSQL on 127.0.0.1 with one password-protected user and database; yields its port.

    PostgreSQL refuses to run as root, so under root it runs as `nobody` in a folder that user owns."""
    import tempfile

    from mlflow_server import free_port  # tests/mlflow_server.py

    binaries = _postgres_binaries()
    assert binaries is not None
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="fewframes-pg-"))
    folder.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
    (folder / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(folder / "pw", "nobody")
    port = free_port()
    data = folder / "data"
    try:
        subprocess.run(
            [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", user, "--pwfile", str(folder / "pw"),
             "--auth=scram-sha-256", "-E", "UTF8"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=port, user=user, password=password, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        yield port
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _expand_kubernetes_env(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: Secret references resolved, and `$(NAME)`
    replaced by variables defined earlier in the list (unknown references stay as written)."""
    defined: dict[str, str] = {}
    for variable in container["env"]:
        if "valueFrom" in variable:
            defined[variable["name"]] = secret[variable["valueFrom"]["secretKeyRef"]["key"]]
        else:
            defined[variable["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda match: defined.get(match[1], match[0]), variable["value"]
            )
    return defined


@pytest.mark.slow  # starting mlflow server takes 15-50 s on 2 busy cores
def test_mlflow_server_runs_with_the_deployment_settings(tmp_path: Path) -> None:
    """`mlflow server` (the image's entrypoint) with the Deployment's arguments and environment as the kubelet
    expands it (Secret values, `$(VAR)` references) against a real PostgreSQL where one is installed; only
    the database address (the mlflow-postgres Service), the GCS artifact destination (a folder) and the
    port are swapped. It must create its tables in PostgreSQL, answer the in-cluster host name, refuse
    others, and proxy artifacts to the destination that the cluster-env component sets."""
    import secrets
    import time
    import urllib.parse

    from mlflow_server import free_port  # tests/mlflow_server.py

    container = _deployment_container()
    dockerfile = (ROOT / "containers" / "mlflow.Dockerfile").read_text()
    assert 'ENTRYPOINT ["mlflow", "server"]' in dockerfile
    server_requirements = (ROOT / "containers" / "mlflow-server.requirements.txt").read_text()
    assert "psycopg[binary]==" in server_requirements  # the driver the URI names (postgresql+psycopg)
    # The Secret that docs/cluster.md creates (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB).
    secret = {"POSTGRES_USER": "mlflow", "POSTGRES_PASSWORD": secrets.token_hex(24), "POSTGRES_DB": "mlflow"}
    environment = _expand_kubernetes_env(container, secret)
    backend = environment["MLFLOW_BACKEND_STORE_URI"]
    assert backend == (
        f"postgresql+psycopg://{secret['POSTGRES_USER']}:{secret['POSTGRES_PASSWORD']}@mlflow-postgres:5432/{secret['POSTGRES_DB']}"
    )
    port = free_port()
    arguments = list(container["args"])
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port)), ("--workers", "1")):
        arguments[arguments.index(flag) + 1] = value
    destination = tmp_path / "artifacts"
    with contextlib.ExitStack() as stack:
        if _postgres_binaries() is not None:
            postgres_port = stack.enter_context(
                _running_postgres(secret["POSTGRES_USER"], secret["POSTGRES_PASSWORD"], secret["POSTGRES_DB"])
            )
            backend = backend.replace("@mlflow-postgres:5432/", f"@127.0.0.1:{postgres_port}/")  # the Service
        else:  # no PostgreSQL on this machine: the rest still runs, on SQLite
            backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
        env = {**os.environ, **environment}
        env.update(
            HOME=str(tmp_path),
            MLFLOW_BACKEND_STORE_URI=backend,
            MLFLOW_ARTIFACTS_DESTINATION=destination.as_uri(),  # gs://BUCKET/mlflow on the cluster
        )
        log_path = tmp_path / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", *arguments],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env=env,
                start_new_session=True,  # the server forks workers: stop the whole group
            )
        stack.callback(_stop_process_group, server)
        cluster_host = urllib.parse.urlsplit(cluster.MLFLOW_TRACKING_URI).netloc
        deadline = time.monotonic() + 150
        while True:
            try:
                if _get(port, "/health", f"127.0.0.1:{port}")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        search = "/api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(port, search, cluster_host)[0] == 200
        assert _get(port, search, f"localhost:{port}")[0] == 200  # kubectl port-forward
        status, body = _get(port, search, "attacker.example:5000")
        assert status == 403, (status, body[:200])

        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        experiment_id = client.create_experiment("infra-check")
        run = client.create_run(experiment_id)
        client.log_param(run.info.run_id, "k", "10")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied
        source = tmp_path / "note.txt"
        source.write_text("stored through the server\n")
        client.log_artifact(run.info.run_id, str(source))
        stored = list(destination.rglob("note.txt"))
        assert len(stored) == 1 and stored[0].read_text() == "stored through the server\n"
        if backend.startswith("postgresql+psycopg://"):
            import psycopg

            with psycopg.connect(backend.replace("postgresql+psycopg://", "postgresql://", 1)) as connection:
                rows = connection.execute("SELECT key, value FROM params WHERE run_uuid = %s", (run.info.run_id,))
                assert rows.fetchall() == [("k", "10")]


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_mlflow_pods_are_hardened_as_checkov_asks() -> None:
    """The cheap checkov findings on the MLflow manifests: RuntimeDefault seccomp, every capability dropped,
    no service-account token in the pod, CPU and memory limits."""
    for name in ("mlflow.yaml", "postgres.yaml"):
        (workload,) = [d for d in yaml.safe_load_all((K8S / "mlflow" / name).read_text()) if d["kind"] in ("Deployment", "StatefulSet")]
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
