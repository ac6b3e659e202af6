"""rlhf: InstructGPT-style RLHF end to end (SFT -> reward model -> PPO), with the reviewers' tool."""

import os

__version__ = "0.1.0"

# transformers >= 5.2x loads every model with Hub kernels on (`use_kernels` defaults to True), and on a GPU
# `model.train()` / `model.eval()` swap layers (RoPE, RMSNorm, MLP activations) for kernels fetched from the Hub,
# one set for training mode and another for inference. Measured on an H200: every PPO, SFT and RM run stopped at
# its first `model.train()` where the Hub is unreachable (offline clusters, HF_HUB_OFFLINE=1). Where it is
# reachable, the policy (training mode) and the rollout / reference (inference mode) would run different kernels,
# so update 0's KL and the old-vs-new log-prob ratio would not start at 0 and 1. Off unless the user asks:
# USE_HUB_KERNELS=YES in the environment keeps them on (docs/performance.md).
HUB_KERNELS_ENV = "USE_HUB_KERNELS"
os.environ.setdefault(HUB_KERNELS_ENV, "NO")
