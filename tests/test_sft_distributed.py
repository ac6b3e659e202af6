"""SFT under `accelerate launch` on two CPU processes: DDP == one process; ZeRO-3 + LoRA saves a merged model.

DDP: the same global batch (8 demonstrations on one process, 4 + 4 on two) gives the same per-step loss,
because TRL divides the summed token losses by the token count of the *global* batch
(`average_tokens_across_devices`). Tolerance relative 1e-4 (float round-off); steps 2-4 follow optimiser
steps, so they check the DDP gradient as well. ZeRO-3: weights are partitioned during training; the saved
directory must be a whole, merged model whose adapted projections moved away from the base weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhf.app.schema import load_config
from rlhf.tracking import read_metrics
from tests.test_sft import write_sft_data

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def launch(accelerate_config: str, cfg, config_file: Path) -> None:
    config_file.write_text(OmegaConf.to_yaml(cfg))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs/accelerate" / accelerate_config),
        "-m",
        "rlhf",
        "sft",
        "--config",
        str(config_file),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "CUDA_VISIBLE_DEVICES": "",
        "DS_ACCELERATOR": "cpu",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]


def sft_config(tiny_model_dir, tmp_path: Path, out: str, batch: int, *extra: str):
    train, evaluation = write_sft_data(tmp_path)
    return load_config(
        REPO / "configs/tiny/sft.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={train}",
            f"data.eval_file={evaluation}",
            f"run.output_dir={tmp_path / out}",
            "train.learning_rate=3e-3",
            "train.max_steps=4",
            "train.logging_steps=1",
            f"train.per_device_train_batch_size={batch}",
            "train.lr_scheduler=constant",
            "train.warmup_ratio=0",
            "train.eval_steps=null",
            "train.save_steps=null",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
            *extra,
        ],
    )


def test_two_ddp_processes_match_one_process(tiny_model_dir, tmp_path):
    from sft.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(sft_config(tiny_model_dir, tmp_path, "one", 8))
    finally:
        torch.set_num_threads(threads)
    launch("cpu_ddp.yaml", sft_config(tiny_model_dir, tmp_path, "two", 4), tmp_path / "two.yaml")

    def losses(run: str) -> dict[int, float]:
        return {row["step"]: row["loss"] for row in read_metrics(tmp_path / run / "metrics.jsonl") if "loss" in row}

    single, double = losses("one"), losses("two")
    assert sorted(single) == sorted(double) == [1, 2, 3, 4]
    for step in single:
        assert double[step] == pytest.approx(single[step], rel=1e-4), step


def test_zero3_lora_run_saves_a_merged_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    launch(
        "cpu_zero3.yaml", sft_config(tiny_model_dir, tmp_path, "z3", 4, "model.lora.enabled=true"), tmp_path / "z3.yaml"
    )
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "z3" / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(dict(merged.named_parameters())) == set(dict(base.named_parameters()))  # no adapter tensors left
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert (tmp_path / "z3" / "summary.json").exists()
