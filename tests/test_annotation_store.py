"""The annotation store: schema, task import, who is offered what, answers, undo, isolation."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from annotation.errors import Conflict, Forbidden, InvalidInput, NotFound
from annotation.store import SCHEMA_VERSION, AnnotationStore
from annotation.tasks import Task, read_tasks
from annotation.testing import make_candidates
from rlhf.errors import DataError, UserError


def _task(task_id: str, k: int = 4, prompt: str = "p") -> Task:
    return Task(id=task_id, prompt=prompt, responses=[{"id": f"r{j}", "text": f"text {j}"} for j in range(k)])


@pytest.fixture()
def store(tmp_path):
    store = AnnotationStore(tmp_path / "annotations.db")
    yield store
    store.close()


def test_new_database_has_schema_version_wal_and_a_stable_admin_token(tmp_path):
    path = tmp_path / "a.db"
    first = AnnotationStore(path)
    token = first.admin_token
    first.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = AnnotationStore(path)
    assert again.admin_token == token and len(token) >= 32
    again.close()


def test_database_from_a_newer_version_or_another_program_is_refused(tmp_path):
    newer = tmp_path / "newer.db"
    AnnotationStore(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(UserError, match="schema version 99 is newer"):
        AnnotationStore(newer)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE something (x)")
    with pytest.raises(UserError, match="something else"):
        AnnotationStore(other)


def test_reimport_is_idempotent_and_changed_content_is_refused(store):
    assert store.import_tasks([_task("t1"), _task("t2")]).added == 2
    again = store.import_tasks([_task("t1"), _task("t2"), _task("t3")])
    assert (again.added, again.unchanged) == (1, 2)
    with pytest.raises(DataError, match="task 't1' is already in .* with different content"):
        store.import_tasks([_task("t1", prompt="changed")], source="new.jsonl")
    assert store.task_count() == 3


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "prompt": "p"}, "row 2: field 'responses': missing field"),
        (
            {"id": "a", "prompt": "p", "responses": [{"id": "x", "text": "t"}]},
            "row 2: field 'responses': needs at least two",
        ),
        (
            {"id": "a", "prompt": "p", "responses": [{"id": "x", "text": "t"}, {"id": "x", "text": "u"}]},
            r"row 2: field 'responses\[1\].id': duplicate",
        ),
        (
            {"id": "a", "prompt": 3, "responses": [{"id": "x", "text": "t"}, {"id": "y", "text": "u"}]},
            "row 2: field 'prompt': expected a string",
        ),
        (
            {"id": "a", "prompt": "p", "responses": [{"id": "x", "text": "t"}, {"id": "y", "text": None}]},
            r"row 2: field 'responses\[1\].text'",
        ),
        (
            {"id": "a", "prompt": "p", "responses": [{"id": "x", "text": "t"}, {"id": "y", "text": "u"}], "meta": []},
            "row 2: field 'meta'",
        ),
        (
            {"id": "a", "prompt": "p", "responses": [{"id": str(i), "text": "t"} for i in range(27)]},
            "row 2: field 'responses': has 27 responses",
        ),
        (
            {
                "id": "a",
                "prompt": "p",
                "responses": [{"id": "x", "text": "t"}, {"id": "y", "text": "u"}],
                "guidelines": 5,
            },
            "row 2: field 'guidelines'",
        ),
    ],
)
def test_bad_task_rows_name_file_row_and_field(tmp_path, row, message):
    path = tmp_path / "tasks.jsonl"
    good = {"id": "ok", "prompt": "p", "responses": [{"id": "x", "text": "t"}, {"id": "y", "text": "u"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"tasks.jsonl: {message}"):
        read_tasks(path)


def test_repeated_task_id_names_both_rows_counting_blank_lines(tmp_path):
    path = tmp_path / "tasks.jsonl"
    row = {"id": 7, "prompt": "p", "responses": [{"id": 1, "text": "t"}, {"id": 2, "text": "u"}]}
    path.write_text(json.dumps(row) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"row 3: field 'id' repeats '7' \(first seen in row 1\)"):
        read_tasks(path)


def test_conversational_tasks_round_trip(tmp_path, store):
    path = tmp_path / "chat.jsonl"
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    reply = [{"role": "assistant", "content": "Hello."}]
    path.write_text(
        json.dumps({"id": 1, "prompt": conversation, "responses": [{"id": 0, "text": reply}, {"id": 1, "text": "Hey"}]})
        + "\n"
    )
    store.import_tasks(read_tasks(path))
    alice, _ = store.add_reviewer("alice")
    offer = store.next_task(alice.id)
    assert offer.task.prompt == conversation and offer.task.id == "1"
    assert offer.task.responses == [{"id": "0", "text": reply}, {"id": "1", "text": "Hey"}]


def test_each_reviewer_gets_their_own_stored_shuffle(store):
    store.import_tasks([_task("t1", k=8)])
    alice, _ = store.add_reviewer("alice")
    bob, _ = store.add_reviewer("bob")
    store.set_overlap(2)
    alice_order = store.next_task(alice.id, rng=random.Random(1)).shown_order
    bob_order = store.next_task(bob.id, rng=random.Random(2)).shown_order
    assert sorted(alice_order) == [f"r{j}" for j in range(8)]
    assert alice_order != bob_order  # two seeded shuffles of 8 cards (1 chance in 40320 to coincide)
    # a reload shows the same order, whatever the random source says now
    assert store.next_task(alice.id, rng=random.Random(99)).shown_order == alice_order
    # card labels map through the stored order: A is the first card alice saw
    store.submit_ranking(alice.id, "t1", [[label] for label in "HGFEDCBA"])
    ranking = store.snapshot()["annotations"][0]["ranking"]
    assert ranking == [[response_id] for response_id in reversed(alice_order)]


def test_task_is_offered_until_it_has_overlap_rankings_and_leases_expire(store):
    store.import_tasks([_task("t1")])
    store.set_overlap(2)
    store.set_lease_seconds(60)
    reviewers = [store.add_reviewer(name)[0] for name in ("r1", "r2", "r3")]
    now = 1000.0
    assert store.next_task(reviewers[0].id, now=now).task.id == "t1"
    assert store.next_task(reviewers[1].id, now=now).task.id == "t1"
    assert store.next_task(reviewers[2].id, now=now) is None  # two fresh leases fill the overlap
    store.submit_ranking(reviewers[0].id, "t1", [["A"], ["B"], ["C"], ["D"]], now=now + 1)
    assert store.next_task(reviewers[2].id, now=now + 30) is None  # one ranking + one fresh lease
    # r2 walked away: after the lease (60 s) the task goes to r3
    assert store.next_task(reviewers[2].id, now=now + 61).task.id == "t1"
    store.submit_ranking(reviewers[2].id, "t1", [["B"], ["A"], ["C"], ["D"]], now=now + 62)
    # r2 comes back late; the task is full, so it is no longer offered to them ...
    assert store.next_task(reviewers[1].id, now=now + 200) is None
    # ... but an answer from the page they still have open is kept, not lost
    store.submit_ranking(reviewers[1].id, "t1", [["C"], ["A"], ["B"], ["D"]], now=now + 201)
    assert store.progress(reviewers[1].id)["ranked"] == 1


def test_skip_does_not_count_towards_overlap_and_is_not_offered_again(store):
    store.import_tasks([_task("t1"), _task("t2")])
    alice, _ = store.add_reviewer("alice")
    bob, _ = store.add_reviewer("bob")
    assert store.next_task(alice.id).task.id == "t1"
    store.skip(alice.id, "t1", "  off topic  ")
    assert store.next_task(alice.id).task.id == "t2"
    assert store.next_task(bob.id).task.id == "t1"  # overlap 1, and alice's skip is not a ranking
    skip_row = store.snapshot()["annotations"][0]
    assert (skip_row["kind"], skip_row["skip_reason"], skip_row["ranking"]) == ("skip", "off topic", None)
    with pytest.raises(InvalidInput, match="'reason' is required"):
        store.skip(bob.id, "t1", "   ")


def test_undo_withdraws_the_latest_answer_and_offers_the_task_again_prefilled(store):
    store.import_tasks([_task("t1"), _task("t2")])
    alice, _ = store.add_reviewer("alice")
    with pytest.raises(Conflict, match="nothing to undo"):
        store.undo_last(alice.id)
    store.next_task(alice.id)
    store.submit_ranking(alice.id, "t1", [["B"], ["A", "C"], ["D"]], rationale="B is exact")
    assert store.next_task(alice.id).task.id == "t2"
    assert store.undo_last(alice.id) == "t1"
    offer = store.next_task(alice.id)
    assert offer.task.id == "t1"
    assert offer.previous == {
        "kind": "ranking",
        "ranking": [["B"], ["A", "C"], ["D"]],
        "all_bad": False,
        "rationale": "B is exact",
        "skip_reason": "",
    }
    assert store.progress(alice.id)["ranked"] == 0
    store.submit_ranking(alice.id, "t1", [["D"], ["C"], ["B"], ["A"]])
    answers = store.snapshot()["annotations"]
    assert [(a["task_id"], a["undone_at"] is None) for a in answers] == [("t1", False), ("t1", True)]
    assert answers[0]["ranking"] != answers[1]["ranking"]
    with pytest.raises(Conflict, match="already answered task 't1'"):
        store.submit_ranking(alice.id, "t1", [["A"], ["B"], ["C"], ["D"]])


def test_reviewers_cannot_answer_or_undo_each_others_tasks(store):
    store.import_tasks([_task("t1"), _task("t2")])
    alice, _ = store.add_reviewer("alice")
    bob, _ = store.add_reviewer("bob")
    store.next_task(alice.id)
    with pytest.raises(Forbidden, match="not been offered to you"):
        store.submit_ranking(bob.id, "t1", [["A"], ["B"], ["C"], ["D"]])
    with pytest.raises(NotFound, match="no task 'nope'"):
        store.submit_ranking(bob.id, "nope", [["A"]])
    store.submit_ranking(alice.id, "t1", [["A"], ["B"], ["C"], ["D"]])
    with pytest.raises(Conflict, match="nothing to undo"):
        store.undo_last(bob.id)  # bob has no answer; alice's stays untouched
    assert store.snapshot()["annotations"][0]["undone_at"] is None


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([["A"], ["B"], ["C"]], r"leaves out card\(s\) D"),
        ([["A", "A"], ["B"], ["C"], ["D"]], "names card A twice"),
        ([["A"], ["B"], ["C"], ["E"]], r"'ranking\[3\]' holds 'E'; the cards are A, B, C, D"),
        ([["A"], [], ["B", "C", "D"]], r"'ranking\[1\]' must be a non-empty list"),
        ("ABCD", "must be a non-empty list of tiers"),
    ],
)
def test_bad_rankings_are_refused_with_the_reason(store, tiers, message):
    store.import_tasks([_task("t1")])
    alice, _ = store.add_reviewer("alice")
    store.next_task(alice.id)
    with pytest.raises(InvalidInput, match=message):
        store.submit_ranking(alice.id, "t1", tiers)
    assert store.snapshot()["annotations"] == []


def test_unchanged_order_and_all_bad_are_recorded(store):
    store.import_tasks([_task("t1"), _task("t2")])
    alice, _ = store.add_reviewer("alice")
    store.next_task(alice.id)
    store.submit_ranking(alice.id, "t1", [["A"], ["B"], ["C"], ["D"]])
    store.next_task(alice.id)
    store.submit_ranking(alice.id, "t2", [["A", "B", "C", "D"]], all_bad=True)
    first, second = store.snapshot()["annotations"]
    assert (first["unchanged_order"], first["all_bad"]) == (True, False)
    assert (second["unchanged_order"], second["all_bad"]) == (False, True)


def test_reviewer_names_and_tokens(store):
    alice, created = store.add_reviewer("  alice ")
    assert created and alice.name == "alice"
    same, created_again = store.add_reviewer("alice")
    assert not created_again and same.token == alice.token
    rotated, _ = store.add_reviewer("alice", rotate=True)
    assert rotated.token != alice.token
    assert store.reviewer_for_token(alice.token) is None and store.reviewer_for_token(rotated.token).name == "alice"
    assert store.reviewer_for_token("") is None
    with pytest.raises(InvalidInput, match="printable"):
        store.add_reviewer("bad\nname")


def test_progress_counts(tmp_path, store):
    store.import_tasks(read_tasks(make_candidates(tmp_path / "c.jsonl", 3)))
    alice, _ = store.add_reviewer("alice")
    assert store.progress(alice.id) == {"ranked": 0, "skipped": 0, "remaining": 3, "total_tasks": 3}
    offer = store.next_task(alice.id)
    store.submit_ranking(alice.id, offer.task.id, [["A"], ["B"], ["C"], ["D"]])
    offer = store.next_task(alice.id)
    store.skip(alice.id, offer.task.id, "unsure")
    assert store.progress(alice.id) == {"ranked": 1, "skipped": 1, "remaining": 1, "total_tasks": 3}
