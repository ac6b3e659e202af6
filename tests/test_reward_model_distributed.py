"""The reward model under `accelerate launch` on two CPU processes: DDP == one process; ZeRO-3 saves a whole model.

DDP: the same global batch (8 rankings/pairs on one process, 4 + 4 on two, drawn from the same seeded
order) gives the same per-step training loss, because each loss is a mean over equal-sized halves and
DDP averages the halves' gradients. Agreement is to float round-off (padding widths differ), so the
tolerance is relative 1e-4 on steps 1-4; steps 2-4 depend on the optimiser steps before them, so they
check the DDP gradient too. ZeRO-3: the model is partitioned while training, and the saved directory
must still be a complete model that `rlhf.modeling.load_scalar_model` loads, with its reward_stats.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhf.app.schema import load_config
from rlhf.tracking import read_metrics
from tests.test_reward_model import make_rankings, write_jsonl

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
        "rm",
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


@pytest.fixture(scope="module")
def data(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rm_dist")
    return tiny_model_dir, write_jsonl(root / "rankings.jsonl", make_rankings(48, seed=1))


def overrides(data, out: Path, batch: int, *extra: str) -> list[str]:
    model_dir, rankings = data
    return [
        f"model.name_or_path={model_dir}",
        f"data.train_file={rankings}",
        f"run.output_dir={out}",
        "data.eval_fraction=0.25",
        "train.learning_rate=3e-3",
        "train.max_steps=4",
        "train.logging_steps=1",
        f"train.per_device_train_batch_size={batch}",
        "train.lr_scheduler=constant",
        "tracking.report_to=[jsonl]",
        "tracking.plots=false",
        "rm.normalize_samples=16",
        *extra,
    ]


@pytest.mark.parametrize("loss", ["pairwise", "kwise"])
def test_two_ddp_processes_match_one_process(data, tmp_path, loss):
    from reward_model.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(REPO / "configs/tiny/rm.yaml", overrides(data, tmp_path / "one", 8, f"rm.loss={loss}")))
    finally:
        torch.set_num_threads(threads)
    launch(
        "cpu_ddp.yaml",
        load_config(REPO / "configs/tiny/rm.yaml", overrides(data, tmp_path / "two", 4, f"rm.loss={loss}")),
        tmp_path / "two.yaml",
    )

    def losses(run: str) -> dict[int, float]:
        return {row["step"]: row["loss"] for row in read_metrics(tmp_path / run / "metrics.jsonl") if "loss" in row}

    single, double = losses("one"), losses("two")
    assert sorted(single) == sorted(double) == [1, 2, 3, 4]
    for step in single:
        assert double[step] == pytest.approx(single[step], rel=1e-4), step
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["train/global_step"] == 4 and "eval/accuracy" in summary


def test_zero3_saves_a_complete_reward_model(data, tmp_path):
    from rlhf.modeling import load_scalar_model, load_tokenizer

    launch(
        "cpu_zero3.yaml",
        load_config(REPO / "configs/tiny/rm.yaml", overrides(data, tmp_path / "z3", 4, "rm.loss=kwise")),
        tmp_path / "z3.yaml",
    )
    model_dir = tmp_path / "z3" / "model"
    tokenizer = load_tokenizer(str(model_dir))
    model = load_scalar_model(str(model_dir), tokenizer)
    base = load_scalar_model(str(data[0]), tokenizer)
    trained, initial = model.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight
    assert trained.shape == initial.shape and not torch.equal(trained, initial)  # gathered, and trained
    stats = json.loads((model_dir / "reward_stats.json").read_text())
    assert stats["num_samples"] == 16 and json.loads((tmp_path / "z3" / "summary.json").read_text())["loss"] == "kwise"
