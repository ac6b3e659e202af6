#!/usr/bin/env bash
# The checks only a GPU can show, in one timed run: the CUDA tests, the PPO update at size (ours and TRL 1.12,
# fp32 and bf16, with MFU), the test suite with CUDA visible, and the quickstart pipeline on the GPU.
#   bash scripts/gpu_checks.sh OUT_DIR [SECONDS]     # on a CUDA machine; SECONDS: the whole budget (default 540)
# Where the machine has no network, the Python packages it lacks travel as wheels: .whl/ (this project's
# dependencies, installed over the machine's own) and .whl112/ (trl==1.12.0, the baseline's PPOTrainer). For a
# machine with torch but none of ours (Python 3.12), .whl held: trl transformers huggingface_hub httpx2 httpcore2
# truststore kernels tomlkit accelerate omegaconf antlr4-python3-runtime datasets dill multiprocess deepspeed (a
# wheel built here: pip wheel --no-deps deepspeed) hjson pydantic pydantic_core annotated-types
# typing-inspection peft idna anyio click, each at the version .venv has (pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 ...).
# The figures in docs/performance.md's GPU section come from this script on the H200 lent to the project.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_checks.sh OUT_DIR [SECONDS]}
BUDGET=${2:-540}
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
mkdir -p "$OUT"
LOG="$OUT/checks.log"
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "=== $* ($(($(date +%s) - START)) s in, $(left) s left)"; }

step "packages"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
if [ -d .whl112 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/trl112 .whl112/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD" WANDB_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, trl, accelerate, deepspeed, datasets, pyarrow, peft
print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())
print('transformers', transformers.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__,
      'deepspeed', deepspeed.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, 'peft', peft.__version__)
from transformers import LlamaForCausalLM
from trl import RewardTrainer, SFTTrainer
from datasets import Dataset" || exit 3  # a missing package: stop before spending the machine's time

step "tests/test_cuda.py"
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -rA --timeout 160

step "ppo_scaling on the GPU"
timeout 170 python3 benchmarks/ppo_scaling.py --sizes 4.5M 26M 135M 350M --updates 3 --warmup 1 --out-dir "$OUT" >/dev/null

for precision in fp32 bf16; do
    step "TRL 1.12 PPOTrainer, $precision"
    PYTHONPATH="/tmp/trl112:$PYTHONPATH" timeout 60 python3 benchmarks/trl_ppo_baseline.py --sizes 4.5M 26M 135M 350M \
        --precision "$precision" --ours "$OUT/ppo_scaling.json" >"$OUT/trl_$precision.json"
done

step "quickstart pipeline on the GPU (background) and the suite with CUDA visible"
mkdir -p runs
( timeout $(($(left) - 15)) python3 -m rlhf pipeline --config configs/tiny/pipeline.yaml \
      run.output_dir=runs/tiny-gpu "tracking.report_to=[jsonl]" >runs/pipeline-gpu.log 2>&1
  echo "pipeline exit $?" >>runs/pipeline-gpu.log
  tar czf "$OUT/pipeline.tar.gz" runs/pipeline-gpu.log $(find runs/tiny-gpu -maxdepth 2 -name "*.md" -o -maxdepth 2 -name "*.json")
) &
pipeline=$!
timeout $(($(left) - 20)) python3 -m pytest -v -p no:cacheprovider -n 8 -m "not distributed and not browser" \
    --ignore-glob='tests/test_annotation_*' --ignore=tests/test_cuda.py --timeout 300 >"$OUT/pytest.log" 2>&1
echo "pytest exit $?"
grep -E "FAILED|ERROR|passed|failed" "$OUT/pytest.log" | tail -40
wait "$pipeline"
tail -30 runs/pipeline-gpu.log
step "done"
