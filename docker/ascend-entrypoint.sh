#!/usr/bin/env bash
# Entry point of the Ascend worker image (docker/ascend-worker.Dockerfile). Like the official
# Airflow image's: arguments that are an Airflow command (`celery worker -q ascend -c 1`) run as
# `airflow <arguments>`; `bash ...`, `python ...`, `airflow ...` or a path run as they are.
set -euo pipefail

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
