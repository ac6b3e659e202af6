"""ppo/algorithm.py and ppo/kl_control.py against hand-computed values and TRL 1.12's recorded tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ppo.algorithm import (
    apply_missing_eos_penalty,
    compute_gae,
    contains_eos,
    entropy_from_logits,
    explained_variance,
    kl_loss,
    kl_penalty,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    normalize_scores,
    policy_loss,
    response_mask_from_eos,
    shape_rewards,
    truncate_after_eos,
    unlikelihood_loss,
    value_loss,
)
from ppo.kl_control import AdaptiveKLController, FixedKLController

# Recorded from TRL 1.12's PPOTrainer (provenance and TRL's conventions: the README beside it); committed so
# a fresh clone tests against it too.
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "trl_1.12_reference" / "trl_1.12_ppo_tiny.safetensors"


# --------------------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------------------


def test_logprobs_and_entropy_from_logits():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # softmax = [1/4, 3/4]
    tokens = torch.tensor([[1]])
    assert logprobs_from_logits(logits, tokens).item() == pytest.approx(math.log(0.75))  # -0.28768
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.56234
    assert entropy_from_logits(logits).item() == pytest.approx(0.562335, abs=1e-6)
    random_logits = torch.randn(2, 5, 11)
    random_tokens = torch.randint(0, 11, (2, 5))
    expected = torch.log_softmax(random_logits, -1).gather(-1, random_tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(random_logits, random_tokens), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_elements", [10_000, 40, 5])  # one block; blocks of rows; blocks of positions
def test_blockwise_logprobs_and_entropy_equal_log_softmax_with_their_gradients(chunk_elements, dtype):
    from rlhf.scoring import token_entropy, token_logprobs

    generator = torch.Generator().manual_seed(0)
    full = torch.randn(3, 9, 11, dtype=dtype, generator=generator).requires_grad_()
    untouched = full.detach().clone()
    logits = full[:, 1:-1]  # a strided slice, as the trainer passes it
    tokens = torch.randint(0, 11, (3, 7), generator=generator)
    weights = torch.randn(3, 7, dtype=torch.float64, generator=generator)
    log_probs = torch.log_softmax(logits / 0.7, dim=-1)
    expected = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    expected_entropy = -(log_probs.exp() * log_probs).sum(-1)
    for got, want in (
        (token_logprobs(logits, tokens, 0.7, chunk_elements), expected),
        (token_entropy(logits, 0.7, chunk_elements), expected_entropy),
    ):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want.double(), rtol=0, atol=2e-6)
        (grad_got,) = torch.autograd.grad((got.double() * weights).sum(), full)
        (grad_want,) = torch.autograd.grad((want.double() * weights).sum(), full, retain_graph=True)
        torch.testing.assert_close(grad_got.double(), grad_want.double(), rtol=0, atol=2e-6)
    assert torch.equal(full.detach(), untouched)  # the logits are read, never written (fp32 .float() is no copy)


def test_logprob_backward_keeps_no_float_copy_of_the_logits():
    """The graph saves the bf16 logits as they came, never a float32 or temperature-divided copy of them."""
    logits = torch.randn(4, 16, 1000).bfloat16().requires_grad_()
    tokens = torch.randint(0, 1000, (4, 16))
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        logprobs = logprobs_from_logits(logits, tokens, 0.7)
        with torch.no_grad():
            entropy_from_logits(logits, 0.7)  # logged only: builds no graph
    vocabulary_wide = [t for t in saved if t.numel() >= logits.numel()]
    assert [(t.dtype, t.data_ptr()) for t in vocabulary_wide] == [(torch.bfloat16, logits.data_ptr())]
    logprobs.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_truncate_after_eos_and_masks_on_hand_made_sequences():
    eos, pad = 2, 0
    responses = torch.tensor(
        [
            [5, 2, 7, 2],  # EOS at 1: keep [5, 2], pad the rest
            [5, 6, 7, 8],  # no EOS: everything counts
            [2, 9, 9, 9],  # EOS first: only the EOS counts
            [5, 0, 6, 2],  # the pad id sampled mid-response is an ordinary token and counts
        ]
    )
    truncated, mask = truncate_after_eos(responses, eos, pad)
    assert truncated.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0], [5, 0, 6, 2]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert torch.equal(response_mask_from_eos(responses, eos), mask)
    assert last_token_index(mask).tolist() == [1, 3, 0, 3]
    assert contains_eos(truncated, eos).tolist() == [True, False, True, True]


def test_position_ids_from_left_padded_attention_mask():
    from rlhf.tokens import position_ids_from_mask

    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(attention_mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


def test_truncation_stops_at_any_of_several_stop_ids():
    # 7 = the turn terminator (<|eot_id|>), 2 = the tokenizer EOS: a response ends at whichever comes first,
    # not only at the tokenizer's EOS (a chat model would run on past its turn otherwise).
    responses = torch.tensor([[5, 7, 6, 2], [5, 6, 2, 7], [5, 6, 6, 6]])
    truncated, mask = truncate_after_eos(responses, [2, 7], pad_token_id=0)
    assert truncated.tolist() == [[5, 7, 0, 0], [5, 6, 2, 0], [5, 6, 6, 6]]
    assert mask.tolist() == [[True, True, False, False], [True, True, True, False], [True] * 4]
    assert contains_eos(truncated, [2, 7]).tolist() == [True, True, False]
    assert contains_eos(responses, 2).tolist() == [True, True, False]


def test_kl_estimators_hand_computed():
    logprobs = torch.tensor([math.log(0.5)])
    ref_logprobs = torch.tensor([math.log(0.25)])  # log r = ln 2 = 0.693147
    assert kl_penalty(logprobs, ref_logprobs, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logprobs, ref_logprobs, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)  # 0.240227
    assert kl_penalty(logprobs, ref_logprobs, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))  # 0.193147
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(logprobs, ref_logprobs, "k4")


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_is_zero_when_policy_equals_reference(estimator):
    logprobs = torch.log_softmax(torch.randn(3, 7, 13), -1)[..., 0]
    assert torch.count_nonzero(kl_penalty(logprobs, logprobs.clone(), estimator)) == 0


def test_k2_k3_never_negative_and_k1_k3_unbiased():
    torch.manual_seed(0)
    policy_logits, ref_logits = torch.randn(50), torch.randn(50)
    policy_logp, ref_logp = torch.log_softmax(policy_logits, -1), torch.log_softmax(ref_logits, -1)
    exact_kl = (policy_logp.exp() * (policy_logp - ref_logp)).sum()
    samples = torch.multinomial(policy_logp.exp(), 200_000, replacement=True)
    lp, rlp = policy_logp[samples], ref_logp[samples]
    assert (kl_penalty(lp, rlp, "k2") >= 0).all() and (kl_penalty(lp, rlp, "k3") >= 0).all()
    assert kl_penalty(lp, rlp, "k1").mean().item() == pytest.approx(exact_kl.item(), rel=0.03)
    assert kl_penalty(lp, rlp, "k3").mean().item() == pytest.approx(exact_kl.item(), rel=0.03)


def test_masked_mean_var_whiten_hand_computed():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_var(x, mask).item() == pytest.approx(1.0)  # ((-1)^2 + 0 + 1^2) / (3 - 1)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)
    torch.testing.assert_close(masked_whiten(x, mask, eps=0.0), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean=False, eps=0.0), torch.tensor([[1.0, 2.0, 3.0, 0.0]]))


def test_compute_gae_hand_computed():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    mask = torch.ones(1, 3)
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=2: delta = 1 + 0 - .5 = .5 -> A = .5 ; t=1: delta = 0 -> A = .5*.5 = .25 ; t=0: A = .5*.25 = .125
    torch.testing.assert_close(advantages, torch.tensor([[0.125, 0.25, 0.5]]))
    torch.testing.assert_close(returns, torch.tensor([[0.625, 0.75, 1.0]]))


def test_compute_gae_stops_at_mask_end():
    rewards = torch.tensor([[0.0, 1.0, 5.0]])  # the 5.0 and the value 9.0 sit after the end and must not leak
    values = torch.tensor([[0.5, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 0]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=1: delta = 1 + 0 (terminal) - .5 = .5 -> A = .5 ; t=0: delta = 0 + .5 - .5 = 0 -> A = .5 * .5 = .25
    torch.testing.assert_close(advantages, torch.tensor([[0.25, 0.5, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.75, 1.0, 0.0]]))


def test_compute_gae_with_lam_one_is_monte_carlo_return_minus_value():
    torch.manual_seed(0)
    rewards, values = torch.randn(4, 6), torch.randn(4, 6)
    advantages, returns = compute_gae(rewards, values, torch.ones(4, 6), gamma=1.0, lam=1.0)
    reward_to_go = rewards.flip(-1).cumsum(-1).flip(-1)
    torch.testing.assert_close(returns, reward_to_go)
    torch.testing.assert_close(advantages, reward_to_go - values)


def test_shape_rewards_places_score_on_last_counted_token():
    scores = torch.tensor([2.0, -1.0])
    kl = torch.full((2, 3), 0.5)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rewards, non_score = shape_rewards(scores, kl, 0.1, mask)
    # -0.1 * 0.5 = -0.05 on counted tokens; row 0 ends at index 1 (its EOS), row 1 at index 2
    torch.testing.assert_close(non_score, torch.tensor([[-0.05, -0.05, 0.0], [-0.05, -0.05, -0.05]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 1.95, 0.0], [-0.05, -0.05, -1.05]]))


def test_score_normalisation_and_missing_eos_penalty():
    raw = torch.tensor([3.0, -1.0, 9.0])
    normalised = normalize_scores(raw, mean=1.0, std=2.0, clip=3.0)
    torch.testing.assert_close(normalised, torch.tensor([1.0, -1.0, 3.0]))  # (9-1)/2 = 4 clipped to 3
    penalised = apply_missing_eos_penalty(normalised, torch.tensor([True, False, True]), 1.0)
    torch.testing.assert_close(penalised, torch.tensor([1.0, -2.0, 3.0]))
    assert apply_missing_eos_penalty(normalised, torch.tensor([False] * 3), None) is normalised


def test_policy_loss_hand_computed():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5]]))
    advantages = torch.tensor([[1.0, 1.0, -1.0]])
    out = policy_loss(new, old, advantages, torch.ones(1, 3), cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5; token 2: max(0.5, 0.8) = 0.8 (clipped)
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3)
    assert out.clipfrac.item() == pytest.approx(2 / 3)
    assert out.ratio_mean.item() == pytest.approx(2.5 / 3)
    assert out.ratio_var.item() == pytest.approx(((1.5 - 2.5 / 3) ** 2 + 2 * (0.5 - 2.5 / 3) ** 2) / 3)
    assert out.approx_kl.item() == pytest.approx((math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 6)


def test_value_loss_hand_computed():
    values = torch.tensor([[1.0, 0.0]])
    old_values = torch.zeros(1, 2)
    returns = torch.tensor([[1.0, -0.5]])
    out = value_loss(values, old_values, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: max((1-1)^2, (0.2-1)^2) = 0.64 (clipped); token 1: max(0.25, 0.25) = 0.25 -> 0.5 * 0.445
    assert out.loss.item() == pytest.approx(0.2225)
    assert out.clipfrac.item() == pytest.approx(0.5)
    torch.testing.assert_close(out.values_clipped, torch.tensor([[0.2, 0.0]]))


def test_policy_loss_ignores_overflowing_logprobs_off_the_mask():
    new = torch.tensor([[0.1, 200.0]], requires_grad=True)  # exp(200) overflows float32: padding garbage
    old = torch.zeros(1, 2)
    out = policy_loss(new, old, torch.tensor([[1.0, 0.0]]), torch.tensor([[1, 0]]))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-math.exp(0.1)) and torch.isfinite(new.grad).all()
    assert out.ratio[0, 1] == 1.0


def test_losses_with_global_normalizer_sum_over_micro_batches_to_batch_mean():
    torch.manual_seed(0)
    new, old, adv = torch.randn(4, 5) * 0.1, torch.randn(4, 5) * 0.1, torch.randn(4, 5)
    mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [1] * 3 + [0] * 2, [1] * 5])
    whole = policy_loss(new, old, adv, mask).loss
    n_tokens = mask.sum()
    split = sum(
        policy_loss(new[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], normalizer=n_tokens).loss
        for i in (0, 2)
    )
    torch.testing.assert_close(split, whole)
    whole_v = value_loss(new, old, adv, mask).loss
    split_v = sum(
        value_loss(new[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], normalizer=n_tokens).loss
        for i in (0, 2)
    )
    torch.testing.assert_close(split_v, whole_v)


def test_adaptive_kl_controller_moves_coefficient_toward_target():
    above = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    above.update(current_kl=12.0, n_steps=100)  # error clipped to +0.2 -> 0.1 * (1 + 0.2 * 0.1) = 0.102
    assert above.value == pytest.approx(0.102)
    below = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    below.update(current_kl=4.5, n_steps=100)  # error -0.25 clipped to -0.2 -> 0.1 * 0.98 = 0.098
    assert below.value == pytest.approx(0.098)
    near = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    near.update(current_kl=6.6, n_steps=100)  # error 0.1 -> 0.1 * 1.01 = 0.101
    assert near.value == pytest.approx(0.101)
    resumed = AdaptiveKLController(0.5, target=1.0, horizon=1)
    resumed.load_state_dict(above.state_dict())
    assert (resumed.value, resumed.target, resumed.horizon) == (above.value, 6.0, 1000)
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 100) == 0.05


# --------------------------------------------------------------------------------------------------
# TRL 1.12 reference tensors (16 rollouts, 32 micro-batches)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trl():
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(REFERENCE), "pt") as handle:
        meta = handle.metadata()
    return load_file(str(REFERENCE)), meta


def _rollout(tensors, index):
    prefix = f"rollout.{index:02d}."
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _micro(tensors, index):
    prefix = f"micro.{index:02d}."
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def test_trl_eos_truncation_and_kl_and_rewards(trl):
    tensors, meta = trl
    eos, pad, kl_coef = int(meta["eos_token_id"]), int(meta["pad_token_id"]), float(meta["kl_coef"])
    for n in range(int(meta["rollouts"])):
        r = _rollout(tensors, n)
        truncated, _ = truncate_after_eos(r["responses"], eos, pad)
        assert torch.equal(truncated, r["postprocessed_responses"])
        assert torch.equal(contains_eos(truncated, eos), r["contain_eos_token"].bool())
        kl = kl_penalty(r["logprobs"], r["ref_logprobs"], "k1")
        torch.testing.assert_close(kl, r["kl"], rtol=0, atol=0)
        scores = apply_missing_eos_penalty(
            r["raw_scores"], r["contain_eos_token"].bool(), float(meta["missing_eos_penalty"])
        )
        torch.testing.assert_close(scores, r["scores"])
        # TRL's placement (seq_len + 1) passed explicitly reproduces its rewards exactly.
        rewards, non_score = shape_rewards(scores, kl, kl_coef, torch.ones_like(kl), score_index=r["actual_end"])
        torch.testing.assert_close(non_score, r["non_score_reward"], rtol=0, atol=0)
        torch.testing.assert_close(rewards, r["rewards"], rtol=0, atol=0)
        # Our default places the score on the last counted token (seq_len). It coincides with TRL's where
        # seq_len + 1 falls off the end (responses cut at the budget) and sits one token earlier otherwise.
        ours, _ = shape_rewards(scores, kl, kl_coef, ~r["padding_mask"].bool())
        same_place = r["actual_end"] == r["sequence_lengths"]
        torch.testing.assert_close(ours[same_place], r["rewards"][same_place], rtol=0, atol=0)
        rows = torch.nonzero(~same_place).flatten()
        for row in rows.tolist():
            seq_len = r["sequence_lengths"][row]
            assert ours[row, seq_len] == r["rewards"][row, seq_len] + scores[row]
            assert ours[row, seq_len + 1] == 0 and r["rewards"][row, seq_len + 1] == scores[row]


def test_trl_response_mask_differs_only_where_pad_was_sampled(trl):
    """TRL finds the end at the first pad id; we find it at the first EOS (a sampled pad id is a real token)."""
    tensors, meta = trl
    eos, pad = int(meta["eos_token_id"]), int(meta["pad_token_id"])
    differing_rows = 0
    for n in range(int(meta["rollouts"])):
        r = _rollout(tensors, n)
        ours = response_mask_from_eos(r["responses"], eos)
        trl_mask = ~r["padding_mask"].bool()
        pad_before_eos = ((r["responses"] == pad) & ours).any(-1)
        assert torch.equal(ours[~pad_before_eos], trl_mask[~pad_before_eos])
        differing_rows += int(pad_before_eos.sum())
    assert differing_rows > 0  # the recorded run did sample the pad id, so this check has teeth


def test_trl_gae_and_returns(trl):
    tensors, meta = trl
    for n in range(int(meta["rollouts"])):
        r = _rollout(tensors, n)
        # TRL's value mask is ~padding_mask_p1 (one position past the end, where it puts the score).
        mask = ~r["padding_mask_p1"].bool()
        advantages, returns = compute_gae(r["rewards"], r["values"], mask, float(meta["gamma"]), float(meta["lam"]))
        torch.testing.assert_close(advantages, r["advantages"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(returns, r["returns"], rtol=1e-5, atol=1e-6)


def test_trl_advantage_whitening(trl):
    tensors, meta = trl
    for n in range(int(meta["rollouts"])):
        r = _rollout(tensors, n)
        mask = ~r["padding_mask"].bool()
        whitened = masked_whiten(r["advantages"], mask)
        # TRL's raw whitened tensor is not yet zeroed at padding; ours is, so compare where the mask is 1.
        torch.testing.assert_close(whitened[mask], r["advantages_whitened_raw"][mask], rtol=1e-5, atol=1e-5)
        assert torch.count_nonzero(whitened[~mask]) == 0
    for m in range(int(meta["micro_batches"])):
        mb = _micro(tensors, m)
        r = _rollout(tensors, int(mb["update"]) - 1)
        expected = masked_whiten(r["advantages"], ~r["padding_mask"].bool())[mb["micro_batch_inds"]]
        torch.testing.assert_close(expected, mb["mb_advantage"], rtol=1e-5, atol=1e-5)


def test_trl_clipped_policy_and_value_losses(trl):
    """The recorded run never reaches a clip boundary (ratios within 1 +- 7e-4, values move < 0.002), so
    this pins the unclipped branch and the masking; the clipped branches are pinned by the hand-computed
    tests above."""
    tensors, meta = trl
    cliprange, cliprange_value, vf_coef = (
        float(meta["cliprange"]),
        float(meta["cliprange_value"]),
        float(meta["vf_coef"]),
    )
    for m in range(int(meta["micro_batches"])):
        mb = _micro(tensors, m)
        r = _rollout(tensors, int(mb["update"]) - 1)
        inds = mb["micro_batch_inds"]
        pg = policy_loss(
            mb["new_logprobs"], mb["mb_logprobs"], mb["mb_advantage"], ~r["padding_mask"][inds].bool(), cliprange
        )
        vf = value_loss(
            mb["vpred"], mb["mb_values"], mb["mb_return"], ~r["padding_mask_p1"][inds].bool(), cliprange_value
        )
        torch.testing.assert_close(pg.ratio, mb["ratio"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(pg.loss, mb["pg_loss"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(vf.values_clipped, mb["vpredclipped"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(vf.loss, mb["vf_loss"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(pg.loss + vf_coef * vf.loss, mb["loss"], rtol=1e-5, atol=1e-7)


def test_explained_variance_hand_computed():
    values = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    returns = torch.tensor([[1.0, 2.0, 5.0, -7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the last column is outside the response
    # residual [0, 0, 2]: variance 8/9; returns [1, 2, 5]: variance 26/9 -> 1 - 8/26 = 9/13
    assert float(explained_variance(values, returns, mask)) == pytest.approx(9 / 13)
    assert float(explained_variance(returns, returns, mask)) == pytest.approx(1.0)
    mean_only = torch.full_like(returns, 8 / 3)
    assert float(explained_variance(mean_only, returns, mask)) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(float(explained_variance(values, torch.ones_like(returns), mask)))


@pytest.mark.parametrize(
    "estimator, loss, grad",
    [
        # log r = logprobs - ref = [0.5, -1.0]; the token mean over 2 tokens halves each gradient
        ("k1", (0.5 - 1.0) / 2, [0.5, 0.5]),  # d(log r)/dlogp = 1
        ("k2", (0.125 + 0.5) / 2, [0.25, -0.5]),  # d(log r^2 / 2) = log r
        # k3 = e^-lr - 1 + lr: (0.10653066 + 0.71828183) / 2; d/dlogp = 1 - e^-lr = [0.39346934, -1.71828183]
        ("k3", (0.10653066 + 0.71828183) / 2, [0.19673467, -0.85914091]),
    ],
)
def test_kl_loss_term_gradient_hand_computed(estimator, loss, grad):
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, 50.0]])  # the third token is off the mask (its huge ratio must not leak)
    mask = torch.tensor([[1, 1, 0]])
    value = kl_loss(logprobs, ref, mask, estimator)
    value.backward()
    assert float(value) == pytest.approx(loss, abs=1e-6)
    torch.testing.assert_close(logprobs.grad, torch.tensor([grad + [0.0]]), atol=1e-6, rtol=0)


def test_kl_gradients_as_reward_and_as_loss_are_what_the_docs_say():
    """Exact expectations over a 4-token categorical policy p = softmax(theta) and reference q.

    Reward route (score function, E_p[k * grad log p]): only k1 gives grad KL(p||q).
    Loss route (E_p[grad k]): k2 gives grad KL(p||q), k3 gives grad KL(q||p), k1 gives 0."""
    theta = torch.tensor([0.3, -0.2, 1.1, 0.0], dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.tensor([0.0, 0.5, -0.4, 0.9], dtype=torch.float64), 0)
    log_p = torch.log_softmax(theta, 0)
    p = log_p.exp().detach()

    def grad(scalar):
        return torch.autograd.grad(scalar, theta, retain_graph=True)[0]

    reverse_kl = grad((log_p.exp() * (log_p - q.log())).sum())  # grad KL(p || q)
    forward_kl = grad((q * (q.log() - log_p)).sum())  # grad KL(q || p)
    tokens = torch.arange(4)
    lp, lq = log_p[tokens], q.log()[tokens]

    def reward_route(estimator):
        return grad((p * kl_penalty(lp, lq, estimator).detach() * lp).sum())

    def loss_route(estimator):
        return grad((p * kl_penalty(lp, lq, estimator)).sum())

    torch.testing.assert_close(reward_route("k1"), reverse_kl)
    for biased in ("k2", "k3"):
        assert not torch.allclose(reward_route(biased), reverse_kl, atol=1e-3)
    torch.testing.assert_close(loss_route("k2"), reverse_kl)
    torch.testing.assert_close(loss_route("k3"), forward_kl)
    torch.testing.assert_close(loss_route("k1"), torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_overflowing_log_ratio_cannot_nan_a_skipped_micro_batch(advantage):
    """A token whose log ratio is 100 (exp overflows float32 to inf): the trainer drops a micro-batch that
    ppo.ratio_threshold skips by multiplying its loss by 0, and inf * 0 used to be nan in the gradient."""
    logprobs = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    old_logprobs = torch.tensor([[-101.0, -1.0]])
    mask = torch.ones(1, 2)
    out = policy_loss(logprobs, old_logprobs, torch.full((1, 2), advantage), mask, 0.2)
    (out.loss * 0.0).backward()
    assert torch.isfinite(out.loss) and torch.isfinite(out.ratio_mean)
    assert torch.equal(logprobs.grad, torch.zeros(1, 2))


def test_group_advantages_rloo_and_grpo_by_hand():
    from ppo.algorithm import group_advantages

    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])  # two prompts, three responses each
    # rloo: each response against the mean of the other two; a group of equal rewards teaches nothing
    rloo = group_advantages(rewards, 3, "rloo")
    assert torch.allclose(rloo, torch.tensor([1 - 2.5, 2 - 2.0, 3 - 1.5, 0.0, 0.0, 0.0]))
    # grpo: (R - mean) / (unbiased std + eps): group 1 has mean 2, std 1
    grpo = group_advantages(rewards, 3, "grpo", eps=1e-6)
    assert torch.allclose(grpo, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) / (1.0 + 1e-6))
    # rloo is the centred reward scaled by n / (n - 1)
    centred = rewards.reshape(2, 3) - rewards.reshape(2, 3).mean(1, keepdim=True)
    assert torch.allclose(rloo, (centred * 3 / 2).reshape(-1))
    with pytest.raises(ValueError, match="at least two responses per prompt"):
        group_advantages(rewards, 1, "rloo")
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(rewards, 4, "grpo")


def test_unlikelihood_loss_is_minus_log_one_minus_p_on_the_targets():
    logprobs = torch.log(torch.tensor([[0.5, 0.2, 0.9], [0.1, 0.99, 0.3]], dtype=torch.float64))
    targets = torch.tensor([[True, False, True], [False, False, True]])
    by_hand = -(math.log(1 - 0.5) + math.log(1 - 0.9) + math.log(1 - 0.3))
    assert float(unlikelihood_loss(logprobs, targets)) == pytest.approx(by_hand / 3)  # mean over the targets
    assert float(unlikelihood_loss(logprobs, targets, normalizer=6.0)) == pytest.approx(by_hand / 6)
    assert float(unlikelihood_loss(logprobs, torch.zeros_like(targets))) == 0.0
    # p = 1 stays finite, and the gradient lowers every target's log-prob and no other
    certain = torch.zeros(1, 2, dtype=torch.float64)
    assert math.isfinite(float(unlikelihood_loss(certain, torch.ones(1, 2, dtype=torch.bool))))
    logprobs.requires_grad_(True)
    unlikelihood_loss(logprobs, targets).backward()
    assert (logprobs.grad[targets] > 0).all() and (logprobs.grad[~targets] == 0).all()
