# syntax=docker/dockerfile:1
# The fewframes component image, CUDA variant: GPU training, distillation and benchmarks on the GPU node
# pool. The base already carries torch 2.13.0 built for CUDA 13.0 with cuDNN 9 (the same CUDA as PyPI's
# torch 2.13.0 wheel); GKE's node driver must support CUDA 13 (driver >= 580, docs/cluster.md).
# Build from the repository root:
#   containers/build.sh cuda       (tags fewframes.cluster.image("cuda"))
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime@sha256:db80a41f8428644cebcb3d75b0b62df334ab6c0e75785951eb25f48bfbd42407
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Fail the build early if the base is not the torch the lock and the tests expect.
RUN python -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__; assert torch.version.cuda, 'not a CUDA build'"

# The tested dependency set without tensorflow (containers/lock.py writes requirements-cuda.lock): GPU tasks
# train, distil and benchmark from the frame store; only ingest (the CPU image) reads TFRecords.
# torch==2.13.0 in it is already satisfied by the base.
COPY containers/requirements-cuda.lock /opt/fewframes/requirements.lock
RUN pip install --no-cache-dir -r /opt/fewframes/requirements.lock

COPY pyproject.toml README.md /opt/fewframes/src/
COPY fewframes /opt/fewframes/src/fewframes
COPY components /opt/fewframes/src/components
COPY pipelines /opt/fewframes/src/pipelines
# --no-deps: everything it needs is installed above, and its tensorflow requirement is the one left out.
RUN pip install --no-cache-dir --no-deps /opt/fewframes/src \
    && rm -rf /opt/fewframes/src \
    && python -c "import importlib.util, fewframes, fewframes.components.steps, fewframes.pipelines, torch; assert torch.__version__.startswith('${TORCH_VERSION}'); assert importlib.util.find_spec('tensorflow') is None"

# KFP's launcher puts input artifacts under /gcs, /minio and /s3 (backend 2.2+ mounts emptyDirs there;
# owning them here keeps older backends and plain `docker run` working as non-root too).
RUN useradd --create-home --uid 10001 --user-group fewframes \
    && mkdir -p /gcs /minio /s3 \
    && chown 10001:10001 /gcs /minio /s3
USER 10001:10001
WORKDIR /home/fewframes
CMD ["fewframes", "--help"]
