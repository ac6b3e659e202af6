"""Stage 3: actor-critic PPO against the reward model, with a per-token KL penalty to the SFT policy.

    rlhf ppo --config configs/tiny/ppo.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf ppo --config configs/tiny/ppo.yaml

Each update: sample `ppo.samples_per_prompt` responses per prompt, score them (policy/reference logprobs,
values, reward model), fold a per-token KL penalty into the reward with the score on the last real token,
compute GAE advantages (or, with `ppo.advantage_estimator` rloo/grpo, each response's return against its
prompt's other samples, with no value model at all; whitened with statistics pooled over all processes),
then run `ppo_epochs` passes of
`num_mini_batches` optimiser steps, each split into `train.gradient_accumulation_steps` micro-batches.
Policy and value losses are token means over the whole mini-batch (not means of per-micro-batch means),
so the gradient does not depend on how a mini-batch is split over micro-batches and processes. Gradient
norms are clipped over policy and value together (they share one optimiser, see ppo/models.py).
Everything a resumed run needs is checkpointed (ppo/checkpoint.py), and a resumed run on CPU
reproduces the uninterrupted run's metrics bit for bit. The conventions follow "The N+ implementation
details of RLHF with PPO" and TRL's last PPOTrainer; differences are listed in ppo/algorithm.py.

Logged per update (TRL 1.12's names where it had one): objective/{kl (always the k1 sum), kl_<est>,
kl_coef, raw_scores, normalized_scores, scores, non_score_reward, rlhf_reward, entropy}, loss/{policy,
value, ptx, kl}_avg (kl: the `ppo.kl_loss_coef` term), policy/{approxkl, clipfrac, entropy}_avg,
policy/grad_norm (before clipping), policy/skipped_fraction, val/{clipfrac_avg, ratio, ratio_var, values,
advantages, returns, explained_variance (the rollout's values against the GAE returns: the critic's
health), eos_rate, response_length}, lr/{policy, value}, time/{generation, scoring, training, update},
perf/tokens_per_second (prompt + response tokens of the rollout per second of the update),
perf/peak_memory_gib (the main process's peak so far: CUDA allocated, or RSS on a CPU), and every
`ppo.eval_every` updates (and at update 0) eval/{rm_score, raw_score, kl, eos_rate, response_length,
gold_score} and, when the gold judge has a breakdown, eval/gold/<rule> (mean points of each rule). With
`ppo.reward_functions` (rule-based terms beside the reward model, added to its normalised score before the
missing-EOS penalty), reward_fn/<name> (each function's unweighted mean) and reward_fn/total (the weighted
sum added to the score).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

from ppo.algorithm import (
    apply_missing_eos_penalty,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    group_advantages,
    kl_loss,
    kl_penalty,
    logprobs_from_logits,
    masked_sum,
    masked_whiten,
    normalize_scores,
    policy_loss,
    shape_rewards,
    unlikelihood_loss,
    value_loss,
)
from ppo.checkpoint import (
    Progress,
    PromptStream,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ppo.config import PPOStageConfig
from ppo.data import PromptSet, PtxBatches, even_shard, load_prompt_sets
from ppo.kl_control import build_kl_controller
from ppo.models import (
    PolicyAndValue,
    PPOModels,
    build_models,
    build_optimizer,
    cast_parameters,
    frozen_model_dtypes,
    uses_critic,
)
from ppo.rollout import (
    Rollout,
    build_generation_config,
    generate_responses,
    generation_logprobs,
    score_responses,
    trim_micro_batch,
    unwrapped_for_generation,
)
from rlhf.config import require, typed
from rlhf.distributed import accelerator_kwargs, forget_mixed_precision
from rlhf.errors import ConfigError
from rlhf.memory import estimate_or_none, measured_peak_gib, parallelism_of
from rlhf.plugins import Scorer, load_judge, load_reward_function
from rlhf.precision import resolve_train_precision, training_attention
from rlhf.rewards import clause_break_ids, repeated_clause_tokens
from rlhf.runs import begin_run, check_resume, run_fingerprint
from rlhf.tokens import Encoder, left_pad

SUMMARY_FILE = "summary.json"
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NONDETERMINISTIC_PREFIXES = ("time/", "perf/")  # wall-clock metrics; everything else is reproducible on CPU


def train(cfg: PPOStageConfig | DictConfig) -> dict:
    """Run PPO as configured; returns the run directory, saved model paths and per-update metrics."""
    cfg = typed(cfg, PPOStageConfig)
    from accelerate import Accelerator

    from rlhf.tracking import Tracker, seed_everything

    check_config(cfg)
    reject_fsdp()
    resolve_train_precision(cfg)  # `auto` -> bf16 where the hardware runs it fast, else fp32 (rlhf.precision)
    forget_mixed_precision()  # an earlier stage in this process may have run at another precision
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        mixed_precision=MIXED_PRECISION[cfg.train.precision],
        **accelerator_kwargs(),
    )  # gloo / CPU mode for multi-process CPU runs, see rlhf.distributed
    _configure_deepspeed(accelerator, cfg)
    run_dir = Path(cfg.run.output_dir)
    fingerprint = run_fingerprint(cfg)
    checkpoint = _checkpoint_to_resume(cfg, run_dir, fingerprint)  # refuses another run's checkpoint
    seed_everything(cfg.run.seed + accelerator.process_index)  # sampling streams differ per process

    estimate = estimate_or_none(cfg, "ppo", parallelism_of(accelerator))  # before loading: say what to expect
    if estimate is not None:
        accelerator.print(
            f"ppo: estimated peak {estimate.peak / 2**30:.2f} GiB per process ({estimate.peak_phase}); "
            "python -m rlhf.memory breaks it down, perf/peak_memory_gib logs what it was"
        )

    # Models, data, optimisation: everything is loaded and validated before the run directory changes
    models = build_models(cfg)
    tokenizer = models.tokenizer
    train_prompts, eval_prompts = load_prompt_sets(cfg, tokenizer)
    ptx = (
        PtxBatches(cfg.ppo.ptx_file, tokenizer, cfg.data.max_length, cfg.run.seed, cfg.data.skip_bad_rows)
        if cfg.ppo.ptx_coef > 0
        else None
    )
    progress = Progress(PromptStream(len(train_prompts.ids), cfg.run.seed), ptx.stream if ptx else None)
    optimizer = build_optimizer(cfg, models.policy, models.value_model)
    scheduler = _build_scheduler(cfg, optimizer)
    model, optimizer = accelerator.prepare(
        PolicyAndValue(models.policy, models.value_model, models.value_shift, models.value_scale), optimizer
    )
    reference_dtype, reward_dtype = frozen_model_dtypes(
        next(accelerator.unwrap_model(model).policy.parameters()).dtype,
        AUTOCAST_DTYPES.get(cfg.train.precision) if accelerator.native_amp else None,
    )
    models.reward_model = _prepare_frozen(cast_parameters(models.reward_model, reward_dtype), accelerator)
    if models.reference is not None:
        models.reference = _prepare_frozen(cast_parameters(models.reference, reference_dtype), accelerator)
    kl_controller = build_kl_controller(cfg.ppo.kl_coef, cfg.ppo.adaptive_kl, cfg.ppo.kl_target, cfg.ppo.kl_horizon)
    for stateful in (scheduler, kl_controller, progress):  # saved and restored with the models
        accelerator.register_for_checkpointing(stateful)
    if checkpoint is not None:
        load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"ppo: resumed from {checkpoint} (update {progress.update})")
    stop_reason = budget_spent(cfg.ppo, progress)  # a resumed run whose KL or time budget is already spent
    if accelerator.is_main_process:
        begin_run(
            cfg,
            run_dir,
            progress.update if checkpoint is not None else None,
            "ppo",
            keep_summary=progress.update >= cfg.ppo.num_updates or stop_reason is not None,  # finished stays complete
        )
    accelerator.wait_for_everyone()

    loop = Loop(cfg, accelerator, model, optimizer, scheduler, models, kl_controller, ptx)
    tracker = Tracker(cfg, run_dir, accelerator.is_main_process)
    history: list[dict[str, float]] = []
    first_update = progress.update + 1
    last_update = cfg.ppo.num_updates if stop_reason is None else progress.update
    if cfg.ppo.updates_per_job:
        last_update = min(last_update, progress.update + cfg.ppo.updates_per_job)

    eval_at_start: dict[str, float] = {}
    if eval_prompts is not None and progress.update == 0:  # the starting policy's numbers, for the curves
        eval_at_start = loop.evaluate(eval_prompts)
        tracker.log(eval_at_start, step=0)
    for update in range(first_update, last_update + 1):
        metrics, rollout, scores = loop.run_update(train_prompts, progress)
        progress.update = update
        progress.seconds += loop.mean_over_processes(metrics["time/update"])  # the same on every process
        progress.last_kl = metrics["objective/kl"]
        stop_reason = budget_spent(cfg.ppo, progress)
        if eval_prompts is not None and (update % cfg.ppo.eval_every == 0 or stop_reason is not None):
            metrics.update(loop.evaluate(eval_prompts))  # the curves end at the policy that is saved
        tracker.log(metrics, step=update)
        history.append(metrics)
        if cfg.ppo.sample_every > 0 and (update % cfg.ppo.sample_every == 0 or update == 1):
            tracker.log_samples(loop.sample_rows(rollout, scores, train_prompts, update), step=update)
        if update == first_update or update % max(cfg.train.logging_steps, 1) == 0:
            accelerator.print(_progress_line(update, cfg.ppo.num_updates, metrics))
        if (
            (cfg.ppo.save_every > 0 and update % cfg.ppo.save_every == 0)
            or update == last_update
            or stop_reason is not None
        ):
            save_checkpoint(accelerator, run_dir, update, keep=cfg.train.save_total_limit, fingerprint=fingerprint)
        if stop_reason is not None:
            accelerator.print(f"ppo: stopping after update {update}: {stop_reason}")
            break

    finished = progress.update >= cfg.ppo.num_updates or stop_reason is not None
    paths = _save_final_models(cfg, accelerator, model, tokenizer, run_dir) if finished else {}
    tracker.finish()
    if finished and (history or not (run_dir / SUMMARY_FILE).exists()):  # a rerun of a finished run keeps its summary
        _write_summary(accelerator, run_dir, paths, history, progress.update, stop_reason)
    return {
        "run_dir": str(run_dir),
        "updates_done": progress.update,
        "finished": finished,
        "stopped_early": stop_reason,
        "history": history,
        "eval_at_start": eval_at_start,
        **paths,
    }


# --------------------------------------------------------------------------------------------------
# Configuration checks and set-up helpers
# --------------------------------------------------------------------------------------------------


def check_config(cfg: PPOStageConfig) -> None:
    """Stage-specific rules, each naming its config key."""
    require(cfg, "model.name_or_path", "ppo.reward_model_path", "data.train_file")
    ppo = cfg.ppo
    if ppo.samples_per_prompt < 1:
        raise ConfigError(
            f"bad value for 'ppo.samples_per_prompt': {ppo.samples_per_prompt!r}; expected a positive number"
        )
    if not uses_critic(cfg) and ppo.samples_per_prompt < 2:
        raise ConfigError(
            f"ppo.advantage_estimator={ppo.advantage_estimator} compares the responses to one prompt: set "
            f"ppo.samples_per_prompt >= 2 (it is {ppo.samples_per_prompt})"
        )
    if not uses_critic(cfg) and ppo.critic_warmup_updates:
        raise ConfigError(
            f"ppo.critic_warmup_updates needs a critic; ppo.advantage_estimator={ppo.advantage_estimator} has none"
        )
    responses = ppo.rollout_batch_size * ppo.samples_per_prompt
    per_mini_batch, remainder = divmod(responses, ppo.num_mini_batches)
    if ppo.num_mini_batches < 1 or remainder:
        raise ConfigError(
            f"the {responses} responses of a rollout (ppo.rollout_batch_size {ppo.rollout_batch_size} x "
            f"ppo.samples_per_prompt {ppo.samples_per_prompt}) must be a multiple of ppo.num_mini_batches "
            f"({ppo.num_mini_batches})"
        )
    accumulation = cfg.train.gradient_accumulation_steps
    if accumulation < 1 or per_mini_batch % accumulation:
        raise ConfigError(
            f"a mini-batch of {per_mini_batch} responses (ppo.rollout_batch_size x ppo.samples_per_prompt / "
            "ppo.num_mini_batches) must be a "
            "multiple of "
            f"train.gradient_accumulation_steps ({accumulation})"
        )
    positive = {
        "ppo.num_updates": ppo.num_updates,
        "ppo.max_new_tokens": ppo.max_new_tokens,
        "ppo.ppo_epochs": ppo.ppo_epochs,
        "ppo.rollout_forward_batch_size": ppo.rollout_forward_batch_size,
        "ppo.temperature": ppo.temperature,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"bad value for '{key}': {value!r}; expected a positive number")
    if ppo.generation_batch_size is not None and ppo.generation_batch_size < 1:
        raise ConfigError(
            f"bad value for 'ppo.generation_batch_size': {ppo.generation_batch_size}; expected a positive number "
            "or null (the whole rollout at once)"
        )
    if not 0 <= ppo.critic_warmup_updates < ppo.num_updates:
        raise ConfigError(
            f"bad value for 'ppo.critic_warmup_updates': {ppo.critic_warmup_updates}; expected 0 <= N < "
            f"ppo.num_updates ({ppo.num_updates}): the warm-up updates are part of the budget"
        )
    if ppo.ptx_coef > 0 and not ppo.ptx_file:
        raise ConfigError("ppo.ptx_coef > 0 needs ppo.ptx_file (SFT rows for the language-modelling loss)")
    load_judge(ppo.gold_judge, "ppo.gold_judge")  # a bad spec stops here, before any model loads
    load_reward_functions(ppo)
    resume_mode(cfg)
    for key, value in (("ppo.stop_at_kl", ppo.stop_at_kl), ("ppo.max_minutes", ppo.max_minutes)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"bad value for '{key}': {value!r}; expected a positive number or null (no budget)")
    if ppo.updates_per_job is not None and ppo.updates_per_job < 1:
        raise ConfigError(
            f"bad value for 'ppo.updates_per_job': {ppo.updates_per_job}; expected a positive number or null"
        )


def load_reward_functions(ppo) -> list[tuple[str, float, Scorer]]:
    """(name, weight, checked function) of each `ppo.reward_functions` entry; a bad entry names its index."""
    loaded: list[tuple[str, float, Scorer]] = []
    for index, entry in enumerate(ppo.reward_functions):
        field = f"ppo.reward_functions[{index}].spec"
        scorer = load_reward_function(entry.spec, field)
        name = entry.name or scorer.name
        if not math.isfinite(entry.weight):
            raise ConfigError(f"bad value for 'ppo.reward_functions[{index}].weight': {entry.weight!r}")
        if name in {other for other, _, _ in loaded}:
            raise ConfigError(
                f"ppo.reward_functions[{index}]: the name '{name}' is taken; give it its own `name:` "
                "(its metric is reward_fn/<name>)"
            )
        loaded.append((name, float(entry.weight), scorer))
    return loaded


def budget_spent(ppo, progress: Progress) -> Optional[str]:
    """Why the run ends before ppo.num_updates (None: it does not): the last update's rollout KL over
    ppo.stop_at_kl (a KL budget), or the updates' wall time over ppo.max_minutes (a time budget). Read from
    the checkpointed progress, so a rerun of a stopped run stops again, and one with a larger budget goes on."""
    if ppo.stop_at_kl is not None and progress.last_kl is not None and progress.last_kl > ppo.stop_at_kl:
        return f"the rollout KL {progress.last_kl:.4f} is over ppo.stop_at_kl={ppo.stop_at_kl}"
    if ppo.max_minutes is not None and progress.seconds >= 60.0 * ppo.max_minutes:
        return f"{progress.seconds / 60:.2f} minutes of updates reached ppo.max_minutes={ppo.max_minutes}"
    return None


def reject_fsdp() -> None:
    """PPO's generation, frozen-model and checkpoint handling are written for DDP and DeepSpeed ZeRO; under
    FSDP it would fail deep inside a launch (or silently gather wrong weights). `accelerate launch` tells
    each process about an FSDP config by ACCELERATE_USE_FSDP."""
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_FSDP", default=False):
        raise ConfigError(
            "PPO does not run under FSDP: the accelerate config given to `accelerate launch --config_file` sets "
            "distributed_type: FSDP (ACCELERATE_USE_FSDP=true). Launch PPO with DDP or DeepSpeed ZeRO instead "
            "(configs/accelerate/ddp.yaml, zero2.yaml, zero3.yaml or zero3_offload.yaml)"
        )


RESUME_MODES = {"auto": "auto", "true": "auto", "false": "fresh", "fresh": "fresh"}


def resume_mode(cfg: PPOStageConfig) -> str:
    """ppo.resume as "auto" (continue from a matching checkpoint when there is one) or "fresh"."""
    mode = RESUME_MODES.get(str(cfg.ppo.resume).lower())
    if mode is None:
        raise ConfigError(f"bad value for 'ppo.resume': {cfg.ppo.resume!r}; expected auto, true or false")
    return mode


def _checkpoint_to_resume(cfg: PPOStageConfig, run_dir: Path, fingerprint: dict) -> Optional[Path]:
    """The newest checkpoint in run_dir when resuming (checked to be this run's), else None."""
    if resume_mode(cfg) == "fresh":
        return None
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        check_resume(checkpoint, fingerprint, cfg.run.resume_mismatch_ok, "ppo")
    return checkpoint


def _build_scheduler(cfg: PPOStageConfig, optimizer):
    """LR schedule over every optimiser step of the run (stepped by hand: accelerate's wrapper would step
    it once per process)."""
    from transformers import get_scheduler

    total_steps = cfg.ppo.num_updates * cfg.ppo.ppo_epochs * cfg.ppo.num_mini_batches
    return get_scheduler(
        cfg.train.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(cfg.train.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )


def _deepspeed_plugin(accelerator):
    return getattr(accelerator.state, "deepspeed_plugin", None)


def _configure_deepspeed(accelerator, cfg: PPOStageConfig) -> None:
    """Fill the DeepSpeed config keys accelerate would take from a DataLoader (we prepare none).

    The engine clips (accelerator.clip_grad_norm_ only reads its norm back), so it gets our norm; its
    micro-batch is ours (a mini-batch split over train.gradient_accumulation_steps).
    """
    plugin = _deepspeed_plugin(accelerator)
    if plugin is None:
        return
    accumulation = cfg.train.gradient_accumulation_steps
    plugin.deepspeed_config["gradient_clipping"] = float(cfg.train.max_grad_norm)
    plugin.deepspeed_config["gradient_accumulation_steps"] = accumulation
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
        cfg.ppo.rollout_batch_size * cfg.ppo.samples_per_prompt // cfg.ppo.num_mini_batches // accumulation
    )


def _without_auto(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: _without_auto(v) for k, v in config.items() if v != "auto"}
    return config


def _prepare_frozen(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    """Frozen models are not wrapped by DDP (nothing to sync); under ZeRO-3 they are sharded for inference."""
    plugin = _deepspeed_plugin(accelerator)
    if plugin is None or plugin.zero_stage != 3:
        return model.to(accelerator.device)
    import deepspeed

    config = _without_auto(copy.deepcopy(plugin.deepspeed_config))
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    config["train_micro_batch_size_per_gpu"] = 1
    config.pop("train_batch_size", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    return engine.module.eval()


def _write_summary(
    accelerator, run_dir: Path, paths: dict, history: list[dict], updates: int, stopped_early: Optional[str] = None
) -> None:
    """Headline numbers of the last update (and the last evaluation), written last and atomically."""
    from rlhf.files import write_json_atomic

    if not accelerator.is_main_process:
        return
    summary: dict[str, Any] = {"stage": "ppo", "updates": updates, "stopped_early": stopped_early, **paths}
    if history:
        summary.update({k: v for k, v in history[-1].items() if not k.startswith("eval/")})
        evaluated = [row for row in history if any(k.startswith("eval/") for k in row)]
        if evaluated:
            summary.update({k: v for k, v in evaluated[-1].items() if k.startswith("eval/")})
    write_json_atomic(run_dir / SUMMARY_FILE, summary)


def _progress_line(update: int, total: int, metrics: dict) -> str:
    return (
        f"ppo update {update}/{total}: score {metrics['objective/scores']:.3f} kl {metrics['objective/kl']:.3f} "
        f"kl_coef {metrics['objective/kl_coef']:.4f} policy_loss {metrics['loss/policy_avg']:.4f} "
        + (f"value_loss {metrics['loss/value_avg']:.4f} " if "loss/value_avg" in metrics else "")
        + f"({metrics['time/update']:.2f}s)"
    )


class MetricSums:
    """Named (sum, count) pairs reduced over processes in one all-reduce, then turned into means."""

    def __init__(self):
        self._sums: dict[str, list[Tensor | float]] = {}

    def add(self, name: str, total: Tensor | float, count: Tensor | float = 1.0) -> None:
        entry = self._sums.setdefault(name, [0.0, 0.0])
        entry[0] = entry[0] + (total.detach().double() if isinstance(total, Tensor) else float(total))
        entry[1] = entry[1] + (count.detach().double() if isinstance(count, Tensor) else float(count))

    def means(self, accelerator) -> dict[str, float]:
        names = sorted(self._sums)
        if not names:
            return {}
        values = torch.stack(
            [
                torch.as_tensor(self._sums[n][i], dtype=torch.float64).to(accelerator.device)
                for i in (0, 1)
                for n in names
            ]
        )
        values = accelerator.reduce(values, reduction="sum") if accelerator.num_processes > 1 else values
        totals, counts = values[: len(names)].tolist(), values[len(names) :].tolist()
        return {name: (total / count if count else float("nan")) for name, total, count in zip(names, totals, counts)}


def clip_gradients(accelerator, model: torch.nn.Module, max_norm: float) -> Optional[Tensor]:
    """Clip the gradient norm of `model` to `max_norm`; returns the norm before clipping.

    On a CPU process without a loss scaler or sharding, the scaling pass runs only when it changes
    something: torch's clip multiplies every gradient by min(1, max_norm / (norm + 1e-6)) even when that is
    1, a full read and write of the gradients (~4% of a 26M-parameter update on a 2-core CPU, where PPO's
    norms are mostly under 1). Reading the norm is free on a CPU; on an accelerator it would be a host sync,
    so there (and under DeepSpeed, FSDP or fp16 scaling) accelerate clips as before."""
    from accelerate.utils import DistributedType

    plain = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU)
    if not (plain and accelerator.device.type == "cpu" and accelerator.scaler is None):
        return accelerator.clip_grad_norm_(model.parameters(), max_norm)
    parameters = [parameter for parameter in model.parameters() if parameter.grad is not None]
    norm = torch.nn.utils.get_total_norm([parameter.grad for parameter in parameters], foreach=True)
    if float(norm) + 1e-6 > max_norm:  # the coefficient torch would apply is below 1: scale (same arithmetic)
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm, foreach=True)
    return norm


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


@dataclass
class Loop:
    cfg: PPOStageConfig
    accelerator: Any
    model: Any  # the prepared PolicyAndValue
    optimizer: Any
    scheduler: Any
    models: PPOModels
    kl_controller: Any
    ptx: Optional[PtxBatches]

    def __post_init__(self):
        tokenizer = self.models.tokenizer
        # every id a response can end with: the tokenizer's EOS, the generation config's, the turn terminator
        self.stop_ids, self.pad_id = Encoder(tokenizer).stop_ids, tokenizer.pad_token_id
        ppo = self.cfg.ppo
        self.generation_config = build_generation_config(
            ppo.max_new_tokens, ppo.temperature, ppo.top_k, ppo.top_p, ppo.do_sample, self.stop_ids, self.pad_id
        )
        plugin = _deepspeed_plugin(self.accelerator)
        if plugin is not None and ppo.critic_warmup_updates:
            raise ConfigError(
                "ppo.critic_warmup_updates is not supported under DeepSpeed (its engine steps every parameter it "
                "holds); set it to 0 or run without DeepSpeed"
            )
        self.zero3_synced_generation = (
            plugin is not None and plugin.zero_stage == 3 and not ppo.zero3_gather_for_generation
        )
        self.unwrapped = self.accelerator.unwrap_model(
            self.model
        )  # the same module all run; unwrapping costs ms per call
        self.logprobs_from_generation = generation_logprobs(
            ppo.rollout_logprobs, self.cfg.train.precision, next(self.unwrapped.policy.parameters()).dtype
        )  # the policy's scoring pass skipped: its log-probs recorded while sampling
        self.reward_functions = load_reward_functions(ppo)
        self.clause_breaks = (  # a stop token ends the last clause too: "Cats purr<eos>" repeats "Cats purr."
            clause_break_ids(self.models.tokenizer) | frozenset(self.stop_ids)
            if ppo.repeated_clause_penalty or ppo.repeat_unlikelihood_coef
            else None
        )

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def mean_over_processes(self, value: float) -> float:
        """The processes' mean of `value` (itself on one process): a figure every process then agrees on."""
        if self.accelerator.num_processes == 1:
            return float(value)
        total = self._all_reduce_sum(torch.tensor(float(value), dtype=torch.float64, device=self.device))
        return float(total) / self.accelerator.num_processes

    def _all_reduce_sum(self, tensor: Tensor) -> Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor, reduction="sum")

    # ---- one update ------------------------------------------------------------------------------

    def run_update(self, prompts: PromptSet, progress: Progress) -> tuple[dict[str, float], Rollout, Tensor]:
        ppo, accelerator = self.cfg.ppo, self.accelerator
        world, rank = accelerator.num_processes, accelerator.process_index
        start = time.perf_counter()
        global_indices = progress.stream.take(ppo.rollout_batch_size * world)  # every process advances the same stream
        local_prompts = global_indices[rank * ppo.rollout_batch_size : (rank + 1) * ppo.rollout_batch_size]
        # each prompt's samples in consecutive rows: the groups rloo/grpo compare
        local_indices = [index for index in local_prompts for _ in range(ppo.samples_per_prompt)]
        self.last_prompt_indices = local_indices
        responses_per_rollout = len(local_indices) * world

        prompt_ids, prompt_mask = left_pad([prompts.ids[i] for i in local_indices], self.pad_id, self.device)
        rollout, generation_seconds, scoring_seconds = self.collect_rollout(prompt_ids, prompt_mask)
        stats = MetricSums()
        terms_start = time.perf_counter()
        reward_terms = self.reward_terms([prompts.texts[i] for i in local_indices], rollout, stats)
        scoring_seconds += time.perf_counter() - terms_start

        train_start = time.perf_counter()
        learning_rates = [
            group["lr"] for group in self.optimizer.param_groups
        ]  # in effect for this update's first step
        repeats = self.repeated_clause_mask(rollout) if self.clause_breaks is not None else None
        scores, advantages, returns = self.shape_and_advantages(rollout, stats, reward_terms, repeats)
        critic_only = progress.update < ppo.critic_warmup_updates
        with self.attention_kernels(rollout.prompt_ids, rollout.response_ids):  # those the rollout was scored with
            self.optimise(rollout, advantages, returns, stats, critic_only, repeats)
        _sync(self.device)
        training_seconds = time.perf_counter() - train_start

        metrics = stats.means(accelerator)
        metrics["val/ratio_var"] = metrics.pop("val/ratio_sq") - metrics["val/ratio"] ** 2
        metrics["objective/kl_coef"] = self.kl_controller.value  # the coefficient this rollout was shaped with
        metrics["policy/critic_warmup"] = float(critic_only)
        if not critic_only:  # a policy that did not move says nothing about the KL the controller steers
            self.kl_controller.update(metrics["objective/kl"], responses_per_rollout)
        update_seconds = time.perf_counter() - start
        rollout_tokens = metrics.pop("perf/rollout_tokens_per_sequence") * responses_per_rollout
        if len(learning_rates) > 1:
            metrics["lr/value"] = learning_rates[1]
        metrics.update(
            {
                "lr/policy": learning_rates[0],
                "episodes": float((progress.update + 1) * responses_per_rollout),
                "epoch": progress.stream.epoch,
                "time/generation": generation_seconds,
                "time/scoring": scoring_seconds,
                "time/training": training_seconds,
                "time/update": update_seconds,
                "perf/tokens_per_second": rollout_tokens / update_seconds,
                "perf/peak_memory_gib": measured_peak_gib(self.device),  # the main process's (GPU, else RSS)
            }
        )
        return metrics, rollout, scores

    @torch.no_grad()
    def collect_rollout(self, prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Rollout, float, float]:
        """Generate (timed), then the no-grad scoring passes (timed)."""
        ppo, accelerator = self.cfg.ppo, self.accelerator
        self.model.eval()
        start = time.perf_counter()
        with (
            unwrapped_for_generation(
                self.model, accelerator, ppo.zero3_gather_for_generation, self.unwrapped, generating="policy"
            ) as unwrapped,
            accelerator.autocast(),
        ):
            generated_output = generate_responses(
                unwrapped.policy,
                prompt_ids,
                prompt_mask,
                self.generation_config,
                synced_gpus=self.zero3_synced_generation,
                batch_size=ppo.generation_batch_size,
                logprobs_temperature=ppo.temperature if self.logprobs_from_generation else None,
            )
        raw_responses, policy_logprobs = generated_output if self.logprobs_from_generation else (generated_output, None)
        _sync(self.device)
        generated = time.perf_counter()
        unwrapped = self.unwrapped
        with accelerator.autocast():
            rollout = score_responses(
                prompt_ids,
                prompt_mask,
                raw_responses,
                policy=unwrapped.policy,
                value_model=unwrapped.value_model,
                reward_model=self.models.reward_model,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                temperature=ppo.temperature,
                forward_batch_size=ppo.rollout_forward_batch_size,
                reference=self.models.reference,
                reference_context=self.models.reference_context(unwrapped.policy),
                value_shift=self.models.value_shift,
                value_scale=self.models.value_scale,
                policy_logprobs=policy_logprobs,
                matched_context=lambda: self.attention_kernels(prompt_ids, raw_responses),
            )
        _sync(self.device)
        return rollout, generated - start, time.perf_counter() - generated

    def attention_kernels(self, prompt_ids: Tensor, response_ids: Tensor) -> contextlib.AbstractContextManager:
        """The attention kernels of a rollout's policy, reference and value scoring passes and of its PPO
        forwards, chosen from the rollout's padded width (rlhf.precision.training_attention: in bf16 on a CPU,
        the math kernel for short sequences, whose backward is 2-3x faster than flash's), so that both
        compute the same numbers and the first ratio is exactly 1."""
        width = prompt_ids.shape[1] + response_ids.shape[1]
        return training_attention(self.device.type, self.cfg.train.precision, width)

    def decode_responses(self, rollout: Rollout) -> list[str]:
        """The rollout's responses as text (EOS and padding dropped), what judges and reward functions read."""
        mask = rollout.response_mask
        return [
            self.models.tokenizer.decode(rollout.response_ids[row][mask[row]], skip_special_tokens=True)
            for row in range(mask.shape[0])
        ]

    def repeated_clause_mask(self, rollout: Rollout) -> Tensor:
        """[B, T] bool: the response tokens of clauses that repeat an earlier clause of their response."""
        mask = rollout.response_mask
        flags = torch.zeros_like(mask, dtype=torch.bool)
        for row in range(mask.shape[0]):
            length = int(mask[row].sum())
            ids = rollout.response_ids[row, :length].tolist()
            flags[row, :length] = torch.tensor(repeated_clause_tokens(ids, self.clause_breaks), dtype=torch.bool)
        return flags & mask.bool()

    def reward_terms(self, prompt_texts: list, rollout: Rollout, stats: MetricSums) -> Optional[Tensor]:
        """Sum of weight * fn(prompt, response) over `ppo.reward_functions` per response (None without any);
        each function's unweighted mean is logged as reward_fn/<name>."""
        if not self.reward_functions:
            return None
        responses = self.decode_responses(rollout)
        total = torch.zeros(len(responses), dtype=torch.float64)
        for name, weight, function in self.reward_functions:
            values = torch.tensor(function.scores(prompt_texts, responses), dtype=torch.float64)
            stats.add(f"reward_fn/{name}", values.sum(), float(len(responses)))
            total += weight * values
        stats.add("reward_fn/total", total.sum(), float(len(responses)))
        return total.to(device=rollout.raw_scores.device, dtype=rollout.raw_scores.dtype)

    def final_scores(
        self, raw_scores: Tensor, has_eos: Tensor, reward_terms: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor]:
        """(normalised RM scores, scores = normalised + rule-based terms, after the missing-EOS penalty)."""
        ppo, models = self.cfg.ppo, self.models
        mean = models.reward_mean if ppo.normalize_reward else None
        std = models.reward_std if ppo.normalize_reward and ppo.normalize_reward_std else None
        normalised = normalize_scores(raw_scores, mean, std, ppo.reward_clip)
        combined = normalised if reward_terms is None else normalised + reward_terms
        return normalised, apply_missing_eos_penalty(combined, has_eos, ppo.missing_eos_penalty)

    def shape_and_advantages(
        self,
        rollout: Rollout,
        stats: MetricSums,
        reward_terms: Optional[Tensor] = None,
        repeats: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Scores (+ rule-based reward terms) -> per-token rewards (- ppo.repeated_clause_penalty on `repeats`,
        the repeated-clause tokens) -> GAE; logs the rollout's objective metrics."""
        ppo = self.cfg.ppo
        mask = rollout.response_mask
        normalised, scores = self.final_scores(rollout.raw_scores, rollout.has_eos, reward_terms)
        kl = kl_penalty(rollout.logprobs, rollout.ref_logprobs, ppo.kl_estimator) * mask
        rewards, non_score = shape_rewards(scores, kl, self.kl_controller.value, mask)
        if repeats is not None:
            rewards = rewards - ppo.repeated_clause_penalty * repeats.to(rewards.dtype)
            stats.add("objective/repeated_clause_tokens", repeats.sum(), float(mask.shape[0]))
        critic = uses_critic(self.cfg)
        if critic:
            if ppo.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False, all_reduce_sum=self._all_reduce_sum)
            advantages, returns = compute_gae(rewards, rollout.values, mask, ppo.gamma, ppo.lam)
        else:  # each response's return (score + its summed KL penalty) against the other samples of its prompt
            per_response = group_advantages(rewards.sum(1), ppo.samples_per_prompt, ppo.advantage_estimator)
            advantages = per_response.unsqueeze(1) * mask.to(rewards.dtype)
            returns = advantages  # no value model learns from it
        if ppo.whiten_advantages:
            # Group advantages are already centred per prompt; only their scale is set (shifting them by the
            # token-weighted mean would favour long or short responses).
            advantages = masked_whiten(advantages, mask, shift_mean=critic, all_reduce_sum=self._all_reduce_sum)

        rows = float(mask.shape[0])
        k1_per_sequence = masked_sum(rollout.logprobs - rollout.ref_logprobs, mask, dim=1)
        non_score_per_sequence = non_score.sum(1)
        response_lengths = mask.sum(1).double()
        stats.add("objective/kl", k1_per_sequence.sum(), rows)  # always k1: a negative KL must show
        if ppo.kl_estimator != "k1":
            stats.add(f"objective/kl_{ppo.kl_estimator}", kl.sum(), rows)
        stats.add("objective/entropy", -masked_sum(rollout.logprobs, mask), rows)  # sampled-token estimate
        stats.add("objective/non_score_reward", non_score_per_sequence.sum(), rows)
        stats.add("objective/rlhf_reward", (scores + non_score_per_sequence).sum(), rows)
        stats.add("objective/raw_scores", rollout.raw_scores.sum(), rows)
        stats.add("objective/normalized_scores", normalised.sum(), rows)
        stats.add("objective/scores", scores.sum(), rows)
        stats.add("val/eos_rate", rollout.has_eos.sum(), rows)
        stats.add("val/response_length", response_lengths.sum(), rows)
        stats.add("val/advantages", masked_sum(advantages, mask), mask.sum())
        if critic:
            stats.add("val/values", masked_sum(rollout.values, mask), mask.sum())
            stats.add("val/returns", masked_sum(returns, mask), mask.sum())
            # the same pooled value on every process, so its mean over processes is itself
            stats.add("val/explained_variance", explained_variance(rollout.values, returns, mask, self._all_reduce_sum))
        stats.add("perf/rollout_tokens_per_sequence", rollout.prompt_mask.sum() + mask.sum(), rows)
        return scores, advantages, returns

    def optimise(
        self,
        rollout: Rollout,
        advantages: Tensor,
        returns: Tensor,
        stats: MetricSums,
        critic_only: bool = False,
        repeats: Optional[Tensor] = None,
    ) -> None:
        """PPO epochs x mini-batches x micro-batches, with token means over each whole mini-batch.
        critic_only (ppo.critic_warmup_updates): only the value model learns; the policy is left unchanged."""
        ppo, train, accelerator, model = self.cfg.ppo, self.cfg.train, self.accelerator, self.model
        batch_size = rollout.response_ids.shape[0]
        mini_batch = batch_size // ppo.num_mini_batches
        accumulation = train.gradient_accumulation_steps
        micro_batch = mini_batch // accumulation
        model.train()
        for _ in range(ppo.ppo_epochs):
            order = torch.randperm(batch_size, device=self.device)
            for mb_start in range(0, batch_size, mini_batch):
                mb_indices = order[mb_start : mb_start + mini_batch]
                tokens = self._all_reduce_sum(rollout.response_mask[mb_indices].sum().float())
                # Each micro-batch contributes sum/normalizer; accelerate divides by the accumulation steps
                # and DDP averages over processes, so the gradient is the mini-batch token mean.
                normalizer = tokens / (accelerator.num_processes * accumulation)
                for micro_start in range(0, mini_batch, micro_batch):
                    indices = mb_indices[micro_start : micro_start + micro_batch]
                    per_token = (advantages, returns) if repeats is None else (advantages, returns, repeats)
                    batch, trimmed = trim_micro_batch(rollout.select(indices), *(t[indices] for t in per_token))
                    self._micro_step(
                        batch,
                        trimmed[0],
                        trimmed[1],
                        normalizer,
                        batch.response_ids.shape[1],
                        stats,
                        critic_only,
                        trimmed[2] if repeats is not None else None,
                    )

    def _micro_step(
        self,
        batch: Rollout,
        advantages: Tensor,
        returns: Tensor,
        normalizer: Tensor,
        response_length: int,
        stats: MetricSums,
        critic_only: bool = False,
        repeats: Optional[Tensor] = None,
    ) -> None:
        ppo, accelerator, model = self.cfg.ppo, self.accelerator, self.model
        mask = batch.response_mask
        ptx_batch = (
            self.ptx.next_batch(mask.shape[0], self.device, accelerator.process_index, accelerator.num_processes)
            if self.ptx is not None
            else {}
        )
        with accelerator.accumulate(model):
            logits, values, ptx_loss = model(batch.input_ids, batch.attention_mask, response_length, **ptx_batch)
            # Temperature, float cast and softmax happen block by block inside: no full-vocabulary copies.
            logprobs = logprobs_from_logits(logits, batch.response_ids, ppo.temperature)
            pg = policy_loss(logprobs, batch.logprobs, advantages, mask, ppo.cliprange, normalizer)
            vf = (
                value_loss(values, batch.values, returns, mask, ppo.cliprange_value, normalizer)
                if values is not None
                else None  # no critic (ppo.advantage_estimator rloo/grpo)
            )
            with contextlib.nullcontext() if ppo.entropy_coef else torch.no_grad():  # logged: no graph unless used
                entropy = entropy_from_logits(logits, ppo.temperature)
            loss = pg.loss + ppo.vf_coef * vf.loss if vf is not None else pg.loss
            if ppo.kl_loss_coef:
                kl_term = kl_loss(logprobs, batch.ref_logprobs, mask, ppo.kl_loss_estimator, normalizer)
                loss = loss + ppo.kl_loss_coef * kl_term
            if ppo.entropy_coef:
                loss = loss - ppo.entropy_coef * masked_sum(entropy, mask) / normalizer
            if ptx_loss is not None:
                loss = loss + ppo.ptx_coef * ptx_loss
            if ppo.repeat_unlikelihood_coef:
                unlikelihood = unlikelihood_loss(logprobs, repeats & mask, normalizer)
                loss = loss + ppo.repeat_unlikelihood_coef * unlikelihood
            skipped = ppo.ratio_threshold is not None and bool(pg.ratio_mean > ppo.ratio_threshold)
            if skipped:  # keep the backward (DDP needs it on every process) but drop the contribution
                loss = loss * 0.0
            if critic_only:  # the policy terms stay in the graph at weight 0: DDP expects every parameter's grad
                loss = loss * 0.0 + ppo.vf_coef * vf.loss
            accelerator.backward(loss)
            if critic_only:  # no gradient, so AdamW skips the policy: no step, no weight decay, no moment update
                for parameter in self.optimizer.param_groups[0]["params"]:
                    parameter.grad = None
            if accelerator.sync_gradients:
                if self.cfg.train.max_grad_norm > 0:
                    grad_norm = clip_gradients(accelerator, model, self.cfg.train.max_grad_norm)
                    if grad_norm is not None:
                        stats.add("policy/grad_norm", torch.as_tensor(grad_norm).float())
            self.optimizer.step()
            self.optimizer.zero_grad()
        if accelerator.sync_gradients:
            self.scheduler.step()

        with torch.no_grad():
            # Per micro-batch the contributions are sum/normalizer: their plain average over all
            # micro-batches and processes is the average of the mini-batch token means.
            stats.add("loss/policy_avg", pg.loss)
            if vf is not None:
                stats.add("loss/value_avg", vf.loss)
            if ptx_loss is not None:
                stats.add("loss/ptx_avg", ptx_loss)
            if ppo.kl_loss_coef:
                stats.add("loss/kl_avg", kl_term)
            if ppo.repeat_unlikelihood_coef:
                stats.add("loss/unlikelihood_avg", unlikelihood)
            tokens = mask.sum()
            stats.add("policy/clipfrac_avg", masked_sum(pg.clipped.float(), mask), tokens)
            stats.add("policy/approxkl_avg", masked_sum(0.5 * pg.log_ratio.square(), mask), tokens)
            stats.add("policy/entropy_avg", masked_sum(entropy, mask), tokens)
            if vf is not None:
                stats.add("val/clipfrac_avg", masked_sum(vf.clipped.float(), mask), tokens)
            stats.add("val/ratio", masked_sum(pg.ratio, mask), tokens)
            stats.add("val/ratio_sq", masked_sum(pg.ratio.square(), mask), tokens)
            stats.add("policy/skipped_fraction", float(skipped))  # micro-batches dropped by ppo.ratio_threshold

    # ---- logging and evaluation ------------------------------------------------------------------

    def sample_rows(
        self, rollout: Rollout, scores: Tensor, prompts: PromptSet, update: int, limit: int = 16
    ) -> list[dict]:
        """A table of this process's completions (only the main process's tracker writes it)."""
        tokenizer = self.models.tokenizer
        k1 = masked_sum(rollout.logprobs - rollout.ref_logprobs, rollout.response_mask, dim=1)
        rows = []
        for row, prompt_index in enumerate(self.last_prompt_indices[:limit]):
            response = rollout.response_ids[row][rollout.response_mask[row]]
            rows.append(
                {
                    "update": update,
                    "prompt": prompts.texts[prompt_index]
                    if isinstance(prompts.texts[prompt_index], str)
                    else str(prompts.texts[prompt_index]),
                    "response": tokenizer.decode(response, skip_special_tokens=True),
                    "raw_score": float(rollout.raw_scores[row]),
                    "score": float(scores[row]),
                    "kl": float(k1[row]),
                    "ended_with_eos": bool(rollout.has_eos[row]),
                }
            )
        return rows

    @torch.no_grad()
    def evaluate(self, prompts: PromptSet) -> dict[str, float]:
        """Held-out prompts: RM score, KL to the reference, EOS rate, length and (built-in task) gold score.

        Sampling uses its own seeded RNG inside `fork_rng`, so evaluating never changes the training run.
        """
        ppo, accelerator = self.cfg.ppo, self.accelerator
        world, rank = accelerator.num_processes, accelerator.process_index
        gold_score = load_judge(ppo.gold_judge, "ppo.gold_judge")
        stats = MetricSums()
        # The judge's rules (eval/gold/<rule>), named up front from one breakdown so that every process
        # reduces the same names; the report plots them against the RM score over updates.
        rules = (
            list(gold_score.breakdown(prompts.texts[0], ""))
            if gold_score is not None and gold_score.has_breakdown and prompts.texts
            else []
        )
        keys = ["eval/raw_score", "eval/rm_score", "eval/kl", "eval/eos_rate", "eval/response_length"] + (
            ["eval/gold_score", *(f"eval/gold/{rule}" for rule in rules)] if gold_score else []
        )
        for key in keys:  # every process reduces the same names, even one left without prompts
            stats.add(key, 0.0, 0.0)
        local, real = even_shard(len(prompts.ids), world, rank)  # equal shards: ZeRO-3's collectives match
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.run.seed * 1_000_003 + rank)
            for start in range(0, len(local), ppo.rollout_batch_size):
                chunk = local[start : start + ppo.rollout_batch_size]
                prompt_ids, prompt_mask = left_pad([prompts.ids[i] for i in chunk], self.pad_id, self.device)
                rollout, _, _ = self.collect_rollout(prompt_ids, prompt_mask)
                normalised, _ = self.final_scores(rollout.raw_scores, rollout.has_eos)
                mask = rollout.response_mask
                keep = torch.arange(start, start + len(chunk), device=mask.device) < real  # padding rows: False
                rows = float(keep.sum())
                stats.add("eval/raw_score", rollout.raw_scores[keep].sum(), rows)
                stats.add("eval/rm_score", normalised[keep].sum(), rows)  # normalised as in training, no EOS penalty
                stats.add("eval/kl", masked_sum(rollout.logprobs - rollout.ref_logprobs, mask, dim=1)[keep].sum(), rows)
                stats.add("eval/eos_rate", rollout.has_eos[keep].sum(), rows)
                stats.add("eval/response_length", mask.sum(1)[keep].sum(), rows)
                if gold_score is not None:
                    keep_rows = keep.tolist()
                    texts, responses = [prompts.texts[i] for i in chunk], self.decode_responses(rollout)
                    gold = gold_score.scores(texts, responses)
                    stats.add("eval/gold_score", sum(g for g, k in zip(gold, keep_rows) if k), rows)
                    if rules:
                        parts = [gold_score.breakdown(t, r) for t, r, k in zip(texts, responses, keep_rows) if k]
                        for rule in rules:
                            stats.add(f"eval/gold/{rule}", sum(part.get(rule, 0.0) for part in parts), rows)
        return stats.means(accelerator)


# --------------------------------------------------------------------------------------------------
# Final models
# --------------------------------------------------------------------------------------------------


def _save_final_models(cfg: PPOStageConfig, accelerator, model, tokenizer, run_dir: Path) -> dict[str, str]:
    """run_dir/policy (HF directory + tokenizer, LoRA merged when model.lora.merge_on_save) and run_dir/value
    (when there is a critic)."""
    from rlhf.modeling import save_model

    accelerator.wait_for_everyone()
    policy_dir, value_dir = run_dir / "policy", run_dir / "value"
    plugin = _deepspeed_plugin(accelerator)
    sharded = (plugin is not None and plugin.zero_stage == 3) or getattr(
        accelerator.state, "fsdp_plugin", None
    ) is not None
    unwrapped = accelerator.unwrap_model(model)
    saved = [("policy", unwrapped.policy, policy_dir)]
    if unwrapped.value_model is not None:
        saved.append(("value_model", unwrapped.value_model, value_dir))
    if sharded:  # gather full weights on every process, write from the main one
        state = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            for name, module, out in saved:
                sub_state = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
                module.save_pretrained(out, state_dict=sub_state, safe_serialization=True)
                tokenizer.save_pretrained(out)
    elif accelerator.is_main_process:
        for _, module, out in saved:
            save_model(module, tokenizer, out, merge=cfg.model.lora.merge_on_save)
    accelerator.wait_for_everyone()
    paths = {"policy_dir": str(policy_dir)}
    if unwrapped.value_model is not None:
        paths["value_dir"] = str(value_dir)
    return paths
