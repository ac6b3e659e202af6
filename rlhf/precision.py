"""`train.precision: auto`: bf16 where the hardware runs it fast, fp32 elsewhere.

bf16 pays where matrix units take it natively: a CUDA GPU that supports bf16 (Ampere and later), or a
CPU with AMX (Sapphire Rapids and later: measured 3.5-6.6x the fp32 matmul rate) or AVX512-BF16
(Cooper Lake, Zen 4). Elsewhere torch emulates bf16 matmuls through fp32 conversions and mixed
precision is slower than fp32, so `auto` keeps fp32. On a CPU even native bf16 only pays once the matmuls
are large enough to outweigh autocast's casts: a model below CPU_BF16_MIN_PARAMETERS (per matrix unit) stays
fp32 there.
`resolve_precision` is the pure rule (tested for each case); `describe_device` reads the machine
(torch.cuda, /proc/cpuinfo flags); `model_parameters` counts a model from its config.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Below this many parameters a CPU PPO update is slower in bf16 than in fp32 even with native bf16:
# autocast's casts outweigh the small matmuls. Where it crosses over depends on the matrix unit: on a Zen 4
# (AVX512-BF16, no AMX; benchmarks/results/ppo_scaling_crossover.cpu-2core-zen4.json) 1.1M is 1.14-1.28x
# slower in bf16 and 2.5M 1.05-1.42x faster; on an AMX Xeon, whose fp32 is ~2x the Zen 4's too
# (ppo_scaling_crossover.cpu-2core-amx.json), 2.5M is 1.05-1.12x slower, 3.3M at parity and 4.3M 1.17x
# faster. GPUs keep bf16 at every size.
# Keyed by the /proc/cpuinfo flag of native bf16 matmul support, AMX first: an AMX CPU also has AVX512-BF16,
# and its matrix unit decides.
CPU_BF16_MIN_PARAMETERS = {"amx_bf16": 3_500_000, "avx512_bf16": 2_000_000}
CPU_BF16_FLAGS = frozenset(CPU_BF16_MIN_PARAMETERS)
# Up to this many tokens per sequence a bf16 forward + backward of torch's CPU flash-attention kernel is slower
# than its math kernel (AMX Xeon, 2 threads, 8 sequences x 8 heads x 64: 45 tokens 6.7 against 2.5 ms, 128
# tokens 16.3 against 10.3, 192 at parity, 256 19.1 against 32.6; the flash forward alone is faster at every
# length, and in fp32 flash wins at 45 tokens too). Longer sequences keep flash, which also keeps memory flat.
CPU_BF16_FLASH_MIN_TOKENS = 160


@dataclass(frozen=True)
class DeviceDescription:
    """What `auto` needs to know about the device a stage runs on."""

    type: str  # "cuda", "cpu", "mps", "xpu", ...
    cuda_bf16: bool = False  # torch.cuda.is_bf16_supported() on that GPU
    cpu_flags: frozenset[str] = field(default_factory=frozenset)  # CPU feature flags (lower case)


def resolve_precision(precision: str, device: DeviceDescription, parameters: Optional[int] = None) -> str:
    """`auto` -> "bf16" on a bf16-capable CUDA GPU, or on an AMX / AVX512-BF16 CPU for a model of at least
    that CPU's cpu_bf16_min_parameters (`parameters`; None, unknown, counts as large), else "fp32"; others
    unchanged."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if device.cuda_bf16 else "fp32"
    if cpu_size_decides(device):
        small = parameters is not None and parameters < cpu_bf16_min_parameters(device.cpu_flags)
        return "fp32" if small else "bf16"
    return "fp32"


def training_attention(device_type: str, precision: str, tokens: int) -> contextlib.AbstractContextManager:
    """The scaled-dot-product-attention kernels a training forward (and so its backward) may use: only the math
    kernel for sequences shorter than CPU_BF16_FLASH_MIN_TOKENS in bf16 on a CPU, where the flash kernel's
    backward is 2-3x slower; torch's own choice everywhere else (GPUs, fp32, long sequences)."""
    if device_type != "cpu" or precision != "bf16" or tokens >= CPU_BF16_FLASH_MIN_TOKENS:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def cpu_bf16_min_parameters(flags: frozenset[str]) -> int:
    """The smallest model `auto` runs in bf16 on a CPU with these flags: the threshold of the first of
    CPU_BF16_MIN_PARAMETERS's flags it has (AMX's where it has AMX, else AVX512-BF16's)."""
    for flag, minimum in CPU_BF16_MIN_PARAMETERS.items():
        if flag in flags:
            return minimum
    raise ValueError(f"no native bf16 among the CPU flags {sorted(flags)}")


def cpu_size_decides(device: DeviceDescription) -> bool:
    """A CPU with native bf16, where `auto` depends on the model's size (elsewhere the size is not needed)."""
    return device.type == "cpu" and bool(device.cpu_flags & CPU_BF16_FLAGS)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where the file does not exist, as on macOS)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.lower().split())
    return frozenset()


def describe_device(device_type: str | None = None) -> DeviceDescription:
    """This machine's device for a stage: CUDA when available (or `device_type`), else the CPU."""
    import torch

    kind = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind.startswith("cuda"):
        return DeviceDescription("cuda", cuda_bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return DeviceDescription("cpu", cpu_flags=cpu_flags())
    return DeviceDescription(kind)


def model_parameters(name_or_path: str | Path | None) -> Optional[int]:
    """A causal LM's parameter count, from its config built on the meta device (no weights are read), for a
    directory or a hub id already in the local cache; None when there is no such config (the caller then
    treats the model as large: every hub model is, and a typo should not wait on network retries here)."""
    if not name_or_path:
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(name_or_path), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # no config, no network, or no causal-LM class for it: size unknown
        return None
    return sum(parameter.numel() for parameter in model.parameters())


def precision_for(precision: str, device_type: str | None = None, model: str | Path | None = None) -> str:
    """`precision` resolved for this machine's device and the size of `model` (a path or hub id)."""
    if precision != "auto":
        return precision
    device = describe_device(device_type)
    parameters = model_parameters(model) if cpu_size_decides(device) else None  # no model build where moot
    return resolve_precision(precision, device, parameters)


def resolve_train_precision(cfg) -> str:
    """Replace `train.precision: auto` in a stage config by what it resolves to here, before the run
    directory's config.yaml is written, so the file records the precision the run used."""
    from rlhf.distributed import cpu_collectives

    device = "cpu" if cpu_collectives() else None
    resolved = precision_for(cfg.train.precision, device, model=cfg.model.name_or_path)
    cfg.train.precision = resolved
    return resolved
