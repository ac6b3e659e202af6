"""What the two HF-Trainer stages (SFT and the reward model) share: TrainingArguments fields, splits,
resume, final save, summary.

Both stages run a `transformers.Trainer` subclass whose checkpoints live in `<run.output_dir>/checkpoints`
and hand a finished model to the next stage as `<run.output_dir>/model`. The final model is written with
`rlhf.modeling.save_model` (atomic, LoRA merged on request). Under ZeRO-3 or FSDP no single rank holds
the weights, so we let `Trainer.save_model` gather them into a staging directory first and re-save that
atomically. `summary.json` is written last: the pipeline reads its presence as "stage complete", so a
stale one is removed when a stage starts. (This module would sit better in `rlhf/`; the reward model
imports it from here until it moves.)
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from rlhf.errors import ConfigError
from rlhf.files import write_json_atomic

CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"
SUMMARY_FILE = "summary.json"
SAVE_AT_END_ONLY = 1_000_000_000  # save_steps that never divides a step: Trainer then saves only at the end


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def clear_stale_summary(run_dir: Path) -> None:
    """A re-run into the same directory must not look complete before it is."""
    if is_main_process():
        (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    wait_for_everyone()


def split_train_eval(cfg, load: Callable[[str], Any]):
    """(train, eval or None) datasets from data.train_file / data.eval_file / data.eval_fraction.

    Rows are split before any expansion (rankings -> pairs), so a ranking never lands on both sides.
    """
    train = load(cfg.data.train_file)
    if cfg.data.eval_file:
        evaluation = load(cfg.data.eval_file)
    elif cfg.data.eval_fraction and cfg.data.eval_fraction > 0:
        if not 0 < cfg.data.eval_fraction < 1:
            raise ConfigError(f"data.eval_fraction must be in (0, 1); got {cfg.data.eval_fraction}")
        num_eval = max(1, round(len(train) * cfg.data.eval_fraction))
        if num_eval >= len(train):
            raise ConfigError(
                f"data.eval_fraction={cfg.data.eval_fraction} leaves no training rows in {cfg.data.train_file} "
                f"({len(train)} rows)"
            )
        split = train.train_test_split(test_size=num_eval, seed=cfg.run.seed)
        train, evaluation = split["train"], split["test"]
    else:
        evaluation = None
    if cfg.data.max_samples:
        train = train.select(range(min(cfg.data.max_samples, len(train))))
    return train, evaluation


def has_eval_data(cfg) -> bool:
    return bool(cfg.data.eval_file) or bool(cfg.data.eval_fraction and cfg.data.eval_fraction > 0)


def training_arguments_fields(cfg) -> dict[str, Any]:
    """Our run/train sections as `transformers.TrainingArguments` fields, shared by `trl.SFTConfig` and
    `trl.RewardConfig` (the one place the two vocabularies meet); each stage adds its own data fields."""
    from rlhf.distributed import forget_mixed_precision, gpu_available, training_arguments_kwargs
    from rlhf.precision import resolve_train_precision

    train = cfg.train
    precision = resolve_train_precision(cfg)  # `auto` -> what this machine runs fast, recorded in config.yaml
    forget_mixed_precision()  # the Trainer's Accelerator may follow a stage at another precision
    # transformers refuses bf16 without a GPU unless told that the run is on the CPU (torch autocasts there)
    device_kwargs = {"use_cpu": True} if precision != "fp32" and not gpu_available() else {}
    return dict(
        output_dir=str(Path(cfg.run.output_dir) / CHECKPOINTS_DIR),
        run_name=cfg.run.name,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        # optimisation
        optim=train.optimizer,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # transformers 5 reads a value < 1 as a ratio of the total steps
        max_grad_norm=train.max_grad_norm,
        per_device_train_batch_size=train.per_device_train_batch_size,
        per_device_eval_batch_size=train.per_device_eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_train_epochs=train.num_train_epochs,
        max_steps=train.max_steps,
        **activation_checkpointing_flag(train.gradient_checkpointing),  # TRL's default is True
        **precision_flags(precision),  # TRL's default is bf16=True
        # logging, evaluation, checkpoints
        report_to="none",  # our Tracker receives the logs through TrackerCallback
        logging_steps=train.logging_steps,
        logging_first_step=True,
        **eval_and_save_schedule(train, has_eval_data(cfg)),
        save_total_limit=train.save_total_limit,
        dataloader_num_workers=train.dataloader_num_workers,
        **{**device_kwargs, **training_arguments_kwargs()},  # CPU runs: gloo / use_cpu (see rlhf.distributed)
        dataset_num_proc=None,
    )


def precision_flags(precision: str) -> dict[str, bool]:
    """Our `train.precision` as TrainingArguments flags (TRL defaults bf16 to True, so both are explicit)."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def activation_checkpointing_flag(enabled: bool) -> dict[str, bool]:
    """train.gradient_checkpointing under the name this transformers reads (TRL's default is True)."""
    from transformers import TrainingArguments

    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
        else "gradient_checkpointing"
    )
    return {name: enabled}  # transformers 5.x renamed it; the old name still works but warns


def eval_and_save_schedule(train_cfg, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments strategy fields for our eval_steps / save_steps (None: per epoch / at the end)."""
    schedule: dict[str, Any] = {
        "eval_strategy": ("steps" if train_cfg.eval_steps else "epoch") if has_eval else "no",
        # Trainer saves at the last step whenever the strategy is "steps", so a step count that never
        # divides the global step gives "at the end only".
        "save_strategy": "steps",
        "save_steps": train_cfg.save_steps or SAVE_AT_END_ONLY,
    }
    if has_eval and train_cfg.eval_steps:
        schedule["eval_steps"] = train_cfg.eval_steps
    return schedule


def _checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def resolve_resume_checkpoint(value: Optional[str], checkpoints_dir: Path) -> Optional[str]:
    """train.resume_from_checkpoint -> a checkpoint directory or None ("latest" with none yet: fresh start).

    "latest" is the newest checkpoint that recorded its run's fingerprint: the Trainer writes a checkpoint
    in place, and the fingerprint (written by `RunIdentityCallback` after the save) marks it complete.
    """
    from rlhf.runs import FINGERPRINT_FILE

    if not value:
        return None
    if value == "latest":
        if not checkpoints_dir.is_dir():
            return None
        found = sorted((p for p in checkpoints_dir.iterdir() if _checkpoint_step(p) >= 0), key=_checkpoint_step)
        complete = [p for p in found if (p / FINGERPRINT_FILE).is_file()]
        chosen = complete[-1] if complete else (found[-1] if found else None)
        return str(chosen) if chosen is not None else None
    if not Path(value).is_dir():
        raise ConfigError(f"train.resume_from_checkpoint: no checkpoint directory at {value}")
    return value


def prepare_resume(cfg, checkpoints_dir: Path, fingerprint: dict, stage: str) -> tuple[Optional[str], Optional[int]]:
    """(checkpoint to resume from or None, its step): refuses another run's checkpoint (rlhf.runs)."""
    from rlhf.runs import check_resume

    resume = resolve_resume_checkpoint(cfg.train.resume_from_checkpoint, checkpoints_dir)
    if resume is None:
        return None, None
    check_resume(resume, fingerprint, cfg.run.resume_mismatch_ok, stage)
    return resume, max(_checkpoint_step(Path(resume)), 0)


def start_run(cfg, trainer, fingerprint: dict, resume: Optional[str], resume_step: Optional[int], stage: str):
    """After the model and data are validated: hand the run directory to this run (history moved aside or
    cut at the checkpoint), attach the tracker and the fingerprint writer; returns the tracker."""
    from rlhf.runs import begin_run, read_fingerprint
    from rlhf.tracking import Tracker, TrackerCallback

    run_dir = Path(cfg.run.output_dir)
    main = is_main_process()
    if main:
        begin_run(cfg, run_dir, resume_step, stage)
    wait_for_everyone()
    tracker = Tracker(cfg, run_dir, is_main_process=main)
    trainer.add_callback(TrackerCallback(tracker))
    trainer.add_callback(RunIdentityCallback(trainer, fingerprint))
    saved = read_fingerprint(resume) if resume else None
    if saved and saved.get("total_train_tokens") is not None and hasattr(trainer, "_total_train_tokens"):
        trainer._total_train_tokens = saved["total_train_tokens"]  # TRL restarts its num_tokens count at 0
    return tracker


def RunIdentityCallback(trainer, fingerprint: dict):  # noqa: N802 - reads as the callback class it returns
    """A TrainerCallback writing the run's fingerprint (and TRL's token count) into each checkpoint."""
    from transformers import TrainerCallback

    from rlhf.runs import write_fingerprint

    class _RunIdentity(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                write_fingerprint(
                    path,
                    fingerprint,
                    step=state.global_step,
                    total_train_tokens=getattr(trainer, "_total_train_tokens", None),
                )

    return _RunIdentity()


@contextlib.contextmanager
def loading_on_one_process():
    """Let one rank `from_pretrained` a whole model while a ZeRO-3 run is live.

    With ZeRO-3 configured, transformers partitions every model it loads across all ranks (a collective),
    so a load on the main process alone would wait forever for the others. Inside this block loading is
    plain; the DeepSpeed config is restored afterwards.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    live = hf_deepspeed._hf_deepspeed_config_weak_ref() if hf_deepspeed._hf_deepspeed_config_weak_ref else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if live is not None:
            hf_deepspeed.set_hf_deepspeed_config(live)


def save_trained_model(trainer, tokenizer, out_dir: Path, merge_lora: bool, auto_class_name: str) -> Path:
    """Write the trained model (+ tokenizer) to `out_dir` atomically; call on every rank.

    `auto_class_name`: "AutoModelForCausalLM" or "AutoModelForSequenceClassification", used to reload the
    gathered weights when they were sharded (ZeRO-3 / FSDP).
    """
    from rlhf.modeling import is_peft_model, save_model

    accelerator = trainer.accelerator
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    sharded = trainer.is_fsdp_enabled or (plugin is not None and getattr(plugin, "zero_stage", 0) == 3)
    if not sharded:
        if accelerator.is_main_process:
            save_model(trainer.model, tokenizer, out_dir, merge=merge_lora)
        accelerator.wait_for_everyone()
        return out_dir
    staging = out_dir.parent / f".{out_dir.name}.staging"
    trainer.save_model(str(staging))  # collective: gathers the shards (adapter only for a peft model)
    if accelerator.is_main_process:
        import transformers

        with loading_on_one_process():
            if is_peft_model(trainer.model):
                import peft

                peft_class = getattr(peft, auto_class_name.replace("AutoModel", "AutoPeftModel"))
                model = peft_class.from_pretrained(str(staging))
            else:
                model = getattr(transformers, auto_class_name).from_pretrained(str(staging))
        save_model(model, tokenizer, out_dir, merge=merge_lora)
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out_dir


def slash_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """HF names (eval_loss, train_runtime) -> ours (eval/loss, train/runtime); other keys unchanged."""
    renamed = {}
    for key, value in metrics.items():
        for prefix in ("eval", "train"):
            if key.startswith(prefix + "_"):
                key = f"{prefix}/{key[len(prefix) + 1 :]}"
                break
        renamed[key] = value
    return renamed


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")  # exp overflows a float past ~709


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json, atomically, on the main process: the stage's last write."""
    if is_main_process():
        write_json_atomic(run_dir / SUMMARY_FILE, summary)
    wait_for_everyone()
