"""Exports of the annotation database: `rankings` for `rlhf rm`, agreed `pairs`, and `raw` (everything).

    rlhf annotate export --db annotations.db --format rankings --out rankings.jsonl

- `rankings`: our rankings format (`{"id", "prompt", "responses", "ranking", "annotator", "all_bad"}`),
  with optional keys that older readers ignore. Every row has `"source"`:
  - `reviewer`: one row per live (not undone) ranking of each reviewer on an ordinary task, with
    `seconds` (time on task: from the task being shown to the submission, measured by the server),
    `quality_weight` (the reviewer's gold accuracy shrunk towards 1, see annotation/quality.py) and,
    when there is one, `gold_accuracy`, `rationale`, `judgements` (per response: `rating` 1-7 and
    `flags`), `too_fast: true`. Rankings of blocked reviewers are left out (an admin can restore them);
    skips and undone answers are not rankings.
  - `adjudicated`: a task an admin decided: one row with the decided ranking, `"adjudicated": true`,
    the adjudicator as `annotator` and `overrides` (the reviewers whose rankings it replaces, which are
    then left out). A discarded task gives no row at all.
  - `gold`: each gold item once, with its known ranking (`"annotator": "gold"`); reviewers' answers to
    gold items measure the reviewers and are not exported as rankings.
  - `app`: end users' feedback from applications (annotation/feedback.py), `annotator` `app:NAME`.
  A reviewer's tie of every response (the K=2 "tie" button) is kept: it is a vote that majority voting
  counts.
- `pairs`: `rlhf.data.majority_vote_pairs` over those rankings (ties give no pair; a pair needs more than
  `min_agreement` of the votes); all-bad rankings are left out unless asked for.
- `raw`: one JSON object per line with a `"type"`: the settings (no tokens), every task, every reviewer
  (no tokens, with their quality), every assignment (the card order each reviewer saw), every answer
  including skips and undone ones, adjudications, applications (no keys) and their feedback, with
  timestamps as ISO 8601 UTC strings next to the epoch seconds.
Files are written atomically (temp name, then rename).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from annotation.store import AnnotationStore
from rlhf.errors import UserError

FORMATS = ("rankings", "pairs", "raw")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _judgements(answer: dict[str, Any], responses: list[dict]) -> list[dict] | None:
    """Per response, in the task's order: {"id", "rating", "flags"}; None when the answer has neither.

    A list of uniform records, not {response id: ...}: Arrow (which `rlhf rm` reads through) would make
    one struct field per distinct response id across the whole file.
    """
    if not answer["ratings"] and not answer["flags"]:
        return None
    ratings, flags = answer["ratings"] or {}, answer["flags"] or {}
    return [{"id": r["id"], "rating": ratings.get(r["id"]), "flags": flags.get(r["id"], [])} for r in responses]


def rankings_rows(
    snapshot: dict[str, Any], include_all_bad: bool = True, include_other_sources: bool = True
) -> list[dict]:
    """Reviewers' live rankings in submission order, then adjudicated tasks, gold items and app feedback."""
    from annotation.feedback import feedback_rankings

    tasks = {task.id: task for task in snapshot["tasks"]}
    reviewers = {reviewer["id"]: reviewer for reviewer in snapshot["reviewers"]}
    adjudications = snapshot["adjudications"]
    rows = []
    overridden: dict[str, list[str]] = {}
    for answer in snapshot["annotations"]:
        if answer["kind"] != "ranking" or answer["undone_at"] is not None:
            continue
        task = tasks[answer["task_id"]]
        reviewer = reviewers[answer["reviewer_id"]]
        quality = reviewer["quality"]
        if task.gold is not None or quality.status == "blocked":
            continue
        if task.id in adjudications:
            overridden.setdefault(task.id, []).append(reviewer["name"])
            continue
        if answer["all_bad"] and not include_all_bad:
            continue
        row = {
            "id": task.id,
            "prompt": task.prompt,
            "responses": task.responses,
            "ranking": answer["ranking"],
            "annotator": reviewer["name"],
            "all_bad": answer["all_bad"],
        }
        if len(answer["ranking"]) == 1 and not answer["all_bad"]:
            row["tie"] = True  # an explicit all-tied judgement (K=2 "tie"), valid for rlhf rm; gives no pairs
        if answer["rationale"]:
            row["rationale"] = answer["rationale"]
        judgements = _judgements(answer, task.responses)
        if judgements is not None:
            row["judgements"] = judgements
        row["source"] = "reviewer"
        row["seconds"] = round(answer["submitted_at"] - answer["shown_at"], 3)
        if answer["too_fast"]:
            row["too_fast"] = True
        if quality.gold_accuracy is not None:
            row["gold_accuracy"] = round(quality.gold_accuracy, 6)
        row["quality_weight"] = round(quality.weight, 6)
        rows.append(row)
    if not include_other_sources:
        return rows
    for task_id, decision in adjudications.items():
        if decision["decision"] != "ranking":
            continue  # discarded: no row, and the reviewers' rankings are left out above
        task = tasks[task_id]
        row = {
            "id": task.id,
            "prompt": task.prompt,
            "responses": task.responses,
            "ranking": decision["ranking"],
            "annotator": decision["adjudicator"],
            "all_bad": False,
            "source": "adjudicated",
            "adjudicated": True,
            "overrides": overridden.get(task_id, []),
        }
        if decision["note"]:
            row["rationale"] = decision["note"]
        rows.append(row)
    for task in snapshot["tasks"]:
        if task.gold is not None:
            rows.append(
                {
                    "id": task.id,
                    "prompt": task.prompt,
                    "responses": task.responses,
                    "ranking": task.gold,
                    "annotator": "gold",
                    "all_bad": False,
                    "source": "gold",
                }
            )
    rows.extend(feedback_rankings(snapshot))
    return rows


def pairs_rows(snapshot: dict[str, Any], min_agreement: float = 0.5, include_all_bad: bool = False) -> list[dict]:
    from rlhf.data import majority_vote_pairs

    kept, _ = majority_vote_pairs(rankings_rows(snapshot, include_all_bad=include_all_bad), min_agreement=min_agreement)
    return kept


def raw_rows(snapshot: dict[str, Any]) -> list[dict]:
    names = {reviewer["id"]: reviewer["name"] for reviewer in snapshot["reviewers"]}
    rows: list[dict] = [
        {"type": "settings", **snapshot["settings"], "created_at": _iso(snapshot["settings"]["created_at"])}
    ]
    for task in snapshot["tasks"]:
        row = {"type": "task", "id": task.id, "prompt": task.prompt, "responses": task.responses, "meta": task.meta}
        if task.guidelines is not None:
            row["guidelines"] = task.guidelines
        if task.gold is not None:
            row["gold"] = task.gold
        rows.append(row)
    for reviewer in snapshot["reviewers"]:
        rows.append(
            {
                "type": "reviewer",
                "name": reviewer["name"],
                "created_at": _iso(reviewer["created_at"]),
                "quality": reviewer["quality"].as_dict(),
            }
        )
    for assignment in snapshot["assignments"]:
        rows.append(
            {
                "type": "assignment",
                "task_id": assignment["task_id"],
                "annotator": names[assignment["reviewer_id"]],
                "shown_order": assignment["shown_order"],
                "first_shown_at": _iso(assignment["first_shown_at"]),
            }
        )
    for answer in snapshot["annotations"]:
        rows.append(
            {
                "type": "annotation",
                "annotation_id": answer["id"],
                "task_id": answer["task_id"],
                "annotator": names[answer["reviewer_id"]],
                "kind": answer["kind"],
                "ranking": answer["ranking"],
                "all_bad": answer["all_bad"],
                "unchanged_order": answer["unchanged_order"],
                "skip_reason": answer["skip_reason"],
                "rationale": answer["rationale"],
                "ratings": answer["ratings"],
                "flags": answer["flags"],
                "too_fast": answer["too_fast"],
                "shown_order": answer["shown_order"],
                "shown_at": _iso(answer["shown_at"]),
                "submitted_at": _iso(answer["submitted_at"]),
                "undone_at": _iso(answer["undone_at"]),
                "seconds_to_answer": round(answer["submitted_at"] - answer["shown_at"], 3),
            }
        )
    for decision in snapshot["adjudications"].values():
        rows.append({"type": "adjudication", **decision, "decided_at": _iso(decision["decided_at"])})
    app_names = {app["id"]: app["name"] for app in snapshot["apps"]}
    for app in snapshot["apps"]:
        rows.append(
            {
                "type": "app",
                "name": app["name"],
                "rate_per_minute": app["rate_per_minute"],
                "created_at": _iso(app["created_at"]),
            }
        )
    for item in snapshot["feedback"]:
        rows.append(
            {
                "type": "feedback",
                "feedback_id": item["id"],
                "app": app_names[item["app_id"]],
                "client_id": item["client_id"],
                "user": item["user_ref"],
                "prompt": item["prompt"],
                "responses": item["responses"],
                "choice": item["choice"],
                "thumb": item["thumb"],
                "meta": item["meta"],
                "received_at": _iso(item["received_at"]),
            }
        )
    return rows


def export_rows(
    store: AnnotationStore, fmt: str, min_agreement: float = 0.5, include_all_bad: bool | None = None
) -> list[dict]:
    """Rows of one export format; `include_all_bad` defaults to True for rankings and False for pairs."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not 0.0 <= min_agreement < 1.0:
        raise UserError(f"--min-agreement must be in [0, 1), got {min_agreement}")
    snapshot = store.snapshot()
    if fmt == "rankings":
        return rankings_rows(snapshot, include_all_bad=True if include_all_bad is None else include_all_bad)
    if fmt == "pairs":
        return pairs_rows(snapshot, min_agreement, include_all_bad=bool(include_all_bad))
    return raw_rows(snapshot)


def export(
    store: AnnotationStore,
    fmt: str,
    out: str | os.PathLike,
    min_agreement: float = 0.5,
    include_all_bad: bool | None = None,
) -> int:
    """Write one export as JSONL (atomically); returns the number of rows."""
    from rlhf.files import write_jsonl_atomic

    return write_jsonl_atomic(out, export_rows(store, fmt, min_agreement, include_all_bad))
