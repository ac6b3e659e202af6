"""Pure tensor math of PPO for language models: masks, KL estimators, reward shaping, GAE, losses.

No models, no optimisers, no processes: every function maps tensors to tensors, so each one is tested
against hand-computed values and against tensors recorded from TRL 1.12's PPOTrainer.

Conventions (see shared/DESIGN.md §5). Tensors are [batch, response_len]. `mask` is 1 on the response
tokens that count (up to and including the first EOS; every token when there is no EOS) and 0 after.
The sequence-level score is placed on the *last token that counts* - the EOS token itself, or the last
generated token when the response was cut at the length budget. TRL instead adds it one position later
(`seq_len + 1`, a padding token, when that index exists) and trains the value head on that extra padding
position; with the score on the EOS token the policy loss, the value loss and GAE all share one mask and
no value is ever fitted at a padding position. GAE treats the end of the mask as terminal (V = 0 after
the last token), as TRL does for responses cut at the budget. Whitening uses the unbiased variance and
eps inside the rsqrt, like TRL, and writes 0 outside the mask. Losses take an optional `normalizer` (the
number of tokens the mean is over) so the trainer can average over a whole mini-batch across
micro-batches and processes instead of averaging per-micro-batch means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from rlhf.scoring import token_entropy, token_logprobs

KL_ESTIMATORS = ("k1", "k2", "k3")
LOG_RATIO_LIMIT = 20.0  # |log(p_new / p_old)| is clamped here before exp (log-probs are float32; exp(20) ~ 5e8)
AllReduceSum = Callable[[Tensor], Tensor]  # sums a tensor over processes (identity on one process)


# --------------------------------------------------------------------------------------------------
# Logits -> per-token quantities
# --------------------------------------------------------------------------------------------------


def logprobs_from_logits(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(token) under softmax(logits / temperature): [B, T, V], [B, T] -> [B, T] (float32).

    One logit gathered minus logsumexp, in blocks of rows, with a backward that keeps no float copy of
    the logits (see `rlhf.scoring.token_logprobs`).
    """
    return token_logprobs(logits, tokens, temperature)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / temperature) per position: [B, T, V] -> [B, T] (float32), in blocks."""
    return token_entropy(logits, temperature)


# --------------------------------------------------------------------------------------------------
# EOS truncation and masks
# --------------------------------------------------------------------------------------------------


def _is_stop(responses: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.isin(responses, torch.tensor(ids, dtype=responses.dtype, device=responses.device))


def response_mask_from_eos(responses: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """1 up to and including the first stop id (everywhere when there is none), 0 after: bool [B, R].

    `eos_token_id`: one id or every id that ends a response (the tokenizer's EOS, the generation config's,
    the chat turn terminator). Built from them, not from padding, because a policy can sample the pad id
    as an ordinary token.
    """
    is_eos = _is_stop(responses, eos_token_id).long()
    eos_seen_before = (torch.cumsum(is_eos, dim=-1) - is_eos) > 0
    return ~eos_seen_before


def truncate_after_eos(
    responses: Tensor, eos_token_id: int | Sequence[int], pad_token_id: int
) -> tuple[Tensor, Tensor]:
    """Replace every token after the first stop id by padding; returns (truncated responses, bool mask)."""
    mask = response_mask_from_eos(responses, eos_token_id)
    return responses.masked_fill(~mask, pad_token_id), mask


def contains_eos(responses: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """bool [B]: whether the response ended with a stop id within the budget."""
    return _is_stop(responses, eos_token_id).any(dim=-1)


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last position that counts in a prefix-shaped mask: [B, R] -> long [B]."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


# --------------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------------


def _identity(x: Tensor) -> Tensor:
    return x


def masked_sum(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Sum over the mask; `where`, not multiplication, so an inf/nan outside the mask cannot leak in."""
    masked = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """Mean of x over positions where mask is 1 (over all of them, or along `dim`)."""
    count = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim)
    return masked_sum(x, mask, dim) / count


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True, all_reduce_sum: Optional[AllReduceSum] = None) -> Tensor:
    """Variance of x over the mask (two passes; `all_reduce_sum` pools the sums over processes)."""
    mean, _ = _global_masked_mean(x, mask, all_reduce_sum or _identity)
    return _global_masked_var(x, mask, mean, unbiased, all_reduce_sum or _identity)


def _global_masked_mean(x: Tensor, mask: Tensor, reduce: AllReduceSum) -> tuple[Tensor, Tensor]:
    sums = reduce(torch.stack([masked_sum(x, mask), mask.to(x.dtype).sum()]))
    return sums[0] / sums[1], sums[1]


def _global_masked_var(x: Tensor, mask: Tensor, mean: Tensor, unbiased: bool, reduce: AllReduceSum) -> Tensor:
    sums = reduce(torch.stack([masked_sum((x - mean).square(), mask), mask.to(x.dtype).sum()]))
    variance = sums[0] / sums[1]
    if unbiased:
        if sums[1] < 2:
            raise ValueError("unbiased variance needs at least two unmasked values")
        variance = variance * sums[1] / (sums[1] - 1)
    return variance


def masked_whiten(
    x: Tensor,
    mask: Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    all_reduce_sum: Optional[AllReduceSum] = None,
) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the mask, 0 outside it; `shift_mean=False` keeps the mean.

    Pass `all_reduce_sum` to whiten with statistics pooled over every process, so a run's advantages do
    not depend on how its batch is split between processes.
    """
    reduce = all_reduce_sum or _identity
    mean, _ = _global_masked_mean(x, mask, reduce)
    var = _global_masked_var(x, mask, mean, True, reduce)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros((), dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------------------------------
# KL and reward shaping
# --------------------------------------------------------------------------------------------------


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || ref) from samples of the policy (Schulman's k1/k2/k3).

    k1 = log r, k2 = (log r)^2 / 2, k3 = (1/r - 1) + log r, with log r = logprobs - ref_logprobs.

    As estimates of the KL's *value*: k1 and k3 are unbiased (k1 can be negative per token, k3 never is);
    k2 is biased (never negative). Their *gradients* are another matter, and depend on how the term enters:
    - folded into the reward (`ppo.kl_estimator`, a score-function gradient E[k * grad log p]): only k1 gives
      the gradient of KL(policy || ref); k2 and k3 in the reward give a biased gradient;
    - as a loss differentiated directly (`ppo.kl_loss_coef`, see `kl_loss`): k1's expected gradient is 0,
      k2's is exactly the gradient of KL(policy || ref), and k3's is the gradient of the reverse
      KL(ref || policy) (what verl's `low_var_kl` and GRPO optimise: low variance, another divergence).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")


def kl_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    estimator: str = "k3",
    normalizer: Optional[float | Tensor] = None,
) -> Tensor:
    """A KL penalty as a loss term (verl's `use_kl_loss`): the token mean of `kl_penalty` between the
    current policy's log-probs (with gradient) and the reference's, over the mask (or summed and divided
    by `normalizer`). See `kl_penalty` for what each estimator's gradient is. The log ratio is clamped
    like the policy loss's, so exp() in k3 cannot overflow."""
    log_ratio = torch.where(
        mask.bool(), logprobs - ref_logprobs, torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    ).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    per_token = kl_penalty(log_ratio, torch.zeros_like(log_ratio), estimator)
    return _reduce_loss(per_token, mask, normalizer)


def explained_variance(
    values: Tensor, returns: Tensor, mask: Tensor, all_reduce_sum: Optional[AllReduceSum] = None
) -> Tensor:
    """1 - Var[returns - values] / Var[returns] over the mask (pooled over processes): 1 for a perfect
    critic, 0 for one that predicts only the mean, negative for one worse than that (nan if the returns
    are constant). The critic's health at a glance, as verl's `critic/vf_explained_var` and NeMo-RL log."""
    var_returns = masked_var(returns, mask, unbiased=False, all_reduce_sum=all_reduce_sum)
    var_residual = masked_var(returns - values, mask, unbiased=False, all_reduce_sum=all_reduce_sum)
    if var_returns <= 0:
        return torch.full((), float("nan"), dtype=returns.dtype, device=returns.device)
    return 1.0 - var_residual / var_returns


def normalize_scores(
    raw_scores: Tensor,
    mean: Optional[float] = None,
    std: Optional[float] = None,
    clip: Optional[float] = None,
) -> Tensor:
    """(score - mean) / std with either step skipped when None, then clipped to [-clip, clip]."""
    scores = raw_scores
    if mean is not None:
        scores = scores - mean
    if std is not None:
        scores = scores / std
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores


def apply_missing_eos_penalty(scores: Tensor, has_eos: Tensor, penalty: Optional[float]) -> Tensor:
    """Subtract `penalty` from the score of every response that never emitted EOS."""
    if penalty is None:
        return scores
    return scores - penalty * (~has_eos).to(scores.dtype)


def shape_rewards(
    scores: Tensor,
    kl: Tensor,
    kl_coef: float | Tensor,
    mask: Tensor,
    score_index: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Per-token rewards: -kl_coef * kl everywhere the mask is 1, plus the score at `score_index`.

    `score_index` defaults to the last token that counts (this project's convention). Returns
    (rewards, non_score_rewards), both 0 outside the mask.
    """
    non_score_rewards = -kl_coef * kl * mask.to(kl.dtype)
    if score_index is None:
        score_index = last_token_index(mask)
    rewards = non_score_rewards.clone()
    rewards.scatter_add_(1, score_index.unsqueeze(1), scores.unsqueeze(1).to(rewards.dtype))
    return rewards, non_score_rewards


# --------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------


def compute_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the response; returns (advantages, returns), 0 off the mask.

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where V and A
    after the last masked position are 0 (the episode ends there). returns = advantages + values.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantage
    returns = (advantages + values) * mask
    return advantages, returns


def group_advantages(sequence_rewards: Tensor, group_size: int, estimator: str, eps: float = 1e-6) -> Tensor:
    """Critic-free advantages from several responses to one prompt: [B] -> [B], B = prompts x group_size,
    each prompt's responses in consecutive rows.

    rloo (Ahmadian et al. 2024, REINFORCE leave-one-out): A_i = R_i - mean of the *other* responses' R in
    the group, an unbiased baseline. grpo (Shao et al. 2024): A_i = (R_i - group mean) / (group std + eps),
    the std unbiased, as DeepSeekMath and TRL's GRPOTrainer take it. A group whose rewards are all equal
    gets advantage 0 under both: there is nothing to learn from it.
    """
    if group_size < 2:
        raise ValueError(f"{estimator} needs at least two responses per prompt, got {group_size}")
    if sequence_rewards.shape[0] % group_size:
        raise ValueError(f"{sequence_rewards.shape[0]} rewards do not split into groups of {group_size}")
    grouped = sequence_rewards.reshape(-1, group_size)
    if estimator == "rloo":
        others_mean = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
        return (grouped - others_mean).reshape(-1)
    if estimator == "grpo":
        centred = grouped - grouped.mean(1, keepdim=True)
        return (centred / (grouped.std(1, keepdim=True) + eps)).reshape(-1)
    raise ValueError(f"unknown group estimator {estimator!r}; expected rloo or grpo")


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


@dataclass
class PolicyLossOutput:
    loss: Tensor  # clipped surrogate, averaged over the mask (or divided by `normalizer`)
    clipfrac: Tensor  # share of tokens where the clipped branch was taken
    approx_kl: Tensor  # mean of (log ratio)^2 / 2 between the new and the rollout policy
    ratio_mean: Tensor
    ratio_var: Tensor
    ratio: Tensor  # per token [B, T] (1 off the mask)
    log_ratio: Tensor  # per token [B, T] (0 off the mask)
    clipped: Tensor  # per token bool [B, T]: the clipped branch was taken


@dataclass
class ValueLossOutput:
    loss: Tensor  # 0.5 * clipped squared error, averaged over the mask (or divided by `normalizer`)
    clipfrac: Tensor  # share of tokens where the clipped branch was taken
    values_clipped: Tensor  # [B, T]
    clipped: Tensor  # per token bool [B, T]: the clipped branch was taken


def _reduce_loss(per_token: Tensor, mask: Tensor, normalizer: Optional[float | Tensor]) -> Tensor:
    if normalizer is None:
        return masked_mean(per_token, mask)
    return masked_sum(per_token, mask) / normalizer


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cliprange: float = 0.2,
    normalizer: Optional[float | Tensor] = None,
) -> PolicyLossOutput:
    """PPO's clipped surrogate: mean of max(-A * r, -A * clip(r, 1 - eps, 1 + eps)), r = p / p_old.

    The log ratio is forced to 0 off the mask: logits at padding are arbitrary and exp() of them could
    overflow into a nan that no mask removes from a gradient. On the mask it is clamped to +-20.
    """
    log_ratio = torch.where(
        mask.bool(), logprobs - old_logprobs, torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    )
    # Clamped before exp (as verl does): exp(100) is inf in float32, and inf * 0 is nan, so one wild token
    # would poison the gradient even of a micro-batch that `ratio_threshold` drops by multiplying its loss by 0.
    log_ratio = log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = _reduce_loss(torch.max(unclipped, clipped), mask, normalizer)
    with torch.no_grad():
        ratio_mean = masked_mean(ratio, mask)
        was_clipped = clipped > unclipped
        return PolicyLossOutput(
            loss=loss,
            clipfrac=masked_mean(was_clipped.float(), mask),
            approx_kl=masked_mean(0.5 * log_ratio.square(), mask),
            ratio_mean=ratio_mean,
            ratio_var=masked_mean((ratio - ratio_mean).square(), mask),
            ratio=ratio.detach(),
            log_ratio=log_ratio.detach(),
            clipped=was_clipped,
        )


def unlikelihood_loss(logprobs: Tensor, targets: Tensor, normalizer: Optional[float | Tensor] = None) -> Tensor:
    """Token-level unlikelihood (Welleck et al. 2019): the sum of -log(1 - p) over the `targets` tokens
    (bool [B, R]), p = exp(logprobs), divided by `normalizer` (default: the number of targets). It pushes p of
    those tokens down, harder the likelier they are; 1 - p is floored at 1e-6 so p = 1 stays finite."""
    one_minus_p = (-torch.expm1(logprobs)).clamp_min(1e-6)
    per_token = -torch.log(one_minus_p)
    targets = targets.to(per_token.dtype)
    return (per_token * targets).sum() / (normalizer if normalizer is not None else targets.sum().clamp_min(1.0))


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    cliprange_value: float = 0.2,
    normalizer: Optional[float | Tensor] = None,
) -> ValueLossOutput:
    """0.5 * mean of max((V - R)^2, (clip(V, V_old +- eps) - R)^2): the value cannot jump far in one update."""
    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped = (values - returns).square()
    clipped = (values_clipped - returns).square()
    loss = 0.5 * _reduce_loss(torch.max(unclipped, clipped), mask, normalizer)
    with torch.no_grad():
        was_clipped = clipped > unclipped
        clipfrac = masked_mean(was_clipped.float(), mask)
    return ValueLossOutput(loss=loss, clipfrac=clipfrac, values_clipped=values_clipped.detach(), clipped=was_clipped)
