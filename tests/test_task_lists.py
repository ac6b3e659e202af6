"""The second built-in task ("tiny lister"): deterministic generator, committed files, the judge rule by rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.plugins import load_judge
from rlhf.tasks.lists.generator import OUTPUT_FILES, build_task, make_task
from rlhf.tasks.lists.judge import gold_score, judge_breakdown, parse_prompt

REPO = Path(__file__).resolve().parents[1]
FRUITS = "User: Name three fruits.\nAssistant:"
NO_PLUM = "User: Name three fruits. But not plum.\nAssistant:"


@pytest.fixture(scope="module")
def built():
    return build_task(seed=0)


def test_make_task_is_deterministic_and_matches_the_committed_files(tmp_path):
    from rlhf.app.cli import main

    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["data", "make-task", "--task", "lists", "--out", str(first), "--seed", "0"]) == 0
    make_task(second, seed=0)
    for name in OUTPUT_FILES:
        if name != "README.md":  # the README names its output directory
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
            assert (first / name).read_bytes() == (REPO / "data" / "lists" / name).read_bytes(), (
                f"data/lists/{name} is stale: rerun rlhf data make-task --task lists --out data/lists"
            )
    committed = (REPO / "data" / "lists" / "README.md").read_text()
    assert committed == (first / "README.md").read_text().replace(str(first), "data/lists")
    other = tmp_path / "c"
    make_task(other, seed=1)
    assert (other / "sft_train.jsonl").read_bytes() != (first / "sft_train.jsonl").read_bytes()


def test_sizes_formats_and_held_out_prompts(built):
    sizes = built["task"]["sizes"]
    assert len(built["sft_train"]) == sizes["sft_train"] == 3000 and len(built["sft_eval"]) == 200
    assert len(built["prompts_train"]) == 768 and len(built["prompts_eval"]) == 320
    for row in built["sft_train"]:
        assert row["prompt"].startswith("User: ") and row["prompt"].endswith("\nAssistant:")
        assert row["completion"].startswith(" ") and not row["completion"].startswith("  ")
    train_prompts = {row["prompt"] for row in built["prompts_train"]} | {row["prompt"] for row in built["sft_train"]}
    assert not train_prompts & {row["prompt"] for row in built["prompts_eval"]}
    heldout = [row for row in built["prompts_eval"] if row["meta"]["heldout_template"]]
    assert len(heldout) == 224
    # the final report's test split: 256 prompts in neither training nor eval, of held-out templates only
    test = {row["prompt"] for row in built["prompts_test"]}
    assert len(test) == 256 and not test & (train_prompts | {row["prompt"] for row in built["prompts_eval"]})
    assert all(row["meta"]["heldout_template"] for row in built["prompts_test"])
    excluding = sum(1 for row in built["prompts_train"] if row["meta"]["excluded"])
    assert 0.4 <= excluding / len(built["prompts_train"]) <= 0.6


def test_every_item_has_one_category(built):
    items = [item for values in built["task"]["categories"].values() for item in values]
    assert len(items) == len(set(items)) == 96


def test_the_judge_reads_every_prompt_as_the_generator_wrote_it(built):
    for row in built["prompts_train"] + built["prompts_eval"] + built["prompts_test"]:
        request = parse_prompt(row["prompt"])
        meta = row["meta"]
        assert (request.count, request.category, request.excluded) == (
            meta["count"],
            meta["category"],
            meta["excluded"],
        )


# Each case: (prompt, response, expected score, the rules that fired with their points), computed by hand
# from task.json's weights.
JUDGE_CASES = [
    # perfect: header 1 + three items 3 + exact count 1 = 5 (count + 2)
    (FRUITS, " Three fruits: apple, mango and peach.", 5.0, {"header": 1, "item": 3, "exact_count": 1}),
    # no header: the whole reply is the list
    (FRUITS, " apple, mango and peach.", 4.0, {"item": 3, "exact_count": 1}),
    # one too few: no exact-count bonus
    (FRUITS, " Three fruits: apple and mango.", 3.0, {"header": 1, "item": 2}),
    # one too many: the blind spot (-1, and the exact-count bonus is lost)
    (FRUITS, " Three fruits: apple, mango, peach and plum.", 3.0, {"header": 1, "item": 3, "over_count": -1}),
    # the excluded item: -2 and it does not count as an item
    (NO_PLUM, " Three fruits: apple, plum and peach.", 1.0, {"header": 1, "item": 2, "excluded_item": -2}),
    # without the exclusion the same list is perfect
    (FRUITS, " Three fruits: apple, plum and peach.", 5.0, {"header": 1, "item": 3, "exact_count": 1}),
    # wrong category, duplicate, unknown word
    (
        FRUITS,
        " Three fruits: apple, hammer, apple and pizza.",
        -1.0,
        {"header": 1, "item": 1, "wrong_category": -1, "duplicate": -1, "unknown_item": -1},
    ),
    # header with the wrong count word; another header shape
    (FRUITS, " Two fruits: apple, mango and peach.", 3.0, {"header_wrong_count": -1, "item": 3, "exact_count": 1}),
    (FRUITS, " Sure: apple, mango and peach.", 3.0, {"bad_header": -1, "item": 3, "exact_count": 1}),
    (FRUITS, " Three colours: apple, mango and peach.", 3.0, {"bad_header": -1, "item": 3, "exact_count": 1}),
    # no final period (a clipped reply)
    (
        FRUITS,
        " Three fruits: apple, mango and peach",
        4.0,
        {"header": 1, "item": 3, "exact_count": 1, "unterminated": -1},
    ),
    # nothing allowed listed
    (FRUITS, " Three fruits: hammer.", -1.0, {"header": 1, "wrong_category": -1, "no_item": -1}),
    (FRUITS, "", -2.0, {"unterminated": -1, "no_item": -1}),
    # case and spacing do not matter; "and" and commas both separate
    (FRUITS, " THREE FRUITS:  Apple,mango,  PEACH.", 5.0, {"header": 1, "item": 3, "exact_count": 1}),
]


@pytest.mark.parametrize(("prompt", "response", "score", "points"), JUDGE_CASES)
def test_judge_rule_by_rule(prompt, response, score, points):
    breakdown = judge_breakdown(prompt, response)
    assert breakdown["score"] == score
    assert breakdown["contributions"] == {rule: float(value) for rule, value in points.items()}
    judge = load_judge("lists")  # the same judge through the plug-in door, with its batched twin and breakdown
    assert judge(prompt, response) == score == gold_score(prompt, response)
    parts = judge.breakdown(prompt, response)
    assert sum(parts.values()) == score and set(parts) == set(breakdown["counts"])


def test_judge_batched_form_matches_the_single_form():
    judge = load_judge("lists")
    prompts = [case[0] for case in JUDGE_CASES]
    responses = [case[1] for case in JUDGE_CASES]
    assert judge.is_batched
    assert judge.scores(prompts, responses) == [case[2] for case in JUDGE_CASES]


def test_demonstrations_are_imperfect_and_rarely_list_too_many(built):
    stats = built["stats"]
    rates = stats["rates"]
    for habit in ("wrong_category", "duplicate", "unterminated", "excluded_item"):
        assert 0.05 <= rates[habit] <= 0.35, habit
    assert 0.2 <= rates["excluded_item_when_asked"] <= 0.4
    assert rates["over_count"] <= 0.05  # the blind spot: the reward model sees few over-long lists
    assert 0.4 <= rates["header"] <= 0.8 and 0.3 <= rates["exact_count"] <= 0.7
    assert stats["ideal_mean_gold"] - stats["demonstrations_mean_gold"] >= 1.5
    contractors = [info["mean_gold"] for info in stats["per_contractor"].values()]
    assert max(contractors) - min(contractors) >= 2.0
    recomputed = sum(gold_score(r["prompt"], r["completion"]) for r in built["sft_train"] + built["sft_eval"]) / 3200
    assert recomputed == pytest.approx(stats["demonstrations_mean_gold"], abs=1e-3)
    # a perfect answer scores count + 2; the eval prompts ask for 2 to 5 items
    expected = sum(row["meta"]["count"] + 2 for row in built["prompts_eval"]) / len(built["prompts_eval"])
    assert stats["ideal_mean_gold"] == pytest.approx(expected, abs=1e-3)


def test_readme_states_the_perfect_and_demonstration_scores():
    readme = (REPO / "data" / "lists" / "README.md").read_text()
    stats = build_task(seed=0)["stats"]
    assert "rlhf data make-task --task lists --out data/lists --seed 0" in readme
    assert f"| {stats['ideal_mean_gold']:.2f} |" in readme
    assert f"| {stats['demonstrations_mean_gold']:.2f} (std" in readme


def test_pipeline_config_runs_the_lists_task_with_its_own_judge_and_files():
    from rlhf.app.pipeline import Pipeline, load_pipeline_config

    cfg = load_pipeline_config(str(REPO / "configs" / "lists" / "pipeline.yaml"), ["run.output_dir=/tmp/lists-x"])
    pipeline = Pipeline(cfg)
    assert (cfg.pipeline.task, str(pipeline.task_dir), pipeline.judge) == ("lists", "data/lists", "lists")
    ppo = pipeline.stage_config_overrides("ppo")
    assert "ppo.gold_judge=lists" in ppo and "data.train_file=data/lists/prompts_train.jsonl" in ppo
    assert cfg.pipeline.candidate_prompts == 768  # inherited from the tiny task's pipeline
    pipeline.validate_stage_configs()
    assert json.loads((REPO / "data" / "lists" / "task.json").read_text())["name"] == "tiny-lister"


def test_pipeline_task_override_switches_files_and_judge_together():
    from rlhf.app.pipeline import Pipeline, load_pipeline_config
    from rlhf.errors import ConfigError

    tiny = str(REPO / "configs" / "tiny" / "pipeline.yaml")
    quickstart = Pipeline(load_pipeline_config(tiny, []))
    assert (str(quickstart.task_dir), quickstart.judge) == ("data/tiny", "tiny")
    switched = Pipeline(load_pipeline_config(tiny, ["pipeline.task=lists"]))
    assert (str(switched.task_dir), switched.judge) == ("data/lists", "lists")
    assert "data.train_file=data/lists/sft_train.jsonl" in switched.stage_config_overrides("sft")
    assert "--judge" not in switched.stage_config_overrides("ppo") and "ppo.gold_judge=lists" in (
        switched.stage_config_overrides("ppo")
    )
    explicit = Pipeline(load_pipeline_config(tiny, ["pipeline.task=lists", "pipeline.judge=tiny"]))
    assert explicit.judge == "tiny"
    assert Pipeline(load_pipeline_config(tiny, ["pipeline.judge=none"])).judge is None
    # a user's own task has no built-in judge to fall back on
    with pytest.raises(ConfigError, match="pipeline.make_task is false"):
        Pipeline(load_pipeline_config(tiny, ["pipeline.make_task=false", "pipeline.task_dir=mine"]))
