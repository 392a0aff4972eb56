# syntax=docker/dockerfile:1
# The MLflow tracking server on the cluster (infra/k8s/mlflow): PostgreSQL backend store, GCS artifact root.
# Build from the repository root:
#   containers/build.sh mlflow     (tags fewframes.cluster.mlflow_server_image())
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The server's own pins, constrained by the components' lock so every shared package (MLflow's SQLAlchemy,
# alembic, ...) is the version the tests ran.
COPY containers/mlflow-server.requirements.txt /opt/mlflow/requirements.txt
COPY containers/requirements.lock /opt/mlflow/constraints.txt
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir -r /opt/mlflow/requirements.txt --constraint /opt/mlflow/constraints.txt

RUN useradd --create-home --uid 10001 --user-group mlflow
USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
# The Deployment passes the store URIs (from a Secret) as arguments.
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
