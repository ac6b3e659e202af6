#!/usr/bin/env bash
# Create .venv and install the project with its test and annotation extras.
#   bash scripts/setup.sh
# torch: on a machine with an NVIDIA GPU a normal `pip install torch` (CUDA build); without one the pinned
# CPU build (`torch==2.13.0`; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to fetch the CPU
# wheel from PyTorch's index) so a CPU machine never downloads gigabytes of CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install -q torch
  elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip install -q torch==2.13.0 --index-url "$TORCH_INDEX_URL"
  else
    pip install -q torch==2.13.0
  fi
fi
# torch is already installed, so the `torch>=...` requirement below installs nothing more.
pip install -q -e ".[test,annotate]" 2>&1 | grep -v "is ignored: it is neither" || true
python -c "import rlhf, torch, trl, transformers; print(f'rlhf {rlhf.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}')"
