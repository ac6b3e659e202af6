"""On a CUDA GPU: `auto` means bf16 there, PPO and the reward model train on the GPU, and DeepSpeed ZeRO-2 and
ZeRO-3 run PPO in one GPU process (NCCL). Skipped where there is no GPU (CI has none).

    pytest tests/test_cuda.py -v          # on a machine with a GPU

The rest of the suite also runs on a GPU machine, where every stage it starts without a device picks CUDA;
this file holds what only a GPU can show. The distributed tests pin themselves to the CPU (gloo).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_ppo_trainer import load_weights as weights
from test_ppo_trainer import ppo_config as tiny_ppo_config
from test_reward_model import rm_config

from ppo.trainer import train

ON_GPU = torch.cuda.is_available() or os.environ.get("RLHF_TEST_CUDA_FILE_ON_CPU") == "1"  # the latter: a dry run
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def ppo_inputs(tiny_model_dir, tiny_reward_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about thing {i}.\nAssistant:"}) + "\n" for i in range(16))
    )
    return {"policy": str(tiny_model_dir), "rm": str(tiny_reward_model_dir), "prompts": str(prompts)}


def ppo_config(inputs: dict, out_dir: Path, *overrides: str):
    """test_ppo_trainer's tiny PPO run, two updates at a learning rate that moves the weights in bf16."""
    overrides = ("tracking.report_to=[jsonl]", "ppo.num_updates=2", "train.learning_rate=1e-3", *overrides)
    return tiny_ppo_config(inputs, out_dir, *overrides)


def test_auto_is_bf16_on_this_gpu():
    from rlhf.precision import describe_device, resolve_precision

    assert torch.cuda.is_bf16_supported()  # the H100 / H200 / A100 class this file is run on
    assert resolve_precision("auto", describe_device("cuda")) == "bf16"


def test_ppo_at_auto_trains_on_the_gpu_in_bf16(ppo_inputs, tmp_path, monkeypatch):
    """The frozen models sit on the GPU (the reward model stored in bf16, the reference with the policy's fp32
    master weights under autocast), update 0's KL is exactly 0, and the policy moved."""
    import ppo.trainer as trainer

    placed = []  # (device type, dtype) of the frozen models as prepared: reward model, reference
    real_prepare = trainer._prepare_frozen

    def recording_prepare(model, accelerator):
        prepared = real_prepare(model, accelerator)
        parameter = next(prepared.parameters())
        placed.append((parameter.device.type, parameter.dtype))
        return prepared

    monkeypatch.setattr(trainer, "_prepare_frozen", recording_prepare)
    result = train(ppo_config(ppo_inputs, tmp_path / "run", "train.precision=auto"))
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").train.precision == "bf16"
    assert placed == [("cuda", torch.bfloat16), ("cuda", torch.float32)]
    first, second = result["history"]
    assert first["objective/kl"] == 0.0 and second["objective/kl"] != 0.0
    assert all(math.isfinite(row[k]) for row in result["history"] for k in ("loss/policy_avg", "loss/value_avg"))
    before, after = weights(ppo_inputs["policy"]), weights(result["policy_dir"])
    assert any(not torch.equal(before[name], after[name].to(before[name].dtype)) for name in before)


def test_reward_model_trains_in_bf16_on_the_gpu(tiny_model_dir, tmp_path):
    """TRL's RewardTrainer on CUDA at auto: bf16, not use_cpu, and the loss falls on separable rankings."""
    from reward_model.trainer import to_reward_config
    from reward_model.trainer import train as train_rm
    from rlhf.tracking import read_metrics

    rankings = tmp_path / "rankings.jsonl"
    rows = [
        {
            "id": f"p{i}",
            "prompt": f"User: Tell me about thing {i}.\nAssistant:",
            "responses": [{"id": "good", "text": " Hi! Nice thing."}, {"id": "bad", "text": " no"}],
            "ranking": [["good"], ["bad"]],
        }
        for i in range(64)
    ]
    rankings.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = rm_config(
        (tiny_model_dir, rankings), tmp_path / "run", "data.eval_fraction=0.25", "train.precision=auto",
        "train.num_train_epochs=2", "train.logging_steps=2", "rm.normalize_samples=16",
    )  # fmt: skip
    arguments = to_reward_config(cfg)
    assert cfg.train.precision == "bf16" and arguments.bf16 is True and not arguments.use_cpu
    summary = train_rm(cfg)
    losses = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in row]
    assert losses[-1] < losses[0] and summary["eval/accuracy"] == 1.0


@pytest.mark.parametrize("config_name", ["zero2", "zero3"])
def test_ppo_under_deepspeed_in_one_gpu_process(config_name, ppo_inputs, tmp_path):
    """`accelerate launch` with the shipped GPU DeepSpeed config, one process: bf16 weights under ZeRO, two
    updates, finite losses, the policy saved whole (ZeRO-3: gathered from its shards) and changed."""
    config_file = tmp_path / "ppo.yaml"
    config_file.write_text(OmegaConf.to_yaml(ppo_config(ppo_inputs, tmp_path / "run", "train.precision=bf16")))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO / "configs" / "accelerate" / f"{config_name}.yaml"), "--num_processes", "1",
        "-m", "rlhf", "ppo", "--config", str(config_file),
    ]  # fmt: skip
    # conftest pins DeepSpeed to its CPU accelerator for the CPU tests; here it must find the GPU itself
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"} | {"WANDB_MODE": "disabled"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    updates = [row for row in rows if "loss/policy_avg" in row]
    assert len(updates) == 2 and all(math.isfinite(row["loss/policy_avg"]) for row in updates)
    before, after = weights(ppo_inputs["policy"]), weights(tmp_path / "run" / "policy")
    assert sorted(before) == sorted(after)
    assert all(after[name].shape == before[name].shape for name in before)  # whole tensors, not shards
    assert any(not torch.equal(before[name], after[name].to(before[name].dtype)) for name in before)
