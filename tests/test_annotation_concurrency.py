"""Many reviewers at once lose nothing; a server killed with SIGKILL loses no acknowledged answer."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter

import httpx

from annotation.export import export_rows
from annotation.server import create_app, serve_in_background
from annotation.store import AnnotationStore
from annotation.tasks import read_tasks
from annotation.testing import ReviewerClient, ServerProcess, annotate_many, make_candidates


def test_eight_concurrent_reviewers_submitting_fifty_each_lose_none(tmp_path):
    reviewers, per_reviewer, overlap = 8, 50, 2
    store = AnnotationStore(tmp_path / "busy.db")
    store.import_tasks(read_tasks(make_candidates(tmp_path / "c.jsonl", 250, k=4)))
    store.set_overlap(overlap)
    tokens = {f"rev{i}": store.add_reviewer(f"rev{i}")[0].token for i in range(reviewers)}
    acknowledged: dict[str, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(reviewers)

    def work(name: str, seed: int) -> None:
        client = ReviewerClient(url, tokens[name])
        try:
            start.wait(timeout=30)
            acknowledged[name] = annotate_many(client, per_reviewer, random.Random(seed))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            client.close()

    with serve_in_background(create_app(store)) as url:
        threads = [threading.Thread(target=work, args=(name, seed)) for seed, name in enumerate(tokens)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert {name: len(done) for name, done in acknowledged.items()} == {name: per_reviewer for name in tokens}

    # counted in the database ...
    with sqlite3.connect(store.path) as conn:
        assert (
            conn.execute("SELECT count(*) FROM annotations WHERE kind = 'ranking' AND undone_at IS NULL").fetchone()[0]
            == 400
        )
    # ... and in the export, answer by answer
    rows = export_rows(store, "rankings")
    assert len(rows) == reviewers * per_reviewer
    assert {(row["annotator"], row["id"]) for row in rows} == {
        (name, task) for name, done in acknowledged.items() for task, _ in done
    }
    # the assignment transaction never handed a task to more reviewers than the overlap
    assert max(Counter(row["id"] for row in rows).values()) <= overlap
    store.close()


def test_killing_the_server_mid_run_loses_no_submitted_annotation(tmp_path):
    candidates = make_candidates(tmp_path / "c.jsonl", 200, k=3)
    db = tmp_path / "crash.db"
    names = [f"rev{i}" for i in range(4)]
    server = ServerProcess(candidates, db, names, ["--overlap", "2"], log_dir=tmp_path)
    try:
        base_url = server.url
        assert base_url.startswith("http://127.0.0.1:")
        acknowledged: list[tuple[str, str, list]] = []
        failures: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def work(name: str, seed: int) -> None:
            client = ReviewerClient(base_url, server.tokens[name], timeout=10)
            rng = random.Random(seed)
            try:
                offer = client.next()
                for _ in range(500):  # bounded; the kill ends it long before
                    if stop.is_set() or offer.get("task") is None:
                        break
                    task = offer["task"]
                    ranking = [[card["label"]] for card in rng.sample(task["cards"], len(task["cards"]))]
                    response = client.rank(task["id"], ranking)
                    if response.status_code != 200:
                        break
                    with lock:
                        acknowledged.append((name, task["id"], ranking))
                    offer = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                failures.append(repr(exc))  # the server died under us: what was acknowledged before must be on disk
            finally:
                client.close()

        threads = [threading.Thread(target=work, args=(name, seed)) for seed, name in enumerate(names)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL mid-run: requests are in flight
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert len(acknowledged) >= 60, failures
    finally:
        server.stop()

    # reopen the database the dead server left (its last commits live in the WAL) and find every acknowledged answer
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = AnnotationStore(db, create=False)
    snapshot = store.snapshot()
    names_by_id = {reviewer["id"]: reviewer["name"] for reviewer in snapshot["reviewers"]}
    stored = {
        (names_by_id[a["reviewer_id"]], a["task_id"]): a for a in snapshot["annotations"] if a["undone_at"] is None
    }
    for name, task_id, label_ranking in acknowledged:
        answer = stored[(name, task_id)]
        labels = "ABC"
        expected = [[answer["shown_order"][labels.index(label)] for label in tier] for tier in label_ranking]
        assert answer["ranking"] == expected
    # at most the in-flight requests (one per reviewer) were stored without their reply arriving
    assert len(acknowledged) <= len(stored) <= len(acknowledged) + len(names)
    store.close()
