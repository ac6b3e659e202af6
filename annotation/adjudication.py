"""Adjudication: an admin decides the ranking of a disputed task, or discards the task.

    POST /api/admin/tasks/{task_id}/adjudication
         {"decision": "ranking", "ranking": [["r2"], ["r0", "r1"]], "note": "..."}
    POST /api/admin/tasks/{task_id}/adjudication  {"decision": "discard", "note": "the prompt is ambiguous"}

A decision replaces the reviewers' rankings of that task in the `rankings` and `pairs` exports (one row
with `"adjudicated": true` and the names of the reviewers it overrides); a discarded task exports
nothing; the reviewers' own answers stay in the database and in the `raw` export. Deciding again
replaces the earlier decision; withdrawing it (DELETE) returns the task to majority voting. Gold items
cannot be adjudicated: their answer is known. The admin speaks response ids (the admin view shows them
next to the texts); reviewers never do.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, Optional

from annotation.errors import Conflict, InvalidInput, NotFound
from annotation.store import AnnotationStore

MAX_NOTE_CHARS = 2000
MAX_ADJUDICATOR_CHARS = 64
Decision = Literal["ranking", "discard"]


def _check_ranking(task_row: Any, ranking: Any) -> list[list[str]]:
    from rlhf.data import check_rankings_row

    row = {
        "id": task_row["id"],
        "prompt": json.loads(task_row["prompt"]),
        "responses": json.loads(task_row["responses"]),
        "ranking": ranking,
    }
    problem = check_rankings_row(row)
    if problem is not None:
        field_name, reason = problem
        raise InvalidInput(f"'{field_name}': {reason}")
    return [[str(response_id) for response_id in tier] for tier in ranking]


def decide(
    store: AnnotationStore,
    task_id: str,
    decision: Decision,
    ranking: Any = None,
    adjudicator: str = "admin",
    note: Optional[str] = None,
    now: Optional[float] = None,
) -> dict[str, Any]:
    """Record (or replace) the decision on a task; returns it as stored."""
    if decision not in ("ranking", "discard"):
        raise InvalidInput(f'\'decision\' must be "ranking" or "discard", got {decision!r}')
    adjudicator = (adjudicator or "admin").strip() or "admin"
    if len(adjudicator) > MAX_ADJUDICATOR_CHARS or not adjudicator.isprintable():
        raise InvalidInput(f"'adjudicator' must be 1 to {MAX_ADJUDICATOR_CHARS} printable characters")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise InvalidInput(f"'note' is {len(note)} characters long; at most {MAX_NOTE_CHARS} are allowed")
    if decision == "discard" and ranking is not None:
        raise InvalidInput("'ranking' must be left out when the decision is \"discard\"")
    now = time.time() if now is None else now
    with store.write_transaction() as conn:
        task_row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if task_row is None:
            raise NotFound(f"no task {task_id!r}")
        if task_row["gold"] is not None:
            raise Conflict(f"task {task_id!r} is a gold item: its ranking is known and cannot be adjudicated")
        ids = None
        if decision == "ranking":
            if ranking is None:
                raise InvalidInput("'ranking' is required when the decision is \"ranking\"")
            ids = _check_ranking(task_row, ranking)
        conn.execute(
            """INSERT INTO adjudications(task_id, decision, ranking, adjudicator, note, decided_at) VALUES (?,?,?,?,?,?)
               ON CONFLICT(task_id) DO UPDATE SET decision = excluded.decision, ranking = excluded.ranking,
                 adjudicator = excluded.adjudicator, note = excluded.note, decided_at = excluded.decided_at""",
            (
                task_id,
                decision,
                None if ids is None else json.dumps(ids),
                adjudicator,
                (note or "").strip() or None,
                now,
            ),
        )
    return {
        "task_id": task_id,
        "decision": decision,
        "ranking": ids,
        "adjudicator": adjudicator,
        "note": (note or "").strip() or None,
        "decided_at": now,
    }


def withdraw(store: AnnotationStore, task_id: str) -> None:
    with store.write_transaction() as conn:
        if conn.execute("DELETE FROM adjudications WHERE task_id = ?", (task_id,)).rowcount == 0:
            raise NotFound(f"task {task_id!r} has no adjudication")


def task_detail(store: AnnotationStore, task_id: str) -> dict[str, Any]:
    """What the adjudicator needs: the task (responses with ids), every reviewer's live answer, the decision."""
    snapshot = store.snapshot()
    task = next((task for task in snapshot["tasks"] if task.id == task_id), None)
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    names = {reviewer["id"]: reviewer["name"] for reviewer in snapshot["reviewers"]}
    answers = [
        {
            "annotator": names[a["reviewer_id"]],
            "kind": a["kind"],
            "ranking": a["ranking"],
            "all_bad": a["all_bad"],
            "rationale": a["rationale"],
            "skip_reason": a["skip_reason"],
            "ratings": a["ratings"],
            "flags": a["flags"],
            "too_fast": a["too_fast"],
            "seconds": round(a["submitted_at"] - a["shown_at"], 3),
        }
        for a in snapshot["annotations"]
        if a["task_id"] == task_id and a["undone_at"] is None
    ]
    adjudication = snapshot["adjudications"].get(task_id)
    return {
        "id": task.id,
        "prompt": task.prompt,
        "responses": task.responses,
        "gold": task.gold is not None,
        "answers": answers,
        "adjudication": adjudication,
    }
