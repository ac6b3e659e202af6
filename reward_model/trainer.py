"""Stage 2: a scalar reward model trained on reviewers' rankings (or pairs).

    rlhf rm --config configs/tiny/rm.yaml
    rlhf rm --config configs/tiny/rm.yaml rm.loss=kwise
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf rm --config configs/tiny/rm.yaml

Choices. The model is the SFT policy (or any causal LM) with a 1-output head read at the last real token,
the head initialised N(0, 1/sqrt(hidden+1)) by `rlhf.modeling.load_scalar_model`. Rankings become pairs
through `rlhf.data` and keep their ranking as `group`. Two losses: `pairwise` is `trl.RewardTrainer`
(Bradley-Terry, optional per-pair margin and TRL's centring term); `kwise` is InstructGPT's ranking loss,
one batch element per ranking (`reward_model.kwise`). Both share one converter to `trl.RewardConfig`.
After training, the optimiser is released and the trained model itself (the weights just saved; only a
sharded ZeRO-3/FSDP model is reloaded from the artifact, in the configured dtype) measures on the main
process the held-out pairwise accuracy, reward means/stds, margin and per-ranking accuracy, and writes
`reward_stats.json` (mean/std of a sample of policy responses) for PPO's normalisation; every scored input
is cut to data.max_length tokens, keeping its end where the score is read.
`summary.json` is written last.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from reward_model.config import RMStageConfig
from rlhf.config import require, typed
from rlhf.errors import ConfigError
from rlhf.hf_stage import (
    MODEL_DIR,
    is_main_process,
    loading_on_one_process,
    prepare_resume,
    save_trained_model,
    slash_metrics,
    start_run,
    training_arguments_fields,
    wait_for_everyone,
    write_summary,
)

TRAIN_METRIC_PAIRS = 512  # training pairs re-scored after training (a cheap look at over-fitting)


def to_reward_config(cfg: RMStageConfig):
    """Our config -> `trl.RewardConfig` (used by both losses): the shared TrainingArguments fields plus
    the reward model's own."""
    from trl import RewardConfig

    return RewardConfig(
        **training_arguments_fields(cfg),
        # the kwise collator reads columns no model forward has; RewardTrainer picks its own columns
        remove_unused_columns=cfg.rm.loss != "kwise",
        disable_dropout=cfg.model.disable_dropout,
        max_length=cfg.data.max_length,
        center_rewards_coefficient=cfg.rm.center_rewards_coefficient,
    )


def build_trainer(
    cfg: RMStageConfig, args, model, tokenizer, train_pairs: list[dict], eval_pairs: list[dict], callbacks: list
):
    """trl.RewardTrainer (pairwise) or KwiseRewardTrainer (kwise) on the given pairs."""
    from reward_model.preference_data import kwise_dataset, pairwise_dataset

    if cfg.rm.loss == "pairwise":
        from trl import RewardTrainer

        return RewardTrainer(
            model=model,
            args=args,
            train_dataset=pairwise_dataset(train_pairs, tokenizer, cfg.rm.use_margin, cfg.data.max_length),
            eval_dataset=(
                pairwise_dataset(eval_pairs, tokenizer, cfg.rm.use_margin, cfg.data.max_length) if eval_pairs else None
            ),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    from reward_model.kwise import KwiseCollator, KwiseRewardTrainer

    return KwiseRewardTrainer(
        model=model,
        args=args,
        data_collator=KwiseCollator(tokenizer.pad_token_id),
        train_dataset=kwise_dataset(train_pairs, tokenizer, cfg.data.max_length),
        eval_dataset=kwise_dataset(eval_pairs, tokenizer, cfg.data.max_length) if eval_pairs else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        use_margin=cfg.rm.use_margin,
    )


def release_training_state(trainer) -> None:
    """Drop the optimiser (AdamW keeps two fp32 copies of every trainable weight) and the scheduler before
    measuring: the measurements need only the model."""
    import gc

    import torch

    trainer.accelerator.free_memory()  # accelerate's own references to the prepared optimiser/scheduler
    trainer.optimizer = None
    trainer.lr_scheduler = None
    trainer.callback_handler.optimizer = None  # the callbacks' handle on them
    trainer.callback_handler.lr_scheduler = None
    trainer.model_wrapped = trainer.model  # a DeepSpeed engine holds its optimiser (fp32 master + moments)
    if getattr(trainer, "deepspeed", None) is not None:
        trainer.deepspeed = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_for_measuring(cfg: RMStageConfig, trainer, model_dir: Path, device):
    """The trained model itself, in eval mode; only when it is sharded (ZeRO-3 / FSDP: the main process
    alone cannot run it) is the saved artifact loaded, in the configured dtype, on the main process."""
    from rlhf.modeling import load_scalar_model, load_tokenizer

    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    sharded = trainer.is_fsdp_enabled or (plugin is not None and getattr(plugin, "zero_stage", 0) == 3)
    if not sharded:
        return trainer.accelerator.unwrap_model(trainer.model).eval()
    with loading_on_one_process():  # only the main process measures
        return (
            load_scalar_model(str(model_dir), load_tokenizer(str(model_dir)), dtype=cfg.model.dtype).to(device).eval()
        )


def measure_model(
    cfg: RMStageConfig, model, tokenizer, model_dir: Path, train_pairs: list[dict], eval_pairs: list[dict]
) -> dict[str, Any]:
    """Held-out (and a sample of training) metrics of the trained model, and its reward_stats.json.

    Every input is cut to data.max_length tokens (its end kept, where the score is read), as in training."""
    import random

    from reward_model.normalization import compute_reward_stats, normalization_sample, write_reward_stats
    from reward_model.scoring import preference_metrics, score_pairs

    batch_size, max_length = cfg.train.per_device_eval_batch_size, cfg.data.max_length
    measured: dict[str, Any] = {}
    if eval_pairs:
        measured.update(
            {
                f"eval/{k}": v
                for k, v in preference_metrics(
                    eval_pairs, *score_pairs(model, tokenizer, eval_pairs, batch_size, max_length)
                ).items()
            }
        )
    train_sample = (
        train_pairs
        if len(train_pairs) <= TRAIN_METRIC_PAIRS
        else random.Random(cfg.run.seed).sample(train_pairs, TRAIN_METRIC_PAIRS)
    )
    train_metrics = preference_metrics(
        train_sample, *score_pairs(model, tokenizer, train_sample, batch_size, max_length)
    )
    measured.update({"train/accuracy": train_metrics["accuracy"], "train/margin_mean": train_metrics["margin_mean"]})
    sample, source = normalization_sample(
        train_pairs, cfg.rm.normalize_data_file, cfg.rm.normalize_samples, cfg.run.seed
    )
    stats = compute_reward_stats(model, tokenizer, sample, source, batch_size, max_length)
    write_reward_stats(model_dir, stats)
    measured.update(
        {
            "reward_stats/mean": stats["mean"],
            "reward_stats/std": stats["std"],
            "reward_stats/num_samples": stats["num_samples"],
        }
    )
    return measured


def train(cfg: RMStageConfig | DictConfig) -> dict[str, Any]:
    """Train the reward model as configured; returns the summary (also written to summary.json)."""
    cfg = typed(cfg, RMStageConfig)
    from reward_model.preference_data import require_margins, train_eval_pairs
    from rlhf.modeling import apply_lora, count_parameters, load_scalar_model, load_tokenizer
    from rlhf.runs import run_fingerprint
    from rlhf.tracking import seed_everything

    require(cfg, "model.name_or_path", "data.train_file")
    if cfg.model.lora.enabled and not cfg.model.lora.merge_on_save:
        raise ConfigError(
            "model.lora.merge_on_save=false: the reward model must be saved merged (PPO and `rlhf rm score` load a "
            "plain model directory)"
        )
    started = time.time()
    args = to_reward_config(cfg)  # first: it sets up the (possibly distributed) process state
    main = is_main_process()
    fingerprint = run_fingerprint(cfg)
    resume, resume_step = prepare_resume(cfg, Path(args.output_dir), fingerprint, "rm")
    seed_everything(cfg.run.seed)

    # data, tokenizer and model are validated before the run directory changes
    train_pairs, eval_pairs = train_eval_pairs(cfg)
    if cfg.rm.use_margin:
        require_margins(train_pairs + eval_pairs)
    tokenizer = load_tokenizer(
        cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code
    )
    model = load_scalar_model(cfg.model, tokenizer)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, task_type="SEQ_CLS")  # peft also trains the new head
    trainer = build_trainer(cfg, args, model, tokenizer, train_pairs, eval_pairs, [])
    run_dir = Path(cfg.run.output_dir)
    tracker = start_run(cfg, trainer, fingerprint, resume, resume_step, "rm")  # the run directory changes here

    metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
    if eval_pairs:
        metrics.update(trainer.evaluate())
    parameter_counts = {
        "num_parameters": count_parameters(trainer.model),
        "trainable_parameters": count_parameters(trainer.model, trainable_only=True),
    }  # counted before saving: merging LoRA changes the module tree
    model_dir = save_trained_model(
        trainer, tokenizer, run_dir / MODEL_DIR, cfg.model.lora.merge_on_save, "AutoModelForSequenceClassification"
    )

    summary: dict[str, Any] = {
        "stage": "rm",
        "loss": cfg.rm.loss,
        "model_dir": str(model_dir),
        **slash_metrics(metrics),
        **parameter_counts,
    }
    release_training_state(trainer)
    if main:
        import torch

        with torch.no_grad():
            measuring = model_for_measuring(cfg, trainer, model_dir, args.device)
            measured = measure_model(cfg, measuring, tokenizer, model_dir, train_pairs, eval_pairs)
        del measuring
        tracker.log(measured, step=trainer.state.global_step)
        summary.update(measured)
    wait_for_everyone()
    summary.update(
        {
            "train/global_step": trainer.state.global_step,
            "train/num_pairs": len(train_pairs),
            "train/num_groups": len({pair["group"] for pair in train_pairs}),
            "resumed_from": resume,
            "wall_time_s": round(time.time() - started, 2),
        }
    )
    from reward_model.scoring import chance_warning

    warning = chance_warning(summary.get("eval/loss"))
    summary["eval/loss_above_chance"] = warning is not None
    if warning and main:
        print(f"rlhf rm: warning: {warning}", flush=True)
    tracker.finish()
    write_summary(run_dir, summary)
    return summary
