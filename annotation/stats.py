"""Progress, quality and agreement of an annotation database, for `rlhf annotate stats` and the admin view.

    rlhf annotate stats --db annotations.db [--json]

Per reviewer: tasks done, median time on task, gold accuracy and status, agreement with the majority of
the others, and flags (too fast, unchanged order, all bad, flags raised on responses).

Which rankings count where:
- agreement and alpha: every reviewer's live rankings of ordinary tasks that are not all-bad, blocked
  reviewers included (the admin needs to see how far off they are);
- disputed pairs and tasks: the same rankings without blocked reviewers and without tasks already
  adjudicated: exactly the disputes still open in the export;
- counts cover everything, skips and undone answers included. Gold items are counted apart.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from typing import Any

from annotation.agreement import agreement_report, alpha_over_time, disputed_pairs, disputed_tasks
from annotation.store import AnnotationStore


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def collect_stats(store: AnnotationStore, min_agreement: float = 0.5) -> dict[str, Any]:
    snapshot = store.snapshot()
    overlap = int(snapshot["settings"]["overlap"])
    tasks = {task.id: task for task in snapshot["tasks"]}
    ordinary = [task for task in snapshot["tasks"] if task.gold is None]
    live = [a for a in snapshot["annotations"] if a["undone_at"] is None]
    rankings_per_task = Counter(a["task_id"] for a in live if a["kind"] == "ranking")
    reviewers = {reviewer["id"]: reviewer for reviewer in snapshot["reviewers"]}
    per_reviewer: dict[int, Counter] = {reviewer_id: Counter() for reviewer_id in reviewers}
    seconds: dict[int, list[float]] = {reviewer_id: [] for reviewer_id in reviewers}
    timed_rankings: list[tuple[float, dict]] = []
    open_dispute_rows: list[dict] = []
    for answer in snapshot["annotations"]:
        counts = per_reviewer[answer["reviewer_id"]]
        task = tasks[answer["task_id"]]
        if answer["undone_at"] is not None:
            counts["undone"] += 1
            continue
        if answer["kind"] == "skip":
            counts["skipped"] += 1
            continue
        seconds[answer["reviewer_id"]].append(answer["submitted_at"] - answer["shown_at"])
        counts["too_fast"] += int(answer["too_fast"])
        counts["flags_raised"] += sum(len(names) for names in (answer["flags"] or {}).values())
        if task.gold is not None:
            counts["gold_answered"] += 1
            continue
        counts["ranked"] += 1
        counts["all_bad"] += int(answer["all_bad"])
        counts["unchanged_order"] += int(answer["unchanged_order"])
        if answer["all_bad"]:
            continue
        reviewer = reviewers[answer["reviewer_id"]]
        row = {
            "id": task.id,
            "prompt": task.prompt,
            "responses": task.responses,
            "ranking": answer["ranking"],
            "annotator": reviewer["name"],
        }
        timed_rankings.append((answer["submitted_at"], row))
        if reviewer["quality"].status != "blocked" and task.id not in snapshot["adjudications"]:
            open_dispute_rows.append(row)
    agreement = agreement_report([row for _, row in timed_rankings], min_agreement=min_agreement)
    disputed = disputed_pairs(open_dispute_rows, min_agreement)
    reviewer_rows = []
    for reviewer_id, counts in per_reviewer.items():
        reviewer = reviewers[reviewer_id]
        quality = reviewer["quality"]
        reviewer_agreement = agreement["reviewers"].get(reviewer["name"], {})
        reviewer_rows.append(
            {
                "name": reviewer["name"],
                "status": quality.status,
                "override": quality.override,
                "ranked": counts["ranked"],
                "skipped": counts["skipped"],
                "undone": counts["undone"],
                "median_seconds": round(statistics.median(seconds[reviewer_id]), 1) if seconds[reviewer_id] else None,
                "gold_answered": counts["gold_answered"],
                "gold_accuracy": None if quality.gold_accuracy is None else round(quality.gold_accuracy, 4),
                "quality_weight": round(quality.weight, 4),
                "agreement_with_majority": reviewer_agreement.get("agreement"),
                "compared_pairs": reviewer_agreement.get("compared_pairs", 0),
                "all_bad": counts["all_bad"],
                "unchanged_order": counts["unchanged_order"],
                "too_fast": counts["too_fast"],
                "flags_raised": counts["flags_raised"],
            }
        )
    feedback = snapshot["feedback"]
    settings = snapshot["settings"]
    return {
        "schema_version": settings["schema_version"],
        "overlap": overlap,
        "settings": {
            key: settings[key]
            for key in (
                "gold_rate",
                "gold_warn_below",
                "gold_block_below",
                "gold_min_answers",
                "min_seconds",
                "judgements",
            )
        },
        "tasks": {
            "total": len(ordinary),
            "complete": sum(1 for task in ordinary if rankings_per_task[task.id] >= overlap),
            "started": sum(1 for task in ordinary if rankings_per_task[task.id] > 0),
        },
        "annotations": {
            "rankings": sum(1 for a in live if a["kind"] == "ranking" and tasks[a["task_id"]].gold is None),
            "skips": sum(1 for a in live if a["kind"] == "skip"),
            "undone": len(snapshot["annotations"]) - len(live),
        },
        "gold": {
            "items": len(snapshot["tasks"]) - len(ordinary),
            "answers": sum(1 for a in live if a["kind"] == "ranking" and tasks[a["task_id"]].gold is not None),
        },
        "reviewers": reviewer_rows,
        "krippendorff_alpha_ordinal": agreement["krippendorff_alpha_ordinal"],
        "alpha_over_time": [point | {"until": _iso(point["until"])} for point in alpha_over_time(timed_rankings)],
        "disputed_pairs": disputed,
        "disputed_tasks": disputed_tasks(disputed),
        "adjudications": [
            {
                "task_id": task_id,
                "decision": decision["decision"],
                "ranking": decision["ranking"],
                "adjudicator": decision["adjudicator"],
                "note": decision["note"],
                "decided_at": _iso(decision["decided_at"]),
            }
            for task_id, decision in snapshot["adjudications"].items()
        ],
        "feedback": {
            "apps": len(snapshot["apps"]),
            "choices": sum(1 for item in feedback if item["choice"] is not None),
            "thumbs_up": sum(1 for item in feedback if item["thumb"] == "up"),
            "thumbs_down": sum(1 for item in feedback if item["thumb"] == "down"),
        },
        "min_agreement": min_agreement,
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def format_stats(stats: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    alpha = stats["krippendorff_alpha_ordinal"]
    trend = ", ".join(
        "n/a" if point["alpha"] is None else f"{point['alpha']:.2f}" for point in stats["alpha_over_time"]
    )
    feedback = stats["feedback"]
    lines = [
        f"tasks: {stats['tasks']['total']} total, {stats['tasks']['started']} started, "
        f"{stats['tasks']['complete']} complete (overlap {stats['overlap']}); {stats['gold']['items']} gold item(s)",
        f"answers: {stats['annotations']['rankings']} rankings, {stats['gold']['answers']} on gold items, "
        f"{stats['annotations']['skips']} skips, {stats['annotations']['undone']} undone",
        f"Krippendorff's alpha (ordinal): {'n/a' if alpha is None else f'{alpha:.3f}'}"
        + (f" (over time: {trend})" if trend else ""),
        f"disputed pairs (agreement <= {stats['min_agreement']}): {len(stats['disputed_pairs'])} in "
        f"{len(stats['disputed_tasks'])} task(s); "
        f"{len(stats['adjudications'])} task(s) adjudicated",
        f"app feedback: {feedback['choices']} choices, {feedback['thumbs_up']} thumbs up, {feedback['thumbs_down']} "
        "thumbs down "
        f"from {feedback['apps']} app(s)",
        "reviewers:",
    ]
    for reviewer in stats["reviewers"]:
        agreement = reviewer["agreement_with_majority"]
        shown = "n/a" if agreement is None else f"{agreement:.0%} of {reviewer['compared_pairs']} pairs"
        median = "n/a" if reviewer["median_seconds"] is None else f"{reviewer['median_seconds']:.0f} s"
        lines.append(
            f"  {reviewer['name']} "
            f"[{reviewer['status']}{', ' + reviewer['override'] if reviewer['override'] else ''}]: "
            f"{reviewer['ranked']} ranked, {reviewer['skipped']} skipped, {reviewer['undone']} undone; median "
            f"{median}; "
            f"gold {_percent(reviewer['gold_accuracy'])} of {reviewer['gold_answered']}; agreement with majority "
            f"{shown}; "
            f"flags: {reviewer['too_fast']} too fast, {reviewer['unchanged_order']} unchanged order, "
            f"{reviewer['flags_raised']} on responses"
        )
    return "\n".join(lines)
