"""Tiny models that follow the tokenizer conventions of real model families, built without downloads.

Each family is a locally trained tokenizer with the family's special tokens, post-processor, chat template
and generation-config EOS list, plus a tiny model of the family's architecture, saved as an HF directory:

- `llama3`: byte-level BPE, `<|begin_of_text|>` added by the post-processor, header-style template,
  turns end with `<|eot_id|>`, tokenizer EOS `<|end_of_text|>`, generation config EOS [end_of_text, eot_id]
  (the original Llama 3 Instruct release, whose tokenizer EOS is not the turn end), no pad token.
- `qwen`: byte-level BPE, no BOS, ChatML (`<|im_start|>` ... `<|im_end|>`), EOS `<|im_end|>`, pad
  `<|endoftext|>` which the generation config also lists as an EOS (Qwen 2.5 Instruct).
- `gpt2`: byte-level BPE, `<|endoftext|>` is BOS, EOS and UNK, never added to text, no pad, no template.
- `llama2`: SentencePiece-style BPE (metaspace word starts), `<s>` added by the post-processor,
  `[INST] ... [/INST]` template whose assistant turn ends with `</s>`, no pad (Llama 2 / Mistral).
"""

from __future__ import annotations

from pathlib import Path

TEXTS = [
    "User: Tell me about cats.\nAssistant: Hi! Cats purr. Cats nap a lot. Hope this helps.",
    "User: What do you know about the sea?\nAssistant: Hello! The sea is salty. Waves move sand. Bye!",
    "User: Describe volcanoes.\nAssistant: Hi! Lava is hot. Ash can fly far. Have a nice day.",
    "system user assistant You are a helpful assistant. [INST] [/INST]",
] * 4

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INST_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "[INST] {{ message['content'] }} [/INST]{% elif message['role'] == 'assistant' %}"
    " {{ message['content'] }}{{ eos_token }}{% else %}{{ message['content'] }}\n\n{% endif %}{% endfor %}"
)

FAMILIES = ("llama3", "qwen", "gpt2", "llama2")
TINY_ARCH = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=256)


def _byte_level(specials: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(TEXTS, trainer=trainer)
    return core


def _sentencepiece(specials: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = sorted({char for text in TEXTS for char in text.replace(" ", "▁")} | set("▁\n"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    core.train_from_iterator(TEXTS, trainer=trainer)
    return core


def _bos_post_processor(core, bos: str):
    from tokenizers import processors

    bos_id = core.token_to_id(bos)
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )


def build_tokenizer(family: str):
    """The family's tokenizer (a `PreTrainedTokenizerFast`) and its generation-config EOS ids."""
    from transformers import PreTrainedTokenizerFast

    if family == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        core = _byte_level(specials, 400)
        _bos_post_processor(core, "<|begin_of_text|>")
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core,
            bos_token="<|begin_of_text|>",
            eos_token="<|end_of_text|>",
            additional_special_tokens=specials[2:],
            chat_template=LLAMA3_TEMPLATE,
        )
        return tokenizer, [core.token_to_id("<|end_of_text|>"), core.token_to_id("<|eot_id|>")]
    if family == "qwen":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        core = _byte_level(specials, 400)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>"],
            chat_template=CHATML_TEMPLATE,
        )
        return tokenizer, [core.token_to_id("<|im_end|>"), core.token_to_id("<|endoftext|>")]
    if family == "gpt2":
        core = _byte_level(["<|endoftext|>"], 400)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
        )
        return tokenizer, [core.token_to_id("<|endoftext|>")]
    if family == "llama2":
        core = _sentencepiece(["<unk>", "<s>", "</s>"], 300)
        _bos_post_processor(core, "<s>")
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=INST_TEMPLATE
        )
        return tokenizer, [core.token_to_id("</s>")]
    raise ValueError(f"unknown family {family!r}")


def _model_config(family: str, tokenizer, eos_ids: list[int]):
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    a = TINY_ARCH
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if family == "gpt2":
        return GPT2Config(
            n_embd=a["hidden_size"], n_layer=a["num_layers"], n_head=a["num_heads"], n_positions=a["max_positions"],
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )  # fmt: skip
    cls = {"llama3": LlamaConfig, "qwen": Qwen2Config, "llama2": MistralConfig}[family]
    return cls(
        hidden_size=a["hidden_size"], num_hidden_layers=a["num_layers"], num_attention_heads=a["num_heads"],
        num_key_value_heads=a["num_heads"], intermediate_size=a["intermediate_size"],
        max_position_embeddings=a["max_positions"], attention_dropout=0.0, **common,
    )  # fmt: skip


def build_family(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Save the family's tiny causal LM, tokenizer and generation config to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer, eos_ids = build_tokenizer(family)
    config = _model_config(family, tokenizer, eos_ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        pad_token_id=tokenizer.pad_token_id,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
