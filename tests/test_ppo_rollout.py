"""ppo/rollout.py: left padding, EOS truncation, and scores/logprobs/values that match unpadded forwards."""

from __future__ import annotations

import pytest
import torch

from ppo.rollout import build_generation_config, generate_responses, generation_logprobs, score_responses
from rlhf.tokens import Encoder, left_pad

TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from rlhf.modeling import load_causal_lm, load_scalar_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(3)
    policy = load_causal_lm(str(tiny_model_dir), tokenizer).eval()
    reward = load_scalar_model(str(tiny_model_dir), tokenizer).eval()  # random head: any scalar model will do
    return tokenizer, policy, reward


def test_long_prompts_are_skipped_not_cut_and_left_pad(models):
    tokenizer, _, _ = models
    prompts = ["User: Tell me about cats.\nAssistant:", "User: Hi.\nAssistant:"]
    full = Encoder(tokenizer).prompt_ids(prompts[0])
    encoded = Encoder(tokenizer).encode_prompts(prompts, max_length=len(full) - 1)
    assert encoded.skipped == 1 and encoded.kept == [1] and len(encoded.ids) == 1
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_generation_config_sets_every_sampling_knob():
    from transformers import GenerationConfig

    config = build_generation_config(24, 0.7, top_k=0, top_p=1.0, do_sample=True, eos_token_id=2, pad_token_id=3)
    # top_k=0 must stay 0 ("off"): None would become the model's top_k, then transformers' default of 50.
    assert config.top_k == 0 and config.top_p == 1.0 and config.temperature == 0.7
    assert config.repetition_penalty == 1.0 and config.no_repeat_ngram_size == 0 and config.typical_p == 1.0
    for key, default in GenerationConfig._get_default_generation_params().items():
        if default is not None and hasattr(config, key) and key not in ("max_length", "min_length"):
            assert getattr(config, key) is not None, f"{key} left to transformers' default {default!r}"
    greedy = build_generation_config(24, 0.7, top_k=5, top_p=0.9, do_sample=False, eos_token_id=2, pad_token_id=3)
    assert greedy.do_sample is False and greedy.top_k == 0 and greedy.top_p == 1.0


@pytest.mark.parametrize("forward_batch_size", [1, 2])
def test_scores_logprobs_values_match_unpadded_forwards(models, forward_batch_size):
    tokenizer, policy, reward = models
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompts = [[10, 11, 12], [13]]  # different lengths: row 1 is left-padded by two
    raw_responses = torch.tensor([[20, eos, 21, 22], [23, 24, 25, 26]])  # row 0 stops at its EOS; row 1 never does
    prompt_ids, prompt_mask = left_pad(prompts, pad)
    rollout = score_responses(
        prompt_ids,
        prompt_mask,
        raw_responses,
        policy=policy,
        value_model=reward,
        reward_model=reward,
        eos_token_id=eos,
        pad_token_id=pad,
        temperature=TEMPERATURE,
        forward_batch_size=forward_batch_size,
        reference=policy,
    )
    assert rollout.response_ids.tolist() == [[20, eos, pad, pad], [23, 24, 25, 26]]
    assert rollout.response_mask.tolist() == [[True, True, False, False], [True] * 4]
    assert rollout.has_eos.tolist() == [True, False]
    torch.testing.assert_close(rollout.ref_logprobs, rollout.logprobs, rtol=0, atol=0)

    kept = [[20, eos], [23, 24, 25, 26]]  # each response up to and including its EOS
    for row, (prompt, response) in enumerate(zip(prompts, kept)):
        sequence = torch.tensor([prompt + response])
        with torch.no_grad():
            logits = policy(sequence).logits[0, len(prompt) - 1 : -1] / TEMPERATURE
            expected_logprobs = torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
            # transformers' own sequence-classification pooling on the unpadded sequence
            expected_score = reward(sequence).logits[0, 0]
            hidden = reward.model(sequence).last_hidden_state[0, len(prompt) - 1 : -1]
            expected_values = reward.score(hidden).squeeze(-1)
        n = len(response)
        torch.testing.assert_close(rollout.logprobs[row, :n], expected_logprobs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rollout.raw_scores[row], expected_score, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rollout.values[row, :n], expected_values, rtol=1e-5, atol=1e-5)
        assert torch.count_nonzero(rollout.logprobs[row, n:]) == 0 and torch.count_nonzero(rollout.values[row, n:]) == 0


def test_generate_responses_samples_with_the_global_rng(models):
    tokenizer, policy, _ = models
    prompt_ids, prompt_mask = left_pad([[10, 11, 12], [13]], tokenizer.pad_token_id)
    config = build_generation_config(5, 1.0, 0, 1.0, True, tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(0)
    first = generate_responses(policy, prompt_ids, prompt_mask, config)
    torch.manual_seed(0)
    again = generate_responses(policy, prompt_ids, prompt_mask, config)
    assert torch.equal(first, again) and first.shape[0] == 2 and first.shape[1] <= 5


@pytest.mark.parametrize("generation_batch_size", [None, 3])
def test_generation_logprobs_equal_the_scoring_pass(models, generation_batch_size):
    """The policy's log-probs recorded while sampling replace its scoring pass (ppo.rollout_logprobs): on
    every real response token they equal that pass's to 1e-5 in float32 (KV-cache decode against a full
    forward), with left-padded prompts and in generation chunks that end at different widths."""
    tokenizer, policy, reward = models
    pad = tokenizer.pad_token_id
    stop_ids = list(range(100, 160))  # a fifth of the tiny vocabulary: rows end early, at different lengths
    prompt_ids, prompt_mask = left_pad([[10, 11, 12, 13, 14], [15], [16, 17], [18, 19, 20, 21], [22, 23]], pad)
    config = build_generation_config(10, TEMPERATURE, 0, 1.0, True, stop_ids, pad)
    torch.manual_seed(5)
    raw, logprobs = generate_responses(
        policy, prompt_ids, prompt_mask, config, batch_size=generation_batch_size, logprobs_temperature=TEMPERATURE
    )
    assert logprobs.shape == raw.shape and logprobs.dtype == torch.float32

    def score(policy_logprobs=None):
        return score_responses(
            prompt_ids, prompt_mask, raw, policy, reward, reward, stop_ids, pad, TEMPERATURE, 2,
            reference=policy, policy_logprobs=policy_logprobs,
        )  # fmt: skip

    scored, recorded = score(), score(logprobs)
    mask = scored.response_mask
    lengths = mask.sum(1).tolist()
    assert scored.has_eos.any() and len(set(lengths)) > 1, lengths  # the test means something
    torch.testing.assert_close(recorded.logprobs, scored.logprobs, rtol=0, atol=1e-5)
    assert torch.count_nonzero(recorded.logprobs[~mask]) == 0  # off the mask, as the scoring pass leaves them
    torch.testing.assert_close(recorded.ref_logprobs, scored.ref_logprobs, rtol=0, atol=0)  # still a forward
    if generation_batch_size:  # a chunk whose rows all ended early is right-padded: ids with the pad id, log-probs 0
        widths = [int(mask[start : start + 3].sum(1).max()) for start in range(0, 5, 3)]
        assert min(widths) < raw.shape[1], widths
        short = next(start for start in range(0, 5, 3) if widths[start // 3] < raw.shape[1])
        assert torch.count_nonzero(logprobs[short : short + 3, -1]) == 0


def test_logprobs_from_generation_in_fp32_only_unless_asked():
    assert generation_logprobs("auto", "fp32", torch.float32)
    assert not generation_logprobs("auto", "bf16", torch.float32)  # autocast: decode and forward round apart
    assert not generation_logprobs("auto", "fp32", torch.bfloat16)  # bf16 weights (model.dtype)
    assert generation_logprobs("generation", "bf16", torch.bfloat16)
    assert not generation_logprobs("forward", "fp32", torch.float32)
