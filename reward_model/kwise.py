"""The InstructGPT K-wise ranking loss, its collator and a small `transformers.Trainer` that uses it.

    rlhf rm --config configs/tiny/rm.yaml rm.loss=kwise

InstructGPT (Ouyang et al. 2022, eq. 1) trains the reward model on all C(K,2) comparisons of a ranking
of K responses *as one batch element*: loss = -1/C(K,2) * sum over pairs of log sigmoid(r_w - r_l).
Two things follow, and both are why this is ours rather than `trl.RewardTrainer` on expanded pairs:
each response goes through the model once per ranking (K forward passes, not 2*C(K,2)), and the pairs of
one ranking never spread over several gradient steps, which the paper found overfits. Ties give no pair,
so a ranking's loss is divided by the pairs it actually has; rankings are then averaged, so a ranking with
many pairs does not outweigh one with few. The loss is a pure function of the scores so it can be checked
against the pairwise form by hand and by autograd.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from transformers import Trainer


def kwise_ranking_loss(
    rewards: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    pair_group: torch.Tensor,
    num_groups: int,
    margin: Optional[torch.Tensor] = None,
    center_rewards_coefficient: Optional[float] = None,
) -> torch.Tensor:
    """Mean over rankings of the mean pairwise Bradley-Terry loss of each ranking's pairs.

    rewards: (N,) one score per response of the batch (all rankings' responses, flattened).
    better, worse: (P,) indices into `rewards`; pair p says response better[p] beat worse[p].
    pair_group: (P,) which ranking (0..num_groups-1) pair p belongs to; every ranking has >= 1 pair.
    margin: (P,) optional required gap, subtracted inside the sigmoid as in Llama-2's RM.
    center_rewards_coefficient: optional weight of mean((r_w + r_l)^2) (Eisenstein et al. 2023), as TRL.
    """
    gap = rewards[better] - rewards[worse]
    if margin is not None:
        gap = gap - margin
    pair_loss = -F.logsigmoid(gap)
    group_sum = torch.zeros(num_groups, dtype=pair_loss.dtype, device=pair_loss.device).index_add(
        0, pair_group, pair_loss
    )
    pairs_per_group = torch.bincount(pair_group, minlength=num_groups).to(pair_loss.dtype)
    loss = (group_sum / pairs_per_group).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((rewards[better] + rewards[worse]) ** 2).mean()
    return loss


@dataclass
class KwiseCollator:
    """Rankings (token ids of each response + pair indices) -> one right-padded batch of all responses."""

    pad_token_id: int

    def __call__(self, rankings: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences: list[list[int]] = []
        better: list[int] = []
        worse: list[int] = []
        pair_group: list[int] = []
        margins: list[float] = []
        for group_index, ranking in enumerate(rankings):
            offset = len(sequences)
            sequences.extend(ranking["response_ids"])
            better.extend(offset + index for index in ranking["better"])
            worse.extend(offset + index for index in ranking["worse"])
            pair_group.extend([group_index] * len(ranking["better"]))
            margins.extend(ranking.get("margin") or [0.0] * len(ranking["better"]))
        width = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[row, : len(sequence)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "better": torch.tensor(better, dtype=torch.long),
            "worse": torch.tensor(worse, dtype=torch.long),
            "pair_group": torch.tensor(pair_group, dtype=torch.long),
            "margin": torch.tensor(margins, dtype=torch.float),
        }


class KwiseRewardTrainer(Trainer):
    """A Trainer whose batch element is a ranking; logs accuracy and margin like trl.RewardTrainer.

    `args` is a `trl.RewardConfig` (a TrainingArguments) so both losses share one converter; its
    `center_rewards_coefficient` is honoured. `use_margin` subtracts each pair's margin.
    """

    loss_is_scaled_for_ga = False  # the loss is a per-batch mean: let Trainer divide by accumulation steps

    def __init__(self, *args, use_margin: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_margin = use_margin
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from reward_model.scoring import sequence_rewards

        rewards = sequence_rewards(model, inputs["input_ids"], inputs["attention_mask"]).float()
        num_groups = int(inputs["pair_group"].max().item()) + 1
        loss = kwise_ranking_loss(
            rewards,
            inputs["better"],
            inputs["worse"],
            inputs["pair_group"],
            num_groups,
            margin=inputs["margin"] if self.use_margin else None,
            center_rewards_coefficient=getattr(self.args, "center_rewards_coefficient", None),
        )
        mode = "train" if model.training else "eval"
        with torch.no_grad():
            gap = rewards[inputs["better"]] - rewards[inputs["worse"]]
            # Sums and counts over all processes, not a mean of per-process means: ties give the
            # processes' rankings different numbers of pairs.
            sums = torch.stack(
                [
                    (gap > 0).float().sum(),
                    gap.sum(),
                    rewards.sum(),
                    gap.new_tensor(gap.numel()),
                    gap.new_tensor(rewards.numel()),
                ]
            )
            correct, gap_sum, reward_sum, num_pairs, num_rewards = self.accelerator.reduce(
                sums, reduction="sum"
            ).tolist()
            self._metrics[mode]["accuracy"].append(correct / num_pairs)
            self._metrics[mode]["margin"].append(gap_sum / num_pairs)
            self._metrics[mode]["mean_reward"].append(reward_sum / num_rewards)
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        mode = "train" if self.model.training else "eval"
        averaged = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        logs.update({f"eval_{key}": value for key, value in averaged.items()} if mode == "eval" else averaged)
        super().log(logs, start_time)
        self._metrics[mode].clear()
