"""The reviewers' tool's single SQLite file: tasks, reviewers, what each was shown, and their answers.

Choices:
- WAL mode with `synchronous=FULL`: readers never block the writer, and an answer the server has
  acknowledged is in the WAL on disk, so killing the server (even `kill -9`) or the machine loses nothing
  that a reviewer saw confirmed. Writes take `BEGIN IMMEDIATE` behind a process-wide lock, so concurrent
  requests queue instead of failing with "database is locked"; other processes (the CLI adding a reviewer
  while the server runs) wait up to `busy_timeout`.
- The schema version is SQLite's `user_version`; a file from a newer version is refused rather than
  misread, and an older one is migrated in place (annotation/schema.py).
- Each reviewer sees a task's cards in their own shuffled order, stored in `assignments` the first
  time the task is offered to them, so a reload shows the same order and the export can report it.
- A task is offered while its live rankings plus other reviewers' fresh leases (a task shown and not yet
  answered within `lease_seconds`) are below `overlap`; skips do not count towards overlap. A late answer
  past the overlap is still stored: losing a reviewer's work is worse than an extra vote.
- Undo marks the reviewer's latest answer `undone_at` instead of deleting it: exports of rankings and
  pairs leave it out, the raw export keeps it, and the task comes back to that reviewer pre-filled.
- Gold items (tasks with a known ranking) are offered at the project's `gold_rate`, once per reviewer and
  outside the overlap; a reviewer's quality (annotation/quality.py) is computed from their first answer
  to each, and a blocked reviewer is offered nothing and may not submit. A `blocked` column caches the
  status so the task queries can leave blocked reviewers' answers and leases out of the overlap.
- Submissions are checked against the project's judgement settings (annotation/judgements.py) and the
  minimum time per task, measured here from the lease to the submission.
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
from annotation.judgements import JudgementConfig, check_flags, check_ratings, check_rationale, to_labels
from annotation.quality import QualityRules, ReviewerQuality, gold_item_score, reviewer_quality
from annotation.ranking import ids_to_label_tiers, is_unchanged_order, label_tiers_to_ids
from annotation.schema import DEFAULT_GUIDELINES, DEFAULT_LEASE_SECONDS, SCHEMA_VERSION, migrate  # noqa: F401 - re-exported
from annotation.tasks import Task
from rlhf.errors import DataError, UserError

MAX_RATIONALE_CHARS = 5000
MAX_SKIP_REASON_CHARS = 1000
MAX_REVIEWER_NAME_CHARS = 64


class NeedsConfirmation(Conflict):
    """A submission the reviewer must confirm first (too fast); the page asks and sends it again."""

    def __init__(self, message: str, reason: str, **details: Any):
        super().__init__(message)
        self.reason = reason
        self.details = details


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
            migrate(conn, self.path)

    # other modules of the tool (adjudication, feedback) write through the same lock and transactions
    write_transaction = _write
    read_transaction = _read

    def read_one(self, sql: str, params: tuple = ()) -> sqlite3.Row | None:
        """One row of a single-statement read (no transaction needed)."""
        return self._conn().execute(sql, params).fetchone()

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
            conn.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

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

    # quality control and judgements (schema 2)

    @property
    def gold_rate(self) -> float:
        return float(self.setting("gold_rate"))

    def set_gold_rate(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise UserError(f"--gold-rate must be between 0 and 1, got {rate}")
        self.set_setting("gold_rate", str(float(rate)))

    @staticmethod
    def _rules(conn: sqlite3.Connection) -> QualityRules:
        setting = lambda key: AnnotationStore._setting(conn, key)  # noqa: E731
        return QualityRules(
            warn_below=float(setting("gold_warn_below")),
            block_below=float(setting("gold_block_below")),
            min_answers=int(setting("gold_min_answers")),
        )

    @property
    def quality_rules(self) -> QualityRules:
        return self._rules(self._conn())

    def set_quality_rules(
        self, warn_below: float | None = None, block_below: float | None = None, min_answers: int | None = None
    ) -> None:
        current = self.quality_rules
        warn = current.warn_below if warn_below is None else warn_below
        block = current.block_below if block_below is None else block_below
        minimum = current.min_answers if min_answers is None else min_answers
        if not 0.0 <= block <= warn <= 1.0:
            raise UserError(
                f"gold thresholds need 0 <= --gold-block-below ({block}) <= --gold-warn-below ({warn}) <= 1"
            )
        if minimum < 1:
            raise UserError(f"--gold-min-answers must be at least 1, got {minimum}")
        with self._write() as conn:
            for key, value in (("gold_warn_below", warn), ("gold_block_below", block), ("gold_min_answers", minimum)):
                conn.execute("UPDATE settings SET value = ? WHERE key = ?", (str(value), key))
            self._refresh_blocked(conn)

    @property
    def min_seconds(self) -> float:
        return float(self.setting("min_seconds"))

    def set_min_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise UserError(f"--min-seconds must be 0 or more, got {seconds}")
        self.set_setting("min_seconds", str(float(seconds)))

    @property
    def judgements(self) -> JudgementConfig:
        return JudgementConfig.from_json(self.setting("judgements"))

    def set_judgements(self, config: JudgementConfig) -> None:
        self.set_setting("judgements", config.to_json())

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
                        raise DataError(
                            f"{source}: task {task.id!r} is already in {self.path} with different content; "
                            "give changed tasks new ids (answers refer to the old content)"
                        )
                    unchanged += 1
                    continue
                position += 1
                conn.execute(
                    "INSERT INTO tasks(id, position, prompt, responses, meta, guidelines, gold, content_hash, "
                    "added_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        task.id,
                        position,
                        _json(task.prompt),
                        _json(task.responses),
                        _json(task.meta),
                        task.guidelines,
                        None if task.gold is None else _json(task.gold),
                        task.content_hash(),
                        now,
                    ),
                )
                added += 1
        return ImportResult(added=added, unchanged=unchanged)

    def task_count(self, gold: bool | None = None) -> int:
        """All tasks; with `gold` True or False only gold items or only ordinary tasks."""
        where = "" if gold is None else (" WHERE gold IS NOT NULL" if gold else " WHERE gold IS NULL")
        return self._conn().execute(f"SELECT count(*) FROM tasks{where}").fetchone()[0]

    @staticmethod
    def _task_from_row(row: sqlite3.Row) -> Task:
        return Task(
            id=row["id"],
            prompt=json.loads(row["prompt"]),
            responses=json.loads(row["responses"]),
            meta=json.loads(row["meta"]),
            guidelines=row["guidelines"],
            gold=json.loads(row["gold"]) if row["gold"] else None,
        )

    def add_reviewer(self, name: str, rotate: bool = False) -> tuple[Reviewer, bool]:
        """Create a reviewer (or, with `rotate`, give an existing one a new token); returns (reviewer, created)."""
        name = check_reviewer_name(name)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row is None:
                token = secrets.token_urlsafe(24)
                cursor = conn.execute(
                    "INSERT INTO reviewers(name, token, created_at) VALUES (?, ?, ?)", (name, token, time.time())
                )
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
    # quality: gold accuracy, warnings and blocks
    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _gold_scores(conn: sqlite3.Connection, reviewer_id: int | None = None) -> dict[int, list[float]]:
        """reviewer id -> scores of their first ranking of each gold item (undone ones included: see quality.py)."""
        where = "" if reviewer_id is None else "AND a.reviewer_id = :me"
        rows = conn.execute(
            f"""SELECT a.reviewer_id, a.ranking, t.gold FROM annotations a JOIN tasks t ON t.id = a.task_id
                WHERE t.gold IS NOT NULL AND a.kind = 'ranking' {where}
                  AND a.id = (SELECT min(b.id) FROM annotations b WHERE b.task_id = a.task_id
                              AND b.reviewer_id = a.reviewer_id AND b.kind = 'ranking')
                ORDER BY a.id""",
            {"me": reviewer_id},
        ).fetchall()
        scores: dict[int, list[float]] = {}
        for row in rows:
            score = gold_item_score(json.loads(row["ranking"]), json.loads(row["gold"]))
            if score is not None:
                scores.setdefault(row["reviewer_id"], []).append(score)
        return scores

    def _quality(self, conn: sqlite3.Connection, reviewer_id: int) -> ReviewerQuality:
        override = conn.execute("SELECT quality_override FROM reviewers WHERE id = ?", (reviewer_id,)).fetchone()[0]
        return reviewer_quality(self._gold_scores(conn, reviewer_id).get(reviewer_id, []), self._rules(conn), override)

    def _refresh_blocked(self, conn: sqlite3.Connection, reviewer_id: int | None = None) -> None:
        """Bring the `blocked` cache in step with the rules for one reviewer (or all of them)."""
        ids = (
            [reviewer_id]
            if reviewer_id is not None
            else [row["id"] for row in conn.execute("SELECT id FROM reviewers")]
        )
        for one in ids:
            conn.execute(
                "UPDATE reviewers SET blocked = ? WHERE id = ?",
                (int(self._quality(conn, one).status == "blocked"), one),
            )

    def quality(self, reviewer_id: int) -> ReviewerQuality:
        with self._read() as conn:
            return self._quality(conn, reviewer_id)

    def qualities(self) -> dict[int, ReviewerQuality]:
        """Every reviewer's quality, read in one transaction (stats and exports)."""
        with self._read() as conn:
            rules = self._rules(conn)
            scores = self._gold_scores(conn)
            return {
                row["id"]: reviewer_quality(scores.get(row["id"], []), rules, row["quality_override"])
                for row in conn.execute("SELECT id, quality_override FROM reviewers")
            }

    def set_quality_override(self, name: str, override: str | None, now: float | None = None) -> ReviewerQuality:
        """An admin restores a (blocked) reviewer, blocks one by hand, or (None) returns them to the rules."""
        if override not in (None, "restored", "blocked"):
            raise InvalidInput(f'\'override\' must be "restored", "blocked" or null, got {override!r}')
        with self._write() as conn:
            row = conn.execute("SELECT id FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no reviewer {name!r}")
            conn.execute(
                "UPDATE reviewers SET quality_override = ?, quality_override_at = ? WHERE id = ?",
                (override, time.time() if now is None else now, row["id"]),
            )
            self._refresh_blocked(conn, row["id"])
            return self._quality(conn, row["id"])

    # ---------------------------------------------------------------------------------------------
    # what a reviewer does
    # ---------------------------------------------------------------------------------------------

    # rankings and leases of blocked reviewers do not fill a task's overlap: their answers are not exported
    _NOT_BLOCKED = "NOT EXISTS (SELECT 1 FROM reviewers b WHERE b.id = {r} AND b.blocked = 1)"
    _LIVE_RANKINGS = (
        "(SELECT count(*) FROM annotations a WHERE a.task_id = {t} AND a.kind = 'ranking' AND a.undone_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM reviewers b WHERE b.id = a.reviewer_id AND b.blocked = 1))"
    )
    _ANSWERED = (
        "EXISTS (SELECT 1 FROM annotations a WHERE a.task_id = {t} AND a.reviewer_id = {r} AND a.undone_at IS NULL)"
    )
    _NOT_SHOWN_TO_ME = "NOT EXISTS (SELECT 1 FROM assignments s WHERE s.task_id = t.id AND s.reviewer_id = :me)"

    def next_task(self, reviewer_id: int, now: float | None = None, rng: random.Random | None = None) -> Offer | None:
        """The task this reviewer should answer now: their open one first, else a new one (leased to them).

        A blocked reviewer gets nothing. A new task is a gold item with probability `gold_rate` (each
        reviewer answers each gold item once; gold items have no overlap limit), but only while ordinary
        work remains, so gold items are never all a reviewer sees.
        """
        now = time.time() if now is None else now
        rng = rng or random.SystemRandom()
        with self._write() as conn:
            if self._quality(conn, reviewer_id).status == "blocked":
                return None
            overlap = int(self._setting(conn, "overlap"))
            cutoff = now - float(self._setting(conn, "lease_seconds"))
            live_rankings = self._LIVE_RANKINGS.format(t="s.task_id")
            # An open task: shown to this reviewer and not answered (or answered, then undone). Skip it only
            # when its lease ran out and others have filled it meanwhile (gold items are never full).
            open_row = conn.execute(
                f"""SELECT s.task_id, s.shown_order FROM assignments s JOIN tasks t ON t.id = s.task_id
                    WHERE s.reviewer_id = :me AND NOT {self._ANSWERED.format(t="s.task_id", r="s.reviewer_id")}
                      AND (s.leased_at > :cutoff OR {live_rankings} < :overlap OR t.gold IS NOT NULL)
                    ORDER BY s.leased_at DESC LIMIT 1""",
                {"me": reviewer_id, "cutoff": cutoff, "overlap": overlap},
            ).fetchone()
            if open_row is not None:
                task_id, shown_order = open_row["task_id"], json.loads(open_row["shown_order"])
                conn.execute(
                    "UPDATE assignments SET leased_at = ? WHERE task_id = ? AND reviewer_id = ?",
                    (now, task_id, reviewer_id),
                )
            else:
                new_row = conn.execute(
                    f"""SELECT t.id FROM tasks t
                        WHERE t.gold IS NULL AND {self._NOT_SHOWN_TO_ME}
                          AND {self._LIVE_RANKINGS.format(t="t.id")}
                            + (SELECT count(*) FROM assignments s WHERE s.task_id = t.id AND s.leased_at > :cutoff
                                 AND NOT {self._ANSWERED.format(t="s.task_id", r="s.reviewer_id")}
                                 AND {self._NOT_BLOCKED.format(r="s.reviewer_id")}) < :overlap
                        ORDER BY t.position LIMIT 1""",
                    {"me": reviewer_id, "cutoff": cutoff, "overlap": overlap},
                ).fetchone()
                if new_row is None:
                    return None
                task_id = new_row["id"]
                gold_rate = float(self._setting(conn, "gold_rate"))
                if gold_rate > 0 and rng.random() < gold_rate:
                    unseen_gold = [
                        row["id"]
                        for row in conn.execute(
                            f"SELECT t.id FROM tasks t WHERE t.gold IS NOT NULL AND {self._NOT_SHOWN_TO_ME} ORDER BY "
                            "t.position",
                            {"me": reviewer_id},
                        )
                    ]
                    if unseen_gold:
                        task_id = rng.choice(unseen_gold)
                responses = json.loads(
                    conn.execute("SELECT responses FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
                )
                shown_order = [response["id"] for response in responses]
                rng.shuffle(shown_order)
                conn.execute(
                    "INSERT INTO assignments(task_id, reviewer_id, shown_order, first_shown_at, leased_at) VALUES "
                    "(?,?,?,?,?)",
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
                "ranking": ids_to_label_tiers(json.loads(undone["ranking"]), shown_order)
                if undone["ranking"]
                else None,
                "all_bad": bool(undone["all_bad"]),
                "rationale": undone["rationale"] or "",
                "skip_reason": undone["skip_reason"] or "",
            }
            # ratings and flags (by card label) only when given, so projects without them see the old shape
            for key in ("ratings", "flags"):
                if undone[key]:
                    previous[key] = to_labels(json.loads(undone[key]), shown_order)
        return Offer(task=task, shown_order=shown_order, previous=previous)

    def _open_assignment(self, conn: sqlite3.Connection, reviewer_id: int, task_id: str) -> sqlite3.Row:
        """The reviewer's assignment of this task, which must exist and be unanswered; blocked reviewers are refused."""
        if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is None:
            raise NotFound(f"no task {task_id!r}")
        assignment = conn.execute(
            "SELECT * FROM assignments WHERE task_id = ? AND reviewer_id = ?", (task_id, reviewer_id)
        ).fetchone()
        if assignment is None:
            raise Forbidden(f"task {task_id!r} has not been offered to you")
        if self._quality(conn, reviewer_id).status == "blocked":
            raise Forbidden("your account is paused after too many wrong answers on checked items; ask the organiser")
        answered = conn.execute(
            "SELECT 1 FROM annotations WHERE task_id = ? AND reviewer_id = ? AND undone_at IS NULL",
            (task_id, reviewer_id),
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

    def submit_ranking(
        self,
        reviewer_id: int,
        task_id: str,
        label_tiers: Any,
        all_bad: bool = False,
        rationale: str | None = None,
        now: float | None = None,
        ratings: Any = None,
        flags: Any = None,
        confirm_too_fast: bool = False,
    ) -> int:
        """Store a ranking given in card labels (with ratings and flags by label); returns the annotation id.

        Under the project's `min_seconds` since the task was shown, the submission is refused with
        NeedsConfirmation unless `confirm_too_fast`; a confirmed one is stored marked `too_fast`.
        """
        rationale = self._clean_text(rationale, "rationale", MAX_RATIONALE_CHARS)
        if not isinstance(all_bad, bool):
            raise InvalidInput("'all_bad' must be true or false")
        now = time.time() if now is None else now
        with self._write() as conn:
            assignment = self._open_assignment(conn, reviewer_id, task_id)
            shown_order = json.loads(assignment["shown_order"])
            ranking = label_tiers_to_ids(label_tiers, shown_order)
            config = JudgementConfig.from_json(self._setting(conn, "judgements"))
            ratings_by_id = check_ratings(config, ratings, shown_order)
            flags_by_id = check_flags(config, flags, shown_order)
            rationale = check_rationale(config, rationale)
            seconds = now - assignment["leased_at"]
            min_seconds = float(self._setting(conn, "min_seconds"))
            too_fast = seconds < min_seconds
            if too_fast and not confirm_too_fast:
                raise NeedsConfirmation(
                    f"you spent {seconds:.0f} s on this task; the project asks for at least {min_seconds:.0f} s. "
                    "Read the responses again, or confirm to submit anyway (the answer is marked as fast)",
                    reason="too_fast",
                    seconds=round(seconds, 3),
                    min_seconds=min_seconds,
                )
            cursor = conn.execute(
                """INSERT INTO annotations(task_id, reviewer_id, kind, ranking, all_bad, unchanged_order, rationale,
                                           shown_order, shown_at, submitted_at, ratings, flags, too_fast)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    task_id,
                    reviewer_id,
                    "ranking",
                    _json(ranking),
                    int(all_bad),
                    int(is_unchanged_order(ranking, shown_order)),
                    rationale,
                    assignment["shown_order"],
                    assignment["leased_at"],
                    now,
                    None if ratings_by_id is None else _json(ratings_by_id),
                    None if flags_by_id is None else _json(flags_by_id),
                    int(too_fast),
                ),
            )
            if conn.execute("SELECT gold IS NOT NULL FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]:
                self._refresh_blocked(conn, reviewer_id)
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
            if self._quality(conn, reviewer_id).status == "blocked":
                raise Forbidden(
                    "your account is paused after too many wrong answers on checked items; ask the organiser"
                )
            row = conn.execute(
                "SELECT id, task_id FROM annotations WHERE reviewer_id = ? AND undone_at IS NULL ORDER BY "
                "submitted_at DESC, id DESC LIMIT 1",
                (reviewer_id,),
            ).fetchone()
            if row is None:
                raise Conflict("nothing to undo: you have no submitted answer")
            conn.execute("UPDATE annotations SET undone_at = ? WHERE id = ?", (now, row["id"]))
            # renew the lease so the task comes back to this reviewer first
            conn.execute(
                "UPDATE assignments SET leased_at = ? WHERE task_id = ? AND reviewer_id = ?",
                (now, row["task_id"], reviewer_id),
            )
            return row["task_id"]

    def progress(self, reviewer_id: int) -> dict[str, int]:
        """Counts for the reviewer's progress bar; gold items are answers like any other but never 'remaining'."""
        with self._read() as conn:
            counts = dict(
                conn.execute(
                    "SELECT kind, count(*) FROM annotations WHERE reviewer_id = ? AND undone_at IS NULL GROUP BY kind",
                    (reviewer_id,),
                ).fetchall()
            )
            overlap = int(self._setting(conn, "overlap"))
            remaining = conn.execute(
                f"""SELECT count(*) FROM tasks t WHERE t.gold IS NULL AND NOT {self._ANSWERED.format(t="t.id", r=":me")}
                    AND {self._LIVE_RANKINGS.format(t="t.id")} < :overlap""",
                {"me": reviewer_id, "overlap": overlap},
            ).fetchone()[0]
            total = conn.execute("SELECT count(*) FROM tasks WHERE gold IS NULL").fetchone()[0]
        return {
            "ranked": counts.get("ranking", 0),
            "skipped": counts.get("skip", 0),
            "remaining": remaining,
            "total_tasks": total,
        }

    # ---------------------------------------------------------------------------------------------
    # everything, for exports and the admin view
    # ---------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Tasks, reviewers (without tokens, with their quality), assignments, every answer, adjudications,
        applications (without keys) and their feedback, read in one transaction."""
        with self._read() as conn:
            tasks = [self._task_from_row(row) for row in conn.execute("SELECT * FROM tasks ORDER BY position")]
            rules = self._rules(conn)
            gold_scores = self._gold_scores(conn)
            reviewers = []
            for row in conn.execute("SELECT id, name, created_at, quality_override FROM reviewers ORDER BY id"):
                quality = reviewer_quality(gold_scores.get(row["id"], []), rules, row["quality_override"])
                reviewers.append(
                    {"id": row["id"], "name": row["name"], "created_at": row["created_at"], "quality": quality}
                )
            assignments = [
                dict(row) | {"shown_order": json.loads(row["shown_order"])}
                for row in conn.execute("SELECT * FROM assignments ORDER BY first_shown_at, task_id")
            ]
            annotations = []
            for row in conn.execute("SELECT * FROM annotations ORDER BY id"):
                record = dict(row)
                for key in ("ranking", "ratings", "flags"):
                    record[key] = json.loads(row[key]) if row[key] else None
                record["shown_order"] = json.loads(row["shown_order"])
                for key in ("all_bad", "unchanged_order", "too_fast"):
                    record[key] = bool(row[key])
                annotations.append(record)
            adjudications = {
                row["task_id"]: dict(row) | {"ranking": json.loads(row["ranking"]) if row["ranking"] else None}
                for row in conn.execute("SELECT * FROM adjudications ORDER BY decided_at")
            }
            apps = [
                dict(row)
                for row in conn.execute(
                    "SELECT id, name, rate_per_minute, created_at, revoked_at FROM apps ORDER BY id"
                )
            ]
            feedback = []
            for row in conn.execute("SELECT * FROM feedback ORDER BY id"):
                record = dict(row)
                for key in ("prompt", "responses", "meta"):
                    record[key] = json.loads(row[key])
                feedback.append(record)
            settings: dict[str, Any] = {
                row["key"]: row["value"]
                for row in conn.execute("SELECT key, value FROM settings")
                if row["key"] != "admin_token"
            }
            for key in ("overlap", "gold_min_answers"):
                settings[key] = int(settings[key])
            for key in (
                "lease_seconds",
                "created_at",
                "gold_rate",
                "gold_warn_below",
                "gold_block_below",
                "min_seconds",
            ):
                settings[key] = float(settings[key])
            settings["judgements"] = json.loads(settings["judgements"])
            settings["schema_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
        return {
            "tasks": tasks,
            "reviewers": reviewers,
            "assignments": assignments,
            "annotations": annotations,
            "settings": settings,
            "adjudications": adjudications,
            "apps": apps,
            "feedback": feedback,
        }
