"""`rlhf check`: the pre-flight report of a stage or pipeline config, and the pipeline running it first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.app.check import check_config, main, render_text
from rlhf.errors import ConfigError
from rlhf.tokens import Encoder

REPO = Path(__file__).resolve().parents[1]
CHAT_PROMPT = [{"role": "user", "content": "Tell me about cats."}]


@pytest.fixture()
def prompts_file(tmp_path):
    rows = [{"prompt": CHAT_PROMPT}] + [
        {"prompt": [{"role": "user", "content": "Tell me about cats. " * 10}]} for _ in range(3)
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_ppo_check_reports_conventions_example_and_lengths(family_dirs, prompts_file, capsys):
    from rlhf.modeling import load_tokenizer

    llama3 = str(family_dirs["llama3"])
    overrides = [f"model.name_or_path={llama3}", f"ppo.reward_model_path={llama3}", f"data.train_file={prompts_file}"]
    encoder = Encoder(load_tokenizer(llama3))
    limit = len(encoder.prompt_ids(CHAT_PROMPT))
    assert main(["--stage", "ppo", "--json", *overrides, f"data.max_prompt_length={limit}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == [
        "config", "tokenizers", "identity", "example", "lengths", "dtypes", "memory", "warnings", "problems"
    ]  # fmt: skip
    assert report["tokenizers"]["policy, reference, reward, value"]["stop_tokens"] == "<|end_of_text|> <|eot_id|>"
    assert set(report["identity"].values()) == {"identical"}
    assert report["example"]["prompt_ids"] == encoder.prompt_ids(CHAT_PROMPT)
    assert report["example"]["rendered"].startswith("<|begin_of_text|><|start_header_id|>user")
    assert report["example"]["response_ends_at"] == "<|eot_id|>"
    lengths = report["lengths"][0]
    assert (lengths["rows"], lengths["skipped_over_max_prompt_length"], lengths["prompt_tokens"]["min"]) == (
        4,
        3,
        limit,
    )
    assert report["dtypes"]["ppo"]["policy, reference, reward, value"]["loaded_as"] == "float32"
    assert report["problems"] == []
    assert main(["--stage", "ppo", *overrides, f"data.max_prompt_length={limit - 1}"]) == 2  # every prompt too long
    assert "every prompt is longer than data.max_prompt_length" in capsys.readouterr().out


def test_a_tokenizer_mismatch_is_a_hard_error(family_dirs, prompts_file, capsys):
    llama3, qwen = str(family_dirs["llama3"]), str(family_dirs["qwen"])
    code = main(["--stage", "ppo", f"model.name_or_path={llama3}", f"ppo.reward_model_path={qwen}",
                 f"data.train_file={prompts_file}"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 2
    assert "ERROR tokenizer mismatch: the reward model" in text and qwen in text and llama3 in text
    assert "  reward: \"DIFFERS from policy: bos_token '<|begin_of_text|>' vs None\"" in text


def test_tiny_pipeline_check_uses_the_base_model_until_stages_have_trained(tiny_model_dir, tmp_path):
    report = check_config(
        str(REPO / "configs/tiny/pipeline.yaml"),
        [f"run.output_dir={tmp_path / 'run'}", f"pipeline.base_model={tiny_model_dir}", "pipeline.task_dir=data/tiny"],
    )
    assert report["config"]["stages"] == ["sft", "rm", "ppo"]
    assert list(report["tokenizers"]) == ["policy, reference, reward, value"]  # all trained from the base model
    tiny = report["tokenizers"]["policy, reference, reward, value"]
    assert (tiny["bos_added"], tiny["eos"], tiny["turn_end"], tiny["chat_template"]) == (None, "</s>", None, False)
    by_file = {Path(entry["file"]).name: entry for entry in report["lengths"]}
    assert set(by_file) == {"sft_train.jsonl", "sft_eval.jsonl", "prompts_train.jsonl", "prompts_eval.jsonl"}
    assert by_file["prompts_train.jsonl"]["max_prompt_length"] == 64
    from rlhf.files import read_jsonl
    from rlhf.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))  # no BOS; the EOS is appended: counted by hand here
    rows = read_jsonl(REPO / "data/tiny/sft_train.jsonl")
    over = sum(len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1 > 128 for row in rows)
    assert by_file["sft_train.jsonl"]["rows"] == len(rows) and by_file["sft_train.jsonl"]["max_length"] == 128
    assert by_file["sft_train.jsonl"]["truncated_over_max_length"] == over
    assert report["example"]["score_read_at"] == "</s>" and report["problems"] == []
    assert "== tokenizers ==" in render_text(report)


def test_the_pipeline_checks_before_its_first_training_stage(family_dirs, tmp_path):
    from rlhf.app.pipeline import Pipeline, load_pipeline_config

    cfg = load_pipeline_config(
        str(REPO / "configs/tiny/pipeline.yaml"),
        [
            f"run.output_dir={tmp_path / 'run'}",
            f"pipeline.base_model={family_dirs['llama3']}",
            "pipeline.task_dir=data/tiny",
            f"ppo.ppo.reward_model_path={family_dirs['qwen']}",
            "tracking.report_to=[jsonl]",
        ],
    )
    report = check_config(
        str(REPO / "configs/tiny/pipeline.yaml"),
        [
            f"run.output_dir={tmp_path / 'run'}",
            f"pipeline.base_model={family_dirs['llama3']}",
            "sft.sft.use_chat_template=never",
        ],
    )
    assert report["warnings"][0].startswith("sft.use_chat_template=never renders conversations as plain text")
    with pytest.raises(ConfigError, match="pre-flight check failed: tokenizer mismatch: the reward model"):
        Pipeline(cfg).run()
    assert not (tmp_path / "run" / "sft").exists()  # stopped before SFT started
    assert json.loads((tmp_path / "run" / "check.json").read_text())["problems"]


def test_check_estimates_memory_under_the_accelerate_config(family_dirs, prompts_file, capsys):
    from rlhf.memory import GIB, ModelShape

    llama3 = str(family_dirs["llama3"])
    overrides = [f"model.name_or_path={llama3}", f"ppo.reward_model_path={llama3}", f"data.train_file={prompts_file}"]
    zero3 = str(REPO / "configs/accelerate/zero3.yaml")
    assert main(["--stage", "ppo", "--json", "--accelerate", zero3, *overrides]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]["ppo"]
    shape = ModelShape.from_pretrained(llama3)
    assert (memory["processes"], memory["zero_stage"], memory["fits"]) == (8, 3, True)
    assert memory["resident_gib"]["policy weights"] == round(shape.causal_lm_parameters() * 4 / 8 / GIB, 3)
    assert set(memory["phases_gib"]) == {"generation", "scoring", "training"}
    # A device too small for the estimate is a warning (the run may still be launched elsewhere), not an error.
    assert main(["--stage", "ppo", "--json", "--device-gib", "2", *overrides]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any("ppo: estimated peak" in w and "does not fit a 2 GiB accelerator" in w for w in warnings)
