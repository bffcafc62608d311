#!/usr/bin/env bash
# The GPU benchmark on a machine with an NVIDIA GPU and PyTorch (no venv, no network needed):
#   scripts/bench_gpu.sh [bench_gpu.py options]     e.g. --compile, --batches 100,10000
# Uses the python3 that has torch (PYTHON=... to choose another); results in bench/gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import torch, numpy" 2>/dev/null; then
  echo "bench_gpu.sh: $PYTHON cannot import torch and numpy; set PYTHON to an interpreter that has them" >&2
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -u scripts/bench_gpu.py "$@"
