"""The one door from text to token ids: every stage encodes prompts and responses here.

SFT's data (checked equal to what `trl.SFTTrainer` builds from the same rows), `rlhf generate`, RM training
and scoring, the reward statistics, the PPO rollout and PTX rows, and `rlhf eval` all call `Encoder`, so a
prompt has one id sequence wherever it is seen, and a response's score is read at one token.

Conventions, read from the tokenizer by encoding (never from its class name):
- **BOS**: plain text gets the special tokens the tokenizer's post-processor puts in front of text
  (Llama 2/3, Mistral: a BOS; GPT-2, Qwen: none); tokens it appends after text (an `add_eos_token`
  tokenizer) are not added to a prompt, whose end must sit flush against the response.
- **Chat**: a prompt given as messages goes through the chat template with its generation prompt (the
  template writes its own BOS, so none is added again); without a template it is rendered as plain text
  in the built-in task's style ("User: ...\\nAssistant:"), as SFT renders it.
- **Terminator**: a plain response ends with the tokenizer's EOS; a chat response ends with the
  template's turn terminator (`<|eot_id|>`, `<|im_end|>`, `</s>`), found by rendering a probe
  conversation. Whatever a template writes after the terminator (ChatML's newline) is not part of the
  response, so the score is read at the terminator in RM training, PPO, the statistics and eval alike.
- **Stop ids**: the tokenizer's EOS, every id in the model's `generation_config.eos_token_id` and the turn
  terminator: generation stops, and PPO truncates, at the first of them.
- **Pad**: never one of the stop ids (`rlhf.modeling.ensure_pad_token` adds `<pad>` otherwise), so the
  last non-pad token of a finished response is its terminator.

Prompts longer than `data.max_prompt_length` are skipped with a count (`encode_prompts`), never cut: cutting
from the left would drop the BOS and a system header, cutting from the right the generation prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch

PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
GENERATION_EOS_ATTR = "rlhf_generation_eos_ids"  # set on a tokenizer by rlhf.modeling.load_tokenizer
_PROBE_USER, _PROBE_REPLY = "Hi", "OK"


# --------------------------------------------------------------------------------------------------
# Conventions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conventions:
    """What a tokenizer does around text, as measured by encoding probes."""

    name_or_path: str
    prefix_ids: tuple[int, ...]  # special tokens put in front of plain text (the BOS), possibly none
    eos_id: int  # the tokenizer's EOS: ends a plain response
    turn_end_id: Optional[int]  # the chat template's turn terminator (None without a template)
    stop_ids: tuple[int, ...]  # every id that ends a response (tokenizer EOS, generation config, turn end)
    pad_id: Optional[int]
    has_chat_template: bool
    tokens: dict[str, Optional[str]] = field(default_factory=dict)  # the text of bos/eos/pad/turn_end

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_list(ids: Any) -> list[int]:
    if hasattr(ids, "keys") and "input_ids" in ids:  # a BatchEncoding from apply_chat_template
        ids = ids["input_ids"]
    return [int(token) for token in ids]


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer's post-processor puts before plain text (its BOS), found by encoding a probe."""
    with_specials = _as_list(tokenizer("a")["input_ids"])
    without = _as_list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for start in range(len(with_specials) - len(without) + 1):
        if with_specials[start : start + len(without)] == without:
            return with_specials[:start]
    return []


def generation_eos_ids(tokenizer) -> list[int]:
    """The generation config's EOS ids remembered by `load_tokenizer` (empty when it had none)."""
    return list(getattr(tokenizer, GENERATION_EOS_ATTR, None) or [])


def chat_turn_end(tokenizer) -> Optional[int]:
    """The special token a chat template closes an assistant turn with (first special id after the reply)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    prompt = [{"role": "user", "content": _PROBE_USER}]
    try:
        head = _as_list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
        full = _as_list(
            tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": _PROBE_REPLY}], tokenize=True)
        )
    except Exception:  # noqa: BLE001 - a template that rejects the probe: fall back to the EOS
        return int(tokenizer.eos_token_id)
    tail = full[_common_prefix(head, full) :]
    # The EOS ids first; then the declared special tokens; then any added special token (Llama 3's
    # original release declares <|eot_id|> nowhere but in its added tokens).
    for candidates in (
        {tokenizer.eos_token_id, *generation_eos_ids(tokenizer)},
        set(getattr(tokenizer, "all_special_ids", []) or []),
        _special_ids(tokenizer),
    ):
        found = next((token for token in tail if token in candidates), None)
        if found is not None:
            return int(found)
    return int(tokenizer.eos_token_id)


def conventions(tokenizer) -> Conventions:
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')} has no EOS token; the policy could never stop"
        )
    turn_end = chat_turn_end(tokenizer)
    stops = [eos_id] + generation_eos_ids(tokenizer) + ([turn_end] if turn_end is not None else [])
    stop_ids = tuple(dict.fromkeys(int(token) for token in stops))
    prefix = tuple(special_prefix(tokenizer))
    decode = lambda ids: tokenizer.convert_ids_to_tokens(list(ids)) if ids else []  # noqa: E731
    return Conventions(
        name_or_path=str(getattr(tokenizer, "name_or_path", "?")),
        prefix_ids=prefix,
        eos_id=int(eos_id),
        turn_end_id=turn_end,
        stop_ids=stop_ids,
        pad_id=tokenizer.pad_token_id,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        tokens={
            "prefix": "".join(decode(prefix)) or None,
            "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token,
            "turn_end": decode([turn_end])[0] if turn_end is not None else None,
            "stop": " ".join(decode(stop_ids)),
        },
    )


def _common_prefix(ids: Sequence[int], other: Sequence[int]) -> int:
    length = 0
    for token, other_token in zip(ids, other):
        if token != other_token:
            break
        length += 1
    return length


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def render_plain(messages: list[dict[str, str]]) -> dict[str, str]:
    """A conversation as plain text: earlier turns + "Assistant:" is the prompt, " reply" the completion."""
    *context, last = messages
    lines = [f"{PLAIN_ROLE_NAMES.get(turn['role'], turn['role'].capitalize())}: {turn['content']}" for turn in context]
    prompt = "\n".join(lines + [f"{PLAIN_ROLE_NAMES['assistant']}:"])
    return {"prompt": prompt, "completion": " " + last["content"].lstrip()}


def plain_prompt_text(messages: list[dict[str, str]]) -> str:
    """A prompt's messages as plain text ending in "Assistant:" (for tokenizers without a chat template)."""
    return render_plain(list(messages) + [{"role": "assistant", "content": ""}])["prompt"]


def _reply_text(response: Any) -> str:
    if isinstance(response, list):  # [{"role": "assistant", "content": ...}]
        return "".join(turn["content"] for turn in response)
    return response


# --------------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------------


@dataclass
class EncodedPrompts:
    ids: list[list[int]]  # the kept prompts' ids
    kept: list[int]  # indices of the kept prompts in the input
    skipped: int  # prompts over the length limit


class Encoder:
    """Prompt and response ids as every stage sees them (see the module docstring)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.conventions = conventions(tokenizer)

    @classmethod
    def of(cls, tokenizer_or_encoder) -> "Encoder":
        """The encoder of a tokenizer, built once per tokenizer state (its probes render templates)."""
        if isinstance(tokenizer_or_encoder, Encoder):
            return tokenizer_or_encoder
        tokenizer = tokenizer_or_encoder
        key = (len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, getattr(tokenizer, "chat_template", ""))
        cached = getattr(tokenizer, "_rlhf_encoder", None)
        if cached is None or cached[0] != key:
            cached = (key, cls(tokenizer))
            tokenizer._rlhf_encoder = cached
        return cached[1]

    @property
    def stop_ids(self) -> list[int]:
        return list(self.conventions.stop_ids)

    def uses_template(self, prompt: Any) -> bool:
        return isinstance(prompt, list) and self.conventions.has_chat_template

    def render_prompt(self, prompt: Any) -> str:
        """The prompt's text as the model sees it (special tokens written out)."""
        return self.tokenizer.decode(self.prompt_ids(prompt), skip_special_tokens=False)

    def prompt_ids(self, prompt: Any) -> list[int]:
        if self.uses_template(prompt):
            return _as_list(self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True))
        text = plain_prompt_text(prompt) if isinstance(prompt, list) else prompt
        return list(self.conventions.prefix_ids) + self._text_ids(text)

    def _text_ids(self, text: str) -> list[int]:
        return _as_list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def terminator(self, prompt: Any) -> int:
        """The id a response to `prompt` ends with: the turn terminator for chat, else the EOS."""
        if self.uses_template(prompt) and self.conventions.turn_end_id is not None:
            return self.conventions.turn_end_id
        return self.conventions.eos_id

    def response_ids(self, prompt: Any, response: Any, prompt_ids: Optional[list[int]] = None) -> list[int]:
        """The response's ids after `prompt_ids`, ending with (and cut after) its terminator.

        Encoded together with the prompt (tokens can merge across the boundary, and SentencePiece marks a
        word start differently at the start of a text) when the prompt's own ids are a prefix of the
        whole; otherwise on its own, so the prompt's ids stay exactly those generation saw."""
        prompt_ids = self.prompt_ids(prompt) if prompt_ids is None else prompt_ids
        reply = _reply_text(response)
        if self.uses_template(prompt):
            turns = response if isinstance(response, list) else [{"role": "assistant", "content": response}]
            full = _as_list(self.tokenizer.apply_chat_template(list(prompt) + list(turns), tokenize=True))
        elif isinstance(prompt, list):  # a conversation rendered as plain text, as SFT renders it
            rendered = render_plain(list(prompt) + [{"role": "assistant", "content": reply}])
            reply = rendered["completion"]  # " " + the reply, after "Assistant:"
            full = list(self.conventions.prefix_ids) + self._text_ids(rendered["prompt"] + reply)
        else:
            full = list(self.conventions.prefix_ids) + self._text_ids(prompt + reply)
        if full[: len(prompt_ids)] == prompt_ids:
            ids = full[len(prompt_ids) :]
        else:
            ids = self._text_ids(reply)
        return self._terminated(ids, self.terminator(prompt))

    def _terminated(self, ids: list[int], terminator: int) -> list[int]:
        stops = set(self.conventions.stop_ids)
        for position, token in enumerate(ids):
            if token in stops:
                return ids[: position + 1]
        return ids + [terminator]

    def sequence(self, prompt: Any, response: Any) -> list[int]:
        """prompt + response ids: the sequence a reward model is trained on and scores."""
        prompt_ids = self.prompt_ids(prompt)
        return prompt_ids + self.response_ids(prompt, response, prompt_ids)

    def encode_prompts(self, prompts: Sequence[Any], max_length: Optional[int] = None) -> EncodedPrompts:
        """Ids of each prompt; prompts over `max_length` tokens are skipped (counted), never cut."""
        ids, kept = [], []
        for index, prompt in enumerate(prompts):
            encoded = self.prompt_ids(prompt)
            if max_length is None or len(encoded) <= max_length:
                ids.append(encoded)
                kept.append(index)
        return EncodedPrompts(ids, kept, len(prompts) - len(kept))

    def cut_at_stop(self, response_ids: Sequence[int]) -> tuple[list[int], bool]:
        """Sampled ids up to and including the first stop id; (ids, whether one was found)."""
        stops = set(self.conventions.stop_ids)
        ids = [int(token) for token in response_ids]
        for position, token in enumerate(ids):
            if token in stops:
                return ids[: position + 1], True
        return ids, False


# --------------------------------------------------------------------------------------------------
# Tokenizer identity
# --------------------------------------------------------------------------------------------------

SPECIAL_ATTRS = ("bos_token", "eos_token", "pad_token", "unk_token")


def tokenizer_difference(tokenizer, other) -> Optional[str]:
    """None when two tokenizers map every token to the same id with the same special tokens and chat
    template; else what differs first (the first token, in id order, whose id or presence differs)."""
    for attr in SPECIAL_ATTRS:
        if getattr(tokenizer, attr, None) != getattr(other, attr, None):
            return f"{attr} {getattr(tokenizer, attr, None)!r} vs {getattr(other, attr, None)!r}"
    vocab, other_vocab = tokenizer.get_vocab(), other.get_vocab()
    if vocab != other_vocab:
        by_id = {i: t for t, i in vocab.items()}
        other_by_id = {i: t for t, i in other_vocab.items()}
        for token_id in sorted(set(by_id) | set(other_by_id)):
            if by_id.get(token_id) != other_by_id.get(token_id):
                return f"token id {token_id}: {by_id.get(token_id)!r} vs {other_by_id.get(token_id)!r}"
    if (getattr(tokenizer, "chat_template", None) or None) != (getattr(other, "chat_template", None) or None):
        return "chat templates differ"
    if generation_eos_ids(tokenizer) and generation_eos_ids(other):
        if set(generation_eos_ids(tokenizer)) != set(generation_eos_ids(other)):
            return f"generation EOS ids {generation_eos_ids(tokenizer)} vs {generation_eos_ids(other)}"
    return None


# --------------------------------------------------------------------------------------------------
# Batching ids
# --------------------------------------------------------------------------------------------------


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists to one width: (input_ids, attention_mask), so every row ends in the last column."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            input_ids[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            attention_mask[row, width - len(seq) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of a left-padded row (padding gets 0), as in unpadded training."""
    return (torch.cumsum(attention_mask.long(), dim=-1) - 1).clamp(min=0)
