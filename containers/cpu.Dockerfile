# syntax=docker/dockerfile:1
# The fewframes component image, slim CPU variant: every pipeline step that does not need a GPU
# (ingest, split, evaluate, report) and CPU training. Build from the repository root:
#   containers/build.sh cpu        (tags fewframes.cluster.image("cpu"))
# The base is pinned by tag and digest (the multi-architecture index); build.sh --refresh-base finds a newer one.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# torch's CPU build first: a plain `torch` from PyPI is the CUDA build (GBs of libraries we would not use).
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# The tested dependency set (containers/lock.py) in its own layer, so code changes do not reinstall it.
COPY containers/requirements.lock /opt/fewframes/requirements.lock
RUN pip install --no-cache-dir -r /opt/fewframes/requirements.lock

# The package itself (fewframes/ plus components/ and pipelines/, mapped by pyproject.toml).
COPY pyproject.toml README.md /opt/fewframes/src/
COPY fewframes /opt/fewframes/src/fewframes
COPY components /opt/fewframes/src/components
COPY pipelines /opt/fewframes/src/pipelines
RUN pip install --no-cache-dir --constraint /opt/fewframes/requirements.lock /opt/fewframes/src \
    && rm -rf /opt/fewframes/src \
    && python -c "import fewframes, fewframes.components, fewframes.pipelines, torch; assert torch.__version__.startswith('${TORCH_VERSION}')"

# Non-root: the components need no privileges; a fixed UID lets a securityContext name it.
# KFP's launcher puts input artifacts under /gcs, /minio and /s3 (backend 2.2+ mounts emptyDirs there;
# owning them here keeps older backends and plain `docker run` working as non-root too).
RUN useradd --create-home --uid 10001 --user-group fewframes \
    && mkdir -p /gcs /minio /s3 \
    && chown 10001:10001 /gcs /minio /s3
USER 10001:10001
WORKDIR /home/fewframes
CMD ["fewframes", "--help"]
