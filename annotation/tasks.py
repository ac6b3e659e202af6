"""Read and check the candidates file that reviewers rank.

A row is `{"id", "prompt", "responses": [{"id", "text"}, ...], "meta"}` (DESIGN.md section 4) plus two
optional fields of ours: `guidelines`, markdown shown with that task instead of the default guidelines
(`rlhf annotate serve --guidelines FILE`), and `gold`, the known ranking (tiers of response ids, best
first) that makes the row a gold item. A separate gold file (`--gold FILE`) holds rows that must have a
known ranking, in `gold` or, as a rankings file would, in `ranking`. Prompts and response texts may be plain text or
conversations (lists of {role, content}), as `rlhf generate` writes them. Ids may be strings or integers
(integers become strings so the database and the exports use one type). Every problem stops the import
with a DataError naming the file, the 1-based row and the field, before anything is written to the
database.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import dataclass, field
from typing import Any

from rlhf.errors import DataError

CARD_LABELS = string.ascii_uppercase  # cards are labelled A, B, C...; so at most 26 responses per task
MAX_TEXT_CHARS = 200_000  # one prompt or response; larger ones are almost surely a broken file


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str | list[dict[str, str]]  # text, or a conversation of {role, content} messages
    responses: list[dict[str, Any]]  # [{"id", "text"}] in the file's order; text may be a conversation
    meta: dict[str, Any] = field(default_factory=dict)
    guidelines: str | None = None
    gold: list[list[str]] | None = None  # the known ranking of a gold item (response ids, best first)

    def content_hash(self) -> str:
        """A fingerprint of everything reviewers see (and the gold answer), to tell a re-import from a changed task."""
        parts: list[Any] = [self.prompt, self.responses, self.meta, self.guidelines]
        if self.gold is not None:  # appended only when set, so tasks stored before gold existed keep their hash
            parts.append(self.gold)
        body = json.dumps(parts, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _size(value: Any) -> int:
    """Characters of a text, or of all message contents of a conversation."""
    if isinstance(value, str):
        return len(value)
    return sum(len(message.get("content", "")) for message in value)


def _parse_gold(row: dict, where: str, field_name: str) -> list[list[str]]:
    """The known ranking, checked by the rankings rules (every response once; not one single tie)."""
    from rlhf.data import check_rankings_row

    candidate = {key: row[key] for key in ("id", "prompt", "responses") if key in row} | {"ranking": row[field_name]}
    problem = check_rankings_row(candidate)
    if problem is not None:
        problem_field, reason = problem
        raise DataError(f"{where}: field '{problem_field.replace('ranking', field_name, 1)}': {reason}")
    return [[str(response_id) for response_id in tier] for tier in row[field_name]]


def parse_task(row: dict, source: str, row_number: int, require_gold: bool = False) -> Task:
    """One candidates row -> Task, or a DataError naming `source`, the row and the field.

    The format is checked by `rlhf.data.check_candidates_row` (the same rules every stage applies;
    prompts and responses may be text or conversations); the tool adds its own limits on top.
    """
    from rlhf.data import check_candidates_row

    where = f"{source}: row {row_number}"
    problem = check_candidates_row(row)
    if problem is not None:
        field_name, reason = problem
        raise DataError(f"{where}: field '{field_name}': {reason}")
    if len(row["responses"]) > len(CARD_LABELS):
        raise DataError(
            f"{where}: field 'responses': has {len(row['responses'])} responses; the tool shows at most "
            f"{len(CARD_LABELS)} (cards A-Z)"
        )
    texts = [("prompt", row["prompt"])] + [(f"responses[{i}].text", r["text"]) for i, r in enumerate(row["responses"])]
    for field_name, value in texts:
        if _size(value) > MAX_TEXT_CHARS:
            raise DataError(
                f"{where}: field '{field_name}': {_size(value)} characters; at most {MAX_TEXT_CHARS} are allowed"
            )
    guidelines = row.get("guidelines")
    if guidelines is not None and not isinstance(guidelines, str):
        raise DataError(f"{where}: field 'guidelines': expected markdown text, got {type(guidelines).__name__}")
    gold_field = (
        "gold"
        if row.get("gold") is not None
        else ("ranking" if require_gold and row.get("ranking") is not None else None)
    )
    if require_gold and gold_field is None:
        raise DataError(
            f"{where}: field 'gold': missing; a gold file's rows need their known ranking in 'gold' (or 'ranking')"
        )
    gold = _parse_gold(row, where, gold_field) if gold_field else None
    responses = [{"id": str(response["id"]), "text": response["text"]} for response in row["responses"]]
    return Task(
        id=str(row["id"]),
        prompt=row["prompt"],
        responses=responses,
        meta=row.get("meta") or {},
        guidelines=guidelines,
        gold=gold,
    )


def read_tasks(path: str | os.PathLike, require_gold: bool = False) -> list[Task]:
    """All tasks of a candidates JSONL file (with `require_gold`: a gold file); repeated ids are an error."""
    from rlhf.files import read_jsonl

    if not os.path.isfile(path):
        raise DataError(f"tasks file not found: {path}")
    tasks: list[Task] = []
    first_row_of: dict[str, int] = {}
    # read_jsonl skips blank lines, so count rows ourselves to report the file's real line numbers
    with open(path, encoding="utf-8") as handle:
        line_numbers = [number for number, line in enumerate(handle, start=1) if line.strip()]
    for row, row_number in zip(read_jsonl(path), line_numbers, strict=True):
        task = parse_task(row, str(path), row_number, require_gold=require_gold)
        if task.id in first_row_of:
            raise DataError(
                f"{path}: row {row_number}: field 'id' repeats {task.id!r} (first seen in row {first_row_of[task.id]})"
            )
        first_row_of[task.id] = row_number
        tasks.append(task)
    if not tasks:
        raise DataError(f"{path}: holds no tasks")
    return tasks
