"""The four PPO models, and the one trainable module that accelerate prepares.

Policy and value model are trained together in `PolicyAndValue`, one nn.Module with one optimiser whose
two parameter groups carry the two learning rates: DeepSpeed (through accelerate) runs one engine per
prepared model, so two separately prepared trainable models would need two DeepSpeed plugins, and one
module keeps DDP/ZeRO/FSDP a launcher choice with no code changes. The reference policy is the policy
with its LoRA adapter disabled when that adapter is new (no second copy in memory), otherwise a frozen
copy; a trained SFT *adapter* directory is merged into its base first, so the SFT policy is both the
starting point and the reference. The reward model is frozen and comes with the score mean/std that
stage 2 stored next to it (`reward_stats.json`). The value model starts from the reward model (or from
the policy's backbone with a fresh head); with LoRA it gets its own adapter and a fully trained head
(`ppo.value_lora`, on by default whenever model.lora is).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from ppo.config import PPOStageConfig
from ppo.rollout import response_logits, response_values, supports_logits_to_keep
from rlhf.config import as_dict
from rlhf.errors import ConfigError
from rlhf.tokens import position_ids_from_mask

REWARD_STATS_FILE = "reward_stats.json"


class PolicyAndValue(nn.Module):
    """policy logits over the response, per-token values and (PPO-ptx) an LM loss, in one forward."""

    def __init__(
        self,
        policy: nn.Module,
        value_model: Optional[nn.Module],
        value_shift: float = 0.0,
        value_scale: float = 1.0,
    ):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.value_shift, self.value_scale = float(value_shift), float(value_scale)  # see critic_normalisation
        self._keep_slice = supports_logits_to_keep(policy)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        response_length: int,
        ptx_input_ids: Optional[Tensor] = None,
        ptx_attention_mask: Optional[Tensor] = None,
        ptx_labels: Optional[Tensor] = None,
    ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        logits = response_logits(self.policy, input_ids, attention_mask, response_length, self._keep_slice)
        values = (
            response_values(
                self.value_model, input_ids, attention_mask, response_length, self.value_shift, self.value_scale
            )
            if self.value_model is not None
            else None  # a critic-free estimator (ppo.advantage_estimator rloo/grpo)
        )
        ptx_loss = None
        if ptx_input_ids is not None:
            # Inside the same forward so DDP sees one forward per backward.
            ptx_loss = self.policy(
                input_ids=ptx_input_ids,
                attention_mask=ptx_attention_mask,
                position_ids=position_ids_from_mask(ptx_attention_mask),
                labels=ptx_labels,
                use_cache=False,
            ).loss
        return logits, values, ptx_loss


@dataclass
class PPOModels:
    tokenizer: Any
    policy: nn.Module
    value_model: Optional[nn.Module]  # None under a critic-free estimator (ppo.advantage_estimator rloo/grpo)
    reward_model: nn.Module
    reference: Optional[nn.Module]  # None: the policy with its (new) LoRA adapter disabled
    reward_mean: Optional[float]
    reward_std: Optional[float]
    value_shift: float = 0.0  # the critic's output is (raw - value_shift) / value_scale
    value_scale: float = 1.0

    def reference_context(self, policy: nn.Module) -> Callable[[], contextlib.AbstractContextManager]:
        """What to enter around reference forward passes (disable the adapter when the policy is the reference)."""
        if self.reference is not None:
            return contextlib.nullcontext
        return policy.disable_adapter


def read_reward_stats(reward_model_path: str) -> tuple[Optional[float], Optional[float]]:
    """(mean, std) stage 2 stored beside the reward model, or (None, None) when it stored none."""
    path = Path(reward_model_path) / REWARD_STATS_FILE
    if not path.is_file():
        return None, None
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        mean, std = float(stats["mean"]), float(stats["std"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f'{path}: expected {{"mean": number, "std": number}} ({exc})') from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ConfigError(f"{path}: mean must be finite and std positive, got mean={mean}, std={std}")
    return mean, std


def _is_adapter_dir(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_policy_weights(cfg: PPOStageConfig, path: str, tokenizer) -> nn.Module:
    """The SFT policy as a plain causal LM; an adapter directory is loaded onto its base and merged."""
    from rlhf.modeling import check_tokenizer_matches, load_causal_lm

    model_cfg = as_dict(cfg.model)
    if _is_adapter_dir(path):
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(path).base_model_name_or_path
        model = load_causal_lm({**model_cfg, "name_or_path": base}, tokenizer)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    else:
        model = load_causal_lm({**model_cfg, "name_or_path": path}, tokenizer)
    check_tokenizer_matches(model, tokenizer, where=path)
    return model


def _freeze(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    return model.eval()


def value_uses_lora(cfg: PPOStageConfig) -> bool:
    """ppo.value_lora, defaulting to model.lora.enabled: a run that chose LoRA to save memory should not
    keep a full critic (a 7B critic's weights, gradients and AdamW states are ~112 GB in fp32/mixed)."""
    return cfg.model.lora.enabled if cfg.ppo.value_lora is None else bool(cfg.ppo.value_lora)


def critic_normalisation(
    cfg: PPOStageConfig, reward_mean: Optional[float], reward_std: Optional[float]
) -> tuple[float, float]:
    """(shift, scale) for the critic's output, so a value model that starts from the reward model starts in
    the units of the score it must predict.

    PPO's score is (raw RM score - mean) [/ std] (ppo.normalize_reward, ppo.normalize_reward_std), while a
    critic initialised from the RM outputs raw RM units: every value would start off by the mean, an error
    GAE spreads back over the late tokens' advantages for many updates (value clipping moves it 0.2 per
    update). So the critic's output goes through the same affine map as the score (OpenRLHF's critic and
    the N+ paper's scalar model do the same); a critic with a fresh head (ppo.value_init=policy) is left as
    is. The saved value model keeps the RM's raw units; PPO applies the map whenever it loads one."""
    if cfg.ppo.value_init != "reward_model" or not cfg.ppo.normalize_reward:
        return 0.0, 1.0
    shift = reward_mean if reward_mean is not None else 0.0
    scale = reward_std if (cfg.ppo.normalize_reward_std and reward_std is not None) else 1.0
    return shift, scale


def uses_critic(cfg: PPOStageConfig) -> bool:
    """Whether PPO trains a value model: only GAE needs one (rloo/grpo baseline on the other responses)."""
    return cfg.ppo.advantage_estimator == "gae"


def model_paths(cfg: PPOStageConfig) -> dict[str, str]:
    """role -> directory of every model PPO loads (the tokenizer's first): policy, reference, reward, and
    value when there is a critic."""
    policy_path = cfg.model.name_or_path
    if cfg.ppo.value_init == "reward_model":
        value_path = cfg.ppo.value_model_path or cfg.ppo.reward_model_path
    else:  # the policy's backbone with a fresh scalar head
        value_path = cfg.ppo.value_model_path or policy_path
    paths = {
        "policy": cfg.model.tokenizer or policy_path,
        "reference": cfg.ppo.ref_model_path or policy_path,
        "reward": cfg.ppo.reward_model_path,
        "value": value_path,
    }
    if not uses_critic(cfg):
        del paths["value"]
    return paths


def build_models(cfg: PPOStageConfig) -> PPOModels:
    """Check that every model shares the policy's tokenizer, then load tokenizer, policy (+LoRA), reference,
    reward model (+stats) and value model from the config."""
    from rlhf.modeling import apply_lora, check_same_tokenizers, load_scalar_model

    paths = model_paths(cfg)
    # Before any weights are loaded, so no embedding has been resized to fit a foreign tokenizer.
    tokenizer = check_same_tokenizers(paths, cfg.model.revision, cfg.model.trust_remote_code)["policy"]
    policy_path = cfg.model.name_or_path
    policy = load_policy_weights(cfg, policy_path, tokenizer)

    lora = cfg.model.lora.enabled
    if cfg.ppo.ref_model_path:
        reference: Optional[nn.Module] = _freeze(load_policy_weights(cfg, cfg.ppo.ref_model_path, tokenizer))
    elif lora:
        reference = None  # the new adapter starts at zero, so the adapter-disabled policy is the SFT policy
    else:
        reference = _freeze(load_policy_weights(cfg, policy_path, tokenizer))
    if lora:
        policy = apply_lora(policy, cfg.model.lora, task_type="CAUSAL_LM")

    reward_path = cfg.ppo.reward_model_path
    reward_model = _freeze(load_scalar_model(reward_path, tokenizer, dtype=cfg.model.dtype))
    reward_mean, reward_std = read_reward_stats(reward_path)
    value_model: Optional[nn.Module] = None
    if uses_critic(cfg):
        value_model = load_scalar_model(paths["value"], tokenizer, dtype=cfg.model.dtype)
        if value_uses_lora(cfg):
            value_model = apply_lora(value_model, cfg.model.lora, task_type="SEQ_CLS")  # peft trains the head in full

    if cfg.train.gradient_checkpointing:
        for model in (policy, value_model):
            if model is not None:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    value_shift, value_scale = critic_normalisation(cfg, reward_mean, reward_std)
    return PPOModels(
        tokenizer, policy, value_model, reward_model, reference, reward_mean, reward_std, value_shift, value_scale
    )


def frozen_model_dtypes(
    policy_dtype: torch.dtype, autocast_dtype: Optional[torch.dtype]
) -> tuple[torch.dtype, torch.dtype]:
    """(reference dtype, reward model dtype): the frozen models stored once in the dtype they compute in.

    The reference must compute exactly what the policy computes, so that the KL at update 0 is exactly 0:
    it takes the dtype of the policy's parameters as prepared (bf16 under DeepSpeed bf16, which runs
    without autocast; fp32 master weights under autocast, where both then run the same autocast ops).
    The reward model's score is compared with nothing, so it is stored in the compute dtype (the policy's
    low-precision dtype, else the autocast dtype): half the memory, and no weight casts per forward.
    """
    if policy_dtype != torch.float32 or autocast_dtype is None:
        return policy_dtype, policy_dtype
    return policy_dtype, autocast_dtype


def cast_parameters(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Floating-point parameters to `dtype`, buffers untouched: what DeepSpeed bf16 does to the policy
    (Llama's rotary `inv_freq` stays fp32), so the reference computes the same numbers."""
    for parameter in model.parameters():
        if parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
    return model


FUSED_ADAMW_DEVICES = ("cpu", "cuda")
FUSED_ADAMW_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def fused_adamw_supported(groups: list[dict]) -> Optional[bool]:
    """True when torch's fused AdamW kernel takes every parameter (floating point on CPU or CUDA), else None
    (torch's default). Same update rule in one pass over each tensor: at 26M parameters x 2 models the
    per-tensor loop took 0.67 s a step on one CPU thread, the fused kernel 0.17 s (foreach: 1.14 s)."""
    params = [p for group in groups for p in group["params"]]
    ok = all(p.device.type in FUSED_ADAMW_DEVICES and p.dtype in FUSED_ADAMW_DTYPES for p in params)
    return True if params and ok else None


def build_optimizer(cfg: PPOStageConfig, policy: nn.Module, value_model: Optional[nn.Module]) -> torch.optim.Optimizer:
    """One optimiser, two parameter groups: the policy at train.learning_rate, the value model at its own LR
    (one group when there is no critic)."""
    train = cfg.train
    value_lr = cfg.ppo.value_learning_rate if cfg.ppo.value_learning_rate is not None else train.learning_rate
    groups = [
        {"params": [p for p in policy.parameters() if p.requires_grad], "lr": train.learning_rate},
    ]
    if value_model is not None:
        groups.append({"params": [p for p in value_model.parameters() if p.requires_grad], "lr": value_lr})
    if train.optimizer in ("adamw_torch", "adamw_torch_fused"):
        return torch.optim.AdamW(
            groups,
            betas=(train.adam_beta1, train.adam_beta2),
            eps=train.adam_epsilon,
            weight_decay=train.weight_decay,
            fused=fused_adamw_supported(groups),
        )
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.learning_rate, weight_decay=train.weight_decay)
    raise ConfigError(
        f"bad value for 'train.optimizer': {train.optimizer!r}; PPO supports adamw_torch, adamw_torch_fused, sgd"
    )
