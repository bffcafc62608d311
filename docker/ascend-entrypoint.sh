#!/usr/bin/env bash
# Entry point of the Ascend worker image (docker/ascend-worker.Dockerfile). Like the official
# Airflow image's: arguments that are an Airflow command (`celery worker -q ascend -c 1`) run as
# `airflow <arguments>`; `bash ...`, `python ...`, `airflow ...` or a path run as they are.
#
# The CANN libraries for ais_bench's in-process API (npu_tool=ais_bench): where the venv holds
# aclruntime (the image was built with INSTALL_AIS_BENCH), the toolkit's set_env.sh is sourced in a
# child shell and only its library path and ASCEND_* variables are exported here (not its PATH or
# PYTHONPATH: Airflow keeps the project's venv; atc and msame get set_env.sh's whole environment
# from cgan/ascend/toolkit.py). The toolkit: CGAN_ASCEND_TOOLKIT, else the first of CGAN_CANN_HOMES
# (default /usr/local/Ascend/cann /usr/local/Ascend/ascend-toolkit) holding set_env.sh.
# CGAN_CANN_RUNTIME_ENV=0 turns this off, =1 does it even without aclruntime.
set -euo pipefail

cann_runtime_env() {
  local mode="${CGAN_CANN_RUNTIME_ENV:-auto}" home="${CGAN_ASCEND_TOOLKIT:-}" root kv
  [[ "$mode" == 0 ]] && return 0
  if [[ "$mode" != 1 ]]; then
    compgen -G "${VIRTUAL_ENV:-/opt/cgan-venv}/lib/python3*/site-packages/aclruntime*" >/dev/null || return 0
  fi
  if [[ -z "$home" ]]; then
    for root in ${CGAN_CANN_HOMES:-/usr/local/Ascend/cann /usr/local/Ascend/ascend-toolkit}; do
      if [[ -f "$root/set_env.sh" ]]; then home="$root"; break; fi
    done
  fi
  if [[ -z "$home" || ! -f "$home/set_env.sh" ]]; then
    echo "ascend-entrypoint: no CANN set_env.sh (CGAN_ASCEND_TOOLKIT or ${CGAN_CANN_HOMES:-/usr/local/Ascend/cann /usr/local/Ascend/ascend-toolkit}): npu_tool=ais_bench will not find the CANN libraries" >&2
    return 0
  fi
  while IFS= read -r -d '' kv; do
    export "${kv?}"
  done < <(bash -c 'source "$1/set_env.sh" >/dev/null 2>&1
    for v in LD_LIBRARY_PATH ASCEND_TOOLKIT_HOME ASCEND_HOME_PATH ASCEND_OPP_PATH ASCEND_AICPU_PATH; do
      if [[ -n "${!v:-}" ]]; then printf "%s=%s\0" "$v" "${!v}"; fi
    done' cgan-cann-env "$home")
}
cann_runtime_env

if [[ $# -eq 0 ]]; then
  set -- celery worker -q ascend
fi

case "$1" in
  airflow | bash | sh | python | python3 | /*)
    exec "$@"
    ;;
  *)
    exec airflow "$@"
    ;;
esac
