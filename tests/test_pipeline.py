"""A shortened pipeline through the real CLI: every artefact exists and is well formed; a rerun skips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.app.pipeline import load_pipeline_config, stage_override

REPO = Path(__file__).resolve().parents[1]


def test_stage_overrides_are_routed():
    assert stage_override("ppo.kl_coef=0.1") == ("ppo", "ppo.kl_coef=0.1")
    assert stage_override("ppo.train.learning_rate=1e-5") == ("ppo", "train.learning_rate=1e-5")
    assert stage_override("--rm.loss=kwise") == ("rm", "rm.loss=kwise")
    assert stage_override("run.output_dir=x") is None
    cfg = load_pipeline_config(
        str(REPO / "configs/tiny/pipeline.yaml"), ["ppo.kl_coef=0.1", "sft.train.max_steps=3", "run.output_dir=/tmp/x"]
    )
    assert list(cfg.pipeline.ppo_overrides)[-1] == "ppo.kl_coef=0.1"
    assert list(cfg.pipeline.sft_overrides)[-1] == "train.max_steps=3"
    assert cfg.run.output_dir == "/tmp/x"


def test_bad_stage_override_fails_before_training(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhf",
            "pipeline",
            "--config",
            "configs/tiny/pipeline.yaml",
            f"run.output_dir={tmp_path}",
            "ppo.kl_coeff=0.1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "ppo stage" in result.stderr and "did you mean ppo.kl_coef?" in result.stderr
    assert not (tmp_path / "sft").exists()


def test_fsdp_accelerate_config_is_rejected_before_any_stage(tmp_path):
    from rlhf.app.pipeline import Pipeline
    from rlhf.errors import ConfigError

    fsdp = "configs/accelerate/fsdp.yaml"
    cfg = load_pipeline_config(
        str(REPO / "configs/tiny/pipeline.yaml"),
        [
            f"run.output_dir={tmp_path / 'out'}",
            f"pipeline.task_dir={tmp_path / 'task'}",
            f"pipeline.accelerate_config={fsdp}",
        ],
    )
    with pytest.raises(ConfigError, match=f"pipeline.accelerate_config={fsdp} sets distributed_type: FSDP"):
        Pipeline(cfg).run()
    assert not (tmp_path / "task").exists() and not (tmp_path / "out" / "sft").exists()


def test_final_report_uses_the_test_split_not_the_selection_prompts(tmp_path, monkeypatch):
    from rlhf.app.pipeline import Pipeline

    task = tmp_path / "task"
    task.mkdir()
    (task / "prompts_eval.jsonl").write_text("")
    cfg = load_pipeline_config(
        str(REPO / "configs/tiny/pipeline.yaml"), [f"run.output_dir={tmp_path / 'out'}", f"pipeline.task_dir={task}"]
    )
    pipeline = Pipeline(cfg)
    commands = []
    monkeypatch.setattr(pipeline, "run_command", lambda stage, args: commands.append(args))
    pipeline.run_stage("eval")
    assert commands[-1][commands[-1].index("--prompts") + 1] == str(task / "prompts_eval.jsonl")  # a task without
    (task / "prompts_test.jsonl").write_text("")
    pipeline.run_stage("eval")
    assert commands[-1][commands[-1].index("--prompts") + 1] == str(task / "prompts_test.jsonl")
    # PPO's in-training evaluation (what the shipped sweep selects on) keeps the eval split
    assert f"data.eval_file={task / 'prompts_eval.jsonl'}" in pipeline.stage_config_overrides("ppo")
    sweep = (REPO / "configs/sweeps/ppo_kl.yaml").read_text()
    assert "metric: ppo/eval/gold_score" in sweep


@pytest.mark.slow
def test_short_pipeline_end_to_end_and_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "pipe"
    command = [
        sys.executable,
        "-m",
        "rlhf",
        "pipeline",
        "--config",
        "configs/tiny/pipeline.yaml",
        f"run.output_dir={out}",
        f"pipeline.task_dir={tmp_path / 'task'}",
        f"pipeline.base_model={tiny_model_dir}",
        "pipeline.candidate_prompts=24",
        "pipeline.eval_num_prompts=12",
        "generate.k=4",
        "generate.max_new_tokens=8",
        "tracking.report_to=[jsonl]",
        "sft.train.max_steps=4",
        "sft.train.eval_steps=4",
        "rm.train.max_steps=4",
        "rm.normalize_samples=16",
        "ppo.num_updates=2",
        "ppo.rollout_batch_size=8",
        "ppo.max_new_tokens=8",
        "ppo.eval_every=0",
    ]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    assert (tmp_path / "task" / "task.json").exists()
    for stage in ("sft", "rm", "ppo"):
        assert (out / stage / "config.yaml").exists() and (out / stage / "metrics.jsonl").exists()
        assert isinstance(json.loads((out / stage / "summary.json").read_text()), dict)
    assert (out / "sft" / "model" / "config.json").exists() and (out / "ppo" / "policy" / "config.json").exists()
    stats = json.loads((out / "rm" / "model" / "reward_stats.json").read_text())
    assert set(stats) >= {"mean", "std"}
    candidates = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(candidates) == 24 and all(len(row["responses"]) == 4 for row in candidates)
    rankings = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    assert len(rankings) == 24 and all(isinstance(row["ranking"], list) for row in rankings)
    report = json.loads((out / "report.json").read_text())
    assert set(report["policies"]) == {"sft", "ppo"} and len(report["samples"]) == 12
    gold = report["win_rates"][0]["gold"]
    assert 0.0 <= gold["ci95"][0] <= gold["win_rate"] <= gold["ci95"][1] <= 1.0
    assert "## Win rates" in (out / "report.md").read_text()
    assert (out / "plots" / "ppo_reward_kl.png").exists() and (out / "plots" / "ppo_critic.png").exists()
    assert report["settings"]["prompts_file"] == str(tmp_path / "task" / "prompts_test.jsonl")
    assert gold["interval"] == "wilson"
    summary = json.loads((out / "summary.json").read_text())
    assert "eval/ppo_vs_sft/gold_win_rate" in summary and "time/sft_seconds" in summary

    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in ("task", "base", "sft", "generate", "rank", "rm", "ppo", "eval"):
        assert f"[pipeline] {stage}: complete, skipped" in second.stdout
