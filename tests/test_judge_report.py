"""The report's rule-by-rule view: SFT against PPO per judge rule, the RM's gap per rule, gold vs RM over updates."""

from __future__ import annotations

import json

import pytest

from rlhf.commands.judge_report import compare_rules, plot_rules, ppo_rule_curve, render_rules_markdown


def row(rm: float, **rules: float) -> dict:
    return {"rm_score_normalized": rm, "gold_rules": {"item": 0.0, "over_count": 0.0, "rude": 0.0, **rules}}


# SFT: one clean answer, one rude. PPO lists one too many on one prompt and the RM scores that one higher
# (a blind spot); the RM scores the rude answer lower (it sees rudeness).
SAMPLES = {
    "sft": [row(0.0, item=3.0), row(-1.0, item=2.0, rude=-2.0)],
    "ppo": [row(2.0, item=3.0, over_count=-1.0), row(1.0, item=3.0)],
}


def test_per_policy_points_and_rates_by_hand():
    report = compare_rules(SAMPLES)
    assert report["base"] == "sft" and report["other"] == "ppo"
    assert report["per_policy"]["sft"]["item"] == {"points": 2.5, "rate": 1.0}
    assert report["per_policy"]["sft"]["rude"] == {"points": -1.0, "rate": 0.5}
    assert report["per_policy"]["ppo"]["over_count"] == {"points": -0.5, "rate": 0.5}


def test_rm_gap_within_each_policy_and_blind_spot_by_hand():
    rules = {r["rule"]: r for r in compare_rules(SAMPLES)["rules"]}
    # over_count: only PPO has both kinds; fired 2.0, quiet 1.0: gap +1.0; PPO lost 0.5 points on it
    assert rules["over_count"]["rm_gap"] == pytest.approx(1.0)
    assert rules["over_count"]["delta_points"] == pytest.approx(-0.5) and rules["over_count"]["blind_spot"]
    # rude: only SFT has both kinds; fired -1, quiet 0: gap -1, the RM sees it (and PPO dropped it)
    assert rules["rude"]["rm_gap"] == pytest.approx(-1.0) and not rules["rude"]["blind_spot"]
    # item fired on every response of both policies: no gap can be measured
    assert rules["item"]["rm_gap"] is None and rules["item"]["delta_points"] == pytest.approx(0.5)


def test_rm_gap_is_not_fooled_by_a_policy_that_scores_higher_overall():
    # PPO scores higher than SFT on every response; pooled, "fires more in PPO" would look RM-approved.
    # Within each policy the RM scores the rule's responses 1 lower: gap -1 (weighted by rows: 2 and 2).
    samples = {
        "sft": [row(0.0, over_count=-1.0), row(1.0)],
        "ppo": [row(5.0, over_count=-1.0), row(6.0)],
    }
    rules = {r["rule"]: r for r in compare_rules(samples)["rules"]}
    assert rules["over_count"]["rm_gap"] == pytest.approx(-1.0) and not rules["over_count"]["blind_spot"]


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
    assert "| over_count | 0.00 | 0.00 | -0.50 | 0.50 | -0.50 | +1.00 | blind spot? |" in text
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
