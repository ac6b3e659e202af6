"""The annotation database's schema and its migrations, one version step at a time.

The version is SQLite's `user_version`. A new file gets version 1's tables and then every step, so new
and migrated files go through the same code. Each step is idempotent (columns added only when missing,
tables and indexes `IF NOT EXISTS`, settings `INSERT OR IGNORE`), and the caller runs all of it inside
one `BEGIN IMMEDIATE` transaction: a migration interrupted by a crash leaves the old file untouched, and
one repeated after a partial manual fix still succeeds.

Version 2 (issue 20): gold items (`tasks.gold`), admin overrides of a reviewer's quality status, ratings,
flags and the too-fast mark on answers, adjudications, and application keys with their users' feedback.
"""

from __future__ import annotations

import secrets
import sqlite3
import time

from annotation.judgements import JudgementConfig
from rlhf.errors import UserError

SCHEMA_VERSION = 2
DEFAULT_LEASE_SECONDS = 30 * 60
DEFAULT_GUIDELINES = """\
Rank the responses to the prompt from **best** (top) to **worst** (bottom).

- Prefer responses that are correct, helpful and honest; then clear and concise.
- Tie responses you cannot tell apart. Mark **all bad** when none is acceptable.
- Skip (with a reason) a task you cannot judge.
"""

_SCHEMA_V1 = """
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
CREATE INDEX assignments_by_task ON assignments(task_id, leased_at)
"""

_V2_COLUMNS = [
    # (table, column, declaration)
    ("tasks", "gold", "TEXT"),  # JSON tiers of response ids: the known ranking of a gold item
    ("reviewers", "quality_override", "TEXT CHECK (quality_override IN ('restored', 'blocked'))"),
    ("reviewers", "quality_override_at", "REAL"),
    # a cache of "status is blocked", kept in step by the store (after a gold answer, an override, new
    # thresholds), so that choosing a task can leave blocked reviewers' answers and leases out in SQL
    ("reviewers", "blocked", "INTEGER NOT NULL DEFAULT 0"),
    ("annotations", "ratings", "TEXT"),  # JSON {response id: 1..7}
    ("annotations", "flags", "TEXT"),  # JSON {response id: [flag names]}
    ("annotations", "too_fast", "INTEGER NOT NULL DEFAULT 0"),  # under min_seconds, submitted after the confirmation
]

_V2_TABLES = """
CREATE TABLE IF NOT EXISTS adjudications (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id),
    decision TEXT NOT NULL CHECK (decision IN ('ranking', 'discard')),
    ranking TEXT,                              -- JSON tiers of response ids (decision 'ranking')
    adjudicator TEXT NOT NULL,
    note TEXT,
    decided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,             -- sha256 of the key: the key itself is shown once, when made
    rate_per_minute REAL NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    app_id INTEGER NOT NULL REFERENCES apps(id),
    client_id TEXT,                            -- the application's own event id: a retry is not stored twice
    user_ref TEXT,                             -- the application's opaque user id, if it sent one
    prompt TEXT NOT NULL,                      -- JSON, as tasks.prompt
    responses TEXT NOT NULL,                   -- JSON [{"id","text"}]
    choice TEXT,                               -- the chosen response id (choice feedback)
    thumb TEXT CHECK (thumb IN ('up', 'down')),-- thumbs feedback on the single response
    meta TEXT NOT NULL,
    received_at REAL NOT NULL,
    CHECK ((choice IS NULL) != (thumb IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS feedback_client_id ON feedback(app_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_gold ON tasks(gold) WHERE gold IS NOT NULL
"""

V2_DEFAULT_SETTINGS = {
    "gold_rate": "0.0",  # chance that a reviewer's next new task is a gold item
    "gold_warn_below": "0.7",
    "gold_block_below": "0.5",
    "gold_min_answers": "3",
    "min_seconds": "0",  # 0: no minimum time per task
    "judgements": JudgementConfig().to_json(),
}


def _statements(script: str) -> list[str]:
    # one statement at a time: executescript() would commit the surrounding transaction first
    return [statement for statement in script.split(";\n") if statement.strip()]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _statements(_SCHEMA_V1):
        conn.execute(statement)
    defaults = {
        "admin_token": secrets.token_urlsafe(24),
        "overlap": "1",
        "lease_seconds": str(DEFAULT_LEASE_SECONDS),
        "guidelines": DEFAULT_GUIDELINES,
        "created_at": str(time.time()),
    }
    conn.executemany("INSERT INTO settings(key, value) VALUES (?, ?)", defaults.items())


def _upgrade_to_v2(conn: sqlite3.Connection) -> None:
    for table, column, declaration in _V2_COLUMNS:
        if column not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    for statement in _statements(_V2_TABLES):
        conn.execute(statement)
    conn.executemany("INSERT OR IGNORE INTO settings(key, value) VALUES (?, ?)", V2_DEFAULT_SETTINGS.items())


_STEPS = {1: _upgrade_to_v2}  # from version N to N + 1


def migrate(conn: sqlite3.Connection, path: object) -> None:
    """Bring the open database (inside the caller's write transaction) to SCHEMA_VERSION."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: schema version {version} is newer than this tool's ({SCHEMA_VERSION}); upgrade rlhf-pipeline"
        )
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if tables:
            raise UserError(f"{path}: is an SQLite file of something else (it has tables but no schema version)")
        _create_v1(conn)
        version = 1
    while version < SCHEMA_VERSION:
        _STEPS[version](conn)
        version += 1
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
