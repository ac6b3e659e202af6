"""`rlhf sft`, `rlhf rm` and `rlhf ppo`: a config file plus dotted overrides -> the stage's `train(cfg)`.

    rlhf sft --config configs/tiny/sft.yaml train.learning_rate=3e-4
    rlhf rm  --config configs/tiny/rm.yaml rm.loss=kwise
    rlhf rm score --model runs/tiny/rm/model --data runs/tiny/candidates.jsonl --out runs/tiny/scored.jsonl
    rlhf ppo --config configs/tiny/ppo.yaml ppo.kl_coef=0.1
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf ppo --config configs/tiny/ppo.yaml

Thin entry points: parse, load and validate the config against the full schema, hand the stage its typed
view, print the headline numbers. Config and data problems surface as `UserError`s that rlhf.app.cli
prints as one line.
"""

from __future__ import annotations

import argparse

from rlhf.app.schema import load_config
from rlhf.config import add_config_arguments, split_wandb_style, typed
from rlhf.hf_stage import is_main_process


def _parse(prog: str, description: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_config_arguments(parser)
    return parser.parse_args(split_wandb_style(argv))


def _headline(summary: dict, keys: tuple[str, ...]) -> str:
    return ", ".join(f"{key}={summary[key]:.4g}" for key in keys if key in summary)


def sft_main(argv: list[str] | None = None) -> int:
    args = _parse("rlhf sft", "Stage 1: supervised fine-tuning on demonstrations (trl.SFTTrainer).", list(argv or []))
    from sft.config import SFTStageConfig
    from sft.trainer import train

    summary = train(typed(load_config(args.config, args.overrides), SFTStageConfig))
    if is_main_process():
        headline = _headline(summary, ("eval/loss", "eval/perplexity", "train/loss", "wall_time_s"))
        print(f"rlhf sft: done; model in {summary['model_dir']}; {headline}")
    return 0


def rm_score_main(argv: list[str]) -> int:
    from rlhf.inference import add_device_arguments

    parser = argparse.ArgumentParser(
        prog="rlhf rm score", description="Write a reward for every prompt/response row of a file."
    )
    parser.add_argument("--model", required=True, help="reward model directory (e.g. runs/tiny/rm/model)")
    parser.add_argument(
        "--data", required=True, help="rows with prompt + response / completion / responses / chosen+rejected"
    )
    parser.add_argument("--out", required=True, help="output JSONL: the input rows with reward fields added")
    parser.add_argument("--batch-size", type=int, default=32)
    add_device_arguments(parser, precision_default="fp32")  # exact scores unless asked otherwise
    args = parser.parse_args(argv)
    from reward_model.score import score_file

    written = score_file(
        args.model,
        args.data,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        dtype=args.dtype,
    )
    print(f"rlhf rm score: {written} rows scored -> {args.out}")
    return 0


def rm_main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if argv and argv[0] == "score":
        return rm_score_main(argv[1:])
    description = (
        "Stage 2: train a reward model on rankings or pairs (pairwise: trl.RewardTrainer; kwise: InstructGPT). "
        "`rlhf rm score --help` scores a file."
    )
    args = _parse("rlhf rm", description, argv)
    from reward_model.config import RMStageConfig
    from reward_model.trainer import train

    cfg = typed(load_config(args.config, args.overrides), RMStageConfig)
    summary = train(cfg)
    if is_main_process():
        headline = _headline(
            summary, ("eval/accuracy", "eval/group_accuracy", "train/accuracy", "reward_stats/mean", "wall_time_s")
        )
        print(f"rlhf rm ({cfg.rm.loss}): done; model in {summary['model_dir']}; {headline}")
    return 0


def ppo_main(argv: list[str] | None = None) -> int:
    args = _parse(
        "rlhf ppo", "Stage 3: PPO against a reward model with a KL penalty to the SFT policy.", list(argv or [])
    )
    from ppo.config import PPOStageConfig
    from ppo.trainer import train

    result = train(typed(load_config(args.config, args.overrides), PPOStageConfig))
    if not is_main_process():
        return 0
    if result["finished"]:
        print(f"ppo: done after {result['updates_done']} updates; policy in {result['policy_dir']}")
    else:
        print(
            f"ppo: stopped after update {result['updates_done']} (ppo.updates_per_job); rerun the same command to "
            "continue"
        )
    return 0
