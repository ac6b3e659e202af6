"""Exports of the annotation database: `rankings` for `rlhf rm`, agreed `pairs`, and `raw` (everything).

    rlhf annotate export --db annotations.db --format rankings --out rankings.jsonl

- `rankings`: our rankings format, one row per live (not undone) ranking of each reviewer:
  `{"id", "prompt", "responses", "ranking", "annotator", "all_bad"}` plus `"rationale"` when the
  reviewer wrote one. Skips and undone answers are not rankings and are left out. A reviewer's tie of
  every response (the K=2 "tie" button) is kept: it is a vote that majority voting counts.
- `pairs`: `rlhf.data.majority_vote_pairs` over those rankings (ties give no pair; a pair needs more than
  `min_agreement` of the votes); all-bad rankings are left out unless asked for.
- `raw`: one JSON object per line with a `"type"`: the settings (no tokens), every task, every
  reviewer (no tokens), every assignment (the card order each reviewer saw) and every answer including
  skips and undone ones, with timestamps as ISO 8601 UTC strings next to the epoch seconds.
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
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rankings_rows(snapshot: dict[str, Any], include_all_bad: bool = True) -> list[dict]:
    """One rankings row per live ranking, in submission order."""
    tasks = {task.id: task for task in snapshot["tasks"]}
    names = {reviewer["id"]: reviewer["name"] for reviewer in snapshot["reviewers"]}
    rows = []
    for answer in snapshot["annotations"]:
        if answer["kind"] != "ranking" or answer["undone_at"] is not None:
            continue
        if answer["all_bad"] and not include_all_bad:
            continue
        task = tasks[answer["task_id"]]
        row = {
            "id": task.id,
            "prompt": task.prompt,
            "responses": task.responses,
            "ranking": answer["ranking"],
            "annotator": names[answer["reviewer_id"]],
            "all_bad": answer["all_bad"],
        }
        if len(answer["ranking"]) == 1 and not answer["all_bad"]:
            row["tie"] = True  # an explicit all-tied judgement (K=2 "tie"), valid for rlhf rm; gives no pairs
        if answer["rationale"]:
            row["rationale"] = answer["rationale"]
        rows.append(row)
    return rows


def pairs_rows(snapshot: dict[str, Any], min_agreement: float = 0.5, include_all_bad: bool = False) -> list[dict]:
    from rlhf.data import majority_vote_pairs

    kept, _ = majority_vote_pairs(rankings_rows(snapshot, include_all_bad=include_all_bad), min_agreement=min_agreement)
    return kept


def raw_rows(snapshot: dict[str, Any]) -> list[dict]:
    names = {reviewer["id"]: reviewer["name"] for reviewer in snapshot["reviewers"]}
    rows: list[dict] = [{"type": "settings", **snapshot["settings"], "created_at": _iso(snapshot["settings"]["created_at"])}]
    for task in snapshot["tasks"]:
        row = {"type": "task", "id": task.id, "prompt": task.prompt, "responses": task.responses, "meta": task.meta}
        if task.guidelines is not None:
            row["guidelines"] = task.guidelines
        rows.append(row)
    for reviewer in snapshot["reviewers"]:
        rows.append({"type": "reviewer", "name": reviewer["name"], "created_at": _iso(reviewer["created_at"])})
    for assignment in snapshot["assignments"]:
        rows.append({
            "type": "assignment", "task_id": assignment["task_id"], "annotator": names[assignment["reviewer_id"]],
            "shown_order": assignment["shown_order"], "first_shown_at": _iso(assignment["first_shown_at"]),
        })
    for answer in snapshot["annotations"]:
        rows.append({
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
            "shown_order": answer["shown_order"],
            "shown_at": _iso(answer["shown_at"]),
            "submitted_at": _iso(answer["submitted_at"]),
            "undone_at": _iso(answer["undone_at"]),
            "seconds_to_answer": round(answer["submitted_at"] - answer["shown_at"], 3),
        })
    return rows


def export_rows(store: AnnotationStore, fmt: str, min_agreement: float = 0.5, include_all_bad: bool | None = None) -> list[dict]:
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


def export(store: AnnotationStore, fmt: str, out: str | os.PathLike, min_agreement: float = 0.5,
           include_all_bad: bool | None = None) -> int:
    """Write one export as JSONL (atomically); returns the number of rows."""
    from rlhf.files import write_jsonl_atomic

    return write_jsonl_atomic(out, export_rows(store, fmt, min_agreement, include_all_bad))
