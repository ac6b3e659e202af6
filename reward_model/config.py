"""The reward-model stage's config section.

    rlhf rm --config configs/tiny/rm.yaml rm.loss=kwise

The section's keys sit under `rm:` in a config file; `RMStageConfig` is the typed object the stage's
`train(cfg)` receives (the shared sections from rlhf.config plus this one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from rlhf.config import CommonConfig


@dataclass
class RMSection:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "loss": ("pairwise", "kwise"),
        "data_format": ("auto", "rankings", "pairs"),
    }
    loss: str = "pairwise"  # pairwise (Bradley-Terry via trl.RewardTrainer) | kwise (InstructGPT, ours)
    data_format: str = "auto"  # auto | rankings | pairs: the format of data.train_file
    use_margin: bool = False  # subtract the row's margin inside the sigmoid (Llama-2 style)
    center_rewards_coefficient: Optional[float] = None  # penalise (r_c + r_r)^2 to centre rewards
    normalize_samples: int = 256  # responses scored after training to get the reward mean/std for PPO
    normalize_data_file: Optional[str] = None  # reference responses to score (default: the training responses)
    min_agreement: float = 0.5  # multi-reviewer pairs need more than this share of votes to count
    min_gold_accuracy: Optional[float] = None  # rankings: drop rows whose annotator's gold_accuracy is below this
    weight_by_quality: bool = False  # rankings: a vote counts its row's quality_weight (gold accuracy shrunk to 1)


@dataclass
class RMStageConfig(CommonConfig):
    rm: RMSection = field(default_factory=RMSection)
