"""Resumable PPO checkpoints: accelerate's `save_state` plus the run's own progress.

`accelerator.save_state` already writes what a resumed run must get back bit for bit - the prepared
policy+value module, its optimiser, and every process's python/numpy/torch(/cuda) RNG state - and it does
so correctly under DDP, DeepSpeed and FSDP. Objects registered with `register_for_checkpointing` (the LR
scheduler, the KL controller and `Progress`, which holds the update count and the prompt stream's
position) ride along. Each checkpoint is written under a hidden temporary name and renamed when every
process has finished, so `checkpoints/update-NNNNNN` either exists complete or not at all, and only the
newest `keep` of them are kept.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^update-(\d+)$")


class PromptStream:
    """An endless stream of prompt indices, reshuffled every epoch; its position is the data state.

    The order of epoch e is a permutation drawn from its own generator seeded with (seed, e), so it does
    not consume the global RNG and a resumed run rebuilds it from the position alone.
    """

    def __init__(self, num_prompts: int, seed: int, shuffle: bool = True):
        if num_prompts <= 0:
            raise ValueError("the prompt stream needs at least one prompt")
        self.num_prompts = num_prompts
        self.seed = seed
        self.shuffle = shuffle
        self.position = 0
        self._epoch: Optional[int] = None
        self._order: Optional[torch.Tensor] = None

    def _order_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = torch.randperm(self.num_prompts, generator=generator)
            else:
                self._order = torch.arange(self.num_prompts)
            self._epoch = epoch
        return self._order

    def take(self, count: int) -> list[int]:
        """The next `count` prompt indices (crossing into the next epoch when this one runs out)."""
        indices = []
        for _ in range(count):
            epoch, offset = divmod(self.position, self.num_prompts)
            indices.append(int(self._order_of(epoch)[offset]))
            self.position += 1
        return indices

    @property
    def epoch(self) -> float:
        return self.position / self.num_prompts


class Progress:
    """What the loop needs to continue: updates done and the data streams' positions."""

    def __init__(self, stream: PromptStream, ptx_stream: Optional[PromptStream] = None):
        self.update = 0
        self.stream = stream
        self.ptx_stream = ptx_stream
        self.seconds = 0.0  # wall time of the updates done, over every job (ppo.max_minutes)
        self.last_kl: Optional[float] = None  # the last update's rollout KL (ppo.stop_at_kl)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "update": self.update,
            "position": self.stream.position,
            "num_prompts": self.stream.num_prompts,
            "seconds": self.seconds,
            "last_kl": self.last_kl,
        }
        if self.ptx_stream is not None:
            state["ptx_position"] = self.ptx_stream.position
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from rlhf.errors import ConfigError

        if int(state["num_prompts"]) != self.stream.num_prompts:
            raise ConfigError(
                f"cannot resume: the checkpoint was made with {state['num_prompts']} training prompts, "
                "data.train_file now has "
                f"{self.stream.num_prompts}; resume with the same data or start a new run.output_dir"
            )
        self.update = int(state["update"])
        self.stream.position = int(state["position"])
        self.seconds = float(state.get("seconds", 0.0))  # checkpoints written before the budgets have neither
        self.last_kl = None if state.get("last_kl") is None else float(state["last_kl"])
        if self.ptx_stream is not None:
            self.ptx_stream.position = int(state.get("ptx_position", 0))


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(update, path) of every complete checkpoint, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(
    accelerator, run_dir: str | Path, update: int, keep: Optional[int] = None, fingerprint: Optional[dict] = None
) -> Path:
    """Every process calls this; returns the checkpoint directory. The run's fingerprint (rlhf.runs) goes
    in with it, so a resume can tell this run's checkpoints from another's."""
    root = checkpoint_root(run_dir)
    final = root / f"update-{update:06d}"
    tmp = root / f".update-{update:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if fingerprint is not None:
            from rlhf.runs import write_fingerprint

            write_fingerprint(tmp, fingerprint, update=update)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if keep is not None and keep > 0:
            for _, old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | Path) -> None:
    accelerator.load_state(str(path))


def drop_logged_rows_after(
    run_dir: str | Path, update: int, names: tuple[str, ...] = ("metrics.jsonl", "samples.jsonl")
) -> None:
    """Forget rows logged after the checkpoint a run resumes from (they will be logged again), atomically;
    a line torn by a crash is dropped too."""
    from rlhf.runs import keep_logged_rows_until

    keep_logged_rows_until(run_dir, update, names)
