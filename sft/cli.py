"""`rlhf sft`: supervised fine-tuning from a config file plus dotted overrides.

    rlhf sft --config configs/tiny/sft.yaml train.learning_rate=3e-4
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf sft --config configs/tiny/sft.yaml

A thin entry point: parse, load and validate the config, call `sft.trainer.train`, print the headline
numbers. Config and data problems surface as `UserError`s that `rlhf.cli` prints as one line.
"""
from __future__ import annotations

import argparse

from rlhf.config import add_config_arguments, load_config, split_wandb_style


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf sft", description="Stage 1: supervised fine-tuning on demonstrations (trl.SFTTrainer).")
    add_config_arguments(parser)
    args = parser.parse_args(split_wandb_style(list(argv or [])))
    cfg = load_config(args.config, args.overrides)

    from rlhf.hf_stage import is_main_process
    from sft.trainer import train

    summary = train(cfg)
    if is_main_process():
        headline = {key: summary[key] for key in ("eval/loss", "eval/perplexity", "train/loss", "wall_time_s") if key in summary}
        print(f"rlhf sft: done; model in {summary['model_dir']}; " + ", ".join(f"{k}={v:.4g}" for k, v in headline.items()))
    return 0
