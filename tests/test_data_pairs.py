"""Rankings -> pairs, and the multi-reviewer majority vote."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from rlhf.data import majority_vote_pairs, ranking_to_pairs

RESPONSES = [{"id": name, "text": f" text {name}."} for name in "abcd"]


def ranking(tiers, annotator="x", row_id="q1", **extra):
    return {"id": row_id, "prompt": "P", "responses": RESPONSES, "ranking": tiers, "annotator": annotator, **extra}


def winners(pairs):
    return [(pair["chosen"][6], pair["rejected"][6]) for pair in pairs]  # " text a." -> "a"


def test_strict_ranking_of_four_gives_six_pairs_with_right_winners():
    pairs = ranking_to_pairs(ranking([["c"], ["a"], ["d"], ["b"]]))
    # order c > a > d > b: every earlier id beats every later one, C(4,2) = 6 pairs
    assert winners(pairs) == [("c", "a"), ("c", "d"), ("c", "b"), ("a", "d"), ("a", "b"), ("d", "b")]
    assert {pair["group"] for pair in pairs} == {"q1"}
    assert all(pair["prompt"] == "P" for pair in pairs)


def test_ties_give_no_pair():
    pairs = ranking_to_pairs(ranking([["a", "b"], ["c", "d"]]))
    # 2 x 2 cross-tier pairs; a-b and c-d are tied
    assert winners(pairs) == [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]


def test_identical_texts_give_no_pair():
    row = ranking([["a"], ["b"], ["c"]])
    row["responses"] = [{"id": "a", "text": " same."}, {"id": "b", "text": " same."}, {"id": "c", "text": " other."}]
    pairs = ranking_to_pairs(row)
    assert [(pair["chosen"], pair["rejected"]) for pair in pairs] == [(" same.", " other."), (" same.", " other.")]


def test_margin_is_copied_and_group_can_be_set():
    pairs = ranking_to_pairs(ranking([["a"], ["b"]], margin=2.5), group="g7")
    assert pairs and all(pair["margin"] == 2.5 and pair["group"] == "g7" for pair in pairs)
    assert "margin" not in ranking_to_pairs(ranking([["a"], ["b"]]))[0]


def test_single_reviewer_vote_equals_ranking_to_pairs():
    row = ranking([["b"], ["a", "d"], ["c"]])
    kept, disputed = majority_vote_pairs([row])
    assert kept == ranking_to_pairs(row) and disputed == []


def test_two_reviewers_who_disagree_give_no_majority_pair():
    first = ranking([["a"], ["b"]])
    second = ranking([["b"], ["a"]], annotator="y")
    first["responses"] = second["responses"] = RESPONSES[:2]
    kept, disputed = majority_vote_pairs([first, second])
    assert kept == []
    assert len(disputed) == 1
    assert disputed[0]["votes_chosen"] == 1 and disputed[0]["votes_rejected"] == 1 and disputed[0]["agreement"] == 0.5


def test_two_to_one_majority_keeps_the_majority_direction():
    rows = [ranking([["a"], ["b"]], "x"), ranking([["a"], ["b"]], "y"), ranking([["b"], ["a"]], "z")]
    for row in rows:
        row["responses"] = RESPONSES[:2]
    kept, disputed = majority_vote_pairs(rows, min_agreement=0.5)
    assert winners(kept) == [("a", "b")] and disputed == []
    # share 2/3 = 0.667: kept above a 0.6 threshold, disputed under 0.7
    assert len(majority_vote_pairs(rows, min_agreement=0.6)[0]) == 1
    kept, disputed = majority_vote_pairs(rows, min_agreement=0.7)
    assert kept == [] and winners(disputed) == [("a", "b")] and disputed[0]["agreement"] == pytest.approx(2 / 3)


def test_preference_plus_tie_is_disputed_and_all_ties_give_nothing():
    prefer = ranking([["a"], ["b"], ["c", "d"]], "x")
    tie = ranking([["a", "b"], ["c", "d"]], "y")
    kept, disputed = majority_vote_pairs([prefer, tie])
    # a>b: 1 vote of 2 voters (a tie counts as a voter) -> 0.5, not > 0.5 -> disputed
    assert ("a", "b") in winners(disputed)
    # c-d tied by both reviewers: no pair anywhere
    assert all({pair["chosen"][6], pair["rejected"][6]} != {"c", "d"} for pair in kept + disputed)
    # a>c, a>d, b>c, b>d are agreed by both
    assert sorted(winners(kept)) == [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]


def test_groups_are_voted_separately_and_margins_averaged():
    rows = [
        ranking([["a"], ["b"]], "x", "q1", margin=1.0),
        ranking([["a"], ["b"]], "y", "q1", margin=3.0),
        ranking([["b"], ["a"]], "x", "q2"),
    ]
    for row in rows:
        row["responses"] = RESPONSES[:2]
    kept, disputed = majority_vote_pairs(rows)
    assert [(pair["group"], winners([pair])[0]) for pair in kept] == [("q1", ("a", "b")), ("q2", ("b", "a"))]
    assert kept[0]["margin"] == 2.0  # mean of the winning votes' margins (1 + 3) / 2
    assert disputed == []


def test_kwise_pair_count_over_many_rankings():
    rows = [ranking([[x] for x in order], row_id=f"q{i}") for i, order in enumerate(["abcd", "dcba", "badc"])]
    kept, _ = majority_vote_pairs(rows)
    assert len(kept) == 3 * len(list(combinations("abcd", 2)))


def test_pairs_cli_writes_kept_and_disputed_files(tmp_path, capsys):
    from rlhf.app.cli import main

    rows = [ranking([["a"], ["b"], ["c"], ["d"]], "x"), ranking([["b"], ["a"], ["c"], ["d"]], "y")]
    path = tmp_path / "rankings.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "pairs", "--rankings", str(path), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    # 6 pairs; the two reviewers only disagree on a-b
    assert (summary["pairs"], summary["disputed"]) == (5, 1)
    assert len(out.read_text().splitlines()) == 5
    assert len((tmp_path / "pairs.disputed.jsonl").read_text().splitlines()) == 1
