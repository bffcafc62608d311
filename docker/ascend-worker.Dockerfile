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
#   ASCEND_TOOLS_GIT, ASCEND_TOOLS_REF   where that source comes from: a repository and a FULL
#                     commit id (default: the GitHub mirror of Ascend/tools at 9d6da90, its newest
#                     commit, 2023-06-10); the build checks that it got exactly that commit
#
# Python: the project has a venv of its own (/opt/cgan-venv, not seeing the base image's
# packages) holding requirements.lock (hash-checked wheels: docker/requirements.hashes.lock) and
# torch CPU, installed as in docker/airflow.Dockerfile; CANN's Python (the base image's, with the
# numpy/protobuf the toolkit pins) stays as it is and is what atc and msame get
# (CGAN_ASCEND_PYTHON, cgan/ascend/toolkit.py); the build checks both.
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
# Installs below need root. The worker runs as CGAN_ASCEND_USER (compose): root by default, as in
# Ascend's container docs, or the airflow user (uid 50000, gid 0) made here.
# hadolint ignore=DL3002
USER 0

ARG PYTHON=python3
ARG AIRFLOW_VERSION=3.3.2
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG MSAME_BINARY=
ARG ASCEND_TOOLS_GIT=https://github.com/Ascend/tools.git
ARG ASCEND_TOOLS_REF=9d6da90fd0d3e5d232676c7a4527f7d92ac70e5c

ENV CGAN_ASCEND_TOOLKIT=/usr/local/Ascend/ascend-toolkit \
    CGAN_ASCEND_PYTHON=/opt/cann-python/bin/python3 \
    CGAN_MSAME=msame \
    AIRFLOW_HOME=/opt/airflow \
    HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/cgan/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/cgan/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false \
    VIRTUAL_ENV=/opt/cgan-venv \
    PATH=/opt/cgan-venv/bin:/usr/local/bin:${PATH} \
    LD_LIBRARY_PATH=/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}

# The CANN toolkit and its atc must be in the base image.
RUN if [ ! -f "${CGAN_ASCEND_TOOLKIT}/set_env.sh" ]; then \
      echo "ERROR: ${CGAN_ASCEND_TOOLKIT}/set_env.sh is not in ${CANN_BASE_IMAGE}: pick a CANN image that holds the toolkit" >&2; exit 1; \
    fi; \
    if ! bash -c 'source "$1/set_env.sh" >/dev/null 2>&1; command -v atc' cgan-check "${CGAN_ASCEND_TOOLKIT}"; then \
      echo "ERROR: atc is not on PATH after sourcing ${CGAN_ASCEND_TOOLKIT}/set_env.sh" >&2; exit 1; \
    fi

# Python 3.11, 3.11.5 or newer (requirements.lock is frozen for 3.11; soupsieve in it requires
# >= 3.11.5: scripts/locks.py min_python). CANN's Python gets a folder of its own
# (CGAN_ASCEND_PYTHON); the project's venv does not see the base image's packages.
RUN "${PYTHON}" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) and sys.version_info >= (3, 11, 5) else "ERROR: %s is Python %s; the ascend worker needs Python 3.11.5 or a newer 3.11 (set the build argument PYTHON or pick a py3.11 CANN image)" % (sys.executable, sys.version.split()[0]))' \
 && mkdir -p /opt/cann-python/bin \
 && ln -s "$(readlink -f "$(command -v "${PYTHON}")")" "${CGAN_ASCEND_PYTHON}" \
 && "${CGAN_ASCEND_PYTHON}" -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else "CANN Python is a venv")' \
 && "${PYTHON}" -m venv /opt/cgan-venv

# The runtime lock, every wheel checked against its sha256, no source package, no dependency the
# lock does not name; then torch CPU without its dependencies (the lock pinned them), as in
# docker/airflow.Dockerfile.
RUN --mount=type=bind,source=docker/requirements.hashes.lock,target=/tmp/requirements.hashes.lock \
    pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps -r /tmp/requirements.hashes.lock

RUN pip install --no-cache-dir --no-deps --only-binary=:all: "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && python -c "import sys, torch; sys.exit('torch is a CUDA build' if torch.version.cuda else 0)"

# msame: a binary from the build context (MSAME_BINARY), or built from Ascend/tools at the pinned
# commit, per its README: DDK_PATH = the toolkit, NPU_HOST_LIB = its stub libraries,
# `build.sh g++ <out>`. The package manager is the base image's (apt, dnf or yum): the build
# tools are whatever version that distribution ships.
# hadolint ignore=DL3003,DL3008,DL3032,DL3033,DL3040,DL3041
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
      git init -q /tmp/ascend-tools; \
      git -C /tmp/ascend-tools fetch -q --depth 1 "${ASCEND_TOOLS_GIT}" "${ASCEND_TOOLS_REF}"; \
      git -C /tmp/ascend-tools checkout -q FETCH_HEAD; \
      got="$(git -C /tmp/ascend-tools rev-parse HEAD)"; \
      if [ "${got}" != "${ASCEND_TOOLS_REF}" ]; then \
        echo "ERROR: ASCEND_TOOLS_REF=${ASCEND_TOOLS_REF} gave commit ${got}: pin msame's source with a full commit id" >&2; exit 1; \
      fi; \
      export DDK_PATH="${CGAN_ASCEND_TOOLKIT}/latest"; \
      export NPU_HOST_LIB="${DDK_PATH}/runtime/lib64/stub"; \
      [ -d "${NPU_HOST_LIB}" ] || NPU_HOST_LIB="${DDK_PATH}/acllib/lib64/stub"; \
      cd /tmp/ascend-tools/msame && ./build.sh g++ /tmp/ascend-tools/msame/out; \
      install -m 0755 /tmp/ascend-tools/msame/out/msame /usr/local/bin/msame; \
      rm -rf /tmp/ascend-tools; \
    fi; \
    command -v msame

# The project (dags/, plugins/, operators/, cgan/, models/: .dockerignore lets nothing else in),
# installed in editable mode so that the code finds models/ next to it, with the runtime lock as
# constraints and no index (as docker/airflow.Dockerfile: everything it needs is installed), then
# pip check, an import smoke test, and the check that the environment the wrapper builds for
# atc/msame runs CANN's Python, not the venv's.
COPY . /opt/cgan
RUN mkdir -p /opt/cgan/plugins /opt/airflow/logs \
 && pip install --no-cache-dir --no-index --no-build-isolation --constraint /opt/cgan/requirements.lock \
      "apache-airflow==${AIRFLOW_VERSION}" -e /opt/cgan \
 && pip check \
 && python -c "import cgan.settings, operators.ascend_inference, operators.atc_convert, airflow.providers.celery; \
from airflow.providers.amazon.aws.hooks.s3 import S3Hook" \
 && python -c "import shutil, sys; from cgan.ascend.toolkit import locate_toolkit; \
py = shutil.which('python3', path=locate_toolkit().env['PATH']); \
sys.exit(0 if py == '/opt/cann-python/bin/python3' else 'atc would get the python3 %s, not CANN Python' % py)" \
 && chmod 0755 /opt/cgan/docker/ascend-entrypoint.sh

# The non-root option: user airflow (uid 50000, gid 0, as in the official Airflow image) owns
# AIRFLOW_HOME; compose adds the host's HwHiAiUser group (CGAN_NPU_GID) for /dev/davinci*.
RUN if ! getent passwd 50000 >/dev/null; then \
      if command -v useradd >/dev/null; then useradd --uid 50000 --gid 0 --home-dir /opt/airflow --no-create-home --shell /bin/bash airflow; \
      else echo "airflow:x:50000:0::/opt/airflow:/bin/bash" >> /etc/passwd; fi; \
    fi \
 && chown -R 50000:0 /opt/airflow && chmod -R g+rwX /opt/airflow

WORKDIR /opt/airflow
# `celery worker -q ascend ...` runs as `airflow celery worker -q ascend ...`, like the official image.
ENTRYPOINT ["/opt/cgan/docker/ascend-entrypoint.sh"]
CMD ["celery", "worker", "-q", "ascend"]
