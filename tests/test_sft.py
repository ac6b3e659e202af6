"""SFT stage: labels on completions only, the loss falls, LoRA trains adapters only, resume continues.

Every run uses the session's tiny Llama (hidden 32, 2 layers) and a few dozen demonstrations written
to a temporary directory, so nothing depends on the built-in task files.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from rlhf.app.schema import load_config
from rlhf.tracking import read_metrics

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["cats", "the sea", "volcanoes", "dogs", "rain", "trees"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_sft_data(directory: Path, rows_per_topic: int = 4) -> tuple[Path, Path]:
    rows = [
        {
            "prompt": f"User: Tell me about {topic}.\nAssistant:",
            "completion": f" Hi! {topic.capitalize()} are nice. Hope this helps.",
        }
        for topic in TOPICS
        for _ in range(rows_per_topic)
    ]
    train, evaluation = directory / "sft_train.jsonl", directory / "sft_eval.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    evaluation.write_text("".join(json.dumps(row) + "\n" for row in rows[::rows_per_topic]))
    return train, evaluation


def sft_config(tiny_model_dir, tmp_path: Path, *overrides: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    train, evaluation = write_sft_data(tmp_path)
    return load_config(
        REPO / "configs/tiny/sft.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={train}",
            f"data.eval_file={evaluation}",
            f"run.output_dir={tmp_path / 'run'}",
            "train.learning_rate=3e-3",
            "train.per_device_train_batch_size=4",
            "train.max_steps=12",
            "train.logging_steps=1",
            "train.eval_steps=null",
            "train.save_steps=null",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
            *overrides,
        ],
    )


def test_to_sft_config_sets_every_default_that_differs_from_ours(tiny_model_dir, tmp_path):
    from sft.trainer import to_sft_config

    cfg = sft_config(tiny_model_dir, tmp_path, "train.eval_steps=5", "train.save_steps=4", "train.warmup_ratio=0.1")
    args = to_sft_config(cfg)
    assert args.bf16 is False and args.fp16 is False  # TRL would default bf16 to True
    assert args.gradient_checkpointing is False  # TRL would default it to True
    assert args.learning_rate == pytest.approx(3e-3) and args.warmup_steps == pytest.approx(0.1)
    assert args.output_dir == str(tmp_path / "run" / "checkpoints")
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]
    assert (args.eval_strategy, args.eval_steps, args.save_strategy, args.save_steps) == ("steps", 5, "steps", 4)
    assert args.completion_only_loss is True and args.max_length == 128


def test_labels_cover_the_completion_and_eos_only(tiny_model_dir, tmp_path):
    from sft.trainer import build_trainer, to_sft_config

    cfg = sft_config(tiny_model_dir, tmp_path)
    trainer = build_trainer(cfg, to_sft_config(cfg))
    tokenizer = trainer.processing_class
    row = trainer.train_dataset[0]
    prompt = "User: Tell me about cats.\nAssistant:"
    prompt_len = len(tokenizer(prompt)["input_ids"])
    labels, input_ids = row["labels"], row["input_ids"]
    assert labels[:prompt_len] == [-100] * prompt_len  # no loss on the prompt
    assert labels[prompt_len:] == input_ids[prompt_len:]  # loss on every completion token...
    assert input_ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id  # ...including EOS
    assert tokenizer.pad_token_id != tokenizer.eos_token_id

    all_tokens = sft_config(tiny_model_dir, tmp_path, "sft.completion_only_loss=false")
    everything = build_trainer(all_tokens, to_sft_config(all_tokens))
    assert everything.train_dataset[0]["labels"] == everything.train_dataset[0]["input_ids"]

    without_eos = sft_config(tiny_model_dir, tmp_path, "sft.add_eos=false")
    no_eos = build_trainer(without_eos, to_sft_config(without_eos))
    assert no_eos.train_dataset[0]["input_ids"] == input_ids[:-1]
    assert no_eos.train_dataset[0]["labels"] == labels[:-1]


def test_sft_cli_loss_falls_and_writes_the_run_directory(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhf.app.cli import main

    cfg = sft_config(tiny_model_dir, tmp_path)
    config_file = tmp_path / "sft.yaml"
    from rlhf.config import save_config

    save_config(cfg, tmp_path)
    (tmp_path / "config.yaml").rename(config_file)
    assert main(["sft", "--config", str(config_file), "train.max_steps=15"]) == 0

    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    losses = [row["loss"] for row in read_metrics(run / "metrics.jsonl") if "loss" in row]
    assert losses[-1] < losses[0] - 0.5, losses  # 12 steps at lr 3e-3 on a repetitive task
    assert summary["eval/perplexity"] == pytest.approx(math.exp(summary["eval/loss"]))
    assert summary["train/global_step"] == 15
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "checkpoint-15").is_dir()
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(model.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert (run / "model" / "tokenizer.json").exists()


def test_lora_trains_only_the_adapters_and_saves_them_merged(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from sft.trainer import train

    summary = train(sft_config(tiny_model_dir, tmp_path, "model.lora.enabled=true", "model.lora.r=4"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert summary["trainable_parameters"] < summary["num_parameters"] / 3
    base_params, merged_params = dict(base.named_parameters()), dict(merged.named_parameters())
    assert base_params.keys() == merged_params.keys()  # merged: no lora_A / lora_B left
    changed = {name for name in base_params if not torch.equal(base_params[name], merged_params[name])}
    # Adapters sit on the attention and MLP projections; embeddings, norms and the LM head never train.
    assert changed and all(any(part in name for part in ("_proj",)) for name in changed), changed
    assert torch.equal(base_params["model.embed_tokens.weight"], merged_params["model.embed_tokens.weight"])
    assert torch.equal(base_params["lm_head.weight"], merged_params["lm_head.weight"])


def test_resume_continues_from_the_checkpoint_step_with_the_same_losses(tiny_model_dir, tmp_path):
    from sft.trainer import train

    full = sft_config(
        tiny_model_dir,
        tmp_path / "a",
        "train.max_steps=6",
        "train.save_steps=3",
        "data.eval_file=null",
        "data.eval_fraction=0",
    )
    train(full)
    losses_full = {
        row["step"]: row["loss"] for row in read_metrics(tmp_path / "a" / "run" / "metrics.jsonl") if "loss" in row
    }

    resumed_dir = tmp_path / "b" / "run"
    shutil.copytree(
        tmp_path / "a" / "run" / "checkpoints" / "checkpoint-3", resumed_dir / "checkpoints" / "checkpoint-3"
    )
    resumed = sft_config(
        tiny_model_dir,
        tmp_path / "b",
        "train.max_steps=6",
        "train.save_steps=3",
        "data.eval_file=null",
        "data.eval_fraction=0",
        "train.resume_from_checkpoint=latest",
    )
    summary = train(resumed)
    losses_resumed = {row["step"]: row["loss"] for row in read_metrics(resumed_dir / "metrics.jsonl") if "loss" in row}
    assert summary["resumed_from"].endswith("checkpoint-3")
    assert sorted(losses_resumed) == [4, 5, 6]  # continues at the checkpoint's step, not from 0
    for step in (4, 5, 6):
        assert losses_resumed[step] == pytest.approx(losses_full[step], rel=1e-4), step


def test_missing_train_file_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    from rlhf.app.cli import main

    assert (
        main(
            [
                "sft",
                "--config",
                str(REPO / "configs/tiny/sft.yaml"),
                f"model.name_or_path={tiny_model_dir}",
                f"data.train_file={tmp_path / 'missing.jsonl'}",
                f"run.output_dir={tmp_path / 'run'}",
            ]
        )
        == 2
    )
    assert "missing.jsonl" in capsys.readouterr().err


def test_bad_sft_row_names_file_row_and_field(tiny_model_dir, tmp_path, capsys):
    from rlhf.app.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "User: hi\nAssistant:", "completion": " Hi!"})
        + "\n"
        + json.dumps({"prompt": "User: yo\nAssistant:"})
        + "\n"
    )
    assert (
        main(
            [
                "sft",
                "--config",
                str(REPO / "configs/tiny/sft.yaml"),
                f"model.name_or_path={tiny_model_dir}",
                f"data.train_file={bad}",
                "data.eval_file=null",
                f"run.output_dir={tmp_path / 'run'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "row 2" in err and "completion" in err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_resume_latest_in_place_logs_each_step_once_and_keeps_counting_tokens(tiny_model_dir, tmp_path):
    """Killed after logging steps 4-6 but before the step-6 checkpoint: `latest` resumes at 3, drops the rows
    logged after it (they are logged again) and continues TRL's num_tokens from the checkpoint's count."""
    from sft.trainer import train

    common = ("train.max_steps=6", "train.save_steps=3", "data.eval_file=null", "data.eval_fraction=0")
    train(sft_config(tiny_model_dir, tmp_path / "a", *common))
    straight = {row["step"]: row for row in read_metrics(tmp_path / "a" / "run" / "metrics.jsonl") if "loss" in row}
    run = tmp_path / "a" / "run"
    shutil.rmtree(run / "checkpoints" / "checkpoint-6")
    (run / "summary.json").unlink()
    train(sft_config(tiny_model_dir, tmp_path / "a", *common, "train.resume_from_checkpoint=latest"))
    rows = [row for row in read_metrics(run / "metrics.jsonl") if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:  # the same token counts as the uninterrupted run: no restart at 0 after the checkpoint
        assert row["num_tokens"] == straight[row["step"]]["num_tokens"], row["step"]


def test_resume_refuses_a_checkpoint_of_another_config_naming_the_key(tiny_model_dir, tmp_path):
    from rlhf.errors import ConfigError
    from sft.trainer import train

    common = ("train.max_steps=3", "train.save_steps=3", "data.eval_file=null", "data.eval_fraction=0")
    train(sft_config(tiny_model_dir, tmp_path / "a", *common))
    before = (tmp_path / "a" / "run" / "metrics.jsonl").read_text()
    resume = (*common, "train.resume_from_checkpoint=latest", "train.max_steps=6")
    with pytest.raises(ConfigError, match=r"train.learning_rate: 0.003 -> 0.001"):
        train(sft_config(tiny_model_dir, tmp_path / "a", *resume, "train.learning_rate=1e-3"))
    assert (tmp_path / "a" / "run" / "metrics.jsonl").read_text() == before  # nothing in the run changed
    summary = train(
        sft_config(tiny_model_dir, tmp_path / "a", *resume, "train.learning_rate=1e-3", "run.resume_mismatch_ok=true")
    )
    assert summary["resumed_from"].endswith("checkpoint-3")


def test_a_plain_rerun_starts_over_with_the_earlier_history_moved_aside(tiny_model_dir, tmp_path):
    from sft.trainer import train

    common = ("train.max_steps=2", "data.eval_file=null", "data.eval_fraction=0")
    train(sft_config(tiny_model_dir, tmp_path / "a", *common))
    run = tmp_path / "a" / "run"
    first = (run / "metrics.jsonl").read_text()
    train(sft_config(tiny_model_dir, tmp_path / "a", *common))
    assert [row["step"] for row in read_metrics(run / "metrics.jsonl") if "loss" in row] == [1, 2]
    (previous,) = (run / "previous").iterdir()
    assert (previous / "metrics.jsonl").read_text() == first and (previous / "summary.json").is_file()
