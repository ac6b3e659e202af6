"""Stage 1: supervised fine-tuning on demonstrations, on `trl.SFTTrainer`.

    rlhf sft --config configs/tiny/sft.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf sft --config configs/tiny/sft.yaml

Choices. TRL does the tokenisation, completion-only labels, packing and the loss; we add one explicit
converter from our config to `trl.SFTConfig` (`to_sft_config`), so every TRL default that matters is set
on purpose: TRL turns gradient checkpointing and bf16 on by default, we follow `train.*` instead. Every
row is shaped into a prompt/completion pair first (`sft.formatting`) so the loss can stay on the
response for chat data too; TRL appends the EOS token to each completion so the policy learns to stop
(pad != eos is guaranteed by `rlhf.modeling.load_tokenizer`, so that EOS is a real label, not padding).
LoRA is applied by `rlhf.modeling.apply_lora` (adapters only train) and merged into the saved model
when `model.lora.merge_on_save`. Metrics go through our Tracker (TRL's own reporting is off), eval loss
and perplexity are measured on the held-out split at the end, and `summary.json` is written last.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rlhf.config import require, typed
from rlhf.hf_stage import (
    MODEL_DIR,
    perplexity,
    prepare_resume,
    save_trained_model,
    slash_metrics,
    split_train_eval,
    start_run,
    training_arguments_fields,
    write_summary,
)
from sft.config import SFTStageConfig


def to_sft_config(cfg: SFTStageConfig):
    """Our config -> `trl.SFTConfig`: the shared TrainingArguments fields plus SFT's data fields."""
    from trl import SFTConfig

    return SFTConfig(
        **training_arguments_fields(cfg),
        max_length=cfg.data.max_length,
        packing=cfg.sft.packing,
        completion_only_loss=cfg.sft.completion_only_loss,
    )


def load_sft_splits(cfg: SFTStageConfig, tokenizer):
    """Validated train/eval datasets, shaped into prompt/completion rows."""
    from rlhf.data import load_sft
    from sft.formatting import prepare_sft_dataset

    train_rows, eval_rows = split_train_eval(cfg, load_sft)
    shape = lambda rows: prepare_sft_dataset(rows, tokenizer, cfg.sft.use_chat_template, cfg.sft.add_eos)  # noqa: E731
    return shape(train_rows), (shape(eval_rows) if eval_rows is not None else None)


def build_trainer(cfg: SFTStageConfig, args, callbacks: list | tuple = ()):
    """Tokenizer, model (LoRA-wrapped when enabled), shaped data and the `trl.SFTTrainer` over them."""
    from trl import SFTTrainer

    from rlhf.modeling import apply_lora, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(
        cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code
    )
    model = load_causal_lm(cfg.model, tokenizer)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, task_type="CAUSAL_LM")
    train_dataset, eval_dataset = load_sft_splits(cfg, tokenizer)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


def train(cfg: SFTStageConfig | DictConfig) -> dict[str, Any]:
    """Run SFT as configured; returns the summary (also written to <run.output_dir>/summary.json)."""
    cfg = typed(cfg, SFTStageConfig)
    from rlhf.modeling import count_parameters
    from rlhf.runs import run_fingerprint
    from rlhf.tracking import seed_everything

    require(cfg, "model.name_or_path", "data.train_file")
    started = time.time()
    args = to_sft_config(cfg)  # first: it sets up the (possibly distributed) process state
    fingerprint = run_fingerprint(cfg)
    resume, resume_step = prepare_resume(cfg, Path(args.output_dir), fingerprint, "sft")
    seed_everything(cfg.run.seed)
    trainer = build_trainer(cfg, args)  # loads and validates model, tokenizer and data
    tokenizer, train_dataset, eval_dataset = trainer.processing_class, trainer.train_dataset, trainer.eval_dataset
    run_dir = Path(cfg.run.output_dir)
    tracker = start_run(cfg, trainer, fingerprint, resume, resume_step, "sft")  # the run directory changes here

    metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    parameter_counts = {
        "num_parameters": count_parameters(trainer.model),
        "trainable_parameters": count_parameters(trainer.model, trainable_only=True),
    }  # counted before saving: merging LoRA changes the module tree
    model_dir = save_trained_model(
        trainer, tokenizer, run_dir / MODEL_DIR, cfg.model.lora.merge_on_save, "AutoModelForCausalLM"
    )
    summary: dict[str, Any] = {
        "stage": "sft",
        "model_dir": str(model_dir),
        **slash_metrics(metrics),
        **parameter_counts,
    }
    if "eval/loss" in summary:
        summary["eval/perplexity"] = perplexity(summary["eval/loss"])
    summary.update(
        {
            "train/global_step": trainer.state.global_step,
            "train/num_examples": len(train_dataset),
            "eval/num_examples": len(eval_dataset) if eval_dataset is not None else 0,
            "resumed_from": resume,
            "wall_time_s": round(time.time() - started, 2),
        }
    )
    tracker.finish()
    write_summary(run_dir, summary)
    return summary
