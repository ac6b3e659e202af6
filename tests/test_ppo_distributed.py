"""Two CPU processes (DDP over gloo, `torchrun ... -m rlhf ppo`, the real CLI) == one process.

The same global batch (8 prompts: 8 on one process, 4 + 4 on two) with greedy decoding gives the same
rollouts whichever process samples them, so the per-update metrics must agree. They agree to float
round-off, not bitwise: padding widths and summation order differ between the two layouts. Tolerance:
relative 1e-4 (absolute 1e-6) on every reproducible metric of updates 1 and 2; update 2 depends on the
optimiser step of update 1, so it checks that the DDP gradient (token mean over the global mini-batch,
clipped) equals the single-process one. The evaluations (before update 1 and after update 2) run 5 prompts,
3 + 3 on two processes (ppo.data.even_shard: the repeat is dropped), and must agree too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from ppo.trainer import NONDETERMINISTIC_PREFIXES, train
from rlhf.app.schema import load_config

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process(tiny_model_dir, tiny_reward_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"User: Tell me about thing {i}{'!' * (i % 3)}.\nAssistant:"}) + "\n"
            for i in range(16)
        )
    )

    eval_prompts = tmp_path / "eval.jsonl"  # 5 prompts: 3 + 3 on two processes, one repeat dropped from the metrics
    eval_prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Describe item {i}.\nAssistant:"}) + "\n" for i in range(5))
    )

    def overrides(out_dir, per_process_batch):
        return [
            f"model.name_or_path={tiny_model_dir}",
            f"ppo.reward_model_path={tiny_reward_model_dir}",
            f"data.train_file={prompts}",
            f"data.eval_file={eval_prompts}",
            "ppo.eval_every=2",
            "ppo.eval_num_prompts=5",
            f"run.output_dir={out_dir}",
            "tracking.plots=false",
            "ppo.sample_every=0",
            "ppo.num_updates=2",
            f"ppo.rollout_batch_size={per_process_batch}",
            "ppo.rollout_forward_batch_size=4",
            "ppo.max_new_tokens=6",
            "ppo.do_sample=false",
            "ppo.num_mini_batches=1",
            "train.learning_rate=1e-3",
            "train.precision=fp32",  # the identity is exact in fp32; bf16 autocast rounds per process shard
        ]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(load_config(None, overrides(tmp_path / "one", 8)))
        single = [result["eval_at_start"], *result["history"]]
    finally:
        torch.set_num_threads(threads)

    config_file = tmp_path / "two.yaml"
    cfg = load_config(None, overrides(tmp_path / "two", 4))
    config_file.write_text(OmegaConf.to_yaml(cfg))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "rlhf",
        "ppo",
        "--config",
        str(config_file),
    ]
    # ACCELERATE_USE_CPU makes accelerate treat a torchrun world on CPU as MULTI_CPU (gloo) rather than ignore it.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "CUDA_VISIBLE_DEVICES": "",
        "ACCELERATE_USE_CPU": "true",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    double = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]

    assert len(double) == len(single) == 3 and "eval/rm_score" in double[0] and "eval/rm_score" in double[2]
    for one, two in zip(single, double):
        for key, value in one.items():
            if key.startswith(NONDETERMINISTIC_PREFIXES):
                continue
            assert two[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
