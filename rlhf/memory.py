"""Memory per process, before launching: parameters, gradients, optimiser states, KV cache and activations.

    python -m rlhf.memory --config configs/tiny/ppo.yaml --accelerate configs/accelerate/zero3.yaml

Pure arithmetic from the model's shape (its `config.json`), the run's config (batch sizes, lengths,
precision, LoRA, gradient checkpointing) and the accelerate config (processes, ZeRO stage, offload), so a
user learns whether a 7B PPO run fits on 8 x 80 GB before asking a scheduler for the GPUs. What it counts
and assumes (docs/memory.md has the worked 7B figures and a check against measured CPU peaks):

- Weights are held in `model.dtype`. Plain PyTorch/DDP keeps gradients and AdamW's two moments in the
  weights' dtype. DeepSpeed with bf16/fp16 holds half-precision weights and gradients and an fp32 master
  copy plus two fp32 moments in the optimiser (the ZeRO paper's 2 + 2 + 12 bytes per parameter).
- ZeRO-1 partitions optimiser states over processes, ZeRO-2 also gradients, ZeRO-3 also weights (PPO
  shards its frozen reference and reward model under ZeRO-3 too). Offload moves optimiser states
  (`offload_optimizer_device: cpu`) or ZeRO-3 weights (`offload_param_device: cpu`) to host memory.
- LoRA (Llama-style projection names; `all-linear` = all seven) trains r x (in + out) per targeted
  projection; the base is frozen. PPO's value model gets LoRA when `ppo.value_lora` (default: model.lora).
- Activations of one training micro-batch for a Llama-style layer: the tensors autograd saves per token,
  (8 h + 2 kv + 5 i) values in the activation dtype (2 bytes under bf16/fp16 autocast, else 4), times the
  layers; with gradient checkpointing one hidden state per layer plus one layer's worth. LM-head logits
  are counted separately (logits, fp32 log-softmax and its gradient), since with a 32k vocabulary they
  rival a layer stack.
- KV cache: 2 x layers x kv heads x head dim x (prompt + new tokens) x generation batch.
- ZeRO-3 gathers the layers it is running: up to stage3_max_live_parameters (DeepSpeed's default 1e9)
  whole weights during scoring and training.
Not counted: the CUDA context and allocator fragmentation (budget 1-3 GB per GPU), temporary buffers
inside kernels, and DeepSpeed's communication buckets. Treat the figures as a lower bound with that margin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 2}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder (most causal LMs on the hub have this layout)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int
    tie_word_embeddings: bool = False

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "ModelShape":
        """From a transformers `config.json` dict (Llama, Mistral, Qwen2, GPT-NeoX-like key names)."""
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            intermediate_size=int(config.get("intermediate_size") or 4 * hidden),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ModelShape":
        """From a model directory's config.json, or a hub id through transformers' AutoConfig (its cache)."""
        config_file = Path(path) / "config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8"))
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(path)).to_dict()
        return cls.from_hf_config(config.get("text_config") or config)  # multimodal configs nest the LM

    def projection_sizes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear projection in one layer."""
        h, q, kv, i = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def backbone_parameters(self) -> int:
        per_layer = sum(a * b for a, b in self.projection_sizes().values()) + 2 * self.hidden_size
        return self.vocab_size * self.hidden_size + self.num_layers * per_layer + self.hidden_size

    def causal_lm_parameters(self) -> int:
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return self.backbone_parameters() + head

    def scalar_model_parameters(self) -> int:
        return self.backbone_parameters() + self.hidden_size  # one-output head, no bias

    def lora_parameters(self, r: int, target_modules: list[str] | tuple[str, ...]) -> int:
        targets = PROJECTIONS if list(target_modules) in (["all-linear"], []) else tuple(target_modules)
        sizes = self.projection_sizes()
        return self.num_layers * sum(r * (sizes[name][0] + sizes[name][1]) for name in targets if name in sizes)


@dataclass(frozen=True)
class Parallelism:
    """What the accelerate config decides about memory."""

    num_processes: int = 1
    zero_stage: int = 0  # 0: no DeepSpeed ZeRO (plain DDP or one process); FSDP full sharding counts as 3
    deepspeed: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False

    @classmethod
    def from_accelerate_config(cls, path: str | Path | None) -> "Parallelism":
        if path is None:
            return cls()
        import yaml

        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        processes = int(config.get("num_processes") or 1)
        kind = str(config.get("distributed_type", "NO")).upper()
        if kind == "DEEPSPEED":
            ds = config.get("deepspeed_config") or {}
            return cls(
                num_processes=processes,
                zero_stage=int(ds.get("zero_stage", 0)),
                deepspeed=True,
                offload_optimizer=str(ds.get("offload_optimizer_device", "none")).lower() not in ("none", ""),
                offload_params=str(ds.get("offload_param_device", "none")).lower() not in ("none", ""),
            )
        if kind == "FSDP":
            fsdp = config.get("fsdp_config") or {}
            strategy = str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
            stage = 3 if strategy in ("FULL_SHARD", "1", "HYBRID_SHARD") else 2
            offload = bool(fsdp.get("fsdp_offload_params", False))
            return cls(processes, stage, False, offload, offload)
        return cls(num_processes=processes)


def parallelism_of(accelerator) -> Parallelism:
    """The Parallelism of a live accelerate Accelerator (what a launched run actually got)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    processes = int(accelerator.num_processes)
    if plugin is not None:
        zero = plugin.deepspeed_config.get("zero_optimization", {})
        device = lambda key: str((zero.get(key) or {}).get("device", "none")).lower()  # noqa: E731
        return Parallelism(
            processes,
            int(plugin.zero_stage),
            True,
            device("offload_optimizer") != "none",
            device("offload_param") != "none",
        )
    if getattr(accelerator.state, "fsdp_plugin", None) is not None:
        return Parallelism(processes, 3)
    return Parallelism(processes)


@dataclass(frozen=True)
class Precision:
    weight_dtype: str = "float32"  # model.dtype
    training: str = "fp32"  # train.precision (mixed precision through accelerate)

    @property
    def half(self) -> bool:
        return self.training in ("bf16", "fp16")

    def weight_bytes(self, deepspeed: bool) -> int:
        # DeepSpeed with bf16/fp16 enabled casts the module to half precision and keeps the fp32 master copy.
        return 2 if deepspeed and self.half else DTYPE_BYTES[self.weight_dtype]

    def optimizer_bytes(self, deepspeed: bool) -> int:
        """AdamW bytes per trainable parameter: two moments (+ the fp32 master copy under DeepSpeed half)."""
        if deepspeed and self.half:
            return 12
        return 2 * (4 if deepspeed else DTYPE_BYTES[self.weight_dtype])

    @property
    def activation_bytes(self) -> int:
        return 2 if self.half or DTYPE_BYTES[self.weight_dtype] == 2 else 4


@dataclass
class Budget:
    """Bytes per process of one stage: what is always resident, and the largest transient of each phase."""

    stage: str
    resident: dict[str, float] = field(default_factory=dict)  # on the accelerator
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> its transient components
    host: dict[str, float] = field(default_factory=dict)  # offloaded to CPU memory, per process

    def phase_peak(self, phase: str) -> float:
        return sum(self.resident.values()) + sum(self.phases[phase].values())

    @property
    def peak(self) -> float:
        return max((self.phase_peak(p) for p in self.phases), default=sum(self.resident.values()))

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_peak) if self.phases else "resident"

    def as_dict(self) -> dict[str, Any]:
        gib = lambda parts: {k: round(v / GIB, 3) for k, v in parts.items()}  # noqa: E731
        return {
            "stage": self.stage,
            "peak_gib": round(self.peak / GIB, 3),
            "peak_phase": self.peak_phase,
            "resident_gib": gib(self.resident),
            "phases_gib": {phase: gib(parts) for phase, parts in self.phases.items()},
            "host_gib": gib(self.host),
        }


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def layer_activation_values(shape: ModelShape) -> int:
    """Values autograd keeps per token of one Llama-style layer (norm inputs/outputs, q/k/v, attention
    output, o_proj input, residuals, gate/up/activation/product/down inputs); sdpa/flash attention keeps no
    seq x seq matrix."""
    kv = shape.num_kv_heads * shape.head_dim
    return 8 * shape.hidden_size + 2 * kv + 5 * shape.intermediate_size


def activation_bytes(shape: ModelShape, tokens: int, act_bytes: int, checkpointing: bool) -> float:
    """Activations kept for the backward of `tokens` tokens (batch x sequence) through the backbone."""
    per_layer = layer_activation_values(shape) * tokens * act_bytes
    if checkpointing:  # one hidden state per layer kept; one layer's activations live while it is recomputed
        return shape.num_layers * shape.hidden_size * tokens * act_bytes + per_layer
    return shape.num_layers * per_layer


def logits_bytes(shape: ModelShape, tokens: int, act_bytes: int, backward: bool) -> float:
    """LM-head logits for `tokens` positions, their fp32 log-softmax and (training) its gradient."""
    per_position = shape.vocab_size * (act_bytes + 4 + (4 if backward else 0))
    return tokens * per_position


def kv_cache_bytes(shape: ModelShape, batch: int, length: int, act_bytes: int) -> float:
    return 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * batch * length * act_bytes


ZERO3_MAX_LIVE_PARAMETERS = 10**9  # DeepSpeed's stage3_max_live_parameters default


def zero3_live_weights(parameters: int, parallel: Parallelism, precision: Precision) -> float:
    """Under ZeRO-3 the layers a forward or backward is running are gathered whole; DeepSpeed keeps up to
    stage3_max_live_parameters of them (default 1e9) alive at once."""
    if parallel.zero_stage < 3 or parallel.num_processes <= 1:
        return 0.0
    return min(parameters, ZERO3_MAX_LIVE_PARAMETERS) * precision.weight_bytes(parallel.deepspeed)


@dataclass(frozen=True)
class TrainedModel:
    """One model as memory sees it: total parameters, trainable ones, frozen or not."""

    name: str
    parameters: int
    trainable: int  # 0 for a frozen model


def _place(budget: Budget, models: list[TrainedModel], parallel: Parallelism, precision: Precision) -> float:
    """Fill weights and optimiser states of `models` into `budget`; returns the gradient bytes per process
    (they live during the training phase: gradients are freed between optimiser steps)."""
    world = max(parallel.num_processes, 1)
    weight_bytes = precision.weight_bytes(parallel.deepspeed)
    weight_share = 1 / world if parallel.zero_stage >= 3 else 1.0
    optimizer_share = 1 / world if parallel.zero_stage >= 1 else 1.0
    gradient_share = 1 / world if parallel.zero_stage >= 2 else 1.0
    gradients = 0.0
    for model in models:
        weights = model.parameters * weight_bytes * weight_share
        (budget.host if parallel.offload_params and parallel.zero_stage >= 3 else budget.resident)[
            f"{model.name} weights"
        ] = weights
        if model.trainable:
            states = model.trainable * precision.optimizer_bytes(parallel.deepspeed) * optimizer_share
            (budget.host if parallel.offload_optimizer else budget.resident)[f"{model.name} optimizer states"] = states
            gradients += model.trainable * weight_bytes * gradient_share
    return gradients


# --------------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOSettings:
    """The PPO settings memory depends on (from ppo.*, data.*, train.*, model.lora.*)."""

    rollout_batch_size: int = 16  # responses per rollout (ppo.rollout_batch_size x ppo.samples_per_prompt)
    generation_batch_size: Optional[int] = None
    forward_batch_size: int = 16
    micro_batch_size: int = 8  # rollout_batch_size / num_mini_batches / gradient_accumulation_steps
    prompt_length: int = 256
    new_tokens: int = 24
    lora: bool = False
    lora_r: int = 8
    lora_targets: tuple[str, ...] = ("all-linear",)
    value_lora: Optional[bool] = None  # None: follow lora
    separate_reference: bool = False  # ppo.ref_model_path set (a frozen copy even with LoRA)
    gradient_checkpointing: bool = False
    gather_for_generation: bool = True  # ppo.zero3_gather_for_generation
    ptx: bool = False
    critic: bool = True  # ppo.advantage_estimator gae trains a value model; rloo/grpo have none


def estimate_ppo(
    shape: ModelShape,
    settings: PPOSettings,
    parallel: Parallelism = Parallelism(),
    precision: Precision = Precision(),
    reward_shape: Optional[ModelShape] = None,
) -> Budget:
    """Per-process bytes of a PPO run: policy + value trained, reference and reward model frozen."""
    reward_shape = reward_shape or shape
    act = precision.activation_bytes
    value_lora = settings.lora if settings.value_lora is None else settings.value_lora
    policy_total = shape.causal_lm_parameters()
    policy_trainable = shape.lora_parameters(settings.lora_r, settings.lora_targets) if settings.lora else policy_total
    value_total = reward_shape.scalar_model_parameters()
    value_trainable = (
        reward_shape.lora_parameters(settings.lora_r, settings.lora_targets) + reward_shape.hidden_size
        if value_lora
        else value_total
    )
    models = [
        TrainedModel("policy", policy_total + (policy_trainable if settings.lora else 0), policy_trainable),
        TrainedModel("reward", reward_shape.scalar_model_parameters(), 0),
    ]
    if settings.critic:
        models.insert(1, TrainedModel("value", value_total + (value_trainable if value_lora else 0), value_trainable))
    if settings.separate_reference or not settings.lora:  # LoRA: the adapter-disabled policy is the reference
        models.append(TrainedModel("reference", policy_total, 0))
    budget = Budget("ppo")
    gradients = _place(budget, models, parallel, precision)

    sequence = settings.prompt_length + settings.new_tokens
    generation_batch = min(settings.generation_batch_size or settings.rollout_batch_size, settings.rollout_batch_size)
    generation = {
        "KV cache": kv_cache_bytes(shape, generation_batch, sequence, act),
        "sampling logits": logits_bytes(shape, generation_batch, act, backward=False),
    }
    if parallel.zero_stage >= 3 and settings.gather_for_generation:
        world = max(parallel.num_processes, 1)
        generation["gathered policy weights"] = (
            models[0].parameters * precision.weight_bytes(parallel.deepspeed) * (1 - 1 / world)
        )
    forward_tokens = settings.forward_batch_size * sequence
    scoring = {
        "rollout tensors": 8 * settings.rollout_batch_size * sequence * 4,
        "forward hidden states": 4 * forward_tokens * shape.hidden_size * act,
        "forward logits": logits_bytes(shape, settings.forward_batch_size * (settings.new_tokens + 1), act, False),
    }
    micro_tokens = settings.micro_batch_size * sequence
    training = {
        "gradients": gradients,
        "policy activations": activation_bytes(shape, micro_tokens, act, settings.gradient_checkpointing),
        "policy logits": logits_bytes(shape, settings.micro_batch_size * (settings.new_tokens + 1), act, True),
    }
    if settings.critic:
        training["value activations"] = activation_bytes(
            reward_shape, micro_tokens, act, settings.gradient_checkpointing
        )
    if settings.ptx:
        training["ptx activations + logits"] = activation_bytes(
            shape, micro_tokens, act, settings.gradient_checkpointing
        ) + logits_bytes(shape, micro_tokens, act, True)
    live = zero3_live_weights(max(m.parameters for m in models), parallel, precision)
    if live:
        scoring["ZeRO-3 live gathered weights"] = training["ZeRO-3 live gathered weights"] = live
    budget.phases = {"generation": generation, "scoring": scoring, "training": training}
    return budget


def estimate_supervised(
    stage: str,
    shape: ModelShape,
    micro_batch_size: int,
    max_length: int,
    parallel: Parallelism = Parallelism(),
    precision: Precision = Precision(),
    lora: bool = False,
    lora_r: int = 8,
    lora_targets: tuple[str, ...] = ("all-linear",),
    gradient_checkpointing: bool = False,
) -> Budget:
    """SFT ("sft": a causal LM, logits over every position) or the reward model ("rm": a scalar head;
    a pairwise micro-batch holds 2 x micro_batch_size sequences)."""
    act = precision.activation_bytes
    total = shape.causal_lm_parameters() if stage == "sft" else shape.scalar_model_parameters()
    trainable = (
        shape.lora_parameters(lora_r, lora_targets) + (shape.hidden_size if stage == "rm" else 0) if lora else total
    )
    budget = Budget(stage)
    gradients = _place(
        budget, [TrainedModel(stage, total + (trainable if lora else 0), trainable)], parallel, precision
    )
    sequences = micro_batch_size * (2 if stage == "rm" else 1)
    tokens = sequences * max_length
    training = {
        "gradients": gradients,
        "activations": activation_bytes(shape, tokens, act, gradient_checkpointing),
    }
    live = zero3_live_weights(total, parallel, precision)
    if live:
        training["ZeRO-3 live gathered weights"] = live
    if stage == "sft":
        training["logits"] = logits_bytes(shape, tokens, act, True)
    budget.phases = {"training": training}
    return budget


# --------------------------------------------------------------------------------------------------
# From a run's config
# --------------------------------------------------------------------------------------------------


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        if node is None:
            return default
    return node


def estimate_from_config(
    cfg: Any,
    stage: str,
    parallel: Parallelism = Parallelism(),
    shape: Optional[ModelShape] = None,
    reward_shape: Optional[ModelShape] = None,
) -> Budget:
    """The budget of `stage` ("sft", "rm", "ppo") for a loaded run config (a DictConfig or typed config).

    `shape` defaults to model.name_or_path's config.json (and, for PPO, `reward_shape` to the reward model's)."""
    shape = shape or ModelShape.from_pretrained(_get(cfg, "model.name_or_path"))
    precision = Precision(str(_get(cfg, "model.dtype", "float32")), str(_get(cfg, "train.precision", "fp32")))
    lora = bool(_get(cfg, "model.lora.enabled", False))
    lora_r = int(_get(cfg, "model.lora.r", 8))
    lora_targets = tuple(_get(cfg, "model.lora.target_modules", ["all-linear"]))
    checkpointing = bool(_get(cfg, "train.gradient_checkpointing", False))
    if stage in ("sft", "rm"):
        return estimate_supervised(
            stage,
            shape,
            int(_get(cfg, "train.per_device_train_batch_size", 8)),
            int(_get(cfg, "data.max_length", 512)),
            parallel,
            precision,
            lora,
            lora_r,
            lora_targets,
            checkpointing,
        )
    if reward_shape is None and _get(cfg, "ppo.reward_model_path"):
        reward_dir = Path(_get(cfg, "ppo.reward_model_path"))
        reward_shape = ModelShape.from_pretrained(reward_dir) if (reward_dir / "config.json").is_file() else None
    rollout = int(_get(cfg, "ppo.rollout_batch_size", 16)) * int(_get(cfg, "ppo.samples_per_prompt", 1))
    micro = max(
        rollout // int(_get(cfg, "ppo.num_mini_batches", 1)) // int(_get(cfg, "train.gradient_accumulation_steps", 1)),
        1,
    )
    settings = PPOSettings(
        rollout_batch_size=rollout,
        generation_batch_size=_get(cfg, "ppo.generation_batch_size"),
        forward_batch_size=int(_get(cfg, "ppo.rollout_forward_batch_size", 16)),
        micro_batch_size=micro,
        prompt_length=int(_get(cfg, "data.max_prompt_length", 256)),
        new_tokens=int(_get(cfg, "ppo.max_new_tokens", 24)),
        lora=lora,
        lora_r=lora_r,
        lora_targets=lora_targets,
        value_lora=_get(cfg, "ppo.value_lora"),
        separate_reference=bool(_get(cfg, "ppo.ref_model_path")),
        gradient_checkpointing=checkpointing,
        gather_for_generation=bool(_get(cfg, "ppo.zero3_gather_for_generation", True)),
        ptx=float(_get(cfg, "ppo.ptx_coef", 0.0) or 0.0) > 0,
        critic=_get(cfg, "ppo.advantage_estimator", "gae") == "gae",
    )
    return estimate_ppo(shape, settings, parallel, precision, reward_shape)


def fits(budget: Budget, device_gib: float, reserve_gib: float = 2.0) -> bool:
    """Whether the peak fits a device of `device_gib` with `reserve_gib` left for the CUDA context/fragmentation."""
    return budget.peak <= (device_gib - reserve_gib) * GIB


def estimate_or_none(cfg: Any, stage: str, parallel: Parallelism) -> Optional[Budget]:
    """The estimate, or None when the model's shape cannot be read (an adapter directory, an unknown layout):
    a launched run reports it and never stops for it."""
    try:
        return estimate_from_config(cfg, stage, parallel)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def measured_peak_gib(device) -> float:
    """This process's peak so far: allocated CUDA memory on a GPU, else the process's peak RSS (which also
    holds the interpreter and libraries, about 0.4 GiB)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux reports KiB


def memory_section(
    cfg: Any,
    stage: str,
    accelerate_config: str | Path | None = None,
    device_gib: float = 80.0,
    shape: Optional[ModelShape] = None,
    reward_shape: Optional[ModelShape] = None,
) -> dict[str, Any]:
    """The estimate as a report section (for `rlhf check`): per-process GiB by component and phase, and
    whether the peak fits one `device_gib` accelerator under the accelerate config. `reward_shape`
    (PPO's reward and value model) defaults to `shape` when that is given."""
    parallel = Parallelism.from_accelerate_config(accelerate_config)
    budget = estimate_from_config(cfg, stage, parallel, shape, reward_shape or shape)
    return {
        **budget.as_dict(),
        "processes": parallel.num_processes,
        "zero_stage": parallel.zero_stage,
        "accelerate_config": str(accelerate_config) if accelerate_config else None,
        "device_gib": device_gib,
        "fits": fits(budget, device_gib),
    }


# Llama-2-7B's config.json (meta-llama/Llama-2-7b-hf), for the documented figures and tests.
LLAMA2_7B = ModelShape(
    vocab_size=32000,
    hidden_size=4096,
    num_layers=32,
    num_heads=32,
    num_kv_heads=32,
    intermediate_size=11008,
    head_dim=128,
)

SHAPES = {"llama2-7b": LLAMA2_7B}


def main(argv: Optional[list[str]] = None) -> int:
    """Print the per-process estimate of a stage config as JSON (and whether it fits --device-gib)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", required=True, help="a stage config (configs/.../ppo.yaml)")
    parser.add_argument("--stage", choices=("sft", "rm", "ppo"), help="default: from the config's sections")
    parser.add_argument("--accelerate", help="the accelerate config the run will be launched with")
    parser.add_argument("--device-gib", type=float, default=80.0, help="memory of one accelerator")
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), help="a known model shape instead of model.name_or_path's config.json"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for the stage commands")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from rlhf.config import file_layers

    # The file's layers as written (no stage schema here: the core knows no stage); a missing key takes
    # the stage default that _get's callers name.
    cfg = OmegaConf.merge(*[OmegaConf.create(layer) for layer, _ in file_layers(Path(args.config))])
    if args.overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(args.overrides))
    stage = args.stage or ("ppo" if _get(cfg, "ppo.reward_model_path") else "rm" if "rm" in cfg else "sft")
    shape = SHAPES[args.shape] if args.shape else None
    print(json.dumps(memory_section(cfg, stage, args.accelerate, args.device_gib, shape)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
