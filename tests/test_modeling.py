"""Model loading: tiny preset round trip through from_pretrained, pad != eos, dropout off, LoRA, heads."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.errors import ConfigError
from rlhf.modeling import (
    apply_lora,
    check_tokenizer_matches,
    disable_dropout,
    ensure_pad_token,
    load_causal_lm,
    load_scalar_model,
    load_tokenizer,
    merge_lora,
    save_model,
    scalar_head,
)


def test_tiny_preset_round_trips_through_from_pretrained(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # the path a hub id takes
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.model_type == "llama"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    ids = tokenizer("User: Tell me about cats.", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == "User: Tell me about cats."  # byte-level BPE is lossless
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))


def test_pad_token_added_when_it_equals_eos(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token  # what many hub tokenizers ship
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.pad_token_id != loaded.eos_token_id
    assert ensure_pad_token(loaded) is False  # idempotent


def test_embeddings_grow_for_the_added_pad_only(tiny_model_dir, family_dirs):
    # GPT-2 has no pad token: load_tokenizer adds <pad> and the model grows one embedding row for it.
    raw = AutoTokenizer.from_pretrained(family_dirs["gpt2"])
    tokenizer = load_tokenizer(str(family_dirs["gpt2"]))
    model = load_causal_lm(str(family_dirs["gpt2"]), tokenizer)
    assert raw.pad_token is None and tokenizer.pad_token == "<pad>" and len(tokenizer) == len(raw) + 1
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == model.config.pad_token_id + 1
    # Any other extra token means the tokenizer is not this model's: stop instead of adding random rows.
    other = load_tokenizer(str(tiny_model_dir))
    other.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    with pytest.raises(ConfigError, match="tokenizer mismatch.*301 tokens.*300 rows"):
        load_causal_lm(str(tiny_model_dir), other)
    plain = load_causal_lm(str(tiny_model_dir))
    with pytest.raises(ConfigError, match="tokenizer mismatch"):
        check_tokenizer_matches(plain, other)


def test_dropout_disabled(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attention_dropout=0.3)
    assert model.config.attention_dropout == pytest.approx(0.3)
    disable_dropout(model)
    assert model.config.attention_dropout == 0.0
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_scalar_model_new_head_init_and_last_token(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    model = load_scalar_model(str(tiny_model_dir), tokenizer)
    head = scalar_head(model)
    expected_std = 1 / math.sqrt(model.config.hidden_size + 1)  # 1/sqrt(33) = 0.174
    assert abs(head.weight.std().item() - expected_std) < 0.35 * expected_std
    text = "User: hi\nAssistant: Hello"
    single = tokenizer([text], return_tensors="pt")
    tokenizer.padding_side = "right"
    padded = tokenizer([text], return_tensors="pt", padding="max_length", max_length=single.input_ids.shape[1] + 5)
    with torch.no_grad():
        a = model(**single).logits[0, 0]
        b = model(**padded).logits[0, 0]
    assert torch.allclose(a, b, atol=1e-5)  # score read at the last real token, not the padding


def test_lora_trains_only_adapters_and_merges(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir), tokenizer)
    lora = apply_lora(model, {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    frozen_before = {n: p.detach().clone() for n, p in lora.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    ids = tokenizer(["User: hi\nAssistant: Hello"], return_tensors="pt").input_ids
    for _ in range(2):  # two steps: LoRA's B starts at zero, so A only moves on the second
        optimizer.zero_grad()
        lora(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    assert all(torch.equal(p, frozen_before[n]) for n, p in lora.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        adapted = lora(ids).logits
    merged = merge_lora(lora)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted, atol=1e-4)
    out = save_model(merged, tokenizer, tmp_path / "merged")
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()


LOAD_AND_REPORT_KERNELS = """
import os, sys
if sys.argv[2] == "with-rlhf":
    import rlhf  # noqa: F401  (what every stage, benchmark and test imports first)
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
print(getattr(model, "use_kernels", None), os.environ.get("USE_HUB_KERNELS"))
"""


@pytest.mark.parametrize(
    ("import_rlhf", "environment", "expected"),
    [
        ("without", None, "True None"),  # transformers' own default: Hub kernels on (swapped in by train() on a GPU)
        ("with-rlhf", None, "False NO"),  # ours: off, so an offline GPU run trains and every mode runs one kernel set
        ("with-rlhf", "YES", "True YES"),  # a user who asks for them keeps them
    ],
)
def test_hub_kernels_are_off_unless_the_user_asks(tiny_model_dir, import_rlhf, environment, expected):
    """Measured on an H200 with transformers 5.25: `model.train()` fetched kernels-community/rotary from the Hub
    and every offline PPO / SFT / RM run stopped there. The setting is read by from_pretrained itself."""
    from transformers import PreTrainedModel

    from rlhf import HUB_KERNELS_ENV

    if not hasattr(PreTrainedModel, "use_kernels"):
        pytest.skip("this transformers has no Hub kernels")
    env = {k: v for k, v in os.environ.items() if k != HUB_KERNELS_ENV}
    env.update({HUB_KERNELS_ENV: environment} if environment else {})
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_REPORT_KERNELS, str(tiny_model_dir), import_rlhf],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected
