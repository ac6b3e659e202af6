"""The built-in task: deterministic generation, held-out prompts, imperfect demonstrations, committed output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.tasks.tiny.generator import OUTPUT_FILES, build_task, make_task
from rlhf.tasks.tiny.judge import gold_score, prompt_topic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built():
    return build_task(seed=0)


def test_make_task_is_deterministic_and_matches_the_committed_files(tmp_path):
    from rlhf.app.cli import main

    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["data", "make-task", "--out", str(first), "--seed", "0"]) == 0
    make_task(second, seed=0)
    for name in OUTPUT_FILES:
        if name != "README.md":  # the README names its output directory
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
            assert (first / name).read_bytes() == (REPO / "data" / "tiny" / name).read_bytes(), (
                f"data/tiny/{name} is stale: rerun make-task"
            )
    other = tmp_path / "c"
    make_task(other, seed=1)
    assert (other / "sft_train.jsonl").read_bytes() != (first / "sft_train.jsonl").read_bytes()


def test_committed_files_are_small_and_the_readme_is_current():
    tiny = REPO / "data" / "tiny"
    assert sum((tiny / name).stat().st_size for name in OUTPUT_FILES) < 2_000_000
    readme = (tiny / "README.md").read_text()
    assert "rlhf data make-task --out data/tiny --seed 0" in readme


def test_sizes_and_formats(built):
    sizes = json.loads((REPO / "rlhf" / "tasks" / "tiny" / "task.json").read_text())["sizes"]
    assert len(built["sft_train"]) == sizes["sft_train"] >= 2000
    assert len(built["prompts_eval"]) == sizes["eval_prompts"] >= 256
    for row in built["sft_train"]:
        assert row["prompt"].startswith("User: ") and row["prompt"].endswith("\nAssistant:")
        assert row["completion"].startswith(" ") and not row["completion"].startswith("  ")
        assert "</s>" not in row["completion"] and "<|endoftext|>" not in row["completion"]


def test_eval_prompts_are_held_out_and_include_unseen_templates(built):
    train_prompts = {row["prompt"] for row in built["prompts_train"]} | {row["prompt"] for row in built["sft_train"]}
    eval_rows = built["prompts_eval"]
    assert not train_prompts & {row["prompt"] for row in eval_rows}
    train_templates = {row["meta"]["template"] for row in built["prompts_train"]}
    heldout = [row for row in eval_rows if row["meta"]["heldout_template"]]
    assert len(heldout) >= 128 and all(row["meta"]["template"] not in train_templates for row in heldout)
    assert len({row["meta"]["topic"] for row in eval_rows}) >= 10


def test_test_split_is_disjoint_and_left_the_other_files_as_they_were(built):
    """prompts_test.jsonl (the final report's split) shares no prompt with training or eval, and adding it
    changed no byte of the files the quickstart trains and evaluates on (their hashes before the split)."""
    import hashlib

    test = [row["prompt"] for row in built["prompts_test"]]
    seen = {row["prompt"] for name in ("prompts_train", "prompts_eval", "sft_train", "sft_eval") for row in built[name]}
    assert len(test) == len(set(test)) == 256 and not seen & set(test)
    assert len({row["meta"]["topic"] for row in built["prompts_test"]}) >= 10
    before_the_split = {
        "prompts_train.jsonl": "86c6d8ba5bc65746256b999ae55e841e8a6febec61ad60fd9693972793f3db46",
        "prompts_eval.jsonl": "c41e772bc1252b621589e31b344e4e385d4dd4631e1d5a3f81a22909cb6ccee9",
        "sft_train.jsonl": "d05b541751101f95c61e9b08f7d0f43a8749588fd9dd3fd2a13147465a57da9c",
        "sft_eval.jsonl": "5bd63db3ecd22410866aed9ed42023311222f28412a186ad13e29905ab5fffe1",
    }
    for name, digest in before_the_split.items():
        assert hashlib.sha256((REPO / "data" / "tiny" / name).read_bytes()).hexdigest() == digest, name


def test_the_judge_finds_every_prompts_topic(built):
    for row in built["prompts_train"] + built["prompts_eval"] + built["prompts_test"]:
        assert prompt_topic(row["prompt"]) == row["meta"]["topic"], row["prompt"]


def test_demonstrations_are_imperfect_and_ideal_answers_score_higher(built):
    stats = built["stats"]
    rates = stats["rates"]
    # every habit RLHF should fix is present at a realistic rate, yet most demonstrations are helpful
    for habit in ("off_topic_fact", "filler", "rude", "repetition"):
        assert 0.05 <= rates[habit] <= 0.35, habit
    assert 0.4 <= rates["closing_last"] <= 0.8 and 0.4 <= rates["greeting_first"] <= 0.8
    assert stats["ideal_mean_gold"] - stats["demonstrations_mean_gold"] >= 1.5
    contractors = [info["mean_gold"] for info in stats["per_contractor"].values()]
    assert max(contractors) - min(contractors) >= 2.0  # uneven quality
    recomputed = sum(gold_score(r["prompt"], r["completion"]) for r in built["sft_train"]) / len(built["sft_train"])
    assert recomputed == pytest.approx(stats["demonstrations_mean_gold"], abs=0.1)
