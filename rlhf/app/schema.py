"""The `rlhf` command's full config schema: the shared sections plus every stage's own.

    rlhf config show --config configs/tiny/ppo.yaml ppo.kl_coef=0.02
    rlhf config show --config configs/tiny/pipeline.yaml ppo.kl_coef=0.02

A stage config file may hold every stage's section (a run directory's config.yaml does), so files are
loaded against this full schema and then handed to a stage as that stage's typed view
(`rlhf.config.typed`). Composing the sections here, in the face, keeps the stages from importing each
other and the core from importing any stage.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig

from ppo.config import PPOSection
from reward_model.config import RMSection
from rlhf import config as core
from rlhf.config import CommonConfig
from sft.config import SFTSection


@dataclass
class Config(CommonConfig):
    sft: SFTSection = field(default_factory=SFTSection)
    rm: RMSection = field(default_factory=RMSection)
    ppo: PPOSection = field(default_factory=PPOSection)


def load_config(
    config_file: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    require_complete: bool = True,
) -> DictConfig:
    """Defaults <- config file (with its bases) <- dotted overrides, against the full stage schema."""
    return core.load_config(config_file, list(overrides), schema_cls=Config, require_complete=require_complete)


def is_pipeline_config(config_file: Optional[str]) -> bool:
    """A pipeline config has a `pipeline:` section (in the file or one of its bases)."""
    if not config_file:
        return False
    return any("pipeline" in layer for layer, _ in core.file_layers(Path(config_file)))


def main(argv: list[str] | None = None) -> int:
    """`rlhf config show --config X [overrides]`: print the resolved stage or pipeline config."""
    parser = argparse.ArgumentParser(prog="rlhf config", description="Inspect configs.")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the resolved config (defaults <- file <- overrides)")
    core.add_config_arguments(show)
    args = parser.parse_args(core.split_wandb_style(list(argv or [])))
    if is_pipeline_config(args.config):
        from rlhf.app.pipeline import load_pipeline_config

        cfg = load_pipeline_config(args.config, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides, require_complete=False)
    print(core.to_yaml(cfg), end="")
    return 0
