"""Evaluation statistics on hand-computed examples, and an end-to-end eval of two tiny policies."""

from __future__ import annotations

import json

import pytest

from rlhf.commands.evaluate import distinct_n, render_markdown, summary_metrics, win_rate


def test_win_rate_counts_ties_half_with_wilson_interval():
    # outcomes: win, win, tie, loss -> (1 + 1 + 0.5 + 0) / 4 = 0.625
    result = win_rate([3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 5.0])
    assert result["win_rate"] == pytest.approx(0.625)
    assert (result["wins"], result["ties"], result["losses"]) == (2, 1, 1) and result["interval"] == "wilson"
    # Wilson with p = 2.5 / 4, z = 1.959964: (p + z^2/8) / (1 + z^2/4) = 0.563765,
    # half width z / (1 + z^2/4) * sqrt(p (1 - p) / 4 + z^2 / 64) = 0.344337 (the Wald interval: [0.156, 1.0])
    assert result["ci95"] == pytest.approx([0.2194265, 0.9081008], abs=1e-6)


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (7, 10), (1, 3)])
def test_wilson_interval_matches_scipy_and_is_not_degenerate_at_0_and_1(k, n):
    from scipy.stats import binomtest

    from rlhf.commands.evaluate import wilson_interval

    expected = binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)
    result = win_rate([1.0] * k + [0.0] * (n - k), [0.5] * n)
    assert result["ci95"] == pytest.approx([expected.low, expected.high], abs=1e-9)
    low, high = result["ci95"]
    assert high - low > 0.2  # the Wald interval had zero width at k = 0 and k = n
    if k == 0:
        assert low == 0.0 and high == pytest.approx(0.2775328, abs=1e-6)  # z^2 / (n + z^2)
    if k == n:
        assert high == 1.0 and low == pytest.approx(0.7224672, abs=1e-6)


def test_win_rate_rejects_mismatched_lists():
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_distinct_n():
    # words: a b a | b c -> unigrams 5, unique {a,b,c} = 3 -> 0.6; bigrams (a b)(b a)(b c) all unique -> 1.0
    assert distinct_n(["a b a", "b c"], 1) == pytest.approx(0.6)
    assert distinct_n(["a b a", "b c"], 2) == pytest.approx(1.0)
    assert distinct_n(["a a", "a a"], 2) == pytest.approx(0.5)


def test_ppo_plots_include_the_critic_curve(tmp_path):
    from rlhf.commands.evaluate import plot_ppo_runs

    run = tmp_path / "ppo"
    run.mkdir()
    rows = [
        {"step": step, "objective/scores": 0.1 * step, "objective/kl": 0.0, "val/explained_variance": ev}
        for step, ev in ((1, -0.4), (2, 0.1), (3, 0.6))
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    written = plot_ppo_runs([str(run)], tmp_path / "plots")
    assert tmp_path / "plots" / "ppo_critic.png" in written
    assert (tmp_path / "plots" / "ppo_critic.png").stat().st_size > 1000


def test_eval_rejects_temperature_zero_before_loading_models(tmp_path):
    from rlhf.commands.evaluate import main
    from rlhf.errors import ConfigError

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "p"}) + "\n")
    policy = tmp_path / "policy"
    policy.mkdir()  # an empty directory: the check must come before any model is loaded
    with pytest.raises(ConfigError, match="'--temperature': 0.0"):
        main(["--policies", f"a={policy}", "--prompts", str(prompts), "--temperature", "0", "--out", str(tmp_path)])


@pytest.mark.slow
def test_eval_cli_end_to_end(tiny_model_dir, tmp_path):
    from rlhf.commands.evaluate import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about cats {i}.\nAssistant:"}) + "\n" for i in range(6))
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--policies",
                f"a={tiny_model_dir}",
                f"b={tiny_model_dir}",
                "--prompts",
                str(prompts),
                "--max-new-tokens",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["num_prompts"] == 6 and len(report["samples"]) == 6
    # the same model sampled with the same seed: identical responses, zero KL, a 0.5 "win rate" of pure ties
    assert report["policies"]["a"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    assert all(item["responses"]["a"]["response"] == item["responses"]["b"]["response"] for item in report["samples"])
    assert (out / "report.md").read_text().startswith("# Evaluation report")
    flat = summary_metrics(report)
    assert flat["eval/a/eos_rate"] == report["policies"]["a"]["eos_rate"]
    assert "| a |" in render_markdown(report)
