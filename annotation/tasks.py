"""Read and check the candidates file that reviewers rank.

A row is `{"id", "prompt", "responses": [{"id", "text"}, ...], "meta"}` (DESIGN.md section 4) plus one
optional field of ours: `guidelines`, markdown shown with that task instead of the default guidelines
(`rlhf annotate serve --guidelines FILE`). Ids may be strings or integers (integers become strings so
the database and the exports use one type). Every problem stops the import with a DataError naming the
file, the 1-based row and the field, before anything is written to the database.
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
    prompt: str
    responses: list[dict[str, str]]  # [{"id", "text"}] in the file's order
    meta: dict[str, Any] = field(default_factory=dict)
    guidelines: str | None = None

    def content_hash(self) -> str:
        """A fingerprint of everything reviewers see, to tell a re-import from a changed task."""
        body = json.dumps([self.prompt, self.responses, self.meta, self.guidelines], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _as_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise DataError(f"{where}: must not be empty")
    return text


def _as_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise DataError(f"{where}: is {len(value)} characters long; at most {MAX_TEXT_CHARS} are allowed")
    return value


def parse_task(row: dict, source: str, row_number: int) -> Task:
    """One candidates row -> Task, or a DataError naming `source`, the row and the field."""
    where = f"{source}: row {row_number}"
    for required in ("id", "prompt", "responses"):
        if required not in row:
            raise DataError(f"{where}: missing field '{required}'")
    task_id = _as_id(row["id"], f"{where}: field 'id'")
    prompt = _as_text(row["prompt"], f"{where}: field 'prompt'")
    responses_in = row["responses"]
    if not isinstance(responses_in, list):
        raise DataError(f"{where}: field 'responses' must be a list, got {type(responses_in).__name__}")
    if not 2 <= len(responses_in) <= len(CARD_LABELS):
        raise DataError(f"{where}: field 'responses' has {len(responses_in)} entries; between 2 and {len(CARD_LABELS)} are needed")
    responses: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, response in enumerate(responses_in):
        at = f"{where}: field 'responses[{index}]"
        if not isinstance(response, dict):
            raise DataError(f"{at}' must be an object with 'id' and 'text'")
        if "id" not in response or "text" not in response:
            raise DataError(f"{at}' must have 'id' and 'text'")
        response_id = _as_id(response["id"], f"{at}.id'")
        if response_id in seen:
            raise DataError(f"{at}.id' repeats the id {response_id!r}")
        seen.add(response_id)
        responses.append({"id": response_id, "text": _as_text(response["text"], f"{at}.text'")})
    meta = row.get("meta")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise DataError(f"{where}: field 'meta' must be an object, got {type(meta).__name__}")
    guidelines = row.get("guidelines")
    if guidelines is not None:
        guidelines = _as_text(guidelines, f"{where}: field 'guidelines'")
    return Task(id=task_id, prompt=prompt, responses=responses, meta=meta, guidelines=guidelines)


def read_tasks(path: str | os.PathLike) -> list[Task]:
    """All tasks of a candidates JSONL file; repeated task ids are an error (they would merge silently)."""
    from rlhf.files import read_jsonl

    if not os.path.isfile(path):
        raise DataError(f"tasks file not found: {path}")
    tasks: list[Task] = []
    first_row_of: dict[str, int] = {}
    # read_jsonl skips blank lines, so count rows ourselves to report the file's real line numbers
    with open(path, encoding="utf-8") as handle:
        line_numbers = [number for number, line in enumerate(handle, start=1) if line.strip()]
    for row, row_number in zip(read_jsonl(path), line_numbers):
        task = parse_task(row, str(path), row_number)
        if task.id in first_row_of:
            raise DataError(f"{path}: row {row_number}: field 'id' repeats {task.id!r} (first seen in row {first_row_of[task.id]})")
        first_row_of[task.id] = row_number
        tasks.append(task)
    if not tasks:
        raise DataError(f"{path}: holds no tasks")
    return tasks
