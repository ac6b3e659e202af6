"""Shape SFT rows into what `trl.SFTTrainer` trains on: a prompt and a completion.

Every row leaves here as a prompt/completion pair, because that is the one TRL format whose loss can be
restricted to the response (`completion_only_loss`). Conversational rows (`messages`) become a
conversational pair: all turns but the last are the prompt (rendered with the chat template and its
generation prompt), the last assistant turn is the completion. When the tokenizer has no chat template
(the tiny preset) or `sft.use_chat_template=never`, conversations are rendered as plain text in the
built-in task's style ("User: ...\\nAssistant:" + " answer"), so chat data still trains a base model.
With `always`, plain string pairs are wrapped as one user/assistant exchange. TRL appends the EOS token
to plain completions itself; `sft.add_eos=false` is the one case we tokenise here, because TRL has no
switch for it.
"""

from __future__ import annotations

from typing import Any

from rlhf.errors import ConfigError
from rlhf.tokens import render_plain  # the plain rendering every stage shares


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def uses_chat_template(tokenizer, mode: str) -> bool:
    """Whether rows are rendered with the tokenizer's chat template under `sft.use_chat_template=mode`."""
    if mode == "always" and not has_chat_template(tokenizer):
        raise ConfigError(
            f"sft.use_chat_template=always but the tokenizer {getattr(tokenizer, 'name_or_path', '?')} has no chat "
            "template (set sft.use_chat_template=auto or never, or use a tokenizer that has one)"
        )
    return mode != "never" and has_chat_template(tokenizer)


def to_prompt_completion(row: dict[str, Any], chat: bool) -> dict[str, Any]:
    """One SFT row (prompt/completion or messages) -> a prompt/completion pair, chat-shaped when `chat`."""
    if "messages" in row and row["messages"] is not None:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if chat:
            return {"prompt": messages[:-1], "completion": messages[-1:]}
        return render_plain(messages)
    if chat:
        return {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "completion": [{"role": "assistant", "content": row["completion"].lstrip()}],
        }
    return {"prompt": row["prompt"], "completion": row["completion"]}


def prepare_sft_dataset(dataset, tokenizer, use_chat_template: str = "auto", add_eos: bool = True):
    """A datasets.Dataset of SFT rows -> prompt/completion rows (or pre-tokenised rows when add_eos is off).

    `use_chat_template`: auto | always | never. Conversational data uses the template when there is one
    (auto); plain pairs use it only with `always`.
    """
    chat = uses_chat_template(tokenizer, use_chat_template)
    wrap_plain = chat and use_chat_template == "always"
    columns = dataset.column_names

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        is_conversation = "messages" in row and row["messages"] is not None
        return to_prompt_completion(row, chat if is_conversation else wrap_plain)

    shaped = dataset.map(convert, remove_columns=columns, desc="Shaping SFT rows")
    if add_eos or isinstance(shaped[0]["prompt"], list):
        return shaped  # TRL appends EOS to plain completions; chat templates end their turns themselves
    return shaped.map(
        tokenize_without_eos,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=["prompt", "completion"],
        desc="Tokenising SFT rows without EOS",
    )


def tokenize_without_eos(row: dict[str, str], tokenizer) -> dict[str, list[int]]:
    """input_ids of prompt+completion and a completion mask (TRL turns it into labels)."""
    prompt_ids = tokenizer(row["prompt"])["input_ids"]  # special tokens (BOS) as TRL adds them
    full_ids = tokenizer(row["prompt"] + row["completion"])["input_ids"]
    prompt_len = 0  # where the two tokenisations first differ (tokens can merge across the boundary)
    while prompt_len < min(len(prompt_ids), len(full_ids)) and prompt_ids[prompt_len] == full_ids[prompt_len]:
        prompt_len += 1
    return {"input_ids": full_ids, "completion_mask": [0] * prompt_len + [1] * (len(full_ids) - prompt_len)}
