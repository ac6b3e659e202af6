"""PPO's inputs: training/held-out prompts (tokenised once) and PPO-ptx language-modelling batches.

Prompts are read and validated by `rlhf.data` (bad rows name file, row and field). Without a
`data.eval_file`, the last `data.eval_fraction` of the training prompts is held out (only when an
evaluation is asked for), so evaluation never scores prompts the policy was optimised on. PPO-ptx rows
are SFT rows (prompt/completion or messages), encoded as SFT saw them by `rlhf.tokens.Encoder`, with the
loss on the completion (the last turn); they are drawn from their own resumable stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ppo.checkpoint import PromptStream
from ppo.config import PPOStageConfig
from rlhf.errors import ConfigError, DataError
from rlhf.tokens import Encoder

IGNORE_INDEX = -100


@dataclass
class PromptSet:
    texts: list[Any]  # the prompt as given (a string or a list of messages)
    ids: list[list[int]]  # token ids (rlhf.tokens.Encoder), each within data.max_prompt_length


def _rows(path: str, kind: str, cfg: PPOStageConfig) -> list[dict]:
    from rlhf.data import load_rows

    rows, report = load_rows(path, kind, skip_bad_rows=cfg.data.skip_bad_rows)
    if cfg.data.skip_bad_rows and getattr(report, "skipped", 0):
        print(f"ppo: {report}")
    return rows


def _encode(rows: list[dict], tokenizer, max_prompt_length: int, path: str) -> PromptSet:
    """Ids of every prompt as every stage sees them; prompts over the limit are skipped, never cut (cutting
    would drop the BOS and a system header, or the generation prompt)."""
    texts = [row["prompt"] for row in rows]
    encoded = Encoder(tokenizer).encode_prompts(texts, max_prompt_length)
    if encoded.skipped:
        print(
            f"ppo: {path}: {encoded.skipped} of {len(texts)} prompt(s) longer than "
            f"data.max_prompt_length={max_prompt_length} tokens skipped"
        )
    if not encoded.ids:
        raise DataError(
            f"{path}: every prompt is longer than data.max_prompt_length={max_prompt_length} tokens; raise it"
        )
    return PromptSet([texts[i] for i in encoded.kept], encoded.ids)


def load_prompt_sets(cfg: PPOStageConfig, tokenizer) -> tuple[PromptSet, Optional[PromptSet]]:
    """(training prompts, held-out prompts or None when no evaluation is configured)."""
    rows = _rows(cfg.data.train_file, "prompts", cfg)
    if cfg.data.max_samples:
        rows = rows[: cfg.data.max_samples]
    eval_rows: Optional[list[dict]] = None
    if cfg.ppo.eval_every > 0:
        if cfg.data.eval_file:
            eval_rows = _rows(cfg.data.eval_file, "prompts", cfg)
        else:
            held_out = max(1, math.ceil(len(rows) * cfg.data.eval_fraction))
            if held_out >= len(rows):
                raise ConfigError(
                    f"data.train_file has {len(rows)} prompts: too few to hold out "
                    f"data.eval_fraction={cfg.data.eval_fraction}; set data.eval_file"
                )
            rows, eval_rows = rows[:-held_out], rows[-held_out:]
        eval_rows = eval_rows[: cfg.ppo.eval_num_prompts]
    if not rows:
        raise DataError(f"{cfg.data.train_file}: no prompts")
    max_len = cfg.data.max_prompt_length
    eval_path = cfg.data.eval_file or cfg.data.train_file
    return (
        _encode(rows, tokenizer, max_len, cfg.data.train_file),
        _encode(eval_rows, tokenizer, max_len, eval_path) if eval_rows else None,
    )


def even_shard(count: int, world: int, rank: int) -> tuple[list[int], int]:
    """(this process's indices, how many are real): indices rank, rank + world, ... padded with repeats of
    the last (or of index 0) to ceil(count / world), so every process runs the same number of rollouts of
    the same sizes and makes the same collective calls (under ZeRO-3 each forward gathers parameters from
    every process: uneven shards hang). The padding rows are dropped from every metric."""
    local = list(range(rank, count, world))
    real = len(local)
    per_process = -(-count // world)
    filler = local[-1] if local else 0
    return local + [filler] * (per_process - real), real


def fit_to_length(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of prompt + completion in at most `max_length` tokens, loss on the completion.

    Cutting the end (`ids[:max_length]`) would keep only prompt tokens of a long row, so a micro-batch of such
    rows has no label and a NaN loss, and it drops the EOS that teaches the policy to stop. Instead the
    prompt is cut from the left (its end, next to the completion, matters most) and a completion that alone
    exceeds the budget keeps its first tokens and its last one (the EOS). One prompt token is kept when
    there is one, so the first completion token is predicted from context.
    """
    if len(prompt) + len(completion) <= max_length:
        return prompt + completion, [IGNORE_INDEX] * len(prompt) + completion
    room = max(max_length - min(len(prompt), 1), 1)
    if len(completion) > room:
        completion = completion[: room - 1] + completion[-1:]
    prompt = prompt[len(prompt) - (max_length - len(completion)) :] if max_length > len(completion) else []
    return prompt + completion, [IGNORE_INDEX] * len(prompt) + completion


class PtxBatches:
    """Right-padded LM batches from SFT rows for PPO-ptx, in a resumable shuffled order."""

    def __init__(self, path: str, tokenizer, max_length: int, seed: int, skip_bad_rows: bool = False):
        from rlhf.data import load_rows

        rows, _ = load_rows(path, "sft", skip_bad_rows=skip_bad_rows)
        if not rows:
            raise DataError(f"{path}: no rows for PPO-ptx")
        self.pad_token_id = tokenizer.pad_token_id
        encoder = Encoder(tokenizer)
        self.examples = [self._tokenize(row, encoder, max_length) for row in rows]
        self.stream = PromptStream(len(self.examples), seed)

    @staticmethod
    def _tokenize(row: dict, encoder: Encoder, max_length: int) -> tuple[list[int], list[int]]:
        """An SFT row as SFT saw it (rlhf.tokens.Encoder): the loss on the completion (the last turn)."""
        if "messages" in row:
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            prompt, completion = messages[:-1], messages[-1:]
        else:
            prompt, completion = row["prompt"], row["completion"]
        prompt_ids = encoder.prompt_ids(prompt)
        return fit_to_length(prompt_ids, encoder.response_ids(prompt, completion, prompt_ids), max_length)

    def next_batch(self, size: int, device: torch.device, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """This process's `size` rows of the next `size * world` of the stream.

        Every process advances the shared stream by the global batch and keeps its own slice (as the prompt
        stream does), so N processes train on N different batches and a resumed run continues the stream.
        """
        drawn = self.stream.take(size * world)
        examples = [self.examples[i] for i in drawn[rank * size : (rank + 1) * size]]
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((size, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((size, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((size, width), dtype=torch.long)
        for row, (ids, lab) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            attention_mask[row, : len(ids)] = 1
        return {
            "ptx_input_ids": input_ids.to(device),
            "ptx_attention_mask": attention_mask.to(device),
            "ptx_labels": labels.to(device),
        }
