"""Process-group set-up that accelerate leaves to us, and per-rank seeding.

    accelerate launch --config_file configs/accelerate/cpu_zero2.yaml -m rlhf sft --config configs/tiny/sft.yaml

Choices. Accelerate picks the collective backend from the device it finds: NCCL on GPUs, gloo only when it
is told the run is on CPU. Launched on a machine without GPUs (torchrun, or `accelerate launch` with a
multi-process config) and not told, every process sets itself up as a lone process of world size 1:
each reads the whole data set, trains alone and writes every file, and nothing fails. Two cases:
plain DDP needs accelerate's CPU mode (`use_cpu` / `cpu=True`, which picks gloo); DeepSpeed has no CPU
mode (it switches DeepSpeed off), so there the backend must be named: DeepSpeed then runs its CPU
accelerator (DS_ACCELERATOR=cpu) over gloo. On GPUs, or in a single process, both helpers return {}
and accelerate's own choice stands (FSDP has no CPU mode in accelerate: on CPU it runs as DDP, with a
warning). The stages pass them on: `training_arguments_kwargs()` into
`TrainingArguments` (SFT, reward model), `accelerator_kwargs()` into an `Accelerator` of our own (PPO).

Randomness: what must agree across processes (data order, initial weights, dropout masks are off anyway)
uses `run.seed` itself; what must differ (sampling responses) uses `seed_for_rank(run.seed, rank)`, so
two processes never draw the same completions for their different prompts by sharing a stream.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, NoReturn, Optional

GLOO = "gloo"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def launched_distributed() -> bool:
    """True inside a multi-process launch (torchrun, `accelerate launch`, the DeepSpeed launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def deepspeed_launch() -> bool:
    """`accelerate launch` with a DeepSpeed config sets this for every process it starts."""
    return _env_flag("ACCELERATE_USE_DEEPSPEED")


def cpu_collectives() -> Optional[str]:
    """ "ddp" or "deepspeed" for a multi-process launch on a machine without GPUs; None otherwise.

    Accelerate runs FSDP on accelerators only, so an FSDP launch on CPU becomes plain DDP (with a warning).
    """
    if not launched_distributed() or gpu_available():
        return None
    if deepspeed_launch():
        return "deepspeed"
    if _env_flag("ACCELERATE_USE_FSDP"):
        warnings.warn("FSDP needs GPUs (accelerate has no CPU FSDP); this CPU run is plain DDP over gloo", stacklevel=2)
    return "ddp"


def training_arguments_kwargs() -> dict[str, Any]:
    """Extra `transformers.TrainingArguments` fields for `cpu_collectives()` ({} when accelerate decides)."""
    kind = cpu_collectives()
    if kind == "ddp":
        return {"use_cpu": True}
    if kind == "deepspeed":
        return {"ddp_backend": GLOO}
    return {}


def forget_mixed_precision() -> None:
    """Let the next stage in this process choose its own mixed precision.

    accelerate keeps one AcceleratorState per process and refuses an Accelerator whose mixed precision
    differs from the first one's ("AcceleratorState has already been initialized"), so a stage at fp32
    after one at bf16 (a sweep or a notebook calling stages in turn, `train.precision: auto` on one and
    `fp32` on the other) would stop. The process group (PartialState) is kept: only the per-run state goes.
    """
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def accelerator_kwargs() -> dict[str, Any]:
    """Extra `accelerate.Accelerator(...)` arguments for `cpu_collectives()` ({} when accelerate decides)."""
    kind = cpu_collectives()
    if kind == "ddp":
        return {"cpu": True}
    if kind == "deepspeed":
        from accelerate.utils import InitProcessGroupKwargs

        return {"kwargs_handlers": [InitProcessGroupKwargs(backend=GLOO)]}
    return {}


def seed_for_rank(seed: int, rank: int) -> int:
    """The seed of process `rank` for streams that must differ between processes (sampling).

    Rank 0 keeps `seed`, so a one-process run draws exactly what rank 0 of a larger run draws.
    """
    return seed + rank


def shut_down_process_group(synchronize: bool = True) -> bool:
    """Destroy the default process group, if this process started one (after a barrier when `synchronize`);
    True when there was one.

    PyTorch asks for an explicit destroy_process_group() at the end of a run; the CLI calls this after
    every command. No barrier after a failure: the other ranks may never reach it.
    """
    import sys

    if "torch" not in sys.modules:  # a command that never imported torch started no process group
        return False
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    if synchronize:
        dist.barrier()
    dist.destroy_process_group()
    return True


def exit_skipping_teardown(code: int) -> NoReturn:
    """End a launched rank now: finish wandb, flush logs and streams, then `os._exit(code)`.

    A rank that has written everything can still abort in interpreter-exit teardown ("terminate called
    without an active exception": a C++ thread of gloo, the TCP store or DeepSpeed's CPU backend destroyed
    while still joinable, in no fixed order), which fails the whole launch. Destroying the process group
    first made it rarer, not gone: CI still saw it in 1 of about 50 ZeRO-3 CPU launches. `os._exit` skips
    the static destructors where it happens. Everything a stage writes is closed and renamed before its
    `main` returns, so nothing is lost; what interpreter exit would still have done is done here.
    """
    import logging
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()  # a TRL stage's run is otherwise finished by wandb's atexit hook, which _exit skips
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(code)
