"""`rlhf ppo`: parse `--config FILE key=value ...` and run stage 3.

    rlhf ppo --config configs/tiny/ppo.yaml ppo.kl_coef=0.1
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf ppo --config configs/tiny/ppo.yaml
"""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from rlhf.config import add_config_arguments, load_config, split_wandb_style

    parser = argparse.ArgumentParser(prog="rlhf ppo", description="Stage 3: PPO against a reward model with a KL penalty to the SFT policy.")
    add_config_arguments(parser)
    args = parser.parse_args(split_wandb_style(list(argv or [])))
    cfg = load_config(args.config, args.overrides)

    from ppo.trainer import train

    result = train(cfg)
    if result["finished"]:
        print(f"ppo: done after {result['updates_done']} updates; policy in {result['policy_dir']}")
    else:
        print(f"ppo: stopped after update {result['updates_done']} (ppo.updates_per_job); rerun with ppo.resume=true to continue")
    return 0
