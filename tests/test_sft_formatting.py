"""SFT row shaping (chat template or plain text) and the shipped tiny configs."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from rlhf.app.schema import load_config
from rlhf.errors import ConfigError
from sft.formatting import prepare_sft_dataset, render_plain, to_prompt_completion, tokenize_without_eos

REPO = Path(__file__).resolve().parents[1]
CONVERSATION = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Tell me about cats."},
    {"role": "assistant", "content": "Cats purr."},
]
# A minimal template: enough to tell whether a row went through apply_chat_template.
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"  # noqa: E501


class FakeTokenizer:
    name_or_path = "fake"

    def __init__(self, chat_template=None):
        self.chat_template = chat_template


def test_conversation_rendered_as_plain_text_without_a_template():
    assert render_plain(CONVERSATION) == {
        "prompt": "System: Be kind.\nUser: Tell me about cats.\nAssistant:",
        "completion": " Cats purr.",
    }
    assert to_prompt_completion({"messages": CONVERSATION}, chat=True) == {
        "prompt": CONVERSATION[:2],
        "completion": CONVERSATION[2:],
    }


def test_template_modes():
    plain_rows = datasets.Dataset.from_list([{"prompt": "User: hi\nAssistant:", "completion": " Hello."}])
    chat_rows = datasets.Dataset.from_list([{"messages": CONVERSATION}])
    with_template, without = FakeTokenizer(TEMPLATE), FakeTokenizer()
    # auto: conversations use the template when there is one; plain pairs stay plain
    assert prepare_sft_dataset(chat_rows, with_template, "auto")[0]["completion"] == CONVERSATION[2:]
    assert prepare_sft_dataset(plain_rows, with_template, "auto")[0]["prompt"] == "User: hi\nAssistant:"
    assert prepare_sft_dataset(chat_rows, without, "auto")[0]["prompt"].endswith(
        "User: Tell me about cats.\nAssistant:"
    )
    # always: plain pairs become one user/assistant exchange; never: conversations become plain text
    assert prepare_sft_dataset(plain_rows, with_template, "always")[0]["prompt"] == [
        {"role": "user", "content": "User: hi\nAssistant:"}
    ]
    assert prepare_sft_dataset(chat_rows, with_template, "never")[0]["completion"] == " Cats purr."
    with pytest.raises(ConfigError, match="sft.use_chat_template=always"):
        prepare_sft_dataset(plain_rows, without, "always")


def test_chat_rows_train_only_on_the_last_assistant_turn(tiny_model_dir, tmp_path):
    import json

    from rlhf.modeling import load_tokenizer
    from sft.trainer import build_trainer, to_sft_config

    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(tmp_path / "tok")
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    cfg = load_config(
        REPO / "configs/tiny/sft.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"model.tokenizer={tmp_path / 'tok'}",
            f"data.train_file={data}",
            "data.eval_file=null",
            "data.eval_fraction=0",
            f"run.output_dir={tmp_path / 'run'}",
        ],
    )
    trainer = build_trainer(cfg, to_sft_config(cfg))
    row = trainer.train_dataset[0]
    prompt_ids = tokenizer.apply_chat_template(
        CONVERSATION[:2], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    trained = [token for token, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert row["labels"][: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert tokenizer.decode(trained) == "Cats purr."  # the system and user turns carry no loss


def test_tokenize_without_eos_masks_the_prompt(tiny_model_dir):
    from rlhf.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    row = tokenize_without_eos(
        {"prompt": "User: Tell me about cats.\nAssistant:", "completion": " Hi! Cats purr."}, tokenizer
    )
    prompt_len = len(tokenizer("User: Tell me about cats.\nAssistant:")["input_ids"])
    assert row["completion_mask"] == [0] * prompt_len + [1] * (len(row["input_ids"]) - prompt_len)
    assert tokenizer.eos_token_id not in row["input_ids"]
    assert tokenizer.decode([t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]) == " Hi! Cats purr."


@pytest.mark.parametrize("name", ["sft", "rm"])
def test_shipped_tiny_configs_load_and_say_how_to_launch(name):
    path = REPO / "configs" / "tiny" / f"{name}.yaml"
    cfg = load_config(path)
    header = path.read_text().splitlines()[:3]
    assert any(f"rlhf {name} --config configs/tiny/{name}.yaml" in line for line in header)
    assert cfg.model.name_or_path and cfg.data.train_file and cfg.train.precision == "fp32"
    assert cfg.run.output_dir == f"runs/tiny/{name}"
