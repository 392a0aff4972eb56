"""The component images, checked offline: hadolint and shellcheck (real binaries from the dev extra), the
build context that .dockerignore leaves (docker-py's own implementation of the rules), the dependency lock,
and build.sh printing the image names of fewframes.cluster. No Docker engine is needed or used."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


from fewframes import cluster

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS = ROOT / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("*.Dockerfile"))
COMPONENT_DOCKERFILES = [CONTAINERS / "cpu.Dockerfile", CONTAINERS / "cuda.Dockerfile"]
TORCH_VERSION = "2.13.0"


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert path, f"{name} is not installed: pip install -e '.[dev]' installs it"
    return path


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def _lock() -> dict[str, str]:
    pins = {}
    for line in (CONTAINERS / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_three_dockerfiles_exist() -> None:
    assert {path.name for path in DOCKERFILES} == {"cpu.Dockerfile", "cuda.Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints() -> None:
    """Guards the test above against a wrapper that passes everything: a bad Dockerfile must fail."""
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "-"], input="FROM ubuntu\nRUN pip install torch\n", capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout


def test_shellcheck_passes_on_build_script() -> None:
    result = subprocess.run([_tool("shellcheck"), str(CONTAINERS / "build.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_as_non_root_and_base_is_pinned_by_digest(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, f"{dockerfile.name} has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"{dockerfile.name} ends as user {users[-1]!r}"
    base = dict(
        arguments.split("=", 1) for keyword, arguments in instructions if keyword == "ARG" and "=" in arguments
    )["BASE_IMAGE"]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), f"{dockerfile.name}: base {base!r} is not tag@digest"
    assert ":latest@" not in base


def test_torch_version_is_the_same_everywhere() -> None:
    for dockerfile in COMPONENT_DOCKERFILES:
        args = dict(a.split("=", 1) for k, a in _instructions(dockerfile) if k == "ARG" and "=" in a)
        assert args["TORCH_VERSION"] == TORCH_VERSION, dockerfile.name
    cuda_base = dict(a.split("=", 1) for k, a in _instructions(CONTAINERS / "cuda.Dockerfile") if k == "ARG" and "=" in a)
    assert cuda_base["BASE_IMAGE"].startswith(f"pytorch/pytorch:{TORCH_VERSION}-cuda")
    assert _lock()["torch"] == TORCH_VERSION
    assert re.search(rf"^TORCH_VERSION \?= {re.escape(TORCH_VERSION)}$", (ROOT / "Makefile").read_text(), re.M)


def test_build_context_holds_what_the_dockerfiles_copy_and_nothing_heavy() -> None:
    from docker.utils.build import exclude_paths  # docker-py's implementation of .dockerignore

    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = exclude_paths(str(ROOT), patterns)
    for unwanted in (".venv", ".git", "runs", "data", "tests", "benchmarks", "docs", "infra", "fewframes.egg-info"):
        assert not any(path == unwanted or path.startswith(unwanted + "/") for path in context), unwanted
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in context)
    for dockerfile in DOCKERFILES:
        for keyword, arguments in _instructions(dockerfile):
            if keyword != "COPY":
                continue
            *sources, _destination = [part for part in arguments.split() if not part.startswith("--")]
            for source in sources:
                assert source in context, f"{dockerfile.name} copies {source}, which .dockerignore leaves out"
    assert "fewframes/cluster.py" in context and "pipelines/__init__.py" in context
    size = sum((ROOT / path).stat().st_size for path in context if (ROOT / path).is_file())
    assert size < 5 * 2**20, f"build context is {size / 2**20:.1f} MiB"


def test_lock_pins_every_direct_dependency_within_pyproject_ranges() -> None:
    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    checked = 0
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # e.g. tensorflow (non-x86_64): the lock is for linux/amd64
        name = canonicalize_name(requirement.name)
        if name in pins:
            assert requirement.specifier.contains(Version(pins[name])), f"{name}=={pins[name]} vs {line}"
            checked += 1
    for core in ("torch", "numpy", "pyarrow", "kfp", "kfp-kubernetes", "mlflow", "tensorflow-cpu", "google-cloud-storage"):
        assert core in pins, f"requirements.lock does not pin {core}"
    assert checked >= 8


def test_lock_generator_resolves_the_installed_closure() -> None:
    """containers/lock.py walks the real installed metadata; every project dependency appears, no local labels."""
    sys.path.insert(0, str(CONTAINERS))
    try:
        import lock  # containers/lock.py
    finally:
        sys.path.remove(str(CONTAINERS))
    resolved = lock.resolve_installed()
    assert resolved["torch"] == TORCH_VERSION  # '+cpu' dropped so the lock fits the CUDA base too
    assert all("+" not in version for version in resolved.values())
    assert {"kfp", "mlflow", "pyarrow", "numpy"} <= set(resolved)
    assert "pytest" not in resolved  # dev extra stays out of the images


def test_mlflow_server_speaks_the_components_mlflow_version() -> None:
    pins = _lock()
    for line in (CONTAINERS / "mlflow-server.requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            if name in pins:
                assert specifier.version == pins[name], f"server {line} vs components {name}=={pins[name]}"


def _build_dry_run(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, **environment}
    return subprocess.run(
        ["bash", str(CONTAINERS / "build.sh"), "--dry-run", *arguments], capture_output=True, text=True, env=env
    )


def test_build_script_tags_and_prints_the_pipeline_image_names() -> None:
    result = _build_dry_run()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-3:] == [
        f"cpu={cluster.image('cpu')}",
        f"cuda={cluster.image('cuda')}",
        f"mlflow={cluster.mlflow_server_image()}",
    ]
    builds = [line for line in lines if line.startswith("+ docker build")]
    assert len(builds) == 3
    assert f"--tag {cluster.image('cuda')}" in builds[1] and "cuda.Dockerfile" in builds[1]


def test_build_script_follows_the_image_overrides_of_fewframes_cluster() -> None:
    environment = {"FEWFRAMES_IMAGE_REPOSITORY": "europe-docker.pkg.dev/p/r/fewframes", "FEWFRAMES_IMAGE_TAG": "abc123"}
    expected = subprocess.run(
        [sys.executable, "-c", "from fewframes import cluster; print(cluster.image('cpu'))"],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        check=True,
    ).stdout.strip()
    assert expected == "europe-docker.pkg.dev/p/r/fewframes:abc123-cpu"
    result = _build_dry_run("cpu", "--push", **environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"cpu={expected}"
    assert f"+ docker push {expected}" in result.stdout


def test_build_script_rejects_unknown_arguments() -> None:
    result = _build_dry_run("gpu")
    assert result.returncode == 2
    assert "unknown argument 'gpu'" in result.stderr


@pytest.mark.parametrize("dockerfile", COMPONENT_DOCKERFILES, ids=lambda path: path.name)
def test_the_files_the_image_copies_build_the_whole_package(dockerfile: Path, tmp_path: Path) -> None:
    """Replays the Dockerfile's COPY lines into a folder and builds the wheel from it as `pip install` in the
    image would: every package of pyproject.toml must come out, so a new top-level folder cannot be
    forgotten in the image."""
    source_root = None
    for keyword, arguments in _instructions(dockerfile):
        if keyword != "COPY":
            continue
        *sources, destination = arguments.split()
        if not destination.startswith("/opt/fewframes/src"):
            continue
        source_root = tmp_path / "src"
        target = tmp_path / destination.lstrip("/").replace("opt/fewframes/src", "src", 1)
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target / Path(source).name)
    assert source_root is not None, f"{dockerfile.name} copies no package source"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path / "dist"), str(source_root)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("fewframes-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} is missing from the image's install"
    assert "fewframes/cluster.py" in names


def test_the_cuda_image_carries_no_tensorflow() -> None:
    """Only ingest reads TFRecords, and it runs in the CPU image: the CUDA image's lock leaves tensorflow
    (and what only tensorflow needs) out, installs the package without its dependencies, checks at build
    time that tensorflow is absent; and the modules GPU tasks run import without it."""
    def pins(name: str) -> dict[str, str]:
        lines = (CONTAINERS / name).read_text().splitlines()
        return {canonicalize_name(Requirement(line).name): line.split("==")[1] for line in lines if line and line[0] != "#"}

    cpu, cuda = pins("requirements.lock"), pins("requirements-cuda.lock")
    assert "tensorflow-cpu" in cpu and not {"tensorflow", "tensorflow-cpu", "keras", "tensorboard"} & set(cuda)
    assert all(cpu[name] == version for name, version in cuda.items())  # the same tested versions
    assert {"torch", "kfp", "mlflow", "pyarrow", "google-cloud-storage"} <= set(cuda)
    instructions = _instructions(CONTAINERS / "cuda.Dockerfile")
    copies = [arguments for keyword, arguments in instructions if keyword == "COPY"]
    assert "containers/requirements-cuda.lock /opt/fewframes/requirements.lock" in copies
    installs = [arguments for keyword, arguments in instructions if keyword == "RUN" and "/opt/fewframes/src" in arguments]
    assert installs and "--no-deps" in installs[0] and "find_spec('tensorflow') is None" in installs[0]
    probe = (
        "import sys; import fewframes.components.steps as s, fewframes.training, fewframes.benchmark; "
        "from fewframes.components import definitions; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]


def test_component_images_are_tagged_with_the_version_and_the_commit() -> None:
    from fewframes import __version__

    environment = {k: v for k, v in os.environ.items() if k not in ("FEWFRAMES_IMAGE_TAG", cluster.IMAGE_LOCK_ENV)}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    expected_tag = f"{__version__}-g{commit.stdout.strip()}" if commit.returncode == 0 else __version__
    shown = subprocess.run(
        [sys.executable, "-c", "from fewframes import cluster; print(cluster.image('cuda'))"],
        capture_output=True, text=True, env=environment, check=True, cwd=ROOT,
    ).stdout.strip()  # fmt: skip
    assert shown == f"{cluster.IMAGE_REPOSITORY}:{expected_tag}-cuda"


def test_an_image_lock_pins_every_task_image_by_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from fewframes.cli import main

    digests = {variant: f"{cluster.IMAGE_REPOSITORY}:t-{variant}@sha256:{str(i) * 64}" for i, variant in enumerate(("cpu", "cuda"), 1)}
    lock = tmp_path / "images.lock.json"
    lock.write_text(json.dumps(digests))
    out = tmp_path / "pinned.yaml"
    assert main(["compile", "--preset", "tiny", "--out", str(out), "--image-lock", str(lock)]) == 0
    spec = next(d for d in yaml.safe_load_all(out.read_text()) if "deploymentSpec" in d)
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    assert images["exec-train-teacher"] == digests["cuda"] and images["exec-ingest-split"] == digests["cpu"]
    assert set(images.values()) == set(digests.values())
    capsys.readouterr()
    lock.write_text(json.dumps({"cpu": "ghcr.io/x/y:latest"}))  # a tag is not a pin
    assert main(["compile", "--preset", "tiny", "--out", str(tmp_path / "bad.yaml"), "--image-lock", str(lock)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--image-lock" in err and "sha256" in err
    assert not (tmp_path / "bad.yaml").exists()
