"""Progress and agreement of an annotation database, for `rlhf annotate stats` and the admin view.

    rlhf annotate stats --db annotations.db [--json]

Agreement is computed over live rankings that are not flagged all-bad (the same rankings the `pairs`
export votes with); counts cover everything, skips and undone answers included.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from annotation.agreement import agreement_report
from annotation.export import rankings_rows
from annotation.store import AnnotationStore


def collect_stats(store: AnnotationStore, min_agreement: float = 0.5) -> dict[str, Any]:
    snapshot = store.snapshot()
    overlap = int(snapshot["settings"]["overlap"])
    live = [a for a in snapshot["annotations"] if a["undone_at"] is None]
    rankings_per_task = Counter(a["task_id"] for a in live if a["kind"] == "ranking")
    names = {reviewer["id"]: reviewer["name"] for reviewer in snapshot["reviewers"]}
    per_reviewer: dict[str, Counter] = {name: Counter() for name in names.values()}
    for answer in snapshot["annotations"]:
        counts = per_reviewer[names[answer["reviewer_id"]]]
        if answer["undone_at"] is not None:
            counts["undone"] += 1
        elif answer["kind"] == "skip":
            counts["skipped"] += 1
        else:
            counts["ranked"] += 1
            counts["all_bad"] += int(answer["all_bad"])
            counts["unchanged_order"] += int(answer["unchanged_order"])
    agreement = agreement_report(rankings_rows(snapshot, include_all_bad=False), min_agreement=min_agreement)
    reviewers = []
    for name, counts in per_reviewer.items():
        reviewer_agreement = agreement["reviewers"].get(name, {})
        reviewers.append({
            "name": name,
            "ranked": counts["ranked"], "skipped": counts["skipped"], "undone": counts["undone"],
            "all_bad": counts["all_bad"], "unchanged_order": counts["unchanged_order"],
            "agreement_with_majority": reviewer_agreement.get("agreement"),
            "compared_pairs": reviewer_agreement.get("compared_pairs", 0),
        })
    return {
        "schema_version": snapshot["settings"]["schema_version"],
        "overlap": overlap,
        "tasks": {
            "total": len(snapshot["tasks"]),
            "complete": sum(1 for task in snapshot["tasks"] if rankings_per_task[task.id] >= overlap),
            "started": sum(1 for task in snapshot["tasks"] if rankings_per_task[task.id] > 0),
        },
        "annotations": {
            "rankings": sum(1 for a in live if a["kind"] == "ranking"),
            "skips": sum(1 for a in live if a["kind"] == "skip"),
            "undone": len(snapshot["annotations"]) - len(live),
        },
        "reviewers": reviewers,
        "krippendorff_alpha_ordinal": agreement["krippendorff_alpha_ordinal"],
        "disputed_pairs": agreement["disputed_pairs"],
        "min_agreement": min_agreement,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    alpha = stats["krippendorff_alpha_ordinal"]
    lines = [
        f"tasks: {stats['tasks']['total']} total, {stats['tasks']['started']} started, "
        f"{stats['tasks']['complete']} complete (overlap {stats['overlap']})",
        f"answers: {stats['annotations']['rankings']} rankings, {stats['annotations']['skips']} skips, "
        f"{stats['annotations']['undone']} undone",
        f"Krippendorff's alpha (ordinal): {'n/a' if alpha is None else f'{alpha:.3f}'}",
        f"disputed pairs (agreement <= {stats['min_agreement']}): {len(stats['disputed_pairs'])}",
        "reviewers:",
    ]
    for reviewer in stats["reviewers"]:
        agreement = reviewer["agreement_with_majority"]
        shown = "n/a" if agreement is None else f"{agreement:.0%} of {reviewer['compared_pairs']} pairs"
        lines.append(f"  {reviewer['name']}: {reviewer['ranked']} ranked, {reviewer['skipped']} skipped, "
                     f"{reviewer['undone']} undone; agreement with majority {shown}")
    return "\n".join(lines)
