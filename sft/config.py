"""The SFT stage's config section.

    rlhf sft --config configs/tiny/sft.yaml sft.packing=true

The section's keys sit under `sft:` in a config file; `SFTStageConfig` is the typed object the stage's
`train(cfg)` receives (the shared sections from rlhf.config plus this one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rlhf.config import CommonConfig


@dataclass
class SFTSection:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"use_chat_template": ("auto", "always", "never")}
    completion_only_loss: bool = True  # loss on completion tokens only (False: on all tokens)
    packing: bool = False  # pack several examples into one max_length sequence
    use_chat_template: str = "auto"  # auto (when the tokenizer has one) | always | never
    add_eos: bool = True  # end every completion with the EOS token so the policy learns to stop


@dataclass
class SFTStageConfig(CommonConfig):
    sft: SFTSection = field(default_factory=SFTSection)
