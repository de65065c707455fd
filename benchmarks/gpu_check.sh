#!/usr/bin/env bash
# Issue 14's GPU check in one short run (see benchmarks/gpu_check.py for every step):
#   bash benchmarks/gpu_check.sh                   # CUDA: needs onnxruntime's CUDA build
#   bash benchmarks/gpu_check.sh --provider cpu    # the same steps on the CPU
# No network is used: the model is exported here (or brought with --model-dir) and the
# load generator is wrk when installed, else the Python one. Exit status 1 when a check
# fails, 2 when this onnxruntime build lacks the provider.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${GPU_CHECK_NO_INSTALL:-}" ] && ! command -v wrk >/dev/null 2>&1; then
    # Only where a package registry answers; the GPU machines have none, and the Python
    # load generator takes over there.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        timeout 60 apt-get install -y -q wrk >/dev/null 2>&1 || echo "wrk not installed: using the Python load generator" >&2
    fi
fi
# Whole check bounded: it must finish well inside a GPU lease.
exec timeout "${GPU_CHECK_TIMEOUT:-470}" "$PYTHON" -m benchmarks.gpu_check "$@"
