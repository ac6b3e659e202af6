"""End users as labellers: applications send their users' choices to `POST /api/feedback`.

    rlhf annotate add-app chat-frontend --db annotations.db --rate-per-minute 120   # prints the key once
    curl -X POST http://127.0.0.1:8000/api/feedback -H "Authorization: Bearer $APP_KEY" \
         -H "Content-Type: application/json" \
         -d '{"prompt": "Name a prime.", "choice": "b",
              "responses": [{"id": "a", "text": "4"}, {"id": "b", "text": "7"}]}'

Two kinds of feedback:
- choice: two or more responses and the id of the one the user picked;
- thumbs: exactly one response and `"thumb": "up"` or `"down"`.
Optional: `id` (the application's event id: a retry with the same id is stored once and answered
`"duplicate": true`), `user` (an opaque user id, never a name or an email), `meta` (an object).

Choices:
- An application key is not a reviewer token: it opens only this endpoint, and a reviewer's or the
  admin's token is refused here (and a key is refused everywhere else). Keys are stored as SHA-256
  hashes and shown once, when made: an application's key lives in its own config, unlike reviewers'
  links, which `serve` prints again.
- Prompts and responses are checked by the same rules as candidates files (`rlhf.data`), so a row the
  endpoint accepts is a row `rlhf rm` accepts.
- Export (`rankings`, `"source": "app"`): a choice becomes a ranking [[chosen], [the others, tied]]:
  the user said which one was best, not how the rest compare. Thumbs on single responses are pooled
  per application and prompt: texts with more ups than downs form the top tier, more downs the bottom
  tier, and a prompt with both tiers becomes one ranking; a prompt with only ups or only downs gives no
  preference and is kept only in the raw export.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from annotation.errors import InvalidInput
from annotation.store import AnnotationStore, check_reviewer_name
from rlhf.errors import UserError

KEY_PREFIX = "rlhf_app_"
DEFAULT_RATE_PER_MINUTE = 60.0
MAX_ID_CHARS = 128
MAX_RESPONSES = 26


@dataclass(frozen=True)
class App:
    id: int
    name: str
    rate_per_minute: float


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def add_app(
    store: AnnotationStore, name: str, rate_per_minute: float = DEFAULT_RATE_PER_MINUTE, rotate: bool = False
) -> tuple[App, Optional[str]]:
    """Create an application (or, with `rotate`, give it a new key); returns (app, key or None if unchanged)."""
    name = check_reviewer_name(name)
    if not 0 < rate_per_minute <= 1_000_000:
        raise UserError(f"--rate-per-minute must be positive, got {rate_per_minute}")
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    with store.write_transaction() as conn:
        row = conn.execute("SELECT * FROM apps WHERE name = ?", (name,)).fetchone()
        if row is None:
            cursor = conn.execute(
                "INSERT INTO apps(name, key_hash, rate_per_minute, created_at) VALUES (?,?,?,?)",
                (name, _hash(key), float(rate_per_minute), time.time()),
            )
            return App(cursor.lastrowid, name, float(rate_per_minute)), key
        conn.execute("UPDATE apps SET rate_per_minute = ? WHERE id = ?", (float(rate_per_minute), row["id"]))
        if rotate:
            conn.execute("UPDATE apps SET key_hash = ? WHERE id = ?", (_hash(key), row["id"]))
        return App(row["id"], name, float(rate_per_minute)), key if rotate else None


def app_for_key(store: AnnotationStore, key: str) -> Optional[App]:
    if not key.startswith(KEY_PREFIX):
        return None
    # the lookup is by hash, so comparing in constant time is not needed: timing reveals nothing of the key
    row = store.read_one(
        "SELECT id, name, rate_per_minute FROM apps WHERE key_hash = ? AND revoked_at IS NULL", (_hash(key),)
    )
    return None if row is None else App(row["id"], row["name"], row["rate_per_minute"])


# -------------------------------------------------------------------------------------------------
# the request body
# -------------------------------------------------------------------------------------------------


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: str = Field(max_length=32)
    content: str


Text = Union[str, list[Message]]


class FeedbackResponse(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: Union[str, int]
    text: Text


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no "1" -> 1 coercions, no unknown fields
    prompt: Text
    responses: list[FeedbackResponse] = Field(min_length=1, max_length=MAX_RESPONSES)
    choice: Optional[Union[str, int]] = None
    thumb: Optional[Literal["up", "down"]] = None
    id: Optional[str] = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    user: Optional[str] = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    meta: Optional[dict[str, Any]] = None


def _plain(value: Any) -> Any:
    return [message.model_dump() for message in value] if isinstance(value, list) else value


def check_feedback(body: FeedbackBody) -> dict[str, Any]:
    """The body as a stored row's fields, after the rules a candidates row must pass; InvalidInput names the field."""
    from rlhf.data import check_candidates_row

    if (body.choice is None) == (body.thumb is None):
        raise InvalidInput(
            "send exactly one of 'choice' (the id of the response the user picked) or 'thumb' (\"up\" or \"down\")"
        )
    responses = [{"id": str(response.id), "text": _plain(response.text)} for response in body.responses]
    if body.thumb is not None and len(responses) != 1:
        raise InvalidInput(f"field 'responses': a thumb rates exactly one response, got {len(responses)}")
    if body.choice is not None and len(responses) < 2:
        raise InvalidInput("field 'responses': a choice needs two or more responses")
    # the candidates rules want two responses; a thumbs row is checked with its response's twin
    checked = (
        responses
        if len(responses) > 1
        else responses + [{"id": responses[0]["id"] + "\u0000twin", "text": responses[0]["text"]}]
    )
    problem = check_candidates_row({"id": body.id or "feedback", "prompt": _plain(body.prompt), "responses": checked})
    if problem is not None:
        field_name, reason = problem
        raise InvalidInput(f"field '{field_name}': {reason}")
    choice = None if body.choice is None else str(body.choice)
    if choice is not None and choice not in {response["id"] for response in responses}:
        raise InvalidInput(
            f"field 'choice': {body.choice!r} is not one of the response ids ({', '.join(r['id'] for r in responses)})"
        )
    return {
        "prompt": _plain(body.prompt),
        "responses": responses,
        "choice": choice,
        "thumb": body.thumb,
        "client_id": body.id,
        "user_ref": body.user,
        "meta": body.meta or {},
    }


def add_feedback(
    store: AnnotationStore, app: App, fields: dict[str, Any], now: Optional[float] = None
) -> tuple[int, bool]:
    """Store one checked feedback; returns (feedback id, duplicate).

    A repeated `id` from the same app is not stored again."""
    now = time.time() if now is None else now
    dumps = lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
    with store.write_transaction() as conn:
        if fields["client_id"] is not None:
            existing = conn.execute(
                "SELECT id FROM feedback WHERE app_id = ? AND client_id = ?", (app.id, fields["client_id"])
            ).fetchone()
            if existing is not None:
                return existing["id"], True
        cursor = conn.execute(
            """INSERT INTO feedback(app_id, client_id, user_ref, prompt, responses, choice, thumb, meta, received_at)
               VALUES (?,?,?,?,?,?,?,?,?)""",
            (
                app.id,
                fields["client_id"],
                fields["user_ref"],
                dumps(fields["prompt"]),
                dumps(fields["responses"]),
                fields["choice"],
                fields["thumb"],
                dumps(fields["meta"]),
                now,
            ),
        )
        return cursor.lastrowid, False


# -------------------------------------------------------------------------------------------------
# export
# -------------------------------------------------------------------------------------------------


def feedback_rankings(snapshot: dict[str, Any]) -> list[dict]:
    """Rankings rows (`"source": "app"`) from the stored feedback; see the module doc for the rules."""
    app_names = {app["id"]: app["name"] for app in snapshot["apps"]}
    rows: list[dict] = []
    thumbs: dict[tuple[int, str], dict[str, Any]] = {}
    for item in snapshot["feedback"]:
        app = app_names[item["app_id"]]
        if item["choice"] is not None:
            others = [response["id"] for response in item["responses"] if response["id"] != item["choice"]]
            row = {
                "id": f"app:{app}:{item['id']}",
                "prompt": item["prompt"],
                "responses": item["responses"],
                "ranking": [[item["choice"]], others],
                "annotator": f"app:{app}",
                "all_bad": False,
                "source": "app",
                "app": app,
            }
            if item["user_ref"] is not None:
                row["user"] = item["user_ref"]
            rows.append(row)
            continue
        prompt_key = json.dumps(item["prompt"], sort_keys=True, ensure_ascii=False)
        pool = thumbs.setdefault(
            (item["app_id"], prompt_key), {"app": app, "prompt": item["prompt"], "votes": {}, "first": item["id"]}
        )
        text_key = json.dumps(item["responses"][0]["text"], sort_keys=True, ensure_ascii=False)
        text, net = pool["votes"].get(text_key, (item["responses"][0]["text"], 0))
        pool["votes"][text_key] = (text, net + (1 if item["thumb"] == "up" else -1))
    for pool in thumbs.values():
        responses, up, down = [], [], []
        for index, (text, net) in enumerate(pool["votes"].values()):
            if net == 0:
                continue  # as many ups as downs: no opinion
            response_id = f"t{index}"
            responses.append({"id": response_id, "text": text})
            (up if net > 0 else down).append(response_id)
        if up and down:
            rows.append(
                {
                    "id": f"app:{pool['app']}:thumbs:{pool['first']}",
                    "prompt": pool["prompt"],
                    "responses": responses,
                    "ranking": [up, down],
                    "annotator": f"app:{pool['app']}",
                    "all_bad": False,
                    "source": "app",
                    "app": pool["app"],
                    "thumbs": True,
                }
            )
    return rows
