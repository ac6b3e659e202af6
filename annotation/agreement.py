"""How much reviewers agree: Krippendorff's alpha, each reviewer's agreement with the others' majority,
and the disputed pairs. Pure functions of rankings rows (`{"id", "responses", "ranking", "annotator"}`).

Choices:
- Alpha treats each (task, response) as a unit and each reviewer's rank of it as an ordinal value, using
  mid-ranks for ties (a tie of places 2 and 3 is 2.5) so every reviewer's values sit on one 1..K scale.
  The computation is the `krippendorff` package's (ordinal metric); units one reviewer saw are ignored
  by alpha's definition. Alpha is None when no unit has two values or all values are the same.
- A reviewer's agreement is measured against the majority of the *other* reviewers of the same task
  (leave-one-out), pair by pair, with three possible votes: first better, second better, tie. Counting
  the reviewer in their own majority would inflate agreement (with two reviewers, to at least 50%).
  A pair counts only when the others have a strict majority.
- Disputed pairs are those `rlhf.data.majority_vote_pairs` does not keep at the given threshold, so the
  admin view and the `pairs` export apply one rule. A disputed task is a task with a disputed pair.
- Alpha over time is cumulative: alpha of all rankings submitted up to each of (at most) ten cut points
  spread evenly over the rankings in submission order. Cumulative, because alpha of a small window is
  mostly noise; by count rather than by clock, because a team labels in bursts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from annotation.ranking import mid_ranks, pair_preference


def _by_task(rankings: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rankings:
        groups[str(row["id"])].append(row)
    return groups


def krippendorff_alpha_ordinal(rankings: list[dict]) -> float | None:
    """Ordinal Krippendorff's alpha over (task, response) units valued by each reviewer's mid-rank."""
    import krippendorff
    import numpy as np

    annotators = sorted({str(row.get("annotator", "")) for row in rankings})
    column_of: dict[tuple[str, str], int] = {}
    for row in rankings:
        for response in row["responses"]:
            column_of.setdefault((str(row["id"]), str(response["id"])), len(column_of))
    if len(annotators) < 2 or not column_of:
        return None
    data = np.full((len(annotators), len(column_of)), np.nan)
    row_of = {name: index for index, name in enumerate(annotators)}
    for row in rankings:
        for response_id, rank in mid_ranks([[str(r) for r in tier] for tier in row["ranking"]]).items():
            data[row_of[str(row.get("annotator", ""))], column_of[(str(row["id"]), response_id)]] = rank
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    if not pairable.any() or len(np.unique(data[:, pairable][~np.isnan(data[:, pairable])])) < 2:
        return None
    alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))
    return None if math.isnan(alpha) else alpha


def reviewer_agreement(rankings: list[dict]) -> dict[str, dict[str, Any]]:
    """Per reviewer: share of pair votes equal to the other reviewers' strict majority on that pair.

    Returns {annotator: {"agreement": float | None, "compared_pairs": int, "rankings": int}}.
    """
    matches: Counter[str] = Counter()
    compared: Counter[str] = Counter()
    ranking_count: Counter[str] = Counter(str(row.get("annotator", "")) for row in rankings)
    for rows in _by_task(rankings).values():
        if len(rows) < 2:
            continue
        response_ids = [str(response["id"]) for response in rows[0]["responses"]]
        tiers = [[[str(r) for r in tier] for tier in row["ranking"]] for row in rows]
        for first_index, first in enumerate(response_ids):
            for second in response_ids[first_index + 1 :]:
                votes = [pair_preference(ranking, first, second) for ranking in tiers]
                for voter, row in enumerate(rows):
                    others = Counter(vote for index, vote in enumerate(votes) if index != voter)
                    leader, leader_votes = others.most_common(1)[0]
                    if leader_votes * 2 <= sum(others.values()):
                        continue  # no strict majority among the others
                    name = str(row.get("annotator", ""))
                    compared[name] += 1
                    matches[name] += int(votes[voter] == leader)
    return {
        name: {
            "agreement": (matches[name] / compared[name]) if compared[name] else None,
            "compared_pairs": compared[name],
            "rankings": ranking_count[name],
        }
        for name in sorted(ranking_count)
    }


def disputed_pairs(rankings: list[dict], min_agreement: float = 0.5) -> list[dict]:
    """Pairs whose direction the reviewers do not agree on, most evenly split first."""
    from rlhf.data import majority_vote_pairs

    _, disputed = majority_vote_pairs(rankings, min_agreement=min_agreement)
    return sorted(disputed, key=lambda pair: (pair["agreement"], str(pair["group"])))


def alpha_over_time(timed_rankings: list[tuple[float, dict]], points: int = 10) -> list[dict[str, Any]]:
    """[(submitted_at, rankings row)] -> cumulative [{"until": epoch seconds, "rankings": n, "alpha": float | None}]."""
    ordered = sorted(timed_rankings, key=lambda item: item[0])
    cuts = sorted({math.ceil(index * len(ordered) / points) for index in range(1, points + 1)} - {0})
    return [
        {
            "until": ordered[cut - 1][0],
            "rankings": cut,
            "alpha": krippendorff_alpha_ordinal([row for _, row in ordered[:cut]]),
        }
        for cut in cuts
    ]


def disputed_tasks(disputed: list[dict]) -> list[dict[str, Any]]:
    """Tasks with disputed pairs, most disputed pairs first: {"task_id", "disputed_pairs", "lowest_agreement"}."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for pair in disputed:
        by_task[str(pair["group"])].append(pair)
    tasks = [
        {"task_id": task_id, "disputed_pairs": len(pairs), "lowest_agreement": min(pair["agreement"] for pair in pairs)}
        for task_id, pairs in by_task.items()
    ]
    return sorted(tasks, key=lambda task: (-task["disputed_pairs"], task["lowest_agreement"], task["task_id"]))


def agreement_report(rankings: list[dict], min_agreement: float = 0.5) -> dict[str, Any]:
    """Everything the admin view and `rlhf annotate stats` show about agreement."""
    reviewers_per_task = Counter(len(rows) for rows in _by_task(rankings).values())
    return {
        "krippendorff_alpha_ordinal": krippendorff_alpha_ordinal(rankings),
        "reviewers": reviewer_agreement(rankings),
        "disputed_pairs": disputed_pairs(rankings, min_agreement),
        "tasks_by_reviewer_count": {str(count): tasks for count, tasks in sorted(reviewers_per_task.items())},
        "min_agreement": min_agreement,
    }
