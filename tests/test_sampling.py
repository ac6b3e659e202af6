"""Rollouts are sampled from exactly the distribution that is scored, whatever the checkpoint's own
generation_config.json says (PPO, `rlhf generate` and `rlhf eval`).

The model here carries an instruct checkpoint's typical settings (top_k 20, top_p 0.8, repetition penalty
1.05, min_p 0.05, a suppressed token). Thousands of first tokens are sampled through each entry point and
compared with softmax(logits / T) from a plain forward by a chi-square test; before the sampling knobs
were pinned, PPO sampled from the top 20 tokens and the chi-square p-value was ~0.
"""

from __future__ import annotations

import shutil

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEMPERATURE = 0.7
SAMPLES = 4000
PROMPT = "User: Tell me about cats.\nAssistant:"


@pytest.fixture(scope="module")
def instruct_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with a spread-out next-token distribution and an instruct-style generation config."""
    from rlhf.modeling import load_causal_lm, load_tokenizer, save_model

    out = tmp_path_factory.mktemp("instruct") / "model"
    shutil.copytree(tiny_model_dir, out)
    tokenizer = load_tokenizer(str(out))
    model = load_causal_lm(str(out), tokenizer)
    with torch.no_grad():  # logits with a real spread: the tokens outside the top 50 carry ~60% of the mass
        model.lm_head.weight.mul_(5.0)
    gen = model.generation_config
    gen.do_sample, gen.top_k, gen.top_p, gen.repetition_penalty = True, 20, 0.8, 1.05
    gen.min_p, gen.suppress_tokens = 0.05, [7]
    save_model(model, tokenizer, out, merge=False)
    return out


@pytest.fixture(scope="module")
def loaded(instruct_model_dir):
    from rlhf.modeling import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(instruct_model_dir))
    model = load_causal_lm(str(instruct_model_dir), tokenizer).eval()
    assert model.generation_config.top_k == 20 and model.generation_config.repetition_penalty == 1.05  # as saved
    return tokenizer, model


def expected_first_token_probs(model, prompt_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids])).logits[0, -1].double()
    return torch.softmax(logits / TEMPERATURE, -1)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square p-value of token counts against probabilities; rare tokens are pooled (by
    descending probability) until each cell expects at least 5 draws."""
    from scipy.stats import chisquare

    total = int(counts.sum())
    order = torch.argsort(probs, descending=True)
    observed, expected, cell_obs, cell_exp = [], [], 0.0, 0.0
    for token in order.tolist():
        cell_obs += float(counts[token])
        cell_exp += float(probs[token]) * total
        if cell_exp >= 5:
            observed.append(cell_obs)
            expected.append(cell_exp)
            cell_obs = cell_exp = 0.0
    observed[-1] += cell_obs
    expected[-1] += cell_exp
    return float(chisquare(observed, expected).pvalue)


def outside_top(counts: torch.Tensor, probs: torch.Tensor, k: int = 50) -> tuple[float, float]:
    """(observed share of draws, softmax mass) of the tokens outside the k most likely."""
    rest = torch.argsort(probs, descending=True)[k:]
    return float(counts[rest].sum() / counts.sum()), float(probs[rest].sum())


class ProcessorSpy:
    """Records the logits processors generate() builds (transformers' GenerationMixin._get_logits_processor)."""

    def __init__(self, model):
        self.model, self.built = model, []
        self.original = model._get_logits_processor

    def __enter__(self):
        def spy(*args, **kwargs):
            processors = self.original(*args, **kwargs)
            self.built.append([type(p).__name__ for p in processors])
            return processors

        self.model._get_logits_processor = spy
        return self

    def __exit__(self, *exc):
        del self.model._get_logits_processor


def assert_exact_sampling(first_tokens: torch.Tensor, probs: torch.Tensor, built: list[list[str]]) -> None:
    counts = torch.bincount(first_tokens, minlength=probs.shape[0]).double()
    p_value = chi_square_p(counts, probs)
    observed_tail, expected_tail = outside_top(counts, probs)
    print(f"chi-square p={p_value:.3g}; share outside the top 50: {observed_tail:.4f} (softmax {expected_tail:.4f})")
    assert expected_tail > 0.3  # the test means something: the tail beyond the top 50 is large
    assert p_value > 1e-3, (p_value, observed_tail, expected_tail)
    assert abs(observed_tail - expected_tail) < 4 * (expected_tail * (1 - expected_tail) / SAMPLES) ** 0.5
    assert built and all(names == ["TemperatureLogitsWarper"] for names in built), built


def test_ppo_rollout_samples_from_the_scored_softmax(loaded):
    from ppo.rollout import build_generation_config, generate_responses
    from rlhf.tokens import Encoder, left_pad

    tokenizer, model = loaded
    prompt_ids = Encoder(tokenizer).prompt_ids(PROMPT)
    ids, mask = left_pad([prompt_ids] * SAMPLES, tokenizer.pad_token_id)
    config = build_generation_config(
        1, TEMPERATURE, 0, 1.0, True, tokenizer.eos_token_id, tokenizer.pad_token_id
    )  # ppo.top_k=0, ppo.top_p=1.0: no truncation
    torch.manual_seed(0)
    with ProcessorSpy(model) as spy:
        responses = generate_responses(model, ids, mask, config)
    assert_exact_sampling(responses[:, 0], expected_first_token_probs(model, prompt_ids), spy.built)


def test_generate_and_eval_sample_from_the_scored_softmax(loaded):
    """`rlhf generate` and `rlhf eval` both sample through rlhf.commands.generate.sample."""
    from rlhf.commands.generate import sample

    tokenizer, model = loaded
    with ProcessorSpy(model) as spy:
        samples = sample(
            model, tokenizer, [PROMPT], num_samples=SAMPLES, max_new_tokens=1, temperature=TEMPERATURE, seed=0
        )
    prompt_ids = samples[0].prompt_ids
    # a sampled pad id is an ordinary token here, but the decoder drops it from an unfinished response
    first = torch.tensor([s.response_ids[0] if s.response_ids else tokenizer.pad_token_id for s in samples])
    assert_exact_sampling(first, expected_first_token_probs(model, prompt_ids), spy.built)


def test_model_generation_config_is_restored_and_nothing_resolves_to_a_default(loaded):
    from rlhf.sampling import generate_pinned, resolved_generation_config, sampling_config

    tokenizer, model = loaded
    config = sampling_config(3, TEMPERATURE, tokenizer.eos_token_id, tokenizer.pad_token_id)
    resolved = resolved_generation_config(model, config)
    # What a bare generate(generation_config=config) would run with: the model's knobs leak into None fields.
    assert resolved.top_k == 0 and resolved.top_p == 1.0 and resolved.repetition_penalty == 1.0
    assert resolved.min_p == 0.05 and resolved.suppress_tokens == [7]  # "off" is None for these: hidden below
    saved = model.generation_config
    with ProcessorSpy(model) as spy:
        generate_pinned(model, torch.tensor([[5, 6]]), torch.ones(1, 2, dtype=torch.long), config)
    assert spy.built == [["TemperatureLogitsWarper"]]
    assert model.generation_config is saved and saved.top_k == 20


def test_greedy_config_has_no_warpers(loaded):
    from rlhf.sampling import generate_pinned, sampling_config

    tokenizer, model = loaded
    config = sampling_config(2, 0.0, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ids = torch.tensor([[5, 6, 9]])
    with ProcessorSpy(model) as spy:
        out = generate_pinned(model, ids, torch.ones_like(ids), config)
    assert spy.built == [[]]
    with torch.no_grad():
        assert out[0, 3] == model(ids).logits[0, -1].argmax()


def test_a_lora_policy_is_pinned_too(instruct_model_dir):
    """A LoRA policy generates through peft, which reads the generation config of the model underneath."""
    from rlhf.modeling import apply_lora, load_causal_lm, load_tokenizer
    from rlhf.sampling import generate_pinned, sampling_config

    tokenizer = load_tokenizer(str(instruct_model_dir))
    base = load_causal_lm(str(instruct_model_dir), tokenizer).eval()
    policy = apply_lora(base, {"r": 4, "alpha": 8})
    config = sampling_config(2, TEMPERATURE, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ids = torch.tensor([[5, 6, 9]])
    with ProcessorSpy(base) as spy:
        generate_pinned(policy, ids, torch.ones_like(ids), config)
    assert spy.built == [["TemperatureLogitsWarper"]] and base.generation_config.top_k == 20


def test_generation_logprobs_are_of_the_raw_logits_before_every_warper(loaded):
    """PPO's old log-probs recorded while sampling (ppo.rollout_logprobs): log softmax(logits / T) of the
    sampled tokens, as a forward over the finished sequences gives. transformers puts a user's logits
    processor before its TemperatureLogitsWarper; were it after, the recorder would see logits / T and
    return log softmax(logits / T^2)."""
    from rlhf.sampling import generate_with_logprobs, sampling_config
    from rlhf.tokens import left_pad, position_ids_from_mask

    tokenizer, model = loaded
    config = sampling_config(5, TEMPERATURE, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ids, mask = left_pad([[5, 6, 9, 11], [12], [13, 14]], tokenizer.pad_token_id)  # different prompt lengths
    torch.manual_seed(0)
    with ProcessorSpy(model) as spy:
        sequences, logprobs = generate_with_logprobs(model, ids, mask, config, TEMPERATURE)
    assert spy.built == [["SampledTokenLogprobs", "TemperatureLogitsWarper"]]  # the recorder runs first
    new = sequences.shape[1] - ids.shape[1]
    assert new == 5 and logprobs.shape == (3, 5) and logprobs.dtype == torch.float32

    full_mask = torch.cat([mask, torch.ones(3, new, dtype=mask.dtype)], dim=1)  # as generate() attends
    with torch.no_grad():
        logits = model(sequences, attention_mask=full_mask, position_ids=position_ids_from_mask(full_mask)).logits
    logits, tokens = logits[:, -new - 1 : -1], sequences[:, -new:, None]
    expected = torch.log_softmax(logits / TEMPERATURE, -1).gather(-1, tokens).squeeze(-1)
    torch.testing.assert_close(logprobs, expected, rtol=0, atol=1e-5)
    scaled_twice = torch.log_softmax(logits / TEMPERATURE**2, -1).gather(-1, tokens).squeeze(-1)
    assert (scaled_twice - expected).abs().max() > 0.1  # the test tells raw from temperature-scaled scores


def test_logprob_recorder_keeps_the_steps_generate_returns():
    """Each call gathers the previous step's token (the last input column); `finish` adds the last token,
    or drops a step generate() ran but undid (its deferred stop check)."""
    from rlhf.sampling import SampledTokenLogprobs

    torch.manual_seed(0)
    step_logits = [torch.randn(2, 7) for _ in range(3)]
    sequences = torch.tensor([[1, 4, 0, 6], [1, 2, 5, 3]])  # one prompt column, then three sampled tokens
    expected = torch.stack(
        [torch.log_softmax(step_logits[t] / 0.5, -1)[torch.arange(2), sequences[:, t + 1]] for t in range(3)], dim=1
    )
    for returned in (3, 2):
        recorder = SampledTokenLogprobs(0.5)
        for t in range(3):
            assert recorder(sequences[:, : t + 1], step_logits[t]) is step_logits[t]  # the scores go on unchanged
        got = recorder.finish(sequences[:, : 1 + returned], returned)
        torch.testing.assert_close(got, expected[:, :returned], rtol=0, atol=1e-6)
