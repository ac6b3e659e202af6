"""rlhf/tokens.py: one encoding of prompts and responses, on the conventions of real model families.

The family tokenizers come from tests/families.py (locally trained, no downloads); every expectation is
what the family's real tokenizer does (BOS from the post-processor or none, the template's turn end, the
generation config's EOS list, the pad token).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rlhf.modeling import load_tokenizer
from rlhf.tokens import Encoder, tokenizer_difference

REPO = Path(__file__).resolve().parents[1]
PROMPT = "User: Tell me about cats.\nAssistant:"
MESSAGES = [{"role": "user", "content": "Tell me about cats."}]


@pytest.fixture(scope="module")
def encoders(family_dirs):
    return {family: Encoder(load_tokenizer(str(path))) for family, path in family_dirs.items()}


def tokens_of(encoder: Encoder, ids) -> list[str]:
    return encoder.tokenizer.convert_ids_to_tokens(list(ids))


def test_family_conventions_are_detected_by_encoding(encoders):
    llama3, qwen, gpt2, llama2 = (encoders[f].conventions for f in ("llama3", "qwen", "gpt2", "llama2"))
    assert llama3.tokens == {
        "prefix": "<|begin_of_text|>",
        "eos": "<|end_of_text|>",
        "pad": "<pad>",
        "turn_end": "<|eot_id|>",
        "stop": "<|end_of_text|> <|eot_id|>",  # both of the generation config's EOS ids
    }
    # Qwen's pad <|endoftext|> is one of its generation-config EOS ids: a finished response ending in it
    # would look like padding to the reward model, so a dedicated <pad> replaces it.
    assert qwen.tokens == {
        "prefix": None,
        "eos": "<|im_end|>",
        "pad": "<pad>",
        "turn_end": "<|im_end|>",
        "stop": "<|im_end|> <|endoftext|>",
    }
    assert gpt2.tokens == {
        "prefix": None,
        "eos": "<|endoftext|>",
        "pad": "<pad>",
        "turn_end": None,
        "stop": "<|endoftext|>",
    }
    assert llama2.tokens == {"prefix": "<s>", "eos": "</s>", "pad": "<pad>", "turn_end": "</s>", "stop": "</s>"}
    for conv in (llama3, qwen, gpt2, llama2):
        assert conv.pad_id not in conv.stop_ids


def test_plain_prompts_get_the_bos_the_tokenizer_adds(encoders):
    for family, encoder in encoders.items():
        ids = encoder.prompt_ids(PROMPT)
        assert ids == encoder.tokenizer(PROMPT)["input_ids"], family  # what SFT (TRL) and `rlhf generate` saw
    assert tokens_of(encoders["llama3"], encoders["llama3"].prompt_ids(PROMPT))[0] == "<|begin_of_text|>"
    assert tokens_of(encoders["llama2"], encoders["llama2"].prompt_ids(PROMPT))[0] == "<s>"
    assert tokens_of(encoders["qwen"], encoders["qwen"].prompt_ids(PROMPT))[0] == "User"


def test_chat_prompts_render_the_template_once_with_its_generation_prompt(encoders):
    rendered = {family: encoder.render_prompt(MESSAGES) for family, encoder in encoders.items()}
    assert rendered["llama3"] == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTell me about cats.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert rendered["qwen"].endswith("<|im_start|>user\nTell me about cats.<|im_end|>\n<|im_start|>assistant\n")
    assert rendered["llama2"] == "<s>[INST] Tell me about cats. [/INST]"
    assert rendered["gpt2"] == "User: Tell me about cats.\nAssistant:"  # no template: the plain rendering SFT uses
    llama3 = encoders["llama3"]
    assert llama3.prompt_ids(MESSAGES).count(llama3.tokenizer.bos_token_id) == 1  # the template's BOS, not two


def test_responses_end_at_their_terminator(encoders):
    """A chat response ends at the turn terminator (ChatML's trailing newline is not part of it), a plain one
    at the tokenizer's EOS: the reward model's score is read there, where a finished PPO response ends."""
    expected_chat_end = {"llama3": "<|eot_id|>", "qwen": "<|im_end|>", "gpt2": "<|endoftext|>", "llama2": "</s>"}
    expected_plain_end = {"llama3": "<|end_of_text|>", "qwen": "<|im_end|>", "gpt2": "<|endoftext|>", "llama2": "</s>"}
    for family, encoder in encoders.items():
        chat = encoder.sequence(MESSAGES, "Hi! Cats purr.")
        assert tokens_of(encoder, chat[-1:]) == [expected_chat_end[family]], family
        assert chat[: len(encoder.prompt_ids(MESSAGES))] == encoder.prompt_ids(MESSAGES)
        plain = encoder.sequence(PROMPT, " Hi! Cats purr.")
        assert tokens_of(encoder, plain[-1:]) == [expected_plain_end[family]], family
        assert plain[: len(encoder.prompt_ids(PROMPT))] == encoder.prompt_ids(PROMPT)
        assert encoder.tokenizer.decode(plain, skip_special_tokens=True).endswith("Hi! Cats purr.")
    # The same reply given as an assistant message or as text encodes the same.
    qwen = encoders["qwen"]
    assert qwen.sequence(MESSAGES, [{"role": "assistant", "content": "Hi!"}]) == qwen.sequence(MESSAGES, "Hi!")


def test_reward_model_rows_read_the_score_at_the_turn_terminator(encoders):
    """Old code: a ChatML row ended with the template's newline after <|im_end|>, so training read the score
    there while PPO read it at <|im_end|>."""
    from reward_model.scoring import preference_input_ids

    qwen = encoders["qwen"]
    ids = preference_input_ids(qwen.tokenizer, MESSAGES, "Hi! Cats purr.")
    assert tokens_of(qwen, ids[-1:]) == ["<|im_end|>"]


def test_cut_at_stop_uses_every_stop_id(encoders):
    llama3 = encoders["llama3"]
    eot, end = llama3.tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    assert llama3.cut_at_stop([10, 11, eot, 12, end]) == ([10, 11, eot], True)
    assert llama3.cut_at_stop([10, end, eot]) == ([10, end], True)
    assert llama3.cut_at_stop([10, 11]) == ([10, 11], False)


def test_overlong_prompts_are_skipped_with_their_bos_intact(encoders):
    """Old code cut long prompts from the left, dropping the BOS (and a system header)."""
    llama3 = encoders["llama3"]
    long_prompt = "User: " + "Tell me about cats. " * 20 + "\nAssistant:"
    limit = len(llama3.prompt_ids(PROMPT))
    encoded = llama3.encode_prompts([long_prompt, PROMPT], max_length=limit)
    assert encoded.skipped == 1 and encoded.kept == [1]
    assert encoded.ids == [llama3.prompt_ids(PROMPT)] and encoded.ids[0][0] == llama3.tokenizer.bos_token_id


def test_tokenizer_difference_names_the_first_differing_token(encoders):
    assert tokenizer_difference(encoders["llama3"].tokenizer, encoders["llama3"].tokenizer) is None
    difference = tokenizer_difference(encoders["llama3"].tokenizer, encoders["gpt2"].tokenizer)
    assert difference == "bos_token '<|begin_of_text|>' vs '<|endoftext|>'"
    difference = tokenizer_difference(encoders["qwen"].tokenizer, encoders["llama2"].tokenizer)
    assert difference.startswith("bos_token None vs '<s>'")


def test_same_vocabulary_size_is_not_enough(tiny_model_dir, tmp_path):
    """Old code compared lengths only: two tokenizers of one size with different tokens passed."""
    from transformers import AutoTokenizer

    from rlhf.errors import ConfigError
    from rlhf.modeling import build_tiny_tokenizer, check_same_tokenizers

    tiny = AutoTokenizer.from_pretrained(tiny_model_dir)
    other = build_tiny_tokenizer(["Completely other words for another vocabulary entirely."] * 8, vocab_size=len(tiny))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ConfigError) as error:
        check_same_tokenizers({"policy": str(tiny_model_dir), "reward": str(tmp_path / "other")})
    message = str(error.value)
    assert str(tiny_model_dir) in message and str(tmp_path / "other") in message
    assert "reward model" in message and re.search(r"token id \d+: '\S+' vs '\S+'", message)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "other")) == len(tiny)  # same length, other tokens


def _old_ppo_prompt(tokenizer, prompt):  # ppo/rollout.py encode_prompt before rlhf.tokens
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _old_rm_sequence(tokenizer, prompt, response):  # reward_model/scoring.py before rlhf.tokens (and TRL's)
    text = prompt + response
    if not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return tokenizer(text)["input_ids"]


def test_the_quickstart_tokenizer_gives_the_ids_it_gave_before():
    """The built-in task's tokenizer (no BOS, one EOS, no template): every prompt and every SFT row encodes
    exactly as before rlhf.tokens, in every stage, so the quickstart's report cannot move."""
    from rlhf.files import read_jsonl
    from rlhf.modeling import build_tiny_tokenizer, ensure_pad_token, texts_from_files

    task = REPO / "data" / "tiny"
    tokenizer = build_tiny_tokenizer(texts_from_files([task / "sft_train.jsonl", task / "prompts_train.jsonl"]))
    ensure_pad_token(tokenizer)
    encoder = Encoder(tokenizer)
    assert encoder.conventions.prefix_ids == () and encoder.stop_ids == [tokenizer.eos_token_id]
    prompts = [
        row["prompt"] for name in ("prompts_train.jsonl", "prompts_eval.jsonl") for row in read_jsonl(task / name)
    ]
    for prompt in prompts:
        ids = encoder.prompt_ids(prompt)
        assert ids == _old_ppo_prompt(tokenizer, prompt) == tokenizer(prompt)["input_ids"]
    rows = read_jsonl(task / "sft_train.jsonl")
    for row in rows:
        assert encoder.sequence(row["prompt"], row["completion"]) == _old_rm_sequence(
            tokenizer, row["prompt"], row["completion"]
        )
    assert len(prompts) > 100 and len(rows) > 100


def test_a_conversation_without_template_encodes_as_sft_renders_it(encoders):
    """GPT-2 has no chat template: SFT renders a conversation as "User: ...\\nAssistant:" + " reply"; the
    reward model's and PPO's ids of the same conversation must be those (the space included)."""
    from rlhf.tokens import render_plain

    gpt2 = encoders["gpt2"]
    rendered = render_plain(MESSAGES + [{"role": "assistant", "content": "Hi! Cats purr."}])
    expected = gpt2.tokenizer(rendered["prompt"] + rendered["completion"])["input_ids"] + [gpt2.conventions.eos_id]
    assert gpt2.sequence(MESSAGES, "Hi! Cats purr.") == expected


def test_ppo_prompts_and_ptx_rows_get_the_ids_sft_saw(encoders, family_dirs, tmp_path):
    """Old code tokenised PPO prompts and PTX rows with add_special_tokens=False: no BOS for Llama, while
    SFT (TRL), the reward model and `rlhf generate` had one."""
    import json

    from ppo.data import PtxBatches, load_prompt_sets
    from rlhf.app.schema import load_config

    llama3 = encoders["llama3"]
    prompts = tmp_path / "prompts.jsonl"
    other = "User: Hi.\nAssistant:"
    prompts.write_text(json.dumps({"prompt": PROMPT}) + "\n" + json.dumps({"prompt": other}) + "\n")
    cfg = load_config(
        None,
        [f"model.name_or_path={family_dirs['llama3']}", "ppo.reward_model_path=x", f"data.train_file={prompts}"],
        require_complete=False,
    )
    train_prompts, _ = load_prompt_sets(cfg, llama3.tokenizer)
    assert train_prompts.ids == [llama3.tokenizer(PROMPT)["input_ids"], llama3.tokenizer(other)["input_ids"]]
    assert train_prompts.ids[0][0] == llama3.tokenizer.bos_token_id
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": PROMPT, "completion": " Hi!"}) + "\n")
    ids, labels = PtxBatches(str(sft), llama3.tokenizer, max_length=64, seed=0).examples[0]
    assert ids == llama3.sequence(PROMPT, " Hi!") and ids[0] == llama3.tokenizer.bos_token_id
    assert labels == [-100] * len(llama3.prompt_ids(PROMPT)) + ids[len(llama3.prompt_ids(PROMPT)) :]
