"""Judges and reward functions as plug-ins: spec forms, batched forms, breakdowns, and bad specs (exit 2)."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest

from rlhf.errors import ConfigError
from rlhf.plugins import Scorer, batched, is_batched, load_judge, load_reward_function

CATS = "User: Tell me about cats.\nAssistant:"

USER_JUDGES = '''
from rlhf.plugins import batched

CALLS = {"one": 0, "many": 0}


def length(prompt, response):
    """One point per character: easy to check by hand."""
    CALLS["one"] += 1
    return float(len(response))


def length_many(prompts: list[str], responses: list[str]) -> list[float]:  # detected from the annotation
    CALLS["many"] += 1
    return [float(len(r)) for r in responses]


@batched
def length_declared(prompts, responses):
    CALLS["many"] += 1
    return [float(len(r)) for r in responses]


def has_twin(prompt, response):
    CALLS["one"] += 1
    return float(len(response))


has_twin.batch = length_many


def words(prompt, response):
    return float(len(response.split()))


words.breakdown = lambda prompt, response: {"words": float(len(response.split())), "chars": 0.0}

NOT_CALLABLE = 3.0


def returns_text(prompt, response):
    return "good"


def returns_nan(prompt, response):
    return float("nan")


def returns_bool(prompt, response):
    return True


def returns_short_list(prompts: list[str], responses: list[str]) -> list[float]:
    return [1.0]


@batched
def returns_tensor(prompts, responses):
    import torch

    return torch.tensor([float(len(r)) for r in responses])


def ends_with_period(prompt, response):
    """A verifiable rule-based reward: 1 when the response ends a sentence."""
    return 1.0 if response.rstrip().endswith(".") else 0.0
'''


@pytest.fixture
def judge_file(tmp_path, monkeypatch) -> Path:
    """The same user module reachable both as `user_judges:fn` (on sys.path) and as `<file>.py:fn`."""
    path = tmp_path / "user_judges.py"
    path.write_text(USER_JUDGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("user_judges", None)
    yield path
    sys.modules.pop("user_judges", None)


def test_module_and_file_forms_load_the_same_function(judge_file):
    by_module = load_judge("user_judges:length")
    by_file = load_judge(f"{judge_file}:length")
    assert by_module(CATS, " Cats purr.") == by_file(CATS, " Cats purr.") == 11.0
    assert load_judge("none") is None and load_judge(None) is None


def test_builtin_tiny_judge_has_a_batched_twin_and_a_breakdown_that_sums_to_the_score():
    judge = load_judge("tiny")
    assert judge.is_batched and judge.has_breakdown
    response = " Hi! Cats purr. Dogs bark. Hope this helps."
    # greeting first 0.5 + on-topic 1 + off-topic -1 + closing last 1 = 1.5
    assert judge(CATS, response) == 1.5
    parts = judge.breakdown(CATS, response)
    assert parts["greeting_first"] == 0.5 and parts["off_topic_fact"] == -1.0 and parts["closing_last"] == 1.0
    assert parts["rude"] == 0.0 and sum(parts.values()) == 1.5
    assert judge.scores([CATS, CATS], [response, " Whatever."]) == [1.5, -3.0]  # rude -2, no on-topic fact -1


def test_batched_forms_are_detected_declared_or_attached_and_called_once(judge_file):
    import user_judges

    assert not is_batched(user_judges.length)
    assert is_batched(user_judges.length_many) and is_batched(user_judges.length_declared)
    assert is_batched(batched(lambda prompts, responses: [0.0] * len(responses)))
    prompts, responses = [CATS] * 3, [" a.", " bb.", " ccc."]
    for name in ("length_many", "length_declared", "has_twin"):
        judge = load_judge(f"user_judges:{name}")
        user_judges.CALLS.update(one=0, many=0)
        assert judge.scores(prompts, responses) == [3.0, 4.0, 5.0]
        assert user_judges.CALLS == {"one": 0, "many": 1}, name  # one call of the batched form for the list
    # the single form of a batched-only judge goes through the batched form with one row
    assert load_judge("user_judges:length_many")(CATS, " abcd") == 5.0
    user_judges.CALLS.update(one=0, many=0)
    assert load_judge("user_judges:length").scores(prompts, responses) == [3.0, 4.0, 5.0]
    assert user_judges.CALLS == {"one": 3, "many": 0}
    assert load_judge("user_judges:words").breakdown(CATS, " a b c") == {"words": 3.0, "chars": 0.0}
    assert load_judge("user_judges:returns_tensor").scores(prompts, responses) == [3.0, 4.0, 5.0]  # an LLM judge's
    assert load_judge("user_judges:length").breakdown(CATS, " a") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:score", "no module named 'no_such_module_xyz'"),
        ("missing/judge.py:score", "file not found"),
        ("user_judges:absent", "has no attribute 'absent'"),
        ("user_judges:NOT_CALLABLE", "is not callable"),
        ("user_judges", "expected a built-in name"),
    ],
)
def test_bad_specs_name_the_spec(judge_file, spec, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_judge(spec, "--judge")
    assert f"'{spec}'" in str(error.value) or repr(spec) in str(error.value)


def test_a_field_that_takes_no_built_in_names_does_not_offer_them():
    from rlhf.plugins import load_callable

    with pytest.raises(ConfigError, match=r"^bad --task 'tiny': expected package.module:function or path") as error:
        load_callable("tiny", "--task")
    assert "built-in" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("returns_text", "returned 'good' \\(str\\); expected a float"),
        ("returns_nan", "returned nan"),
        ("returns_bool", "returned True \\(bool\\)"),
        ("returns_short_list", "returned 1 scores for 2 responses"),
    ],
)
def test_wrong_return_types_name_the_spec(judge_file, name, message):
    judge = load_judge(f"{judge_file}:{name}", "--judge")
    with pytest.raises(ConfigError, match=message) as error:
        judge.scores([CATS, CATS], [" a.", " b."])
    assert f"bad --judge '{judge_file}:{name}'" in str(error.value)


def write_candidates(path: Path, count: int = 5) -> Path:
    texts = [" a.", " bbbbbb.", " ccc."]
    path.write_text(
        "".join(
            json.dumps(
                {"id": f"c{i}", "prompt": CATS, "responses": [{"id": f"r{j}", "text": t} for j, t in enumerate(texts)]}
            )
            + "\n"
            for i in range(count)
        )
    )
    return path


@pytest.mark.parametrize("form", ["module", "file"])
def test_a_user_judge_drives_rlhf_data_rank(judge_file, tmp_path, capsys, form):
    from rlhf.app.cli import main

    spec = "user_judges:length" if form == "module" else f"{judge_file}:length_many"
    candidates = write_candidates(tmp_path / "candidates.jsonl")
    out = tmp_path / "rankings.jsonl"
    argv = ["data", "rank", "--candidates", str(candidates), "--out", str(out), "--judge", spec]
    assert main([*argv, "--temperature", "0.01", "--noise", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rankings"] == 5 and summary["pairwise_gold_agreement"] == 1.0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # no noise, temperature 0.01 against gaps of 2-3 points: the order of the judge's scores (lengths 8 > 5 > 3)
    assert all(row["ranking"] == [["r1"], ["r2"], ["r0"]] for row in rows)
    assert rows[0]["meta"]["gold_scores"] == [3.0, 8.0, 5.0]


def test_bad_judge_specs_exit_2_from_the_cli(judge_file, tmp_path, capsys):
    from rlhf.app.cli import main

    candidates = write_candidates(tmp_path / "candidates.jsonl")
    out = tmp_path / "rankings.jsonl"
    for spec, message in (
        ("no_such_module_xyz:score", "no module named"),
        (f"{judge_file}:NOT_CALLABLE", "is not callable"),
        (f"{judge_file}:returns_text", "expected a float"),
    ):
        code = main(["data", "rank", "--candidates", str(candidates), "--out", str(out), "--judge", spec])
        err = capsys.readouterr().err
        assert code == 2 and spec in err and message in err, err
        assert not out.exists()


def test_reward_function_loader_accepts_builtin_judges_and_rejects_empty_specs(judge_file):
    assert isinstance(load_reward_function("tiny"), Scorer)
    assert load_reward_function(f"{judge_file}:ends_with_period")(CATS, " Cats purr.") == 1.0
    with pytest.raises(ConfigError, match="ppo.reward_functions"):
        load_reward_function("", "ppo.reward_functions[0].spec")


@pytest.mark.slow
def test_a_user_judge_drives_rlhf_eval(judge_file, tiny_model_dir, tmp_path):
    from rlhf.commands.evaluate import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about cats {i}.\nAssistant:"}) + "\n" for i in range(4))
    )
    out = tmp_path / "eval"
    argv = ["--policies", f"a={tiny_model_dir}", "--prompts", str(prompts), "--max-new-tokens", "5", "--out", str(out)]
    for spec in ("user_judges:length", f"{judge_file}:length_many"):  # module:function, file.py:function (batched)
        assert main([*argv, "--judge", spec]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["settings"]["judge"] == spec
        for item in report["samples"]:
            response = item["responses"]["a"]
            assert response["gold_score"] == float(len(response["response"]))
    assert math.isclose(
        report["policies"]["a"]["gold_score"],
        sum(float(len(item["responses"]["a"]["response"])) for item in report["samples"]) / 4,
    )
    from rlhf.app.cli import main as cli

    assert cli(["eval", *argv, "--judge", f"{judge_file}:returns_text"]) == 2


def test_judge_file_with_an_import_error_names_the_file(tmp_path):
    broken = tmp_path / "broken_judge.py"
    broken.write_text(textwrap.dedent("import not_a_real_package_xyz\n\ndef score(p, r):\n    return 0.0\n"))
    with pytest.raises(ConfigError, match="importing .*broken_judge.py failed: ModuleNotFoundError"):
        load_judge(f"{broken}:score", "pipeline.judge")


@pytest.mark.slow
def test_ppo_logs_each_reward_function_adds_it_to_the_score_and_evaluates_a_file_judge(
    judge_file, tiny_model_dir, tiny_reward_model_dir, tmp_path, one_torch_thread
):
    from ppo.trainer import train
    from rlhf.app.schema import load_config

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about cats {i}.\nAssistant:"}) + "\n" for i in range(8))
    )

    def run(name, *extra, judge=f"{judge_file}:words"):
        return train(
            load_config(
                None,
                [
                    f"model.name_or_path={tiny_model_dir}",
                    f"ppo.reward_model_path={tiny_reward_model_dir}",
                    f"data.train_file={prompts}",
                    f"data.eval_file={prompts}",
                    f"run.output_dir={tmp_path / name}",
                    "tracking.plots=false",
                    "ppo.sample_every=0",
                    "ppo.rollout_batch_size=8",
                    "ppo.max_new_tokens=6",
                    "ppo.num_updates=1",
                    "ppo.eval_every=1",
                    f"ppo.gold_judge={judge}",
                    "train.logging_steps=1000",
                    *extra,
                ],
            )
        )

    plain_run = run("plain")  # the gold judge as a file path
    plain = plain_run["history"][0]
    terms = (
        f'ppo.reward_functions=[{{spec: "{judge_file}:length_many", weight: 0.5}}, '
        '{spec: "user_judges:length", weight: -0.25, name: chars}]'
    )
    terms_run = run("terms", terms, judge="user_judges:words")  # ... and as module:function
    with_terms = terms_run["history"][0]
    # before any update both runs evaluate the same policy with the same seed: both forms give the same gold
    assert terms_run["eval_at_start"]["eval/gold_score"] == plain_run["eval_at_start"]["eval/gold_score"] > 0
    # each function is logged on its own (unweighted); the same seed samples the same responses
    assert with_terms["reward_fn/length_many"] == with_terms["reward_fn/chars"] > 0
    assert with_terms["reward_fn/total"] == pytest.approx(0.25 * with_terms["reward_fn/chars"])
    assert with_terms["objective/normalized_scores"] == pytest.approx(plain["objective/normalized_scores"])
    assert with_terms["objective/scores"] == pytest.approx(plain["objective/scores"] + with_terms["reward_fn/total"])
    assert "reward_fn/total" not in plain
    # the gold judge is what PPO's evaluation logs (mean words per response), with its breakdown's rules
    # logged one by one
    assert with_terms["eval/gold_score"] > 0 and math.isfinite(with_terms["eval/gold_score"])
    assert with_terms["eval/gold/words"] == with_terms["eval/gold_score"] and with_terms["eval/gold/chars"] == 0.0

    with pytest.raises(ConfigError, match=r"ppo.reward_functions\[0\].spec 'user_judges:absent'"):
        run("bad", "ppo.reward_functions=[{spec: user_judges:absent}]")
    with pytest.raises(ConfigError, match="returned 'good'"):
        run("bad_value", f'ppo.reward_functions=[{{spec: "{judge_file}:returns_text"}}]')


def test_pipeline_rejects_a_bad_judge_before_any_stage(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "rlhf", "pipeline", "--config", "configs/tiny/pipeline.yaml"]
        + [f"run.output_dir={tmp_path / 'run'}", "pipeline.judge=no_such_module_xyz:score"],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert result.returncode == 2
    assert "bad pipeline.judge 'no_such_module_xyz:score'" in result.stderr
    assert not (tmp_path / "run" / "sft").exists()


def test_a_users_task_dir_needs_its_files_not_a_task_json(tmp_path):
    from rlhf.app.pipeline import TASK_FILES, Pipeline, load_pipeline_config
    from rlhf.errors import UserError

    repo = Path(__file__).resolve().parents[1]
    task_dir = tmp_path / "my_task"
    task_dir.mkdir()
    overrides = [f"pipeline.task_dir={task_dir}", "pipeline.make_task=false", "pipeline.judge=none"]
    overrides.append(f"run.output_dir={tmp_path / 'run'}")
    pipeline = Pipeline(load_pipeline_config(str(repo / "configs" / "tiny" / "pipeline.yaml"), overrides))
    for name in TASK_FILES[:3]:
        (task_dir / name).write_text("{}\n")
    with pytest.raises(UserError, match="my_task: missing prompts_eval.jsonl"):
        pipeline.is_complete("task")
    (task_dir / "prompts_eval.jsonl").write_text("{}\n")
    assert pipeline.is_complete("task") and not (task_dir / "task.json").exists()


@pytest.mark.slow
def test_pipeline_runs_a_users_task_with_a_users_judge_without_a_rankings_file(judge_file, tiny_model_dir, tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    task = tmp_path / "my_task"
    task.mkdir()
    rows = [{"prompt": f"User: Say something about item {i}.\nAssistant:", "completion": " Fine."} for i in range(16)]
    for name in ("sft_train", "sft_eval"):
        (task / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for name in ("prompts_train", "prompts_eval"):
        (task / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": row["prompt"]}) + "\n" for row in rows))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rlhf", "pipeline", "--config", "configs/tiny/pipeline.yaml", "--until", "rank"]
    command += [f"run.output_dir={out}", f"pipeline.task_dir={task}", "pipeline.make_task=false"]
    command += [f"pipeline.judge={judge_file}:length", f"pipeline.base_model={tiny_model_dir}"]
    command += [
        "pipeline.candidate_prompts=6",
        "generate.k=3",
        "generate.max_new_tokens=6",
        "tracking.report_to=[jsonl]",
    ]
    command += ["sft.train.max_steps=2", "sft.train.eval_steps=2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=repo)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not (task / "task.json").exists()  # no built-in task was written
    rankings = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    assert rankings  # simulated reviewers ranked by the user's judge: gold = characters of each response
    for row in rankings:
        texts = [response["text"] for response in row["responses"]]
        assert row["meta"]["gold_scores"] == [float(len(text)) for text in texts]
