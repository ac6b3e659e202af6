#!/usr/bin/env bash
# Set up (if needed) and run the test suite: the README's test command, and what CI runs.
#   bash scripts/test.sh            # everything (browser tests need Debian's chromium; installed here when root)
#   bash scripts/test.sh -m "not slow"   # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Browser tests drive Debian's chromium through pip's playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will be skipped"
fi
. .venv/bin/activate
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
# Lint and format first: a style slip fails in seconds, not after the suite.
ruff check . && ruff format --check .
# Two pytest workers, one thread each, a test file per worker (most tests wait on subprocesses: one worker
# used ~1.1 cores); on the 2-core EPYC VM the suite took 24.0 min in one process and 17.7 min this way.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile --durations=20 "$@"  # slowest listed: CI < 30 min
