"""The report's rule-by-rule view: SFT against PPO per judge rule, the RM's gap per rule, gold vs RM over updates."""

from __future__ import annotations

import json

import pytest

from rlhf.commands.judge_report import compare_rules, plot_rules, ppo_rule_curve, render_rules_markdown


def row(rm: float, **rules: float) -> dict:
    return {"rm_score_normalized": rm, "gold_rules": {"item": 0.0, "over_count": 0.0, "rude": 0.0, **rules}}


# SFT: two clean answers. PPO: lists too many (the RM likes it: blind spot) and drops rudeness (the RM dislikes it).
SAMPLES = {
    "sft": [row(0.0, item=3.0), row(-1.0, item=2.0, rude=-2.0)],
    "ppo": [row(2.0, item=3.0, over_count=-1.0), row(1.0, item=3.0, over_count=-2.0)],
}


def test_per_policy_points_and_rates_by_hand():
    report = compare_rules(SAMPLES)
    assert report["base"] == "sft" and report["other"] == "ppo"
    assert report["per_policy"]["sft"]["item"] == {"points": 2.5, "rate": 1.0}
    assert report["per_policy"]["sft"]["rude"] == {"points": -1.0, "rate": 0.5}
    assert report["per_policy"]["ppo"]["over_count"] == {"points": -1.5, "rate": 1.0}


def test_rm_gap_and_blind_spot_by_hand():
    rules = {r["rule"]: r for r in compare_rules(SAMPLES)["rules"]}
    # over_count fired on the PPO rows (RM 2, 1) and not on the SFT rows (0, -1): gap 1.5 - (-0.5) = 2.0
    assert rules["over_count"]["rm_gap"] == pytest.approx(2.0)
    assert rules["over_count"]["delta_points"] == pytest.approx(-1.5) and rules["over_count"]["blind_spot"]
    # rude fired only on the RM -1 row; the others average (0 + 2 + 1) / 3 = 1: gap -2, seen by the RM
    assert rules["rude"]["rm_gap"] == pytest.approx(-2.0) and not rules["rude"]["blind_spot"]
    # item fired everywhere: no gap can be measured
    assert rules["item"]["rm_gap"] is None and rules["item"]["delta_points"] == pytest.approx(0.5)


def test_no_breakdown_gives_no_section():
    plain = {"sft": [{"rm_score_normalized": 0.0, "gold_rules": None}]}
    assert compare_rules(plain) is None
    assert render_rules_markdown(None, []) is None


def test_curve_from_ppo_metrics_and_markdown(tmp_path):
    metrics = [
        {
            "step": 0,
            "eval/rm_score": 0.1,
            "eval/gold_score": 3.0,
            "eval/gold/rude": 0.0,
            "eval/gold/item": 3.0,
            "eval/gold/over_count": 0.0,
        },
        {"step": 1, "objective/kl": 0.5},  # a training row without an evaluation
        {"step": 25, "eval/rm_score": 1.4, "eval/gold_score": 2.0, "eval/gold/item": 3.0, "eval/gold/over_count": -1.0},
    ]
    curve = ppo_rule_curve(metrics)
    assert [point["update"] for point in curve] == [0, 25]
    assert curve[1]["rules"] == {"item": 3.0, "over_count": -1.0}
    text = render_rules_markdown(compare_rules(SAMPLES), curve)
    assert "## Gold judge by rule: sft against ppo" in text
    assert "| over_count | 0.00 | 0.00 | -1.50 | 1.00 | -1.50 | +2.00 | blind spot? |" in text
    assert "## Gold against RM over PPO updates" in text
    assert "| update | RM score | gold score | item | over_count |" in text  # rude never fired: no column
    assert "| 25 | 1.40 | 2.00 | 3.00 | -1.00 |" in text
    paths = plot_rules(compare_rules(SAMPLES), curve, tmp_path)
    assert [p.name for p in paths] == ["gold_rules.png", "gold_rules_over_updates.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.slow
def test_eval_report_splits_the_gold_score_by_rule(tiny_model_dir, tmp_path):
    from rlhf.commands.evaluate import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Name three fruits {i}.\nAssistant:"}) + "\n" for i in range(4))
    )
    ppo_run = tmp_path / "ppo"
    ppo_run.mkdir()
    (ppo_run / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "eval/rm_score": 0.0, "eval/gold_score": -2.0, "eval/gold/no_item": -1.0}) + "\n"
    )
    out = tmp_path / "eval"
    argv = ["--policies", f"a={tiny_model_dir}", f"b={tiny_model_dir}", "--prompts", str(prompts)]
    argv += ["--max-new-tokens", "5", "--judge", "lists", "--ppo-runs", str(ppo_run), "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    for item in report["samples"]:
        response = item["responses"]["a"]
        assert sum(response["gold_rules"].values()) == pytest.approx(response["gold_score"])
    rules = {r["rule"]: r for r in report["gold_rules"]["rules"]}
    assert set(rules) >= {"item", "over_count", "excluded_item", "header"}
    # the same model and seed: identical samples, so no rule moves
    assert all(r["delta_points"] == 0.0 and not r["blind_spot"] for r in rules.values())
    assert report["ppo_gold_curve"] == [{"update": 0, "rm_score": 0.0, "gold_score": -2.0, "rules": {"no_item": -1.0}}]
    markdown = (out / "report.md").read_text()
    assert "## Gold judge by rule: a against b" in markdown and "## Gold against RM over PPO updates" in markdown
    assert (out / "plots" / "gold_rules.png").exists() and "plots/gold_rules_over_updates.png" in report["plots"]
