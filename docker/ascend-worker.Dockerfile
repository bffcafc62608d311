# syntax=docker/dockerfile:1
# Image of `airflow-worker-ascend` (docker-compose.yaml, profile `ascend`): a Celery worker on
# the `ascend` queue that runs atc (ONNX -> om) and msame (inference on the NPU).
#
#   docker compose --profile ascend build airflow-worker-ascend     (CANN_BASE_IMAGE from .env)
#   docker build -f docker/ascend-worker.Dockerfile \
#     --build-arg CANN_BASE_IMAGE=<your CANN image> -t cgan-ascend-worker:0.1.0 .
#
# Build arguments:
#   CANN_BASE_IMAGE   REQUIRED, no default: a CANN image whose toolkit matches the NPU hosts'
#                     driver, with the toolkit in /usr/local/Ascend/ascend-toolkit (atc) and
#                     Python 3.11. The build stops at once with a message when it is not set.
#   PYTHON            the base image's Python 3.11 (default python3)
#   MSAME_BINARY      path, inside the build context, of a msame you built already (e.g.
#                     docker/bin/msame); empty = build msame from Ascend/tools here, as its
#                     README says (DDK_PATH / NPU_HOST_LIB, build.sh g++ <out>)
#   ASCEND_TOOLS_GIT, ASCEND_TOOLS_REF   where that source comes from
#
# The driver is NOT in the image: the compose service mounts the host's /usr/local/Ascend/driver,
# /usr/local/dcmi, npu-smi and /etc/ascend_install.info read-only and maps the /dev/davinci*
# devices.

ARG CANN_BASE_IMAGE=
# Without CANN_BASE_IMAGE the stage starts from busybox only to print the error below and stop.
FROM ${CANN_BASE_IMAGE:-busybox:1.37} AS ascend-worker
ARG CANN_BASE_IMAGE
RUN if [ -z "${CANN_BASE_IMAGE}" ]; then \
      echo "ERROR: the build argument CANN_BASE_IMAGE is not set. Name the CANN image to build on:" >&2; \
      echo "  CANN_BASE_IMAGE=<image> in .env (docker compose), or" >&2; \
      echo "  docker build --build-arg CANN_BASE_IMAGE=<image> -f docker/ascend-worker.Dockerfile ." >&2; \
      echo "It must match the NPU hosts' driver and hold the CANN toolkit and Python 3.11." >&2; \
      exit 1; \
    fi

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Installs below need root; the worker runs as CGAN_ASCEND_USER (compose), root by default.
USER root

ARG PYTHON=python3
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG MSAME_BINARY=
ARG ASCEND_TOOLS_GIT=https://gitee.com/ascend/tools.git
ARG ASCEND_TOOLS_REF=master

ENV CGAN_ASCEND_TOOLKIT=/usr/local/Ascend/ascend-toolkit \
    CGAN_MSAME=msame \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/cgan/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/cgan/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false \
    VIRTUAL_ENV=/opt/cgan-venv \
    PATH=/opt/cgan-venv/bin:/usr/local/bin:${PATH} \
    LD_LIBRARY_PATH=/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}

# The CANN toolkit and its atc must be in the base image.
RUN test -f "${CGAN_ASCEND_TOOLKIT}/set_env.sh" \
      || { echo "ERROR: ${CGAN_ASCEND_TOOLKIT}/set_env.sh is not in ${CANN_BASE_IMAGE}: pick a CANN image that holds the toolkit" >&2; exit 1; } \
 && bash -c 'source "$1/set_env.sh" >/dev/null 2>&1; command -v atc' cgan-check "${CGAN_ASCEND_TOOLKIT}" \
      || { echo "ERROR: atc is not on PATH after sourcing ${CGAN_ASCEND_TOOLKIT}/set_env.sh" >&2; exit 1; }

# Python 3.11 (requirements.lock is frozen for it). The venv sees the base image's packages
# (--system-site-packages), among them the Python packages the CANN toolkit needs.
RUN "${PYTHON}" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ERROR: %s is Python %s; the ascend worker needs Python 3.11 (set the build argument PYTHON or pick a py3.11 CANN image)" % (sys.executable, sys.version.split()[0]))' \
 && "${PYTHON}" -m venv --system-site-packages /opt/cgan-venv

# torch CPU first and alone, then the lock without resolving, as in docker/airflow.Dockerfile.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && python -c "import sys, torch; sys.exit('torch is a CUDA build' if torch.version.cuda else 0)"
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock

# msame: a binary from the build context (MSAME_BINARY), or built from Ascend/tools per its
# README: DDK_PATH = the toolkit, NPU_HOST_LIB = its stub libraries, `build.sh g++ <out>`.
RUN --mount=type=bind,source=.,target=/tmp/cgan-context \
    set -e; \
    if [ -n "${MSAME_BINARY}" ]; then \
      test -f "/tmp/cgan-context/${MSAME_BINARY}" \
        || { echo "ERROR: MSAME_BINARY=${MSAME_BINARY} is not in the build context (keep it under docker/, which .dockerignore lets in)" >&2; exit 1; }; \
      install -m 0755 "/tmp/cgan-context/${MSAME_BINARY}" /usr/local/bin/msame; \
    else \
      missing=""; for tool in git g++ cmake make; do command -v "$tool" >/dev/null || missing="$missing $tool"; done; \
      if [ -n "$missing" ]; then \
        if command -v apt-get >/dev/null; then apt-get update && apt-get install -y --no-install-recommends git g++ cmake make && rm -rf /var/lib/apt/lists/*; \
        elif command -v dnf >/dev/null; then dnf install -y git gcc-c++ cmake make && dnf clean all; \
        elif command -v yum >/dev/null; then yum install -y git gcc-c++ cmake make && yum clean all; \
        else echo "ERROR: msame's build needs:$missing (or pass MSAME_BINARY)" >&2; exit 1; fi; \
      fi; \
      git clone --depth 1 --branch "${ASCEND_TOOLS_REF}" "${ASCEND_TOOLS_GIT}" /tmp/ascend-tools; \
      export DDK_PATH="${CGAN_ASCEND_TOOLKIT}/latest"; \
      export NPU_HOST_LIB="${DDK_PATH}/runtime/lib64/stub"; \
      [ -d "${NPU_HOST_LIB}" ] || NPU_HOST_LIB="${DDK_PATH}/acllib/lib64/stub"; \
      cd /tmp/ascend-tools/msame && ./build.sh g++ /tmp/ascend-tools/msame/out; \
      install -m 0755 /tmp/ascend-tools/msame/out/msame /usr/local/bin/msame; \
      rm -rf /tmp/ascend-tools; \
    fi; \
    command -v msame

# The project: dags/, plugins/, operators/, cgan/, models/ (.dockerignore lets nothing else in),
# installed in editable mode so that the code finds models/ next to it.
COPY . /opt/cgan
RUN mkdir -p /opt/cgan/plugins /opt/airflow/logs \
 && pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/cgan \
 && python -c "import cgan.config, operators.msame_inference, operators.atc_convert, airflow.providers.celery; \
from airflow.providers.amazon.aws.hooks.s3 import S3Hook" \
 && chmod 0755 /opt/cgan/docker/ascend-entrypoint.sh

WORKDIR /opt/airflow
# `celery worker -q ascend ...` runs as `airflow celery worker -q ascend ...`, like the official image.
ENTRYPOINT ["/opt/cgan/docker/ascend-entrypoint.sh"]
CMD ["celery", "worker", "-q", "ascend"]
