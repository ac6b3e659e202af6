"""Reward statistics for PPO: score a sample of policy responses, store their mean and std with the model.

A reward model's scale and offset are arbitrary (the pairwise loss only sees differences), so PPO
subtracts the mean score of responses like the ones it will see, and optionally divides by the std
(InstructGPT normalises the RM "so that labeler demonstrations achieve a mean score of 0"; the N+
implementation details use a sample of SFT-policy responses, which is our default since the rankings
are SFT samples). The sample is `rm.normalize_samples` distinct prompt/responses, drawn with the run's
seed, from `rm.normalize_data_file` (any file `rlhf rm score` reads) or else the training responses.
The result is `reward_stats.json` in the model directory: {"mean", "std", "num_samples", "source"}.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

import torch

from reward_model.score import REWARD_STATS_FILE, read_prompt_responses
from rlhf.files import write_json_atomic


def reward_stats(scores: torch.Tensor, source: str) -> dict[str, Any]:
    """Mean and (population) std of a sample of scores."""
    scores = scores.double()
    return {
        "mean": scores.mean().item(),
        "std": scores.std(unbiased=False).item(),
        "num_samples": int(scores.numel()),
        "source": source,
    }


def distinct_prompt_responses(prompts: Sequence[Any], responses: Sequence[Any]) -> list[tuple[Any, Any]]:
    seen: set[str] = set()
    out = []
    for prompt, response in zip(prompts, responses):
        key = json.dumps([prompt, response], ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            out.append((prompt, response))
    return out


def normalization_sample(
    train_pairs: list[dict], data_file: str | None, num_samples: int, seed: int
) -> tuple[list[tuple[Any, Any]], str]:
    """(up to num_samples distinct (prompt, response), source description)."""
    if data_file:
        rows = read_prompt_responses(data_file)
        candidates = distinct_prompt_responses(
            [row["prompt"] for _, row, rs in rows for _ in rs], [r for _, _, rs in rows for r in rs]
        )
        source = str(data_file)
    else:
        prompts = [pair["prompt"] for pair in train_pairs for _ in (0, 1)]
        responses = [response for pair in train_pairs for response in (pair["chosen"], pair["rejected"])]
        candidates = distinct_prompt_responses(prompts, responses)
        source = "training responses"
    if len(candidates) > num_samples:
        candidates = random.Random(seed).sample(candidates, num_samples)
    return candidates, source


def compute_reward_stats(
    model, tokenizer, sample: list[tuple[Any, Any]], source: str, batch_size: int = 32, max_length: int | None = None
) -> dict[str, Any]:
    from reward_model.scoring import score_texts

    scores = score_texts(model, tokenizer, [p for p, _ in sample], [r for _, r in sample], batch_size, max_length)
    return reward_stats(scores, source)


def write_reward_stats(model_dir: str | Path, stats: dict[str, Any]) -> Path:
    path = Path(model_dir) / REWARD_STATS_FILE
    write_json_atomic(path, stats)
    return path
