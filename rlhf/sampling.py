"""Sampling exactly from the distribution that is scored: a generation config with every knob pinned.

PPO's log-probs, ratios and KL, and evaluation's KL, are computed from softmax(logits / temperature) over
the whole vocabulary, so responses must be sampled from exactly that distribution. transformers (5.x)
builds the sampling distribution from the `GenerationConfig` passed to `generate()`, but first fills every
field left `None` from the model's own `generation_config.json` and then from global defaults, where
`top_k` is 50. A `None` therefore never means "off": an instruct checkpoint's `top_k=20, top_p=0.8,
repetition_penalty=1.05` (or the global `top_k=50`) would silently truncate the sampling distribution.

So `sampling_config` sets every knob that changes the next-token distribution to its explicit "off" value,
and `generate_pinned` hides the model's own generation config while `generate()` runs, because some knobs
(`min_p`, `top_h`, `bad_words_ids`, `suppress_tokens`, `sequence_bias`, ...) have no value other than
`None` that means "off". The knob list is transformers 5.24's `GenerationMixin._get_logits_processor`.

`generate_with_logprobs` also returns log p(each sampled token) under softmax(logits / temperature),
recorded by `SampledTokenLogprobs`, a logits processor that changes no score: it saves a forward pass
over the sampled sequences (PPO's old log-probs) without keeping the logits of every step.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from rlhf.scoring import token_logprobs

# Every GenerationConfig field that adds a logits processor/warper, with the value that adds none.
OFF_VALUES: dict[str, Any] = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "penalty_alpha": None,
    "dola_layers": None,
    "guidance_scale": None,
    "sequence_bias": None,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "constraints": None,
    "min_length": 0,
    "min_new_tokens": None,  # not 0: generate() turns 0 into min_length = prompt length (a no-op processor)
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "top_h": None,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "watermarking_config": None,
    "renormalize_logits": False,
    "stop_strings": None,
    "max_time": None,
    "token_healing": None,
    "prompt_lookup_num_tokens": None,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
}


def sampling_config(
    max_new_tokens: int,
    temperature: float,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    top_k: int = 0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
):
    """A GenerationConfig sampling from softmax(logits / temperature) (greedy when temperature is 0),
    optionally truncated by `top_k` > 0 / `top_p` < 1, with every other knob explicitly off."""
    from transformers import GenerationConfig

    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    do_sample = temperature > 0
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        # Greedy decoding ignores the warpers; the neutral values keep transformers from warning about them.
        temperature=temperature if do_sample else 1.0,
        top_k=top_k if do_sample else 0,  # 0, never None: None becomes the model's top_k, then 50
        top_p=top_p if do_sample else 1.0,
        num_return_sequences=num_return_sequences,
        eos_token_id=list(eos_token_id) if isinstance(eos_token_id, (list, tuple, set)) else eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        decoder_start_token_id=None,
        use_cache=True,
    )
    for key, value in OFF_VALUES.items():
        if hasattr(config, key):
            setattr(config, key, value)
    for key, value in GenerationConfig._get_default_generation_params().items():
        if getattr(config, key, value) is None and key not in ("max_length", "min_new_tokens"):
            setattr(config, key, value)  # the rest explicit too (use_cache, early_stopping, ...)
    return config


def _transformers_model(model: nn.Module) -> nn.Module:
    """The transformers model whose `generation_config` generate() reads (under peft wrappers)."""
    while callable(getattr(model, "get_base_model", None)) and model.get_base_model() is not model:
        model = model.get_base_model()
    return model


@contextlib.contextmanager
def pinned_generation_config(model: nn.Module, config) -> Iterator[None]:
    """While inside, the model's own generation config is `config` itself, so nothing the checkpoint
    carries (its generation_config.json) can fill a field of `config` during generate()."""
    import copy

    target = _transformers_model(model)
    saved = getattr(target, "generation_config", None)
    target.generation_config = copy.deepcopy(config)
    try:
        yield
    finally:
        target.generation_config = saved


def generate_pinned(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    config,
    synced_gpus: bool = False,
    **kwargs: Any,
) -> Tensor:
    """`model.generate` with `config` and nothing else (`kwargs` may add a logits processor that leaves the
    scores as they are, such as `SampledTokenLogprobs`): returns prompt + new ids like generate()."""
    with pinned_generation_config(model, config):
        return model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            synced_gpus=synced_gpus,
            **kwargs,
        )


def resolved_generation_config(model: nn.Module, config: Optional[Any] = None):
    """The config generate() would run with (after filling from the model's own config and the defaults)."""
    resolved, _ = _transformers_model(model)._prepare_generation_config(config)
    return resolved


class SampledTokenLogprobs:
    """Records log softmax(logits / temperature)[sampled token] at each step of `generate()`; changes nothing.

    A transformers logits processor (a callable (input_ids, scores) -> scores in a `LogitsProcessorList`;
    not a `LogitsProcessor` subclass only so that importing this module does not import transformers).

    At step t generate() hands the processors `input_ids` (prompt + tokens 0..t-1) and that step's logits,
    so the token drawn from step t-1's distribution is the last column: it is gathered from step t-1's
    logits, then those are dropped. Only one step's logits [B, V] are held (never all steps' [B, R, V]);
    `finish` gathers the last token. transformers 5.24 (`GenerationMixin._get_logits_processor`) puts a
    user's processors after its own processors (the pinned config turns them all off) and before every
    warper (temperature, top-k, top-p, ...), and `_sample` hands them a fresh float32 copy of the model's
    last-position logits: `scores` here are the raw logits. The warpers return new tensors, so a kept
    reference to `scores` keeps the raw values.
    """

    def __init__(self, temperature: float):
        self.temperature = float(temperature)
        self.previous: Optional[Tensor] = None  # the last step's logits [B, V]
        self.steps: list[Tensor] = []  # [B] float32 per generated token, in order

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.previous is not None:
            self.steps.append(token_logprobs(self.previous, input_ids[:, -1], self.temperature))
        self.previous = scores
        return scores

    def finish(self, sequences: Tensor, new_tokens: int) -> Tensor:
        """Log-probs of the last `new_tokens` columns of generate()'s output: [B, new_tokens] float32."""
        if len(self.steps) < new_tokens and self.previous is not None:  # the last token: its step's logits
            self.steps.append(token_logprobs(self.previous, sequences[:, -1], self.temperature))
        # generate() may run one step more than it returns (a deferred stop check, undone): keep the returned
        steps = self.steps[:new_tokens]
        self.previous, self.steps = None, []
        if len(steps) != new_tokens:
            raise RuntimeError(f"recorded {len(steps)} generation steps for {new_tokens} new tokens")
        if not steps:
            return torch.zeros(sequences.shape[0], 0, dtype=torch.float32, device=sequences.device)
        return torch.stack(steps, dim=1)


def generate_with_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    config,
    temperature: float,
    synced_gpus: bool = False,
) -> tuple[Tensor, Tensor]:
    """`generate_pinned`, and log p(each new token) under softmax(logits / `temperature`) of the logits
    the model produced while generating: (prompt + new ids [B, P+R], log-probs [B, R] float32). Rows that
    ended early hold the pad id after their stop id, and log-probs of no meaning there."""
    from transformers import LogitsProcessorList

    recorder = SampledTokenLogprobs(temperature)
    sequences = generate_pinned(
        model,
        input_ids,
        attention_mask,
        config,
        synced_gpus=synced_gpus,
        logits_processor=LogitsProcessorList([recorder]),
    )
    return sequences, recorder.finish(sequences, sequences.shape[1] - input_ids.shape[1])
