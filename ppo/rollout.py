"""One PPO rollout: sample responses, cut them at EOS, and score them with every frozen/no-grad model.

Prompts are tokenised once by `rlhf.tokens.Encoder` (the ids SFT, `rlhf generate`, the reward model and
eval see: BOS as the tokenizer adds it, message lists through the chat template with its generation
prompt) and left-padded per batch, so all responses start in the same column and HF `generate` runs the
whole batch with its KV cache. Generation stops at, and responses are truncated after, the first stop id
(the tokenizer's EOS, the generation config's EOS ids, the chat turn terminator), and the mask comes from
them, never from padding (a policy may sample the pad id as an ordinary token). The
no-grad passes (policy and reference logprobs from temperature-scaled logits, per-token values, the
reward model's score at the last real token) run over `forward_batch_size` rows at a time to bound
memory, with position ids derived from the attention mask so left padding does not shift positions.
Only the response slice of the LM head is computed (`logits_to_keep`) where the model supports it.
The policy's pass is skipped when its log-probs were recorded while generating (`ppo.rollout_logprobs`,
see `generation_logprobs`): in float32 they equal the pass's to rounding (KV cache against full forward).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from ppo.algorithm import contains_eos, last_token_index, logprobs_from_logits, truncate_after_eos
from rlhf.tokens import position_ids_from_mask

# --------------------------------------------------------------------------------------------------
# The rollout batch
# --------------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """Everything PPO needs about one batch of sampled responses (tensors share the batch dimension)."""

    prompt_ids: Tensor  # [B, P] left-padded
    prompt_mask: Tensor  # [B, P] 1 on real prompt tokens
    response_ids: Tensor  # [B, R] padded after the first EOS
    response_mask: Tensor  # [B, R] bool: tokens up to and including the first EOS
    logprobs: Tensor  # [B, R] policy logprobs at sampling time (0 off the mask)
    ref_logprobs: Tensor  # [B, R] reference logprobs (0 off the mask)
    values: Tensor  # [B, R] value estimates before each response token (0 off the mask; 0 without a critic)
    raw_scores: Tensor  # [B] reward model score at the last real token
    has_eos: Tensor  # [B] bool

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.prompt_mask, self.response_mask.to(self.prompt_mask.dtype)], dim=1)

    def select(self, index: Tensor) -> "Rollout":
        return Rollout(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


# --------------------------------------------------------------------------------------------------
# Model helpers
# --------------------------------------------------------------------------------------------------


def _hf_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(_hf_model(model).forward).parameters


def response_logits(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_length: int, keep_slice: Optional[bool] = None
) -> Tensor:
    """Logits that predict each response token: [B, R, V] (positions P-1 .. P+R-2)."""
    position_ids = position_ids_from_mask(attention_mask)
    kwargs: dict[str, Any] = {}
    if keep_slice if keep_slice is not None else supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = response_length + 1
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **kwargs
    ).logits
    return logits[:, -response_length - 1 : -1]


def token_scalars(
    scalar_model: nn.Module, input_ids: Tensor, attention_mask: Tensor, positions: slice | Tensor
) -> Tensor:
    """The scalar head applied to the backbone's hidden states at `positions`: [B, len] (float32).

    A sequence-classification model's own forward pools one position; PPO needs a value per token.
    """
    from rlhf.modeling import scalar_head

    hf_model = _hf_model(scalar_model)
    backbone = getattr(hf_model, hf_model.base_model_prefix)
    position_ids = position_ids_from_mask(attention_mask)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    if isinstance(positions, Tensor):  # one position per row
        hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), positions].unsqueeze(1)
    else:
        hidden = hidden[:, positions]
    return scalar_head(hf_model)(hidden).squeeze(-1).float()


def response_values(
    value_model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_length: int,
    value_shift: float = 0.0,
    value_scale: float = 1.0,
) -> Tensor:
    """V(s_t) for each response token t, read at the position just before it: [B, R].

    The head's output is mapped to (raw - value_shift) / value_scale: a critic that starts from the reward
    model then starts in the units of the normalised score it predicts (see ppo.models.critic_normalisation).
    """
    total = input_ids.shape[1]
    raw = token_scalars(value_model, input_ids, attention_mask, slice(total - response_length - 1, total - 1))
    if value_shift == 0.0 and value_scale == 1.0:
        return raw
    return (raw - value_shift) / value_scale


def sequence_scores(
    reward_model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> Tensor:
    """The reward model's score at the last real token of each response (its EOS, or the last token): [B]."""
    prompt_width = input_ids.shape[1] - response_mask.shape[1]
    return token_scalars(
        reward_model, input_ids, attention_mask, prompt_width + last_token_index(response_mask)
    ).squeeze(1)


def chunked(fn: Callable[..., Tensor], batch_size: int, *tensors: Tensor) -> Tensor:
    """Apply `fn` to row chunks of `tensors` and concatenate: bounds activation memory of no-grad passes."""
    rows = tensors[0].shape[0]
    return torch.cat([fn(*(t[start : start + batch_size] for t in tensors)) for start in range(0, rows, batch_size)])


# --------------------------------------------------------------------------------------------------
# Sampling and scoring
# --------------------------------------------------------------------------------------------------


def generation_logprobs(mode: str, precision: str, policy_dtype: torch.dtype) -> bool:
    """Whether the rollout's policy log-probs come from generation (`ppo.rollout_logprobs`) rather than a
    scoring forward. `auto`: only in float32 (`train.precision` fp32 and fp32 weights), where the two agree
    to ~1e-6; under bf16/fp16 the KV-cache decode and the full forward round apart at that precision,
    which would move the first PPO ratio visibly off 1. The generating module is the scoring one (the same
    unwrapped policy, LoRA adapter included; under ZeRO-3 the same weights, gathered)."""
    if mode == "auto":
        return precision == "fp32" and policy_dtype == torch.float32
    return mode == "generation"


def build_generation_config(
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    do_sample: bool,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
):
    """Every sampling knob pinned (rlhf.sampling): the rollout is drawn from softmax(logits / temperature),
    the distribution its log-probs and KL are computed from, whatever the model's generation_config says."""
    from rlhf.sampling import sampling_config

    return sampling_config(
        max_new_tokens, temperature if do_sample else 0.0, eos_token_id, pad_token_id, top_k=top_k, top_p=top_p
    )


def trim_left_padding(input_ids: Tensor, attention_mask: Tensor, keep: int = 1) -> tuple[Tensor, Tensor]:
    """Drop the leading columns that are padding in every row (at least `keep` columns stay).

    Positions come from the attention mask, so a left-padded batch without its all-pad columns gives the
    same outputs at a smaller width: a chunk of short prompts does not pay for the rollout's longest.
    """
    real = attention_mask.bool().any(0)
    first = int(real.int().argmax()) if bool(real.any()) else attention_mask.shape[1]
    first = min(first, attention_mask.shape[1] - keep)
    return input_ids[:, first:], attention_mask[:, first:]


@torch.no_grad()
def generate_responses(
    policy: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    generation_config,
    synced_gpus: bool = False,
    batch_size: Optional[int] = None,
    logprobs_temperature: Optional[float] = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sampled response ids [B, R'] (R' <= max_new_tokens: generation stops when every row has ended).

    `batch_size` rows are generated at a time (None: all at once), each chunk at its own prompt width, so
    the KV cache is bounded by the chunk, not the rollout; shorter chunks are right-padded with the pad id
    as `generate` pads rows that ended early. `synced_gpus` keeps every process stepping until all are done
    (ZeRO-3 without gathered weights). With `logprobs_temperature`, also the policy's log-probs of the
    sampled tokens under softmax(logits / temperature), recorded while generating (rlhf.sampling.
    generate_with_logprobs): (ids [B, R'], log-probs [B, R'] float32, 0 in a chunk's right padding)."""
    from rlhf.sampling import generate_pinned, generate_with_logprobs

    rows = prompt_ids.shape[0]
    step = batch_size if batch_size else rows
    pad_token_id = generation_config.pad_token_id
    chunks, logprob_chunks = [], []
    for start in range(0, rows, step):
        ids, mask = trim_left_padding(prompt_ids[start : start + step], prompt_mask[start : start + step])
        if logprobs_temperature is None:
            output = generate_pinned(policy, ids, mask, generation_config, synced_gpus=synced_gpus)
        else:
            output, logprobs = generate_with_logprobs(
                policy, ids, mask, generation_config, logprobs_temperature, synced_gpus=synced_gpus
            )
            logprob_chunks.append(logprobs)
        chunks.append(output[:, ids.shape[1] :])
    width = max(chunk.shape[1] for chunk in chunks)
    responses = torch.cat(
        [nn.functional.pad(chunk, (0, width - chunk.shape[1]), value=pad_token_id) for chunk in chunks]
    )
    if logprobs_temperature is None:
        return responses
    return responses, torch.cat([nn.functional.pad(lp, (0, width - lp.shape[1])) for lp in logprob_chunks])


def trim_micro_batch(batch: Rollout, *per_token: Tensor) -> tuple[Rollout, list[Tensor]]:
    """A micro-batch cut to its own real width: prompt columns that are padding in every row (on the left)
    and response columns after every row's end (on the right) go, together with the same response columns
    of `per_token` tensors (advantages, returns). Training forwards then pay for the micro-batch's longest
    prompt and response, not the rollout's; the dropped columns are masked out of every loss anyway."""
    prompt_ids, prompt_mask = trim_left_padding(batch.prompt_ids, batch.prompt_mask)
    width = max(int(batch.response_mask.sum(1).max()), 1)  # the mask is a prefix (tokens up to the first EOS)
    response_side = {
        f.name: getattr(batch, f.name)[:, :width]
        for f in fields(batch)
        if f.name not in ("prompt_ids", "prompt_mask") and getattr(batch, f.name).dim() == 2
    }
    trimmed = replace(batch, prompt_ids=prompt_ids, prompt_mask=prompt_mask, **response_side)
    return trimmed, [tensor[:, :width] for tensor in per_token]


@torch.no_grad()
def score_responses(
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    raw_response_ids: Tensor,
    policy: nn.Module,
    value_model: Optional[nn.Module],
    reward_model: nn.Module,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    temperature: float,
    forward_batch_size: int,
    reference: Optional[nn.Module] = None,
    reference_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    value_shift: float = 0.0,
    value_scale: float = 1.0,
    policy_logprobs: Optional[Tensor] = None,
    matched_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Rollout:
    """Truncate after the first stop id (`eos_token_id`: one id or all of them) and run the no-grad passes.
    The policy, reference and value passes run inside `matched_context()`, the kernels the PPO forwards use,
    so that the first ratio is 1 and the KL at update 0 is 0; the reward model's score is matched by nothing.
    The reference is `reference`, or the policy inside `reference_context()` (a LoRA policy with its adapter
    disabled). `policy_logprobs` [B, R'] (the policy's log-probs recorded while generating
    `raw_response_ids`, see `generate_responses`) replace the policy's scoring pass. Without a value model
    (a critic-free estimator) the values are zeros."""
    response_ids, response_mask = truncate_after_eos(raw_response_ids, eos_token_id, pad_token_id)
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask.to(prompt_mask.dtype)], dim=1)
    response_length = response_ids.shape[1]
    mask = response_mask.float()

    def own_width(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        # Each chunk drops the prompt columns that are padding in all its rows (one prompt column always
        # stays: it predicts the first response token); every output is read relative to the end of the
        # sequence, so its shape and values do not change.
        return lambda ids, attn, *rest: fn(*trim_left_padding(ids, attn, keep=response_length + 1), *rest)

    def logprobs_of(model: nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        keep_slice = supports_logits_to_keep(model)

        def run(ids: Tensor, attn: Tensor, responses: Tensor) -> Tensor:
            logits = response_logits(model, ids, attn, response_length, keep_slice)
            return logprobs_from_logits(logits, responses, temperature)

        return own_width(run)

    with matched_context():
        if policy_logprobs is None:
            policy_logprobs = chunked(logprobs_of(policy), forward_batch_size, input_ids, attention_mask, response_ids)
        logprobs = policy_logprobs * mask
        with reference_context():
            ref_model = reference if reference is not None else policy
            ref_logprobs = (
                chunked(logprobs_of(ref_model), forward_batch_size, input_ids, attention_mask, response_ids) * mask
            )
        values = (
            chunked(
                own_width(lambda i, a: response_values(value_model, i, a, response_length, value_shift, value_scale)),
                forward_batch_size,
                input_ids,
                attention_mask,
            )
            * mask
            if value_model is not None
            else torch.zeros_like(mask)
        )
    raw_scores = chunked(
        own_width(lambda i, a, m: sequence_scores(reward_model, i, a, m)),
        forward_batch_size,
        input_ids,
        attention_mask,
        response_mask,
    )
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
        raw_scores=raw_scores,
        has_eos=contains_eos(response_ids, eos_token_id),
    )


# --------------------------------------------------------------------------------------------------
# Distributed generation
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def unwrapped_for_generation(
    model: nn.Module,
    accelerator,
    gather_zero3_params: bool = True,
    unwrapped: Optional[nn.Module] = None,
    generating: Optional[str] = None,
) -> Iterator[nn.Module]:
    """The bare module to call `generate` on.

    Under DeepSpeed ZeRO-3 each layer's weights live in shards that forward hooks gather one layer at a
    time, which would happen once per generated token. Gathering the generating weights once per rollout
    (and lifting the hooks meanwhile) trades memory for a far faster generation; set
    `ppo.zero3_gather_for_generation=false` when the full model does not fit on one device.
    `generating` names the submodule that generates (PPO: "policy" of PolicyAndValue): only its parameters
    are gathered, since gathering the value model's too would double the peak for weights generation never
    reads.
    """
    unwrapped = (
        unwrapped if unwrapped is not None else accelerator.unwrap_model(model)
    )  # unwrap_model costs ms per call
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3 or not gather_zero3_params:
        yield unwrapped
        return
    import deepspeed

    gathered = getattr(unwrapped, generating) if generating else unwrapped
    with deepspeed.zero.GatheredParameters(list(gathered.parameters())):
        offload = getattr(getattr(model, "optimizer", None), "parameter_offload", None)
        can_lift = (
            offload is not None
            and hasattr(offload, "_remove_module_hooks")
            and hasattr(offload, "setup_zero_stage3_hooks")
        )
        if can_lift:  # DeepSpeed internals (0.14 - 0.19): without this the hooks re-gather every layer per token
            offload._remove_module_hooks()
            offload.forward_hooks.clear()
            offload.backward_hooks.clear()
        try:
            yield unwrapped
        finally:
            if can_lift:
                offload.setup_zero_stage3_hooks()
