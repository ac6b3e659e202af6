"""Simulated reviewers: Plackett-Luce over gold scores with a temperature, label noise, several reviewers."""

from __future__ import annotations

import json
import math

import pytest

from rlhf.data import check_rankings_row
from rlhf.plugins import load_judge
from rlhf.tasks.reviewers import expected_pair_agreement, pairwise_gold_agreement, simulate_rankings

CATS = "User: Tell me about cats.\nAssistant:"
# gold scores: 4.5, 2.0, 0.0, -1.0 (see tests/test_data_judge.py for the rules)
TEXTS = [
    " Hi! Cats purr. Cats nap a lot. Cats chase mice. Glad to help.",
    " Cats purr. Hope this helps.",
    " Cats purr. Dogs bark.",
    " Cats purr. Whatever.",
]


def candidate(index: int, texts=TEXTS) -> dict:
    return {
        "id": f"c{index}",
        "prompt": CATS,
        "responses": [{"id": f"r{j}", "text": text} for j, text in enumerate(texts)],
    }


TINY = load_judge("tiny")


def test_zero_temperature_and_noise_reproduce_the_gold_order():
    rows = simulate_rankings([candidate(0)], temperature=0.0, noise=0.0, score_fn=TINY)
    assert rows[0]["ranking"] == [["r0"], ["r1"], ["r2"], ["r3"]]
    assert rows[0]["meta"]["gold_scores"] == [4.5, 2.0, 0.0, -1.0]
    assert check_rankings_row(rows[0]) is None
    assert pairwise_gold_agreement(rows, TINY)["pairwise_agreement"] == 1.0


def test_pairwise_marginal_is_bradley_terry_in_gold_over_temperature():
    # two responses with gold 2.0 and 1.0: P(better first) = sigmoid(1 / T) = sigmoid(2) = 0.8808 at T = 0.5
    texts = [" Cats purr. Cats nap a lot.", " Cats purr."]
    rows = simulate_rankings([candidate(i, texts) for i in range(4000)], temperature=0.5, noise=0.0, score_fn=TINY)
    observed = sum(row["ranking"][0] == ["r0"] for row in rows) / len(rows)
    assert observed == pytest.approx(1 / (1 + math.exp(-2.0)), abs=0.02)  # 4000 draws: std 0.005


def test_label_noise_rate_and_expected_agreement():
    texts = [" Cats purr. Cats nap a lot.", " Cats purr."]
    rows = simulate_rankings([candidate(i, texts) for i in range(4000)], temperature=0.5, noise=0.3, score_fn=TINY)
    careless = sum(row["meta"]["careless"] for row in rows) / len(rows)
    assert careless == pytest.approx(0.3, abs=0.03)
    observed = pairwise_gold_agreement(rows, TINY)["pairwise_agreement"]
    # (1 - 0.3) * 0.8808 + 0.3 / 2 = 0.7666
    assert observed == pytest.approx(expected_pair_agreement(1.0, 0.5, 0.3), abs=0.025)
    assert expected_pair_agreement(1.0, 0.5, 0.3) == pytest.approx(0.7 * 0.880797 + 0.15, abs=1e-5)


def test_identical_texts_share_a_tier_and_all_identical_gives_no_row():
    rows = simulate_rankings(
        [candidate(0, [" Cats purr.", " Cats purr.", " Whatever."])], temperature=0.0, noise=0.0, score_fn=TINY
    )
    assert rows[0]["ranking"] == [["r0", "r1"], ["r2"]]
    assert simulate_rankings([candidate(1, [" Cats purr.", " Cats purr."])], score_fn=TINY) == []


def test_several_reviewers_are_seeded_and_independent():
    candidates = [candidate(i) for i in range(30)]
    rows = simulate_rankings(candidates, temperature=2.0, noise=0.2, reviewers_per_prompt=3, seed=5, score_fn=TINY)
    assert len(rows) == 90
    assert [row["annotator"] for row in rows[:3]] == ["sim-0", "sim-1", "sim-2"]
    assert {row["id"] for row in rows[:3]} == {"c0"}
    assert rows == simulate_rankings(
        candidates, temperature=2.0, noise=0.2, reviewers_per_prompt=3, seed=5, score_fn=TINY
    )
    assert rows != simulate_rankings(
        candidates, temperature=2.0, noise=0.2, reviewers_per_prompt=3, seed=6, score_fn=TINY
    )
    # reviewer j's ranking does not depend on how many other reviewers there are
    alone = simulate_rankings(candidates, temperature=2.0, noise=0.2, reviewers_per_prompt=1, seed=5, score_fn=TINY)
    assert [row["ranking"] for row in alone] == [row["ranking"] for row in rows[::3]]
    assert len({json.dumps(row["ranking"]) for row in rows}) > 1


def test_rank_cli_writes_valid_rankings(tmp_path, capsys):
    from rlhf.app.cli import main
    from rlhf.data import load_rankings

    path = tmp_path / "candidates.jsonl"
    path.write_text("".join(json.dumps(candidate(i)) + "\n" for i in range(20)))
    out = tmp_path / "rankings.jsonl"
    assert main(["data", "rank", "--candidates", str(path), "--out", str(out), "--reviewers", "2", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rankings"] == 40 and 0.5 < summary["pairwise_gold_agreement"] <= 1.0
    assert len(load_rankings(out)) == 40
