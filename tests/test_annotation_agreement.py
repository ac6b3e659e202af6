"""Agreement statistics against hand-computed values and Krippendorff's published example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotation.agreement import disputed_pairs, krippendorff_alpha_ordinal, reviewer_agreement
from annotation.ranking import mid_ranks, pair_preference


def _row(annotator: str, ranking: list[list[str]], task: str = "t", ids: str = "abc") -> dict:
    return {
        "id": task,
        "prompt": f"prompt {task}",
        "responses": [{"id": i, "text": f"text {i}"} for i in ids],
        "ranking": ranking,
        "annotator": annotator,
    }


def test_mid_ranks_share_the_places_of_a_tie():
    # b and c cover places 2 and 3 -> 2.5 each
    assert mid_ranks([["a"], ["b", "c"], ["d"]]) == {"a": 1.0, "b": 2.5, "c": 2.5, "d": 4.0}
    assert pair_preference([["a"], ["b", "c"]], "c", "b") == "tie"
    assert pair_preference([["a"], ["b", "c"]], "b", "a") == "second"


def test_alpha_of_two_reviewers_reversing_a_pair_is_minus_half():
    # units a: (1, 2), b: (2, 1); coincidences o_12 = o_21 = 2, n = 4, n_1 = n_2 = 2
    # D_o = 4 d / 4 = d;  D_e = (2*2 + 2*2) d / (4*3) = 2d/3;  alpha = 1 - 3/2 = -0.5
    rows = [_row("u1", [["a"], ["b"]], ids="ab"), _row("u2", [["b"], ["a"]], ids="ab")]
    assert krippendorff_alpha_ordinal(rows) == pytest.approx(-0.5)


def test_alpha_with_a_tie_matches_the_hand_computed_ordinal_value():
    # u1: a 1, b 2, c 3;  u2: a 1, b 2.5, c 2.5 (tie).  Values 1, 2, 2.5, 3 with n = 2, 1, 2, 1; n = 6.
    # Ordinal delta(c,k) = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2:
    #   d(1,2)=2.25 d(1,2.5)=9 d(1,3)=20.25 d(2,2.5)=2.25 d(2,3)=9 d(2.5,3)=2.25
    # D_o = (2*d(2,2.5) + 2*d(2.5,3)) / 6 = 1.5
    # D_e = 2 * (2*1*2.25 + 2*2*9 + 2*1*20.25 + 1*2*2.25 + 1*1*9 + 2*1*2.25) / (6*5) = 198/30 = 6.6
    # alpha = 1 - 1.5/6.6 = 0.772727...
    rows = [_row("u1", [["a"], ["b"], ["c"]]), _row("u2", [["a"], ["b", "c"]])]
    assert krippendorff_alpha_ordinal(rows) == pytest.approx(1 - 1.5 / 6.6)


def test_alpha_is_one_for_identical_rankings_and_none_without_overlap():
    same = [_row(name, [["c"], ["a"], ["b"]], task=task) for name in ("u1", "u2", "u3") for task in ("t1", "t2")]
    assert krippendorff_alpha_ordinal(same) == pytest.approx(1.0)
    disjoint = [_row("u1", [["a"], ["b"], ["c"]], task="t1"), _row("u2", [["a"], ["b"], ["c"]], task="t2")]
    assert krippendorff_alpha_ordinal(disjoint) is None
    assert krippendorff_alpha_ordinal([_row("u1", [["a"], ["b"], ["c"]])]) is None


def test_ordinal_alpha_backend_reproduces_krippendorffs_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units;
    # the paper reports ordinal alpha = 0.815. This pins the library our statistic relies on.
    import krippendorff

    nan = np.nan
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    assert krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal") == pytest.approx(0.815, abs=5e-4)


def test_agreement_with_the_majority_of_the_others():
    # pairs (a,b) (a,c) (b,c); votes u1: F F F, u2: F F F, u3: F F S
    # u1: (a,b) others F,F -> agree; (a,c) agree; (b,c) others F,S -> no majority, not counted -> 2/2
    # u3: (a,b) agree; (a,c) agree; (b,c) others F,F, u3 says S -> 2/3
    rows = [_row("u1", [["a"], ["b"], ["c"]]), _row("u2", [["a"], ["b"], ["c"]]), _row("u3", [["a"], ["c"], ["b"]])]
    result = reviewer_agreement(rows)
    assert result["u1"] == {"agreement": 1.0, "compared_pairs": 2, "rankings": 1}
    assert result["u2"] == {"agreement": 1.0, "compared_pairs": 2, "rankings": 1}
    assert result["u3"]["compared_pairs"] == 3 and math.isclose(result["u3"]["agreement"], 2 / 3)


def test_a_tie_is_a_vote_of_its_own_in_agreement():
    # (a,b): u1 F, u2 tie -> each compared against the other one's vote: both disagree
    rows = [_row("u1", [["a"], ["b"]], ids="ab"), _row("u2", [["a", "b"]], ids="ab")]
    assert reviewer_agreement(rows)["u1"] == {"agreement": 0.0, "compared_pairs": 1, "rankings": 1}


def test_disputed_pairs_are_those_the_majority_vote_does_not_keep():
    rows = [_row("u1", [["a"], ["b"], ["c"]]), _row("u2", [["b"], ["a"], ["c"]])]
    disputed = disputed_pairs(rows, min_agreement=0.5)
    # only (a, b) splits 1-1; (a, c) and (b, c) are unanimous
    assert len(disputed) == 1
    assert {disputed[0]["chosen"], disputed[0]["rejected"]} == {"text a", "text b"}
    assert (disputed[0]["votes_chosen"], disputed[0]["votes_rejected"], disputed[0]["agreement"]) == (1, 1, 0.5)
