"""The reviewers' tool's single SQLite file: tasks, reviewers, what each was shown, and their answers.

Choices:
- WAL mode with `synchronous=FULL`: readers never block the writer, and an answer the server has
  acknowledged is in the WAL on disk, so killing the server (even `kill -9`) or the machine loses nothing
  that a reviewer saw confirmed. Writes take `BEGIN IMMEDIATE` behind a process-wide lock, so concurrent
  requests queue instead of failing with "database is locked"; other processes (the CLI adding a reviewer
  while the server runs) wait up to `busy_timeout`.
- The schema version is SQLite's `user_version`; a file from a newer version is refused rather than
  misread.
- Each reviewer sees a task's cards in their own shuffled order, stored in `assignments` the first
  time the task is offered to them, so a reload shows the same order and the export can report it.
- A task is offered while its live rankings plus other reviewers' fresh leases (a task shown and not yet
  answered within `lease_seconds`) are below `overlap`; skips do not count towards overlap. A late answer
  past the overlap is still stored: losing a reviewer's work is worse than an extra vote.
- Undo marks the reviewer's latest answer `undone_at` instead of deleting it: exports of rankings and
  pairs leave it out, the raw export keeps it, and the task comes back to that reviewer pre-filled.
- Tokens are random (`secrets.token_urlsafe`) and stored in the clear, so `serve` and `add-reviewer` can
  print the links again; whoever can read this file can read every answer anyway, so it is created with
  mode 0600.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from annotation.errors import Conflict, Forbidden, InvalidInput, NotFound
from annotation.ranking import ids_to_label_tiers, is_unchanged_order, label_tiers_to_ids
from annotation.tasks import Task
from rlhf.errors import DataError, UserError

SCHEMA_VERSION = 1
DEFAULT_LEASE_SECONDS = 30 * 60
MAX_RATIONALE_CHARS = 5000
MAX_SKIP_REASON_CHARS = 1000
MAX_REVIEWER_NAME_CHARS = 64
DEFAULT_GUIDELINES = """\
Rank the responses to the prompt from **best** (top) to **worst** (bottom).

- Prefer responses that are correct, helpful and honest; then clear and concise.
- Tie responses you cannot tell apart. Mark **all bad** when none is acceptable.
- Skip (with a reason) a task you cannot judge.
"""

_SCHEMA = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,          -- import order, the order tasks are offered in
    prompt TEXT NOT NULL,                      -- JSON: a string, or a list of {role, content} messages
    responses TEXT NOT NULL,                   -- JSON [{"id","text"}] in the file's order
    meta TEXT NOT NULL,                        -- JSON object
    guidelines TEXT,                           -- markdown for this task only (NULL: the default)
    content_hash TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE reviewers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE assignments (
    task_id TEXT NOT NULL REFERENCES tasks(id),
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    shown_order TEXT NOT NULL,                 -- JSON response ids in card order A, B, C...
    first_shown_at REAL NOT NULL,
    leased_at REAL NOT NULL,                   -- last time it was offered (undo renews it too)
    PRIMARY KEY (task_id, reviewer_id)
);
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    reviewer_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ranking', 'skip')),
    ranking TEXT,                              -- JSON tiers of response ids, best first (rankings only)
    all_bad INTEGER NOT NULL DEFAULT 0,
    unchanged_order INTEGER NOT NULL DEFAULT 0,-- submitted exactly as shown (after the confirmation)
    skip_reason TEXT,
    rationale TEXT,
    shown_order TEXT NOT NULL,
    shown_at REAL NOT NULL,
    submitted_at REAL NOT NULL,
    undone_at REAL,
    FOREIGN KEY (task_id, reviewer_id) REFERENCES assignments(task_id, reviewer_id)
);
CREATE UNIQUE INDEX one_live_answer ON annotations(task_id, reviewer_id) WHERE undone_at IS NULL;
CREATE INDEX annotations_by_reviewer ON annotations(reviewer_id, submitted_at);
CREATE INDEX assignments_by_task ON assignments(task_id, leased_at);
"""


@dataclass(frozen=True)
class Reviewer:
    id: int
    name: str
    token: str
    created_at: float


@dataclass(frozen=True)
class Offer:
    """A task as one reviewer sees it: cards in their stored order, and their undone answer if any."""

    task: Task
    shown_order: list[str]
    previous: dict[str, Any] | None  # {"ranking": label tiers, "all_bad", "rationale"} after an undo


@dataclass(frozen=True)
class ImportResult:
    added: int
    unchanged: int


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def check_reviewer_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_REVIEWER_NAME_CHARS or not cleaned.isprintable():
        raise InvalidInput(f"reviewer name {name!r} must be 1 to {MAX_REVIEWER_NAME_CHARS} printable characters")
    return cleaned


class AnnotationStore:
    """All reads and writes of the annotation database; safe to share between request threads."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise UserError(f"annotation database not found: {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(mode=0o600)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._migrate()

    # ---------------------------------------------------------------------------------------------
    # connections and transactions
    # ---------------------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.DatabaseError as exc:
                raise UserError(f"{self.path}: not an annotation database ({exc})") from None
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-statement reads (WAL readers do not block writers)."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UserError(f"{self.path}: schema version {version} is newer than this tool's ({SCHEMA_VERSION}); upgrade rlhf-pipeline")
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
                if tables:
                    raise UserError(f"{self.path}: is an SQLite file of something else (it has tables but no schema version)")
                # one statement at a time: executescript() would commit the surrounding transaction first
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                defaults = {
                    "admin_token": secrets.token_urlsafe(24),
                    "overlap": "1",
                    "lease_seconds": str(DEFAULT_LEASE_SECONDS),
                    "guidelines": DEFAULT_GUIDELINES,
                    "created_at": str(time.time()),
                }
                conn.executemany("INSERT INTO settings(key, value) VALUES (?, ?)", defaults.items())
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ---------------------------------------------------------------------------------------------
    # settings
    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _setting(conn: sqlite3.Connection, key: str) -> str:
        return conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()[0]

    def setting(self, key: str) -> str:
        return self._setting(self._conn(), key)

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def admin_token(self) -> str:
        return self.setting("admin_token")

    @property
    def overlap(self) -> int:
        return int(self.setting("overlap"))

    def set_overlap(self, overlap: int) -> None:
        if overlap < 1:
            raise UserError(f"--overlap must be at least 1, got {overlap}")
        self.set_setting("overlap", str(overlap))

    def set_lease_seconds(self, seconds: float) -> None:
        if seconds <= 0:
            raise UserError(f"the lease must be positive, got {seconds} seconds")
        self.set_setting("lease_seconds", str(float(seconds)))

    @property
    def default_guidelines(self) -> str:
        return self.setting("guidelines")

    def set_default_guidelines(self, markdown: str) -> None:
        self.set_setting("guidelines", markdown)

    # ---------------------------------------------------------------------------------------------
    # tasks and reviewers
    # ---------------------------------------------------------------------------------------------

    def import_tasks(self, tasks: list[Task], source: str = "tasks") -> ImportResult:
        """Add new tasks; a task id already present must have the same content (answers refer to it)."""
        added = unchanged = 0
        now = time.time()
        with self._write() as conn:
            position = conn.execute("SELECT coalesce(max(position), 0) FROM tasks").fetchone()[0]
            for task in tasks:
                existing = conn.execute("SELECT content_hash FROM tasks WHERE id = ?", (task.id,)).fetchone()
                if existing is not None:
                    if existing["content_hash"] != task.content_hash():
                        raise DataError(f"{source}: task {task.id!r} is already in {self.path} with different content; "
                                        "give changed tasks new ids (answers refer to the old content)")
                    unchanged += 1
                    continue
                position += 1
                conn.execute(
                    "INSERT INTO tasks(id, position, prompt, responses, meta, guidelines, content_hash, added_at) VALUES (?,?,?,?,?,?,?,?)",
                    (task.id, position, _json(task.prompt), _json(task.responses), _json(task.meta), task.guidelines, task.content_hash(), now),
                )
                added += 1
        return ImportResult(added=added, unchanged=unchanged)

    def task_count(self) -> int:
        return self._conn().execute("SELECT count(*) FROM tasks").fetchone()[0]

    @staticmethod
    def _task_from_row(row: sqlite3.Row) -> Task:
        return Task(id=row["id"], prompt=json.loads(row["prompt"]), responses=json.loads(row["responses"]),
                    meta=json.loads(row["meta"]), guidelines=row["guidelines"])

    def add_reviewer(self, name: str, rotate: bool = False) -> tuple[Reviewer, bool]:
        """Create a reviewer (or, with `rotate`, give an existing one a new token); returns (reviewer, created)."""
        name = check_reviewer_name(name)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row is None:
                token = secrets.token_urlsafe(24)
                cursor = conn.execute("INSERT INTO reviewers(name, token, created_at) VALUES (?, ?, ?)", (name, token, time.time()))
                return Reviewer(cursor.lastrowid, name, token, time.time()), True
            if rotate:
                conn.execute("UPDATE reviewers SET token = ? WHERE id = ?", (secrets.token_urlsafe(24), row["id"]))
                row = conn.execute("SELECT * FROM reviewers WHERE id = ?", (row["id"],)).fetchone()
            return Reviewer(row["id"], row["name"], row["token"], row["created_at"]), False

    def reviewers(self) -> list[Reviewer]:
        rows = self._conn().execute("SELECT * FROM reviewers ORDER BY id").fetchall()
        return [Reviewer(row["id"], row["name"], row["token"], row["created_at"]) for row in rows]

    def reviewer_for_token(self, token: str) -> Reviewer | None:
        if not token:
            return None
        row = self._conn().execute("SELECT * FROM reviewers WHERE token = ?", (token,)).fetchone()
        if row is None or not secrets.compare_digest(row["token"], token):
            return None
        return Reviewer(row["id"], row["name"], row["token"], row["created_at"])

    def is_admin_token(self, token: str) -> bool:
        return bool(token) and secrets.compare_digest(token, self.admin_token)

    # ---------------------------------------------------------------------------------------------
    # what a reviewer does
    # ---------------------------------------------------------------------------------------------

    _LIVE_RANKINGS = "(SELECT count(*) FROM annotations a WHERE a.task_id = {t} AND a.kind = 'ranking' AND a.undone_at IS NULL)"
    _ANSWERED = "EXISTS (SELECT 1 FROM annotations a WHERE a.task_id = {t} AND a.reviewer_id = {r} AND a.undone_at IS NULL)"

    def next_task(self, reviewer_id: int, now: float | None = None, rng: random.Random | None = None) -> Offer | None:
        """The task this reviewer should answer now: their open one first, else a new one (leased to them)."""
        now = time.time() if now is None else now
        with self._write() as conn:
            overlap = int(self._setting(conn, "overlap"))
            cutoff = now - float(self._setting(conn, "lease_seconds"))
            live_rankings = self._LIVE_RANKINGS.format(t="s.task_id")
            # An open task: shown to this reviewer and not answered (or answered, then undone). Skip it only
            # when its lease ran out and others have filled it meanwhile.
            open_row = conn.execute(
                f"""SELECT s.task_id, s.shown_order FROM assignments s
                    WHERE s.reviewer_id = :me AND NOT {self._ANSWERED.format(t='s.task_id', r='s.reviewer_id')}
                      AND (s.leased_at > :cutoff OR {live_rankings} < :overlap)
                    ORDER BY s.leased_at DESC LIMIT 1""",
                {"me": reviewer_id, "cutoff": cutoff, "overlap": overlap},
            ).fetchone()
            if open_row is not None:
                task_id, shown_order = open_row["task_id"], json.loads(open_row["shown_order"])
                conn.execute("UPDATE assignments SET leased_at = ? WHERE task_id = ? AND reviewer_id = ?", (now, task_id, reviewer_id))
            else:
                new_row = conn.execute(
                    f"""SELECT t.id FROM tasks t
                        WHERE NOT EXISTS (SELECT 1 FROM assignments s WHERE s.task_id = t.id AND s.reviewer_id = :me)
                          AND {self._LIVE_RANKINGS.format(t='t.id')}
                            + (SELECT count(*) FROM assignments s WHERE s.task_id = t.id AND s.leased_at > :cutoff
                                 AND NOT {self._ANSWERED.format(t='s.task_id', r='s.reviewer_id')}) < :overlap
                        ORDER BY t.position LIMIT 1""",
                    {"me": reviewer_id, "cutoff": cutoff, "overlap": overlap},
                ).fetchone()
                if new_row is None:
                    return None
                task_id = new_row["id"]
                responses = json.loads(conn.execute("SELECT responses FROM tasks WHERE id = ?", (task_id,)).fetchone()[0])
                shown_order = [response["id"] for response in responses]
                (rng or random.SystemRandom()).shuffle(shown_order)
                conn.execute(
                    "INSERT INTO assignments(task_id, reviewer_id, shown_order, first_shown_at, leased_at) VALUES (?,?,?,?,?)",
                    (task_id, reviewer_id, _json(shown_order), now, now),
                )
            task = self._task_from_row(conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone())
            undone = conn.execute(
                """SELECT * FROM annotations WHERE task_id = ? AND reviewer_id = ? AND undone_at IS NOT NULL
                   ORDER BY undone_at DESC, id DESC LIMIT 1""",
                (task_id, reviewer_id),
            ).fetchone()
        previous = None
        if undone is not None:
            previous = {
                "kind": undone["kind"],
                "ranking": ids_to_label_tiers(json.loads(undone["ranking"]), shown_order) if undone["ranking"] else None,
                "all_bad": bool(undone["all_bad"]),
                "rationale": undone["rationale"] or "",
                "skip_reason": undone["skip_reason"] or "",
            }
        return Offer(task=task, shown_order=shown_order, previous=previous)

    def _open_assignment(self, conn: sqlite3.Connection, reviewer_id: int, task_id: str) -> sqlite3.Row:
        """The reviewer's assignment of this task, which must exist and be unanswered."""
        if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is None:
            raise NotFound(f"no task {task_id!r}")
        assignment = conn.execute("SELECT * FROM assignments WHERE task_id = ? AND reviewer_id = ?", (task_id, reviewer_id)).fetchone()
        if assignment is None:
            raise Forbidden(f"task {task_id!r} has not been offered to you")
        answered = conn.execute(
            "SELECT 1 FROM annotations WHERE task_id = ? AND reviewer_id = ? AND undone_at IS NULL", (task_id, reviewer_id)
        ).fetchone()
        if answered is not None:
            raise Conflict(f"you already answered task {task_id!r}; undo it first to change the answer")
        return assignment

    @staticmethod
    def _clean_text(value: Any, field_name: str, limit: int, required: bool = False) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip() and not required):
            return None
        if not isinstance(value, str):
            raise InvalidInput(f"'{field_name}' must be a string")
        if required and not value.strip():
            raise InvalidInput(f"'{field_name}' is required")
        if len(value) > limit:
            raise InvalidInput(f"'{field_name}' is {len(value)} characters long; at most {limit} are allowed")
        return value.strip()

    def submit_ranking(self, reviewer_id: int, task_id: str, label_tiers: Any, all_bad: bool = False,
                       rationale: str | None = None, now: float | None = None) -> int:
        """Store a ranking given in card labels; returns the annotation id."""
        rationale = self._clean_text(rationale, "rationale", MAX_RATIONALE_CHARS)
        if not isinstance(all_bad, bool):
            raise InvalidInput("'all_bad' must be true or false")
        now = time.time() if now is None else now
        with self._write() as conn:
            assignment = self._open_assignment(conn, reviewer_id, task_id)
            shown_order = json.loads(assignment["shown_order"])
            ranking = label_tiers_to_ids(label_tiers, shown_order)
            cursor = conn.execute(
                """INSERT INTO annotations(task_id, reviewer_id, kind, ranking, all_bad, unchanged_order, rationale,
                                           shown_order, shown_at, submitted_at) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                (task_id, reviewer_id, "ranking", _json(ranking), int(all_bad), int(is_unchanged_order(ranking, shown_order)),
                 rationale, assignment["shown_order"], assignment["leased_at"], now),
            )
            return cursor.lastrowid

    def skip(self, reviewer_id: int, task_id: str, reason: Any, now: float | None = None) -> int:
        reason = self._clean_text(reason, "reason", MAX_SKIP_REASON_CHARS, required=True)
        now = time.time() if now is None else now
        with self._write() as conn:
            assignment = self._open_assignment(conn, reviewer_id, task_id)
            cursor = conn.execute(
                """INSERT INTO annotations(task_id, reviewer_id, kind, skip_reason, shown_order, shown_at, submitted_at)
                   VALUES (?,?,?,?,?,?,?)""",
                (task_id, reviewer_id, "skip", reason, assignment["shown_order"], assignment["leased_at"], now),
            )
            return cursor.lastrowid

    def undo_last(self, reviewer_id: int, now: float | None = None) -> str:
        """Withdraw this reviewer's latest live answer (ranking or skip); returns its task id."""
        now = time.time() if now is None else now
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, task_id FROM annotations WHERE reviewer_id = ? AND undone_at IS NULL ORDER BY submitted_at DESC, id DESC LIMIT 1",
                (reviewer_id,),
            ).fetchone()
            if row is None:
                raise Conflict("nothing to undo: you have no submitted answer")
            conn.execute("UPDATE annotations SET undone_at = ? WHERE id = ?", (now, row["id"]))
            # renew the lease so the task comes back to this reviewer first
            conn.execute("UPDATE assignments SET leased_at = ? WHERE task_id = ? AND reviewer_id = ?", (now, row["task_id"], reviewer_id))
            return row["task_id"]

    def progress(self, reviewer_id: int) -> dict[str, int]:
        with self._read() as conn:
            counts = dict(conn.execute(
                "SELECT kind, count(*) FROM annotations WHERE reviewer_id = ? AND undone_at IS NULL GROUP BY kind", (reviewer_id,)
            ).fetchall())
            overlap = int(self._setting(conn, "overlap"))
            remaining = conn.execute(
                f"""SELECT count(*) FROM tasks t WHERE NOT {self._ANSWERED.format(t='t.id', r=':me')}
                    AND {self._LIVE_RANKINGS.format(t='t.id')} < :overlap""",
                {"me": reviewer_id, "overlap": overlap},
            ).fetchone()[0]
            total = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        return {"ranked": counts.get("ranking", 0), "skipped": counts.get("skip", 0), "remaining": remaining, "total_tasks": total}

    # ---------------------------------------------------------------------------------------------
    # everything, for exports and the admin view
    # ---------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Tasks, reviewers (without tokens), assignments and every answer, read in one transaction."""
        with self._read() as conn:
            tasks = [self._task_from_row(row) for row in conn.execute("SELECT * FROM tasks ORDER BY position")]
            reviewers = [{"id": row["id"], "name": row["name"], "created_at": row["created_at"]}
                         for row in conn.execute("SELECT id, name, created_at FROM reviewers ORDER BY id")]
            assignments = [dict(row) | {"shown_order": json.loads(row["shown_order"])}
                           for row in conn.execute("SELECT * FROM assignments ORDER BY first_shown_at, task_id")]
            annotations = []
            for row in conn.execute("SELECT * FROM annotations ORDER BY id"):
                record = dict(row)
                record["ranking"] = json.loads(row["ranking"]) if row["ranking"] else None
                record["shown_order"] = json.loads(row["shown_order"])
                record["all_bad"] = bool(row["all_bad"])
                record["unchanged_order"] = bool(row["unchanged_order"])
                annotations.append(record)
            settings: dict[str, Any] = {row["key"]: row["value"] for row in conn.execute("SELECT key, value FROM settings") if row["key"] != "admin_token"}
            settings["overlap"] = int(settings["overlap"])
            settings["lease_seconds"] = float(settings["lease_seconds"])
            settings["created_at"] = float(settings["created_at"])
            settings["schema_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
        return {"tasks": tasks, "reviewers": reviewers, "assignments": assignments, "annotations": annotations, "settings": settings}
