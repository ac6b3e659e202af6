"""Scoring sampled responses: sequence logprobs under a policy and scalar scores under a reward model.

Both take prompt and response token ids separately and build one left-padded batch, so the prompt sits
flush against the response (as it did at sampling time) and position ids follow the attention mask.
Logits are divided by the sampling temperature before the log-softmax, so a KL measured here is the KL
between the distributions the responses were actually sampled from.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rlhf.tokens import left_pad, position_ids_from_mask


def left_pad_concat(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate prompt+response per row, left-pad to one length; also return the response mask."""
    input_ids, attention_mask = left_pad([list(p) + list(r) for p, r in zip(prompts, responses)], pad_id)
    response_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    for i, response in enumerate(responses):
        if len(response):
            response_mask[i, input_ids.shape[1] - len(response) :] = True
    return input_ids, attention_mask, response_mask


@torch.no_grad()
def response_logprobs(
    model, prompts, responses, pad_id: int, temperature: float = 1.0, batch_size: int = 32
) -> list[torch.Tensor]:
    """Per-token logprobs of each response given its prompt, from temperature-scaled logits."""
    out: list[torch.Tensor] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        p, r = prompts[start : start + batch_size], responses[start : start + batch_size]
        input_ids, attention_mask, response_mask = left_pad_concat(p, r, pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).logits
        logprobs = token_logprobs(logits[:, :-1], input_ids[:, 1:], temperature).cpu()
        mask = response_mask[:, 1:]
        out.extend(logprobs[i][mask[i]] for i in range(len(p)))
    return out


@torch.no_grad()
def reward_scores(reward_model, prompts, responses, pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """The reward model's scalar for each prompt+response, read at the last real token."""
    scores = []
    device = next(reward_model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        input_ids, attention_mask, _ = left_pad_concat(
            prompts[start : start + batch_size], responses[start : start + batch_size], pad_id
        )
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = reward_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).logits
        scores.append(logits[:, 0].float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


# --------------------------------------------------------------------------------------------------
# Memory-frugal per-token log-probs and entropy over a large vocabulary
# --------------------------------------------------------------------------------------------------

# Float32 elements of vocabulary-wide work per block (16 MB): bounds the transient copies (float
# cast, temperature division, softmax) to one chunk instead of the whole [rows, vocab] logits.
CHUNK_ELEMENTS = 4 * 1024 * 1024


def _blocks(batch: int, length: int, vocab: int, chunk_elements: int) -> Iterator[tuple[slice, slice]]:
    """(rows, positions) blocks of a [batch, length, vocab] tensor holding about `chunk_elements` elements."""
    per_block = max(1, chunk_elements // max(vocab, 1))  # positions per block
    if per_block >= length:
        rows = max(1, per_block // max(length, 1))
        for start in range(0, batch, rows):
            yield slice(start, start + rows), slice(None)
    else:
        for row in range(batch):
            for start in range(0, length, per_block):
                yield slice(row, row + 1), slice(start, start + per_block)


def _as_3d(logits: Tensor) -> Tensor:
    """[..., T, V] as [B, T, V] (a view for slices such as logits[:, -R-1:-1]: no copy)."""
    if logits.dim() == 2:
        return logits.unsqueeze(0)
    return logits if logits.dim() == 3 else logits.flatten(0, -3)


class _TokenLogprobs(torch.autograd.Function):
    """log softmax(logits / T)[token] as logit/T - logsumexp(logits/T), in blocks of rows.

    Autograd through the plain expression keeps a float32, temperature-divided copy of the whole logits
    for the backward (and the forward builds two more). This saves only the logits as they came (bf16
    under mixed precision) and the per-position logsumexp, and rebuilds softmax one block at a time in
    the backward: d/dlogits = (onehot(token) - softmax) * grad / T.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float, chunk_elements: int) -> Tensor:
        batch, length, vocab = logits.shape
        picked = torch.empty(batch, length, dtype=torch.float32, device=logits.device)
        lse = torch.empty(batch, length, dtype=torch.float32, device=logits.device)
        for rows, positions in _blocks(batch, length, vocab, chunk_elements):
            block = logits[rows, positions].to(torch.float32, copy=True)  # a copy: written in place below
            if temperature != 1.0:
                block.div_(temperature)
            lse[rows, positions] = torch.logsumexp(block, dim=-1)
            picked[rows, positions] = block.gather(-1, tokens[rows, positions].unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, tokens, lse)
        ctx.temperature, ctx.chunk_elements = temperature, chunk_elements
        return picked - lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        logits, tokens, lse = ctx.saved_tensors
        temperature = ctx.temperature
        batch, length, vocab = logits.shape
        grad_logits = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for rows, positions in _blocks(batch, length, vocab, ctx.chunk_elements):
            grad = grad_output[rows, positions].float().unsqueeze(-1) / temperature
            block = logits[rows, positions].to(torch.float32, copy=True)
            if temperature != 1.0:
                block.div_(temperature)
            block.sub_(lse[rows, positions].unsqueeze(-1)).exp_()  # softmax
            block.mul_(-grad).scatter_add_(-1, tokens[rows, positions].unsqueeze(-1), grad)
            grad_logits[rows, positions] = block
        return grad_logits, None, None, None


def token_logprobs(
    logits: Tensor, tokens: Tensor, temperature: float = 1.0, chunk_elements: int = CHUNK_ELEMENTS
) -> Tensor:
    """log p(token) under softmax(logits / temperature): [..., T, V], [..., T] -> [..., T] float32.

    Equal to `log_softmax(logits.float() / temperature).gather(tokens)` and to its gradient, without a
    full-vocabulary float copy (at a 150k vocabulary one such copy is 0.6 GB per 1k positions) and
    without copying a sliced `logits[:, a:b]` first.
    """
    logits3 = _as_3d(logits)
    flat = _TokenLogprobs.apply(logits3, tokens.reshape(logits3.shape[:-1]), float(temperature), chunk_elements)
    return flat.reshape(tokens.shape)


def token_entropy(logits: Tensor, temperature: float = 1.0, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """Entropy of softmax(logits / temperature) per position: [..., V] -> [...] float32, in blocks of rows.

    Differentiable (autograd then keeps each block's float copies); call it under `torch.no_grad()` when
    the entropy is only logged, and not at all when it is neither logged nor used.
    """
    logits3 = _as_3d(logits)
    batch, length, vocab = logits3.shape
    entropy = torch.empty(batch, length, dtype=torch.float32, device=logits.device)
    parts = []
    for rows, positions in _blocks(batch, length, vocab, chunk_elements):
        log_probs = torch.log_softmax(logits3[rows, positions].float() / temperature, dim=-1)
        block = -(log_probs.exp() * log_probs).sum(-1)
        if torch.is_grad_enabled() and block.requires_grad:
            parts.append(block)
        else:
            entropy[rows, positions] = block
    if parts:  # differentiable: blocks in order (rows first, then positions) joined without in-place writes
        entropy = torch.cat([part.reshape(-1) for part in parts]).reshape(batch, length)
    return entropy.reshape(logits.shape[:-1])
