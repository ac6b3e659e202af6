"""PPO's in-training evaluation splits prompts evenly over processes (issue 16): under ZeRO-3 every forward
is a collective, so a process with one rollout fewer hangs the others. Padding rows are dropped from the
metrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ppo.data import PromptSet, even_shard
from ppo.rollout import Rollout
from ppo.trainer import Loop


def test_even_shard_pads_with_repeats():
    assert even_shard(5, 2, 0) == ([0, 2, 4], 3)
    assert even_shard(5, 2, 1) == ([1, 3, 3], 2)
    assert even_shard(1, 2, 1) == ([0], 0)  # a process with no prompt still runs one (dropped) rollout
    assert even_shard(4, 2, 1) == ([1, 3], 2)


class FakeAccelerator:
    """Process `rank` of `world`; reduce is the identity, so the means are this process's own."""

    def __init__(self, rank: int, world: int):
        self.process_index, self.num_processes, self.device = rank, world, torch.device("cpu")

    def reduce(self, tensor, reduction="sum"):
        return tensor


def fake_loop(rank: int, world: int) -> tuple[Loop, list[int]]:
    loop = Loop.__new__(Loop)  # only what evaluate() touches
    loop.cfg = SimpleNamespace(
        ppo=SimpleNamespace(gold_judge=None, rollout_batch_size=2, normalize_reward=False, reward_clip=None),
        run=SimpleNamespace(seed=0),
    )
    loop.accelerator, loop.pad_id = FakeAccelerator(rank, world), 0
    rollout_rows: list[int] = []

    def collect_rollout(prompt_ids, prompt_mask):
        rows = prompt_ids.shape[0]
        rollout_rows.append(rows)
        prompt_index = prompt_ids[:, -1].double()  # each prompt is [index + 1]
        mask = torch.ones(rows, 2, dtype=torch.bool)
        return (
            Rollout(
                prompt_ids=prompt_ids,
                prompt_mask=prompt_mask,
                response_ids=torch.ones(rows, 2, dtype=torch.long),
                response_mask=mask,
                logprobs=torch.zeros(rows, 2),
                ref_logprobs=torch.zeros(rows, 2),
                values=torch.zeros(rows, 2),
                raw_scores=prompt_index - 1,
                has_eos=torch.ones(rows, dtype=torch.bool),
            ),
            0.0,
            0.0,
        )

    loop.collect_rollout = collect_rollout
    loop.final_scores = lambda raw, has_eos: (raw, raw)
    return loop, rollout_rows


@pytest.mark.parametrize("rank, real_mean", [(0, (0 + 2 + 4) / 3), (1, (1 + 3) / 2)])
def test_every_process_runs_the_same_rollouts_and_padding_is_not_counted(rank, real_mean):
    prompts = PromptSet(texts=[f"p{i}" for i in range(5)], ids=[[i + 1] for i in range(5)])
    loop, rollout_rows = fake_loop(rank, world=2)
    metrics = loop.evaluate(prompts)
    assert rollout_rows == [2, 1]  # the same on both processes (before: [2, 1] on rank 0, [2] on rank 1)
    assert metrics["eval/raw_score"] == pytest.approx(real_mean)  # the repeated prompt 3 is not counted twice
