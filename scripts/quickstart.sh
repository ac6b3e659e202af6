#!/usr/bin/env bash
# Set up (if needed) and run the whole pipeline on the built-in tiny task: the README's main command.
#   bash scripts/quickstart.sh                      # -> runs/tiny/report.md
#   bash scripts/quickstart.sh ppo.kl_coef=0.02     # extra args are pipeline overrides
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false
rlhf pipeline --config configs/tiny/pipeline.yaml "$@"
echo "report: runs/tiny/report.md"
