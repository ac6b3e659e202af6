"""Batched sampling from a causal LM, keeping token ids (scoring and KL need ids, not re-tokenised text).

Prompts are left-padded so every row's response starts at the same column and `generate` can use its
KV cache for the whole batch. A response ends at its first EOS (kept in the ids, not in the text), and
every batch is seeded from (seed, batch index) so two policies sampled with the same seed see the same
random stream for the same prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass
class Sample:
    prompt: str
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including the first EOS (when there is one)
    text: str  # the decoded response without the EOS
    ended: bool  # whether the response finished with EOS inside the length budget


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 32,
    max_prompt_length: Optional[int] = None,
    progress: bool = False,
) -> list[Sample]:
    """One sampled response per prompt (repeat a prompt to get K of them)."""
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # keep the end of a long prompt, where the question is
    device = next(model.parameters()).device
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    samples: list[Sample] = []
    batches = range(0, len(prompts), batch_size)
    for batch_index, start in enumerate(tqdm(batches, desc="sampling", disable=not progress)):
        batch = list(prompts[start:start + batch_size])
        encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False,
                            truncation=max_prompt_length is not None, max_length=max_prompt_length)
        input_ids, attention_mask = encoded.input_ids.to(device), encoded.attention_mask.to(device)
        generator_seed = seed * 1_000_003 + batch_index
        torch.manual_seed(generator_seed)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p,
            top_k=top_k if top_k > 0 else None,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
        )
        new_tokens = output[:, input_ids.shape[1]:].cpu()
        for row, prompt in enumerate(batch):
            tokens = new_tokens[row].tolist()
            ended = eos_id in tokens
            response_ids = tokens[: tokens.index(eos_id) + 1] if ended else [t for t in tokens if t != pad_id]
            text_ids = response_ids[:-1] if ended else response_ids
            prompt_ids = input_ids[row][attention_mask[row].bool()].tolist()
            samples.append(Sample(prompt, prompt_ids, response_ids, tokenizer.decode(text_ids, skip_special_tokens=True), ended))
    return samples
