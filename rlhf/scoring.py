"""Scoring sampled responses: sequence logprobs under a policy and scalar scores under a reward model.

Both take prompt and response token ids separately and build one left-padded batch, so the prompt sits
flush against the response (as it did at sampling time) and position ids follow the attention mask.
Logits are divided by the sampling temperature before the log-softmax, so a KL measured here is the KL
between the distributions the responses were actually sampled from.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

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
        logprobs = F.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
        token_logprobs = torch.gather(logprobs, 2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()
        mask = response_mask[:, 1:]
        out.extend(token_logprobs[i][mask[i]] for i in range(len(p)))
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
