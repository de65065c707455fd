#!/usr/bin/env bash
# Build the peer venvs same_run.sh uses, each with the project's own onnxruntime version.
# The peers are not project dependencies: they live in their own venvs, outside the checkout.
#
#   VENV_DIR=<dir> bash benchmarks/peers/setup_venvs.sh [litserve pytriton torchserve bentoml]
#   (from the project root; PROJECT=<convscope checkout> otherwise; ~6.5 GB with TorchServe's torch)
#
#   PYTHON=python3.11        interpreter for the venvs
#   ORT_VERSION=<from $PROJECT/.venv>   onnxruntime pin for every peer
#   NUMPY_VERSION, PILLOW_VERSION=<from $PROJECT/.venv>  (PyTriton 0.7.0 needs numpy<2: it gets numpy<2)
#   TORCH_SPEC=torch         what TorchServe's venv installs as torch (its worker imports torch;
#                            a CPU wheel file or index URL spec keeps it small)
# A venv that already exists is left as it is (delete it to rebuild).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="${PROJECT:-$PWD}"
VENV_DIR="${VENV_DIR:-${TMPDIR:-/tmp}/peer-venvs}"
PYTHON="${PYTHON:-python3.11}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1}"
freeze() { "$PROJECT/.venv/bin/python" -m pip freeze 2>/dev/null | grep -i "^$1==" | cut -d= -f3; }
ORT_VERSION="${ORT_VERSION:-$(freeze onnxruntime)}"
NUMPY_VERSION="${NUMPY_VERSION:-$(freeze numpy)}"
PILLOW_VERSION="${PILLOW_VERSION:-$(freeze pillow)}"
[[ -n "$ORT_VERSION" ]] || { echo "cannot read onnxruntime's version from $PROJECT/.venv; set ORT_VERSION" >&2; exit 1; }
echo "onnxruntime==$ORT_VERSION numpy==$NUMPY_VERSION pillow==$PILLOW_VERSION -> $VENV_DIR" >&2
mkdir -p "$VENV_DIR"

make_venv() {  # NAME PIP-ARGS...
  local name="$1"; shift
  if [[ -x "$VENV_DIR/$name/bin/python" ]]; then echo "$name: exists, kept" >&2; return 0; fi
  "$PYTHON" -m venv "$VENV_DIR/$name"
  "$VENV_DIR/$name/bin/pip" install -q "$@"
  "$VENV_DIR/$name/bin/pip" freeze | grep -iE "^(onnxruntime|numpy|pillow|litserve|nvidia-pytriton|torchserve|torch|bentoml)==" >&2
}

for peer in ${*:-litserve pytriton torchserve bentoml}; do
  case "$peer" in
    litserve) make_venv litserve "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION" "pillow==$PILLOW_VERSION" litserve ;;
    pytriton) make_venv pytriton "onnxruntime==$ORT_VERSION" "numpy<2" "pillow==$PILLOW_VERSION" "nvidia-pytriton==0.7.0" ;;
    torchserve) make_venv torchserve "$TORCH_SPEC" "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION" \
                  "pillow==$PILLOW_VERSION" torchserve torch-model-archiver pyyaml ;;
    bentoml) make_venv bentoml "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION" "pillow==$PILLOW_VERSION" bentoml ;;
    *) echo "unknown peer $peer" >&2; exit 1 ;;
  esac
done
