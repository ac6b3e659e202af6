"""`train.precision: auto`: bf16 where the hardware runs it fast, fp32 elsewhere.

bf16 pays where matrix units take it natively: a CUDA GPU that supports bf16 (Ampere and later), or a
CPU with AMX (Sapphire Rapids and later: measured 3.5-6.6x the fp32 matmul rate) or AVX512-BF16
(Cooper Lake, Zen 4). Elsewhere torch emulates bf16 matmuls through fp32 conversions and mixed
precision is slower than fp32, so `auto` keeps fp32. `resolve_precision` is the pure rule (tested for
each case); `describe_device` reads the machine (torch.cuda, /proc/cpuinfo flags).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # /proc/cpuinfo names of native bf16 matmul support
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class DeviceDescription:
    """What `auto` needs to know about the device a stage runs on."""

    type: str  # "cuda", "cpu", "mps", "xpu", ...
    cuda_bf16: bool = False  # torch.cuda.is_bf16_supported() on that GPU
    cpu_flags: frozenset[str] = field(default_factory=frozenset)  # CPU feature flags (lower case)


def resolve_precision(precision: str, device: DeviceDescription) -> str:
    """`auto` -> "bf16" on a bf16-capable CUDA GPU or an AMX / AVX512-BF16 CPU, else "fp32"; others unchanged."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if device.cuda_bf16 else "fp32"
    if device.type == "cpu":
        return "bf16" if device.cpu_flags & CPU_BF16_FLAGS else "fp32"
    return "fp32"


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


def precision_for(precision: str, device_type: str | None = None) -> str:
    """`precision` resolved for this machine's device."""
    if precision != "auto":
        return precision
    return resolve_precision(precision, describe_device(device_type))


def resolve_train_precision(cfg) -> str:
    """Replace `train.precision: auto` in a stage config by what it resolves to here, before the run
    directory's config.yaml is written, so the file records the precision the run used."""
    from rlhf.distributed import cpu_collectives

    resolved = precision_for(cfg.train.precision, "cpu" if cpu_collectives() else None)
    cfg.train.precision = resolved
    return resolved
