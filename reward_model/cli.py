"""`rlhf rm`: train a reward model, or score a file with one.

    rlhf rm --config configs/tiny/rm.yaml rm.loss=kwise
    rlhf rm score --model runs/tiny/rm/model --data runs/tiny/candidates.jsonl --out runs/tiny/scored.jsonl
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf rm --config configs/tiny/rm.yaml

A thin entry point: `score` as the first argument selects scoring, anything else is a training run
(`--config FILE` plus dotted overrides, like every stage).
"""
from __future__ import annotations

import argparse

from rlhf.config import add_config_arguments, load_config, split_wandb_style


def score_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rlhf rm score", description="Write a reward for every prompt/response row of a file.")
    parser.add_argument("--model", required=True, help="reward model directory (e.g. runs/tiny/rm/model)")
    parser.add_argument("--data", required=True, help="rows with prompt + response / completion / responses / chosen+rejected")
    parser.add_argument("--out", required=True, help="output JSONL: the input rows with reward fields added")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    args = parser.parse_args(argv)

    from reward_model.score import score_file

    written = score_file(args.model, args.data, args.out, batch_size=args.batch_size, device=args.device)
    print(f"rlhf rm score: {written} rows scored -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if argv and argv[0] == "score":
        return score_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="rlhf rm",
        description="Stage 2: train a reward model on rankings or pairs (pairwise: trl.RewardTrainer; kwise: InstructGPT). "
        "`rlhf rm score --help` scores a file.",
    )
    add_config_arguments(parser)
    args = parser.parse_args(split_wandb_style(argv))
    cfg = load_config(args.config, args.overrides)

    from reward_model.trainer import train
    from rlhf.hf_stage import is_main_process

    summary = train(cfg)
    if is_main_process():
        headline = {key: summary[key] for key in ("eval/accuracy", "eval/group_accuracy", "train/accuracy", "reward_stats/mean", "wall_time_s") if key in summary}
        print(f"rlhf rm ({cfg.rm.loss}): done; model in {summary['model_dir']}; " + ", ".join(f"{k}={v:.4g}" for k, v in headline.items()))
    return 0
