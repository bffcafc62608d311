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
#                     driver, with the toolkit (atc, set_env.sh) and Python 3.11. The build stops
#                     at once with a message when it is not set.
#   CANN_TOOLKIT      the folder holding the toolkit's set_env.sh; empty (default) = found: the
#                     first of CANN_HOMES holding set_env.sh, as the worker finds it at run time
#                     (cgan/ascend/toolkit.py find_toolkit_home). Given, it is also the image's
#                     CGAN_ASCEND_TOOLKIT (an override; compose sets that variable from .env).
#   CANN_HOMES        where the toolkit is looked for (default "/usr/local/Ascend/cann
#                     /usr/local/Ascend/ascend-toolkit": CANN 8.5+ installs to cann/, a link to
#                     cann-<version>; older CANN to ascend-toolkit/, with latest/ a link to the
#                     version folder). Both layouts pass the build check and build msame.
#   PYTHON            the base image's Python 3.11 (default python3)
#   MSAME_BINARY      path, inside the build context, of a msame you built already (e.g.
#                     docker/bin/msame); empty = build msame from Ascend/tools here, as its
#                     README says (DDK_PATH / NPU_HOST_LIB, build.sh g++ <out>)
#   ASCEND_TOOLS_GIT, ASCEND_TOOLS_REF   where that source comes from: a repository and a FULL
#                     commit id (default: the GitHub mirror of Ascend/tools at 9d6da90, its newest
#                     commit, 2023-06-10); the build checks that it got exactly that commit
#
# ais_bench (npu_tool=ais_bench: its Python API `ais_bench.infer.interface.InferSession` runs in
# the Airflow task's process, i.e. in /opt/cgan-venv, Python 3.11). Opt-in; two wheels, both pinned:
#   INSTALL_AIS_BENCH 0 (default: not installed; npu_tool=msame only), `wheels` or `url`
#   AIS_BENCH_WHEELS  (wheels) a folder of the build context, default docker/wheels: exactly one
#                     aclruntime-*-cp311-cp311-linux_<arch>.whl, one ais_bench-*-py3-none-any.whl
#                     and a SHA256SUMS file naming both (`sha256sum -c` must pass)
#   ACLRUNTIME_WHEEL_URL, ACLRUNTIME_WHEEL_SHA256   (url) the aclruntime wheel for cp311 and this
#                     image's architecture, and its sha256: both REQUIRED (no published cp311
#                     checksum was found, so there is no default; the 0.0.2 wheels are at
#                     https://aisbench.obs.myhuaweicloud.com/packet/ais_bench_infer/0.0.2/ait/)
#   AIS_BENCH_WHEEL_URL, AIS_BENCH_WHEEL_SHA256     (url) default ais_bench 0.0.2 from that folder
#                     with the sha256 its README publishes (Ascend/msit, benchmark README)
#   TQDM_VERSION, TQDM_SHA256   ais_bench's one dependency the project's lock lacks (hash-pinned)
# The build then sources the toolkit's set_env.sh and imports aclruntime and
# ais_bench.infer.interface in the venv (the toolkit's stub libraries stand in for the driver's,
# which is not in the image): a wheel that does not load fails the build with a message. At run
# time docker/ascend-entrypoint.sh gives the worker the toolkit's library path (LD_LIBRARY_PATH and
# the ASCEND_* variables of set_env.sh, not its PATH or PYTHONPATH) when aclruntime is installed.
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
ARG CANN_TOOLKIT=
ARG CANN_HOMES="/usr/local/Ascend/cann /usr/local/Ascend/ascend-toolkit"
ARG INSTALL_AIS_BENCH=0
ARG AIS_BENCH_WHEELS=docker/wheels
ARG ACLRUNTIME_WHEEL_URL=
ARG ACLRUNTIME_WHEEL_SHA256=
ARG AIS_BENCH_WHEEL_URL=https://aisbench.obs.myhuaweicloud.com/packet/ais_bench_infer/0.0.2/ait/ais_bench-0.0.2-py3-none-any.whl
ARG AIS_BENCH_WHEEL_SHA256=d52406d0ac02f9a8ebefdce0866736322753827298a4fcb1c23da98789bf8efe
ARG TQDM_VERSION=4.67.1
ARG TQDM_SHA256=26445eca388f82e72884e0d580d5464cd801a3ea01e63e5601bdff9ba6a48de2

# CGAN_ASCEND_TOOLKIT: empty unless CANN_TOOLKIT is given (empty = the worker finds the toolkit).
ENV CGAN_ASCEND_TOOLKIT=${CANN_TOOLKIT} \
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

# The CANN toolkit and its atc must be in the base image, in either layout: CANN_TOOLKIT, else the
# first of CANN_HOMES holding set_env.sh. The folder found is kept for the steps below
# (/opt/cgan-build/cann-home); the worker finds it again at run time the same way.
RUN home="${CANN_TOOLKIT}"; \
    if [ -n "${home}" ]; then \
      [ -f "${home}/set_env.sh" ] || { echo "ERROR: CANN_TOOLKIT=${home} holds no set_env.sh in ${CANN_BASE_IMAGE}: name the folder that holds it, or leave CANN_TOOLKIT empty to search ${CANN_HOMES}" >&2; exit 1; }; \
    else \
      for root in ${CANN_HOMES}; do if [ -f "${root}/set_env.sh" ]; then home="${root}"; break; fi; done; \
      [ -n "${home}" ] || { echo "ERROR: no CANN toolkit in ${CANN_BASE_IMAGE}: no set_env.sh in any of ${CANN_HOMES} (CANN 8.5+: /usr/local/Ascend/cann, older CANN: /usr/local/Ascend/ascend-toolkit). Pick a CANN image that holds the toolkit, or pass --build-arg CANN_TOOLKIT=<the folder holding set_env.sh>" >&2; exit 1; }; \
    fi; \
    if ! bash -c 'source "$1/set_env.sh" >/dev/null 2>&1; command -v atc' cgan-check "${home}"; then \
      echo "ERROR: atc is not on PATH after sourcing ${home}/set_env.sh" >&2; exit 1; \
    fi; \
    mkdir -p /opt/cgan-build && printf '%s\n' "${home}" > /opt/cgan-build/cann-home; \
    echo "CANN toolkit: ${home}"

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
      home="$(cat /opt/cgan-build/cann-home)"; \
      if [ -d "${home}/latest" ]; then DDK_PATH="${home}/latest"; else DDK_PATH="${home}"; fi; \
      NPU_HOST_LIB=""; \
      for stub in "${DDK_PATH}/runtime/lib64/stub" "${DDK_PATH}/acllib/lib64/stub" "${DDK_PATH}/$(uname -m)-linux/devlib"; do \
        if [ -e "${stub}/libascendcl.so" ]; then NPU_HOST_LIB="${stub}"; break; fi; \
      done; \
      [ -n "${NPU_HOST_LIB}" ] || { echo "ERROR: no libascendcl.so stub under ${DDK_PATH} (runtime/lib64/stub, acllib/lib64/stub, $(uname -m)-linux/devlib): build msame elsewhere and pass MSAME_BINARY" >&2; exit 1; }; \
      if [ ! -f "${DDK_PATH}/runtime/include/acl/acl.h" ]; then \
        for inc in "${DDK_PATH}/include" "${DDK_PATH}/$(uname -m)-linux/include"; do \
          if [ -f "${inc}/acl/acl.h" ]; then export CPLUS_INCLUDE_PATH="${inc}"; break; fi; \
        done; \
      fi; \
      export DDK_PATH NPU_HOST_LIB; \
      echo "msame: DDK_PATH=${DDK_PATH} NPU_HOST_LIB=${NPU_HOST_LIB}"; \
      cd /tmp/ascend-tools/msame && ./build.sh g++ /tmp/ascend-tools/msame/out; \
      install -m 0755 /tmp/ascend-tools/msame/out/msame /usr/local/bin/msame; \
      rm -rf /tmp/ascend-tools; \
    fi; \
    command -v msame

# ais_bench (opt-in, INSTALL_AIS_BENCH): the aclruntime and ais_bench wheels into the project's venv,
# from the build context (AIS_BENCH_WHEELS with its SHA256SUMS) or from URLs each with its REQUIRED
# sha256, plus tqdm (hash-pinned); then the check that they load: set_env.sh sourced, the
# toolkit's stub libraries after the real ones (the driver is mounted only at run time).
RUN --mount=type=bind,source=.,target=/tmp/cgan-context \
    set -e; \
    case "${INSTALL_AIS_BENCH}" in \
      0|"") echo "ais_bench: not installed (INSTALL_AIS_BENCH=0): npu_tool=msame only"; exit 0 ;; \
      wheels|url) ;; \
      *) echo "ERROR: INSTALL_AIS_BENCH=${INSTALL_AIS_BENCH}: use 0, wheels or url" >&2; exit 1 ;; \
    esac; \
    whl=/tmp/ais-bench-wheels; rm -rf "${whl}"; mkdir -p "${whl}"; \
    if [ "${INSTALL_AIS_BENCH}" = wheels ]; then \
      src="/tmp/cgan-context/${AIS_BENCH_WHEELS}"; \
      [ -f "${src}/SHA256SUMS" ] || { echo "ERROR: INSTALL_AIS_BENCH=wheels needs ${AIS_BENCH_WHEELS}/SHA256SUMS in the build context (sha256sum of both wheels)" >&2; exit 1; }; \
      cp "${src}"/aclruntime-*-cp311-cp311-linux_"$(uname -m)".whl "${src}"/ais_bench-*-py3-none-any.whl "${src}/SHA256SUMS" "${whl}/" \
        || { echo "ERROR: ${AIS_BENCH_WHEELS} must hold aclruntime-<ver>-cp311-cp311-linux_$(uname -m).whl and ais_bench-<ver>-py3-none-any.whl" >&2; exit 1; }; \
      [ "$(find "${whl}" -name '*.whl' | wc -l)" = 2 ] || { echo "ERROR: ${AIS_BENCH_WHEELS} holds more than one aclruntime or ais_bench wheel" >&2; exit 1; }; \
      for f in "${whl}"/*.whl; do \
        want="$(awk -v n="${f##*/}" '$2 == n || $2 == "*" n { print tolower($1) }' "${whl}/SHA256SUMS")"; \
        got="$(sha256sum "${f}" | cut -d' ' -f1)"; \
        if [ -z "${want}" ] || [ "${want}" != "${got}" ]; then \
          echo "ERROR: ${f##*/} (sha256 ${got}) is not the one ${AIS_BENCH_WHEELS}/SHA256SUMS names (${want:-no line for it})" >&2; exit 1; \
        fi; \
      done; \
    else \
      printf '%s %s %s\n' ACLRUNTIME "${ACLRUNTIME_WHEEL_URL:-none}" "${ACLRUNTIME_WHEEL_SHA256:-none}" \
        AIS_BENCH "${AIS_BENCH_WHEEL_URL:-none}" "${AIS_BENCH_WHEEL_SHA256:-none}" > "${whl}/urls"; \
      while read -r name url sha; do \
        if [ "${url}" = none ] || ! printf '%s' "${sha}" | grep -Eqx '[0-9a-fA-F]{64}'; then \
          echo "ERROR: INSTALL_AIS_BENCH=url needs ${name}_WHEEL_URL and its ${name}_WHEEL_SHA256 (64 hex digits)" >&2; exit 1; \
        fi; \
      done < "${whl}/urls"; \
      while read -r name url sha; do \
        file="${whl}/${url##*/}"; \
        python -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "${url}" "${file}" \
          || { echo "ERROR: downloading ${name}_WHEEL_URL=${url} failed" >&2; exit 1; }; \
        echo "${sha}  ${file}" | sha256sum -c - || { echo "ERROR: ${url} does not match ${name}_WHEEL_SHA256=${sha}" >&2; exit 1; }; \
      done < "${whl}/urls"; \
    fi; \
    printf 'tqdm==%s --hash=sha256:%s\n' "${TQDM_VERSION}" "${TQDM_SHA256}" > "${whl}/tqdm.txt"; \
    pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps -r "${whl}/tqdm.txt"; \
    pip install --no-cache-dir --no-deps --no-index "${whl}"/*.whl; \
    home="$(cat /opt/cgan-build/cann-home)"; \
    stubs=""; for d in "${home}"/latest/runtime/lib64/stub "${home}"/runtime/lib64/stub "${home}"/latest/*-linux/devlib "${home}"/*-linux/devlib; do [ -d "${d}" ] && stubs="${stubs}:${d}"; done; \
    if ! bash -c 'source "$1/set_env.sh" >/dev/null 2>&1; export LD_LIBRARY_PATH="${LD_LIBRARY_PATH}$2"; exec /opt/cgan-venv/bin/python -c "import aclruntime, ais_bench.infer.interface"' cgan-check "${home}" "${stubs}"; then \
      echo "ERROR: ais_bench does not load in /opt/cgan-venv after sourcing ${home}/set_env.sh (import aclruntime, ais_bench.infer.interface failed above): the aclruntime wheel must be cp311 for $(uname -m) and built against this CANN" >&2; exit 1; \
    fi; \
    rm -rf "${whl}"; \
    echo "ais_bench: installed and loads (npu_tool=ais_bench can run here)"

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
