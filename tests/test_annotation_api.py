"""The HTTP API on a real uvicorn server on loopback: tokens, isolation, 4xx for bad requests, exports, CLI."""

from __future__ import annotations

import json

import httpx
import pytest

from annotation.export import export_rows
from annotation.server import create_app, serve_in_background
from annotation.store import AnnotationStore
from annotation.tasks import Task, read_tasks
from annotation.testing import ReviewerClient, make_candidates


@pytest.fixture()
def store(tmp_path):
    store = AnnotationStore(tmp_path / "annotations.db")
    store.import_tasks(read_tasks(make_candidates(tmp_path / "candidates.jsonl", 2, k=4)))
    yield store
    store.close()


@pytest.fixture()
def server(store):
    with serve_in_background(create_app(store, max_body_bytes=16384)) as url:
        yield url


def _label_tiers(offer: dict, id_tiers: list[list[str]]) -> list[list[str]]:
    """Response-id tiers -> card labels, reading which card shows which response (texts name their ids)."""
    label_of = {card["text"].split()[1]: card["label"] for card in offer["task"]["cards"]}
    return [[label_of[response_id] for response_id in tier] for tier in id_tiers]


def test_every_api_request_needs_the_right_token(store, server):
    alice, _ = store.add_reviewer("alice")
    cases = [
        ({}, 401, "missing token"),
        ({"Authorization": "Bearer not-a-token"}, 401, "unknown token"),
        ({"Authorization": alice.token}, 401, "missing token"),  # no "Bearer "
        ({"Authorization": f"Bearer {store.admin_token}"}, 403, "admin token"),
    ]
    for headers, status, message in cases:
        response = httpx.get(f"{server}/api/next", headers=headers)
        assert response.status_code == status and message in response.json()["error"]
    response = httpx.get(f"{server}/api/admin/stats", headers={"Authorization": f"Bearer {alice.token}"})
    assert response.status_code == 403 and "admin token" in response.json()["error"]
    response = httpx.post(f"{server}/api/undo", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401
    assert httpx.get(f"{server}/api/next", headers={"Authorization": f"Bearer {alice.token}"}).status_code == 200


def test_a_reviewer_cannot_read_or_change_another_reviewers_annotation(store, server):
    store.import_tasks(
        [Task(id="extra", prompt="p", responses=[{"id": f"r{j}", "text": f"response r{j}"} for j in range(4)])]
    )
    alice, _ = store.add_reviewer("alice")
    bob, _ = store.add_reviewer("bob")
    alice_client, bob_client = ReviewerClient(server, alice.token), ReviewerClient(server, bob.token)
    offer = alice_client.next()
    alice_task = offer["task"]["id"]
    assert alice_client.rank(alice_task, [["B"], ["A"], ["C"], ["D"]], rationale="secret-of-alice").status_code == 200
    assert alice_client.undo().status_code == 200  # alice's answer is now a pre-filled draft only she may see
    bob_offer = bob_client.next()
    assert bob_offer["task"]["id"] != alice_task  # overlap 1 and alice holds it
    assert "secret-of-alice" not in json.dumps(bob_offer)
    # bob can neither answer, skip nor undo alice's task
    response = bob_client.rank(alice_task, [["A"], ["B"], ["C"], ["D"]])
    assert response.status_code == 403 and "not been offered to you" in response.json()["error"]
    assert bob_client.skip(alice_task, "mine now").status_code == 403
    response = bob_client.undo()
    assert response.status_code == 409 and "nothing to undo" in response.json()["error"]
    # alice's draft is intact and still hers
    again = alice_client.next()
    assert again["task"]["id"] == alice_task and again["task"]["previous"]["rationale"] == "secret-of-alice"
    assert alice_client.rank(alice_task, [["A"], ["B"], ["C"], ["D"]]).status_code == 200
    answers = store.snapshot()["annotations"]
    assert [a["reviewer_id"] for a in answers] == [alice.id, alice.id]
    alice_client.close()
    bob_client.close()


def _chunks(total: int, size: int = 1024):
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_bad_requests_get_a_4xx_with_a_message_never_a_500(store, server):
    alice, _ = store.add_reviewer("alice")
    headers = {"Authorization": f"Bearer {alice.token}", "Content-Type": "application/json"}
    task_id = httpx.get(f"{server}/api/next", headers=headers).json()["task"]["id"]
    ranking_url = f"{server}/api/tasks/{task_id}/ranking"
    cases = [
        ("POST", ranking_url, b"{not json", 422, "not valid JSON"),
        ("POST", ranking_url, b"", 422, "body"),
        ("POST", ranking_url, b"null", 422, "body"),
        ("POST", ranking_url, b"\xff\xfe\x00", 400, "parsing the body"),
        ("POST", ranking_url, json.dumps({"ranking": "ABCD"}).encode(), 422, "field 'ranking'"),
        ("POST", ranking_url, json.dumps({"ranking": [["A"], ["B"], ["C"]]}).encode(), 422, "leaves out card(s) D"),
        (
            "POST",
            ranking_url,
            json.dumps({"ranking": [["A"], ["B"], ["C"], ["D"]], "all_bad": "yes"}).encode(),
            422,
            "all_bad",
        ),
        (
            "POST",
            ranking_url,
            json.dumps({"ranking": [["A"], ["B"], ["C"], ["D"]], "admin": True}).encode(),
            422,
            "field 'admin'",
        ),
        (
            "POST",
            ranking_url,
            json.dumps({"ranking": [["A"], ["B"], ["C"], ["D"]], "rationale": "x" * 5001}).encode(),
            422,
            "rationale",
        ),
        ("POST", ranking_url, json.dumps({"ranking": [[{"$gt": ""}]]}).encode(), 422, "ranking"),
        ("POST", ranking_url, b"[" * 2000 + b"]" * 2000, 400, "parsing the body"),  # RecursionError in json
        ("POST", f"{server}/api/tasks/{task_id}/skip", json.dumps({"reason": ""}).encode(), 422, "reason"),
        ("POST", f"{server}/api/tasks/no-such-task/ranking", json.dumps({"ranking": [["A"]]}).encode(), 404, "no task"),
        ("POST", f"{server}/api/tasks/%00%2F..%2F/ranking", json.dumps({"ranking": [["A"]]}).encode(), 404, None),
        ("POST", ranking_url, b" " * 20000, 413, "larger than 16384 bytes"),
        ("GET", f"{server}/api/admin/export?format=csv", None, 403, "admin"),
        ("DELETE", f"{server}/api/undo", None, 405, None),
        ("GET", f"{server}/api/nothing-here", None, 404, None),
    ]
    for method, url, body, status, message in cases:
        response = httpx.request(method, url, content=body, headers=headers)
        assert response.status_code == status, (url, body[:40] if body else body, response.text)
        assert "error" in response.json()
        if message:
            assert message in response.json()["error"], response.text
    # a body sent in chunks without Content-Length is capped too
    response = httpx.post(ranking_url, content=_chunks(40_000), headers=headers)
    assert response.status_code == 413
    admin = {"Authorization": f"Bearer {store.admin_token}"}
    response = httpx.get(f"{server}/api/admin/export?format=csv", headers=admin)
    assert response.status_code == 422 and "format" in response.json()["error"]
    response = httpx.get(f"{server}/api/admin/stats?min_agreement=2", headers=admin)
    assert response.status_code == 422
    # after all that the server still works and stored nothing
    assert store.snapshot()["annotations"] == []
    assert httpx.get(f"{server}/api/next", headers=headers).status_code == 200


def test_pages_send_a_strict_content_security_policy_and_hold_no_data(store, server):
    alice, _ = store.add_reviewer("alice")
    for path in ("/review", "/admin", "/"):
        response = httpx.get(server + path)
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert alice.token not in response.text and store.admin_token not in response.text
    assert "innerHTML" not in (httpx.get(f"{server}/static/admin.js").text)


def test_guidelines_are_markdown_without_raw_html(tmp_path):
    store = AnnotationStore(tmp_path / "g.db")
    own = Task(
        id="g1",
        prompt="p",
        responses=[{"id": "a", "text": "x"}, {"id": "b", "text": "y"}],
        guidelines="**Be strict.** <script>window.bad=1</script> [x](javascript:alert(1))",
    )
    store.import_tasks([own])
    alice, _ = store.add_reviewer("alice")
    with serve_in_background(create_app(store)) as url:
        html = ReviewerClient(url, alice.token).next()["guidelines_html"]
    assert "<strong>Be strict.</strong>" in html
    assert "&lt;script&gt;" in html and "<script" not in html and 'href="javascript' not in html
    store.close()


def _scenario(store: AnnotationStore, url: str) -> None:
    """Four reviewers rank task0, one flags all-bad; alice undoes and redoes task1; erin skips task0.

    Every answer's reply carries the reviewer's next task, which leases it to them, as the page shows it.
    """
    store.set_overlap(5)
    clients = {
        name: ReviewerClient(url, store.add_reviewer(name)[0].token)
        for name in ("alice", "bob", "carol", "dave", "erin")
    }
    rankings = {
        "alice": [["r0"], ["r1"], ["r2"], ["r3"]],
        "bob": [["r0"], ["r1"], ["r3"], ["r2"]],
        "carol": [["r1"], ["r0"], ["r2", "r3"]],
        "dave": [["r3"], ["r2"], ["r1"], ["r0"]],
    }
    for name, id_tiers in rankings.items():
        offer = clients[name].next()
        assert offer["task"]["id"] == "task0"
        response = clients[name].rank("task0", _label_tiers(offer, id_tiers), all_bad=(name == "dave"))
        assert response.status_code == 200, response.text
    offer = clients["alice"].next()
    assert offer["task"]["id"] == "task1"
    assert clients["alice"].rank("task1", _label_tiers(offer, [["r3"], ["r2"], ["r1"], ["r0"]])).status_code == 200
    assert clients["alice"].undo().json()["undone_task"] == "task1"
    offer = clients["alice"].next()
    response = clients["alice"].rank(
        "task1", _label_tiers(offer, [["r2"], ["r0", "r1"], ["r3"]]), rationale="r2 is right"
    )
    assert response.status_code == 200
    offer = clients["erin"].next()
    assert offer["task"]["id"] == "task0"
    assert clients["erin"].skip("task0", "not my field").status_code == 200
    for client in clients.values():
        client.close()


def test_exports_contain_exactly_what_was_done(store, server, tmp_path):
    _scenario(store, server)
    tasks = {task.id: task for task in store.snapshot()["tasks"]}

    def expected_row(task_id, annotator, ranking, all_bad=False, **extra):
        task = tasks[task_id]
        return {
            "id": task_id,
            "prompt": task.prompt,
            "responses": task.responses,
            "ranking": ranking,
            "annotator": annotator,
            "all_bad": all_bad,
            **extra,
            "source": "reviewer",
            "quality_weight": 1.0,
        }

    rankings = export_rows(store, "rankings")
    # time on task is measured by the server: present on every reviewer row, small here (the test answers at once)
    assert all(0 <= row.pop("seconds") < 30 for row in rankings)
    assert rankings == [
        expected_row("task0", "alice", [["r0"], ["r1"], ["r2"], ["r3"]]),
        expected_row("task0", "bob", [["r0"], ["r1"], ["r3"], ["r2"]]),
        expected_row("task0", "carol", [["r1"], ["r0"], ["r2", "r3"]]),
        expected_row("task0", "dave", [["r3"], ["r2"], ["r1"], ["r0"]], all_bad=True),
        expected_row("task1", "alice", [["r2"], ["r0", "r1"], ["r3"]], rationale="r2 is right"),
    ]

    # pairs: dave's all-bad vote is left out; on task0 (alice, bob, carol):
    #   r0>r1 2 of 3 kept; r0>r2, r0>r3, r1>r2, r1>r3 3 of 3 kept; r2 vs r3: 1, 1 and a tie -> disputed
    # task1 (alice only): r2 beats r0, r1, r3; r0 and r1 beat r3; the r0 = r1 tie gives no pair
    def text(task_id, response_id):
        return f"response {response_id} of {task_id}"

    expected_pairs = {
        ("task0", "r0", "r1"),
        ("task0", "r0", "r2"),
        ("task0", "r0", "r3"),
        ("task0", "r1", "r2"),
        ("task0", "r1", "r3"),
        ("task1", "r2", "r0"),
        ("task1", "r2", "r1"),
        ("task1", "r2", "r3"),
        ("task1", "r0", "r3"),
        ("task1", "r1", "r3"),
    }
    pairs = export_rows(store, "pairs")
    expected = sorted((group, text(group, winner), text(group, loser)) for group, winner, loser in expected_pairs)
    assert sorted((p["group"], p["chosen"], p["rejected"]) for p in pairs) == expected
    assert all(p["prompt"] == tasks[p["group"]].prompt for p in pairs)
    # counting dave's all-bad vote turns r0 vs r1 into a 2-2 split
    with_all_bad = export_rows(store, "pairs", include_all_bad=True)
    assert ("task0", text("task0", "r0"), text("task0", "r1")) not in {
        (p["group"], p["chosen"], p["rejected"]) for p in with_all_bad
    }

    raw = export_rows(store, "raw")
    answers = [row for row in raw if row["type"] == "annotation"]
    assert [(a["annotator"], a["task_id"], a["kind"], a["undone_at"] is not None) for a in answers] == [
        ("alice", "task0", "ranking", False),
        ("bob", "task0", "ranking", False),
        ("carol", "task0", "ranking", False),
        ("dave", "task0", "ranking", False),
        ("alice", "task1", "ranking", True),
        ("alice", "task1", "ranking", False),
        ("erin", "task0", "skip", False),
    ]
    assert answers[4]["ranking"] == [["r3"], ["r2"], ["r1"], ["r0"]] and answers[6]["skip_reason"] == "not my field"
    # shown: task0 to all five; task1 to each of them after their task0 answer (the reply's next task)
    assert sum(row["type"] == "task" for row in raw) == 2 and sum(row["type"] == "assignment" for row in raw) == 10
    assert all("token" not in json.dumps(row) for row in raw if row["type"] in ("reviewer", "settings"))
    assert store.admin_token not in json.dumps(raw)

    # the admin API serves the same export, and the CLI writes it to a file
    response = httpx.get(
        f"{server}/api/admin/export?format=rankings", headers={"Authorization": f"Bearer {store.admin_token}"}
    )
    assert [json.loads(line) for line in response.text.splitlines()] == export_rows(store, "rankings")
    from rlhf.app.cli import main

    out = tmp_path / "pairs.jsonl"
    assert main(["annotate", "export", "--db", str(store.path), "--format", "pairs", "--out", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == pairs


def test_admin_stats_report_agreement_and_disputed_pairs(store, server):
    _scenario(store, server)
    stats = httpx.get(f"{server}/api/admin/stats", headers={"Authorization": f"Bearer {store.admin_token}"}).json()
    assert stats["tasks"] == {"total": 2, "complete": 0, "started": 2}  # overlap 5: task0 has 4 rankings
    assert stats["annotations"] == {"rankings": 5, "skips": 1, "undone": 1}
    by_name = {r["name"]: r for r in stats["reviewers"]}
    assert (
        by_name["alice"]["ranked"],
        by_name["alice"]["undone"],
        by_name["erin"]["skipped"],
        by_name["dave"]["all_bad"],
    ) == (2, 1, 1, 1)
    # leave-one-out on task0 among alice, bob, carol (dave's all-bad ranking is left out):
    # alice: r0r1 others F,S none; r0r2 r0r3 r1r2 r1r3 agree; r2r3 others S,tie none -> 4/4
    # carol: r0r1 others F,F, carol S -> miss; 4 unanimous agree; r2r3 others F,S none -> 4/5
    assert (by_name["alice"]["agreement_with_majority"], by_name["alice"]["compared_pairs"]) == (1.0, 4)
    assert (by_name["carol"]["agreement_with_majority"], by_name["carol"]["compared_pairs"]) == (0.8, 5)
    assert by_name["erin"]["agreement_with_majority"] is None
    assert [(p["group"], sorted([p["chosen"], p["rejected"]])) for p in stats["disputed_pairs"]] == [
        ("task0", ["response r2 of task0", "response r3 of task0"])
    ]
    assert -1.0 <= stats["krippendorff_alpha_ordinal"] <= 1.0


def test_cli_add_reviewer_stats_and_user_errors(tmp_path, capsys):
    from rlhf.app.cli import main

    db = tmp_path / "cli.db"
    assert main(["annotate", "add-reviewer", "zoe", "--db", str(db), "--url", "http://127.0.0.1:9999"]) == 0
    link = capsys.readouterr().out.strip().split()[-1]
    token = link.split("#t=")[1]
    assert (
        link.startswith("http://127.0.0.1:9999/review#t=")
        and AnnotationStore(db).reviewer_for_token(token).name == "zoe"
    )
    assert main(["annotate", "stats", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reviewers"][0]["name"] == "zoe"
    assert (
        main(
            [
                "annotate",
                "export",
                "--db",
                str(tmp_path / "missing.db"),
                "--format",
                "raw",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "annotation database not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "responses": []}\n')
    assert main(["annotate", "serve", "--tasks", str(bad), "--db", str(db), "--port", "0"]) == 2
    assert "bad.jsonl: row 1: field 'responses'" in capsys.readouterr().err
