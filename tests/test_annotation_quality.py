"""Quality control and richer judgements in the store: schema migration, gold items, warn/block/restore,
the minimum time per task, ratings and flags, adjudication, and what the exports and stats make of them."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from annotation.adjudication import decide, task_detail, withdraw
from annotation.errors import Conflict, Forbidden, InvalidInput
from annotation.export import export_rows
from annotation.judgements import make_config
from annotation.quality import QualityRules, gold_item_score, quality_weight, reviewer_quality
from annotation.schema import SCHEMA_VERSION, _create_v1
from annotation.stats import collect_stats
from annotation.store import AnnotationStore, NeedsConfirmation
from annotation.tasks import Task, read_tasks
from rlhf.errors import DataError, UserError


def _task(task_id: str, k: int = 3, gold: list[list[str]] | None = None) -> Task:
    return Task(
        id=task_id,
        prompt=f"prompt {task_id}",
        responses=[{"id": f"r{j}", "text": f"text {j} of {task_id}"} for j in range(k)],
        gold=gold,
    )


def _labels(offer, id_tiers: list[list[str]]) -> list[list[str]]:
    label_of = {response_id: "ABCDEFGH"[index] for index, response_id in enumerate(offer.shown_order)}
    return [[label_of[response_id] for response_id in tier] for tier in id_tiers]


@pytest.fixture()
def store(tmp_path):
    store = AnnotationStore(tmp_path / "qc.db")
    yield store
    store.close()


# -------------------------------------------------------------------------------------------------
# pure quality math
# -------------------------------------------------------------------------------------------------


def test_gold_item_score_counts_gold_pairs_kept_in_order():
    gold = [["a"], ["b"], ["c"]]
    assert gold_item_score([["a"], ["b"], ["c"]], gold) == 1.0
    # a>b yes, a>c yes, b>c no -> 2/3
    assert gold_item_score([["a"], ["c"], ["b"]], gold) == pytest.approx(2 / 3)
    # a tie where gold has an order scores 0 for that pair: a>b tie(0), a>c yes, b>c yes -> 2/3
    assert gold_item_score([["a", "b"], ["c"]], gold) == pytest.approx(2 / 3)
    assert gold_item_score([["c"], ["b"], ["a"]], gold) == 0.0
    # gold ties are not scored: only a>c and b>c count
    assert gold_item_score([["c"], ["a"], ["b"]], [["a", "b"], ["c"]]) == 0.0
    assert gold_item_score([["a"], ["b"]], [["a", "b"]]) is None


def test_reviewer_status_warn_block_and_overrides():
    rules = QualityRules(warn_below=0.7, block_below=0.5, min_answers=3)
    assert reviewer_quality([], rules).status == "ok"
    assert reviewer_quality([1.0], rules).status == "ok"
    assert reviewer_quality([0.0], rules).status == "warned"  # one wrong answer warns ...
    assert reviewer_quality([0.0, 0.0], rules).status == "warned"  # ... but two do not block (min_answers 3)
    blocked = reviewer_quality([0.0, 1.0, 0.0], rules)  # accuracy 1/3 < 0.5 with 3 answers
    assert (blocked.status, blocked.gold_accuracy, blocked.gold_answers) == ("blocked", pytest.approx(1 / 3), 3)
    assert (
        reviewer_quality([0.0, 1.0, 0.0], rules, override="restored").status == "warned"
    )  # restored: never blocked, still warned
    assert reviewer_quality([1.0, 1.0, 1.0], rules, override="blocked").status == "blocked"
    assert reviewer_quality([0.5, 1.0, 0.6], rules).status == "ok"  # mean 0.7 is not below 0.7


def test_quality_weight_is_gold_accuracy_shrunk_towards_one():
    assert quality_weight(None, 0) == 1.0
    assert quality_weight(0.0, 1) == pytest.approx(2 / 3)  # (0 + 2) / (1 + 2)
    assert quality_weight(0.5, 10) == pytest.approx(7 / 12)  # (5 + 2) / (10 + 2)
    assert quality_weight(1.0, 4) == 1.0


# -------------------------------------------------------------------------------------------------
# schema migration
# -------------------------------------------------------------------------------------------------


def _version_1_database(path) -> None:
    """A database exactly as the tool before schema 2 wrote it, with one task, reviewer and answer."""
    with sqlite3.connect(path) as conn:
        _create_v1(conn)
        conn.execute(
            "INSERT INTO tasks VALUES ('t1', 1, '\"p\"', ?, '{}', NULL, ?, 1.0)",
            (
                json.dumps([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]),
                Task(
                    id="t1", prompt="p", responses=[{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]
                ).content_hash(),
            ),
        )
        conn.execute("INSERT INTO reviewers VALUES (1, 'old', 'tok-old', 1.0)")
        conn.execute("INSERT INTO assignments VALUES ('t1', 1, '[\"b\",\"a\"]', 2.0, 2.0)")
        conn.execute("""INSERT INTO annotations(task_id, reviewer_id, kind, ranking, shown_order,
                                                shown_at, submitted_at)
                        VALUES ('t1', 1, 'ranking', '[["a"],["b"]]', '["b","a"]', 2.0, 9.5)""")
        conn.execute("PRAGMA user_version = 1")


def test_a_version_1_database_is_migrated_in_place_and_keeps_everything(tmp_path):
    path = tmp_path / "v1.db"
    _version_1_database(path)
    store = AnnotationStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert {"ratings", "flags", "too_fast"} <= {row[1] for row in conn.execute("PRAGMA table_info(annotations)")}
        assert {"adjudications", "apps", "feedback"} <= {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    [row] = export_rows(store, "rankings")
    assert (row["id"], row["annotator"], row["ranking"], row["seconds"], row["source"]) == (
        "t1",
        "old",
        [["a"], ["b"]],
        7.5,
        "reviewer",
    )
    assert store.reviewer_for_token("tok-old").name == "old"
    # re-importing the same task (stored before gold existed) is recognised as unchanged
    assert (
        store.import_tasks(
            [Task(id="t1", prompt="p", responses=[{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])]
        ).unchanged
        == 1
    )
    store.close()
    AnnotationStore(path).close()  # opening again is a no-op


def test_migration_is_idempotent_after_a_partial_manual_upgrade(tmp_path):
    path = tmp_path / "partial.db"
    _version_1_database(path)
    with sqlite3.connect(path) as conn:  # someone added one column by hand and stopped
        conn.execute("ALTER TABLE tasks ADD COLUMN gold TEXT")
        conn.execute("INSERT INTO settings VALUES ('gold_rate', '0.25')")
    store = AnnotationStore(path)
    assert store.gold_rate == 0.25 and store.min_seconds == 0.0  # kept, and the missing settings added
    assert store.snapshot()["settings"]["schema_version"] == 2
    store.close()


# -------------------------------------------------------------------------------------------------
# gold items
# -------------------------------------------------------------------------------------------------


def test_gold_file_rows_need_a_known_ranking_named_by_row_and_field(tmp_path):
    path = tmp_path / "gold.jsonl"
    good = {
        "id": "g1",
        "prompt": "p",
        "responses": [{"id": "x", "text": "t"}, {"id": "y", "text": "u"}],
        "ranking": [["y"], ["x"]],
    }
    path.write_text(json.dumps(good) + "\n")
    [task] = read_tasks(path, require_gold=True)
    assert task.gold == [["y"], ["x"]]
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "g2", "ranking": None}) + "\n")
    with pytest.raises(DataError, match=r"gold.jsonl: row 2: field 'gold': missing"):
        read_tasks(path, require_gold=True)
    path.write_text(json.dumps({**good, "gold": [["y"], ["z"]]}) + "\n")
    with pytest.raises(DataError, match=r"row 1: field 'gold\[1\]': unknown response id 'z'"):
        read_tasks(path)
    path.write_text(json.dumps({**good, "gold": [["x", "y"]]}) + "\n")
    with pytest.raises(DataError, match=r"row 1: field 'gold': a single tie"):
        read_tasks(path)


def test_gold_items_are_served_at_the_rate_once_per_reviewer_and_never_alone(store):
    store.import_tasks(
        [_task(f"t{i}") for i in range(3)]
        + [_task("g1", gold=[["r0"], ["r1"], ["r2"]]), _task("g2", gold=[["r2"], ["r1"], ["r0"]])]
    )
    store.set_overlap(1)
    store.set_gold_rate(1.0)
    alice, _ = store.add_reviewer("alice")
    bob, _ = store.add_reviewer("bob")
    rng = random.Random(0)
    served = []
    while (offer := store.next_task(alice.id, rng=rng)) is not None:
        served.append(offer.task.id)
        store.submit_ranking(alice.id, offer.task.id, _labels(offer, [["r0"], ["r1"], ["r2"]]))
    # rate 1: both gold items first (unmarked, in random order), then the ordinary tasks; no gold once those end
    assert sorted(served[:2]) == ["g1", "g2"] and served[2:] == ["t0", "t1", "t2"]
    # gold items have no overlap limit: bob gets them too, although alice answered them (overlap 1)
    store.import_tasks([_task("t3")])
    first = store.next_task(bob.id, rng=rng)
    assert first.task.id in ("g1", "g2")
    assert store.progress(bob.id) == {
        "ranked": 0,
        "skipped": 0,
        "remaining": 1,
        "total_tasks": 4,
    }  # gold is never "remaining"
    # the offer does not mark gold items
    assert first.task.gold is not None  # the store knows ...
    stats = collect_stats(store)
    assert stats["tasks"]["total"] == 4 and stats["gold"] == {"items": 2, "answers": 2}
    # alice: g1 right (1.0), g2 as r0>r1>r2 against r2>r1>r0: 0.0 -> 50%
    alice_row = next(r for r in stats["reviewers"] if r["name"] == "alice")
    assert (alice_row["gold_answered"], alice_row["gold_accuracy"], alice_row["ranked"]) == (2, 0.5, 3)


def test_wrong_gold_answers_warn_then_block_and_an_admin_restores(store):
    golds = [_task(f"g{i}", gold=[["r0"], ["r1"], ["r2"]]) for i in range(3)]
    store.import_tasks([_task(f"t{i}") for i in range(6)] + golds)
    store.set_overlap(2)
    store.set_gold_rate(1.0)
    store.set_quality_rules(warn_below=0.7, block_below=0.5, min_answers=3)
    careless, _ = store.add_reviewer("careless")
    careful, _ = store.add_reviewer("careful")
    rng = random.Random(1)

    def answer(reviewer, ids):
        offer = store.next_task(reviewer.id, rng=rng)
        store.submit_ranking(reviewer.id, offer.task.id, _labels(offer, ids))
        return offer.task.id

    # careless reverses the first gold item: warned at once, not blocked
    assert answer(careless, [["r2"], ["r1"], ["r0"]]).startswith("g")
    assert store.quality(careless.id).status == "warned"
    # undoing the wrong gold answer does not erase it: the first answer is the one that counts
    store.undo_last(careless.id)
    again = store.next_task(careless.id, rng=rng)
    store.submit_ranking(careless.id, again.task.id, _labels(again, [["r0"], ["r1"], ["r2"]]))
    assert store.quality(careless.id).gold_accuracy == 0.0
    assert answer(careless, [["r2"], ["r1"], ["r0"]]).startswith("g")
    assert store.quality(careless.id).status == "warned"  # two answers: below min_answers 3
    store.set_gold_rate(0.0)
    ordinary = answer(careless, [["r1"], ["r0"], ["r2"]])  # an ordinary task, answered while still trusted
    store.set_gold_rate(1.0)
    assert answer(careless, [["r1"], ["r2"], ["r0"]]).startswith("g")  # r1>r2 right, rest wrong: 1/3
    quality = store.quality(careless.id)
    assert (quality.status, quality.gold_answers, quality.gold_accuracy) == ("blocked", 3, pytest.approx(1 / 9))
    # blocked: no task, no submission, no undo, and the answers are out of the export
    assert store.next_task(careless.id) is None
    with pytest.raises(Forbidden, match="paused"):
        store.undo_last(careless.id)
    answer(careful, [["r0"], ["r1"], ["r2"]])
    assert {(r["id"], r["annotator"]) for r in export_rows(store, "rankings") if r["source"] == "reviewer"} == set()
    # careful answered a gold item (rate 1); now the ordinary one careless also did
    store.set_gold_rate(0.0)
    careful_task = answer(careful, [["r0"], ["r1"], ["r2"]])
    assert careful_task == ordinary
    assert [r["annotator"] for r in export_rows(store, "rankings") if r["source"] == "reviewer"] == ["careful"]
    # an admin restores careless: back in the export, offered tasks again, still warned
    store.set_quality_override("careless", "restored")
    assert store.quality(careless.id).status == "warned"
    reviewer_rows = [r for r in export_rows(store, "rankings") if r["source"] == "reviewer"]
    assert sorted(r["annotator"] for r in reviewer_rows) == ["careful", "careless"]
    careless_row = next(r for r in reviewer_rows if r["annotator"] == "careless")
    assert careless_row["gold_accuracy"] == pytest.approx(1 / 9, abs=1e-6)
    assert careless_row["quality_weight"] == pytest.approx((1 / 3 + 2) / 5, abs=1e-6)  # (sum of scores + 2) / (3 + 2)
    assert store.next_task(careless.id) is not None
    # gold items appear once each in the export with their known ranking, never the reviewers' answers to them
    gold_rows = [r for r in export_rows(store, "rankings") if r["source"] == "gold"]
    assert [(r["id"], r["ranking"], r["annotator"]) for r in gold_rows] == [(g.id, g.gold, "gold") for g in golds]
    with pytest.raises(InvalidInput, match="override"):
        store.set_quality_override("careless", "maybe")


# -------------------------------------------------------------------------------------------------
# time on task
# -------------------------------------------------------------------------------------------------


def test_a_submission_under_the_minimum_time_needs_confirmation_and_is_flagged(store):
    store.import_tasks([_task("t1"), _task("t2")])
    store.set_min_seconds(10)
    alice, _ = store.add_reviewer("alice")
    offer = store.next_task(alice.id, now=1000.0)
    ranking = _labels(offer, [["r0"], ["r1"], ["r2"]])
    with pytest.raises(
        NeedsConfirmation, match="you spent 3 s on this task; the project asks for at least 10 s"
    ) as caught:
        store.submit_ranking(alice.id, "t1", ranking, now=1003.0)
    assert (caught.value.reason, caught.value.details) == ("too_fast", {"seconds": 3.0, "min_seconds": 10.0})
    assert store.snapshot()["annotations"] == []  # nothing stored before the confirmation
    store.submit_ranking(alice.id, "t1", ranking, now=1004.0, confirm_too_fast=True)
    offer = store.next_task(alice.id, now=1010.0)
    store.submit_ranking(alice.id, offer.task.id, _labels(offer, [["r2"], ["r1"], ["r0"]]), now=1022.5)  # 12.5 s: fine
    rows = export_rows(store, "rankings")
    assert [(r["id"], r["seconds"], r.get("too_fast", False)) for r in rows] == [("t1", 4.0, True), ("t2", 12.5, False)]
    [reviewer] = collect_stats(store)["reviewers"]
    assert (reviewer["too_fast"], reviewer["median_seconds"]) == (1, 8.2)  # median of 4.0 and 12.5 is 8.25 -> 8.2


# -------------------------------------------------------------------------------------------------
# ratings and flags
# -------------------------------------------------------------------------------------------------


def test_ratings_and_flags_are_checked_stored_by_response_and_exported(store):
    store.import_tasks([_task("t1")])
    store.set_judgements(make_config(ratings=True, flags=["made-up facts", "harmful"], rationale="required"))
    alice, _ = store.add_reviewer("alice")
    offer = store.next_task(alice.id)
    ranking = [["A"], ["B"], ["C"]]
    good = {"A": 7, "B": 4, "C": 1}
    cases = [
        ({"ratings": None}, "'ratings' is required"),
        ({"ratings": {"A": 7, "B": 4}}, r"leaves out card\(s\) C"),
        ({"ratings": {**good, "C": 8}}, r"'ratings.C' must be a whole number from 1 to 7, got 8"),
        ({"ratings": {**good, "C": True}}, r"'ratings.C' must be a whole number"),
        ({"ratings": {**good, "D": 3}}, r"'ratings.D': no such card"),
        ({"ratings": good, "flags": {"A": ["rude"]}}, r"'flags.A': unknown flag 'rude'"),
        ({"ratings": good, "flags": {"A": ["harmful", "harmful"]}}, r"'flags.A' names a flag twice"),
        ({"ratings": good, "flags": {"A": "harmful"}}, r"'flags.A' must be a list"),
        ({"ratings": good, "rationale": "  "}, "'rationale' is required"),
    ]
    for extra, message in cases:
        kwargs = {"rationale": "because"} | extra
        with pytest.raises(InvalidInput, match=message):
            store.submit_ranking(alice.id, "t1", ranking, **kwargs)
    store.submit_ranking(
        alice.id, "t1", ranking, rationale="because", ratings=good, flags={"C": ["harmful", "made-up facts"], "B": []}
    )
    [answer] = store.snapshot()["annotations"]
    id_of = dict(zip("ABC", offer.shown_order))
    assert answer["ratings"] == {id_of["A"]: 7, id_of["B"]: 4, id_of["C"]: 1}
    assert answer["flags"] == {id_of["C"]: ["made-up facts", "harmful"]}  # the project's order; empty lists dropped
    [row] = export_rows(store, "rankings")
    rating_of = {id_of[label]: value for label, value in good.items()}
    assert row["judgements"] == [
        {
            "id": f"r{j}",
            "rating": rating_of[f"r{j}"],
            "flags": ["made-up facts", "harmful"] if id_of["C"] == f"r{j}" else [],
        }
        for j in range(3)
    ]
    assert collect_stats(store)["reviewers"][0]["flags_raised"] == 2
    # undo brings ratings and flags back by card label
    store.undo_last(alice.id)
    previous = store.next_task(alice.id).previous
    assert previous["ratings"] == good and previous["flags"] == {"C": ["made-up facts", "harmful"]}


def test_judgements_off_refuse_ratings_and_flags(store):
    store.import_tasks([_task("t1")])
    store.set_judgements(make_config(rationale="off"))
    alice, _ = store.add_reviewer("alice")
    store.next_task(alice.id)
    with pytest.raises(InvalidInput, match="does not collect ratings"):
        store.submit_ranking(alice.id, "t1", [["A"], ["B"], ["C"]], ratings={"A": 1, "B": 2, "C": 3})
    with pytest.raises(InvalidInput, match="none \\(this project has no flags\\)"):
        store.submit_ranking(alice.id, "t1", [["A"], ["B"], ["C"]], flags={"A": ["harmful"]})
    with pytest.raises(InvalidInput, match="does not collect rationales"):
        store.submit_ranking(alice.id, "t1", [["A"], ["B"], ["C"]], rationale="hm")
    with pytest.raises(UserError, match="--flags: 'x' is given twice"):
        make_config(flags=["x", "x"])


# -------------------------------------------------------------------------------------------------
# adjudication
# -------------------------------------------------------------------------------------------------


def _disputed_store(store: AnnotationStore) -> None:
    """t1 and t2 each get two opposite rankings (every pair disputed); t3 two agreeing ones."""
    store.import_tasks([_task("t1"), _task("t2"), _task("t3")])
    store.set_overlap(2)
    plans = {
        "ann": {"t1": [["r0"], ["r1"], ["r2"]], "t2": [["r0"], ["r1"], ["r2"]], "t3": [["r0"], ["r1"], ["r2"]]},
        "ben": {"t1": [["r2"], ["r1"], ["r0"]], "t2": [["r2"], ["r1"], ["r0"]], "t3": [["r0"], ["r1"], ["r2"]]},
    }
    for name, plan in plans.items():
        reviewer, _ = store.add_reviewer(name)
        while (offer := store.next_task(reviewer.id)) is not None:
            store.submit_ranking(reviewer.id, offer.task.id, _labels(offer, plan[offer.task.id]))


def test_adjudication_replaces_a_disputed_tasks_rankings_or_discards_it(store):
    _disputed_store(store)
    stats = collect_stats(store)
    assert [(t["task_id"], t["disputed_pairs"]) for t in stats["disputed_tasks"]] == [("t1", 3), ("t2", 3)]
    detail = task_detail(store, "t1")
    assert [(a["annotator"], a["ranking"]) for a in detail["answers"]] == [
        ("ann", [["r0"], ["r1"], ["r2"]]),
        ("ben", [["r2"], ["r1"], ["r0"]]),
    ]
    decided = decide(
        store, "t1", "ranking", [["r1"], ["r0", "r2"]], adjudicator="lead", note="r1 is the only correct one"
    )
    assert decided["ranking"] == [["r1"], ["r0", "r2"]]
    decide(store, "t2", "discard", adjudicator="lead")
    rows = export_rows(store, "rankings")
    assert [(r["id"], r["annotator"], r["source"]) for r in rows] == [
        ("t3", "ann", "reviewer"),
        ("t3", "ben", "reviewer"),
        ("t1", "lead", "adjudicated"),
    ]
    adjudicated = rows[-1]
    assert (adjudicated["ranking"], adjudicated["adjudicated"], adjudicated["overrides"], adjudicated["rationale"]) == (
        [["r1"], ["r0", "r2"]],
        True,
        ["ann", "ben"],
        "r1 is the only correct one",
    )
    # pairs: t1 gives r1>r0 and r1>r2 only (the r0 = r2 tie gives none); t2 nothing; t3 three agreed pairs
    pairs = {(p["group"], p["chosen"].split()[1], p["rejected"].split()[1]) for p in export_rows(store, "pairs")}
    assert pairs == {("t1", "1", "0"), ("t1", "1", "2"), ("t3", "0", "1"), ("t3", "0", "2"), ("t3", "1", "2")}
    stats = collect_stats(store)
    assert stats["disputed_tasks"] == [] and [(a["task_id"], a["decision"]) for a in stats["adjudications"]] == [
        ("t1", "ranking"),
        ("t2", "discard"),
    ]
    # deciding again replaces; withdrawing returns the task to voting
    decide(store, "t1", "ranking", [["r0"], ["r1"], ["r2"]])
    assert [r["annotator"] for r in export_rows(store, "rankings") if r["id"] == "t1"] == ["admin"]
    withdraw(store, "t1")
    assert [r["annotator"] for r in export_rows(store, "rankings") if r["id"] == "t1"] == ["ann", "ben"]
    raw_types = [r["type"] for r in export_rows(store, "raw")]
    assert raw_types.count("adjudication") == 1 and raw_types.count("annotation") == 6


def test_adjudication_refuses_bad_decisions(store):
    _disputed_store(store)
    store.import_tasks([_task("g", gold=[["r0"], ["r1"], ["r2"]])])
    with pytest.raises(InvalidInput, match=r"'ranking': response id\(s\) r2 not ranked"):
        decide(store, "t1", "ranking", [["r0"], ["r1"]])
    with pytest.raises(InvalidInput, match=r"'ranking\[0\]': unknown response id 'r9'"):
        decide(store, "t1", "ranking", [["r9"], ["r0", "r1", "r2"]])
    with pytest.raises(InvalidInput, match="'ranking' is required"):
        decide(store, "t1", "ranking")
    with pytest.raises(InvalidInput, match="'ranking' must be left out"):
        decide(store, "t1", "discard", [["r0"], ["r1"], ["r2"]])
    with pytest.raises(Conflict, match="gold item"):
        decide(store, "g", "discard")
    assert store.snapshot()["adjudications"] == {}


def test_alpha_over_time_is_cumulative_over_submissions(store):
    _disputed_store(store)
    points = collect_stats(store)["alpha_over_time"]
    # 6 rankings: cut points after 1..6 (ceil(i*6/10) for i = 1..10); alpha needs two reviewers of one task
    assert [p["rankings"] for p in points] == [1, 2, 3, 4, 5, 6]
    assert points[-1]["alpha"] == pytest.approx(collect_stats(store)["krippendorff_alpha_ordinal"])
    assert points[0]["alpha"] is None


def test_a_blocked_reviewers_rankings_and_leases_do_not_fill_the_overlap(store):
    store.import_tasks([_task("t1"), _task("t2")])
    store.set_overlap(1)
    xena, _ = store.add_reviewer("xena")
    yuri, _ = store.add_reviewer("yuri")
    offer = store.next_task(xena.id)
    store.submit_ranking(xena.id, "t1", _labels(offer, [["r0"], ["r1"], ["r2"]]))
    store.next_task(xena.id)  # xena now holds a fresh lease on t2
    assert store.next_task(yuri.id) is None  # t1 answered, t2 leased: nothing for yuri
    store.set_quality_override("xena", "blocked")
    assert store.next_task(yuri.id).task.id == "t1"  # xena's answer no longer counts ...
    assert store.progress(yuri.id)["remaining"] == 2  # ... and her lease on t2 holds nothing either
    store.set_quality_override("xena", None)
    assert store.quality(xena.id).status == "ok"
