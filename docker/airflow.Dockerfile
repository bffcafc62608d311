# syntax=docker/dockerfile:1
# Image of every Airflow component of docker-compose.yaml except the Ascend worker:
# api-server, scheduler, dag-processor, triggerer, the default Celery worker, airflow-init.
#
#   docker compose build            (or: docker build -f docker/airflow.Dockerfile -t cgan-airflow:0.1.0 .)
#
# Base: the official apache/airflow image, Airflow 3.3.2 on Python 3.11 (the Python that
# requirements.lock was frozen for). Then:
#   1. the runtime lock (the runtime lock only: tests and tools live in requirements-dev.lock,
#      never here), hash-checked and from wheels only: docker/requirements.hashes.lock is
#      requirements.lock with the sha256 of each package's wheel for x86_64 and aarch64
#      (scripts/locks.py hashes). --no-deps: the lock is the whole closure, torch's own
#      requirements included, so nothing it does not name with a digest is downloaded, and no
#      source package is built,
#   2. torch==2.13.0, the CPU build (from the PyTorch CPU index; the default PyPI wheel of torch
#      pulls in gigabytes of CUDA libraries), with --no-deps: step 1 brought its requirements.
#      Its wheel is not hash-checked (the lock's digests are PyPI's; the CPU index is not recorded),
#   3. this project, Airflow's way but offline: pip resolves `apache-airflow==3.3.2` and the
#      project with requirements.lock as constraints and --no-index, so against what steps 1-2
#      installed only, and `pip check` fails the build when anything installed (the base image's
#      other providers included) conflicts.
# The project lives in /opt/cgan and is installed in editable mode: the code finds models/ (the
# default checkpoint, the quality classifier) next to the cgan package (cgan/run/plan.py
# PROJECT_ROOT), which a copy in site-packages would not have.
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

ARG AIRFLOW_VERSION=3.3.2
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The image's own user (uid 50000); pip refuses to install as root in the official image.
USER 50000

# 1. The runtime lock, every wheel checked against its sha256; no source package, no dependency
#    that the lock does not name.
RUN --mount=type=bind,source=docker/requirements.hashes.lock,target=/tmp/requirements.hashes.lock \
    pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps -r /tmp/requirements.hashes.lock

# 2. torch CPU, without its dependencies (step 1 pinned them); fail if a CUDA build came in.
RUN pip install --no-cache-dir --no-deps --only-binary=:all: "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && python -c "import sys, torch; sys.exit('torch is a CUDA build' if torch.version.cuda else 0)"

# 3. The project (dags/, plugins/, operators/, cgan/, models/: .dockerignore lets nothing else in)
#    with the runtime lock as constraints and no index (everything it needs is installed), then
#    pip check and an import smoke test.
COPY --chown=50000:0 . /opt/cgan
RUN mkdir -p /opt/cgan/plugins \
 && pip install --no-cache-dir --no-index --no-build-isolation --constraint /opt/cgan/requirements.lock \
      "apache-airflow==${AIRFLOW_VERSION}" -e /opt/cgan \
 && pip check \
 && python -c "import cgan.settings, operators.publish, torch, onnxruntime; \
from airflow.providers.amazon.aws.hooks.s3 import S3Hook; import airflow.providers.celery; \
import airflow.providers.fab.auth_manager.fab_auth_manager"

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/cgan/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/cgan/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false
