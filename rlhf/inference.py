"""Device and dtype of the commands that only run models forward: `rlhf generate`, `rlhf eval`, `rlhf rm score`.

Like the stages, they use the accelerator when there is one (`--device auto`: cuda when available) and run
in the configured precision: `--precision` (auto | fp32 | bf16 | fp16, resolved for the device they run on
by rlhf.precision: auto is bf16 on a bf16 GPU or an AMX / AVX512-BF16 CPU for 2M+ (AMX: 3.5M+) params, else
fp32) or an explicit `--dtype`. bf16 on CPU is allowed. Every model is moved to the device after loading, so
a 7B evaluation neither keeps three fp32 copies in host memory nor generates on the CPU.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Optional

import torch

from rlhf.errors import ConfigError

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def add_device_arguments(parser: argparse.ArgumentParser, precision_default: str = "auto") -> None:
    """--device, --precision and --dtype, the same on every inference command."""
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:1 ...")
    parser.add_argument(
        "--precision",
        default=precision_default,
        choices=PRECISION_CHOICES,
        help="models' dtype; auto: bf16 on a bf16 GPU or an AMX / AVX512-BF16 CPU (2M+ params; AMX 3.5M+), else fp32",
    )
    parser.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="overrides --precision")


def inference_device(requested: Optional[str] = "auto") -> torch.device:
    """`auto` (or None): cuda when available, else cpu; anything else as torch spells it."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"bad value for '--device': {requested!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: CUDA is not available on this machine (use --device cpu)")
    return device


def inference_dtype(
    precision: Optional[str], dtype: Optional[str], device: torch.device, model: Optional[str] = None
) -> str:
    """float32 | bfloat16 | float16: `dtype` when given, else `precision` resolved for `device` and the size
    of `model` (a path or hub id; rlhf.precision)."""
    from rlhf.precision import DTYPE_NAMES, precision_for

    if dtype:
        return dtype
    return DTYPE_NAMES[precision_for(precision or "auto", device.type, model=model)]


def load_for_inference(loader: Callable[..., Any], path: str, tokenizer, device: torch.device, dtype: str):
    """`loader(path, tokenizer, dtype=...)` (load_causal_lm or load_scalar_model) in eval mode on `device`."""
    return loader(path, tokenizer, dtype=dtype).to(device).eval()
