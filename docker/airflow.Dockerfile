# syntax=docker/dockerfile:1
# Image of every Airflow component of docker-compose.yaml except the Ascend worker:
# api-server, scheduler, dag-processor, triggerer, the default Celery worker, airflow-init.
#
#   docker compose build            (or: docker build -f docker/airflow.Dockerfile -t cgan-airflow:0.1.0 .)
#
# Base: the official apache/airflow image, Airflow 3.3.2 on Python 3.11 (the Python that
# requirements.lock was frozen for). Then, as `make install` does it:
#   1. torch==2.13.0, the CPU build, first and on its own (from the PyTorch CPU index; the
#      default PyPI wheel of torch pulls in gigabytes of CUDA libraries),
#   2. requirements.lock with --no-deps (exact versions, no resolving; it pins apache-airflow
#      3.3.2, so pip cannot move Airflow),
#   3. this project with --no-deps.
# The project lives in /opt/cgan and is installed in editable mode: the code finds models/ (the
# default checkpoint, the quality classifier) next to the cgan package (cgan/run_params.py
# PROJECT_ROOT), which a copy in site-packages would not have. The smoke test imports the FAB
# auth manager too: it comes with the base image, not with requirements.lock, and the lock's
# versions must not break it.
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# The image's own user; pip refuses to install as root in the official image.
USER airflow

# 1. torch CPU, first and alone; fail if a CUDA build came in.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && python -c "import sys, torch; sys.exit('torch is a CUDA build' if torch.version.cuda else 0)"

# 2. The pinned environment, without resolving (requirements.lock leaves torch out).
COPY --chown=airflow:0 requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

# 3. The project: dags/, plugins/, operators/, cgan/, models/ (.dockerignore lets nothing else in).
COPY --chown=airflow:0 . /opt/cgan
RUN mkdir -p /opt/cgan/plugins \
 && pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/cgan \
 && python -c "import cgan.config, operators.publish, torch, onnxruntime; \
from airflow.providers.amazon.aws.hooks.s3 import S3Hook; import airflow.providers.celery; \
import airflow.providers.fab.auth_manager.fab_auth_manager" \
 && (pip check || echo "WARNING: pip check reported the conflicts above between requirements.lock and packages of the base image; review them")

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/cgan/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/cgan/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false
