"""End users' feedback from applications: keys, refusals, validation, the rate limit, concurrency, export,
and the reviewer/admin HTTP API additions (too-fast confirmation, adjudication, restoring a reviewer)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from annotation.export import export_rows
from annotation.feedback import add_app
from annotation.ratelimit import RateLimiter
from annotation.server import create_app, serve_in_background
from annotation.store import AnnotationStore
from annotation.tasks import Task, read_tasks
from annotation.testing import ReviewerClient, make_candidates

CHOICE = {"prompt": "Name a prime.", "responses": [{"id": "a", "text": "4"}, {"id": "b", "text": "7"}], "choice": "b"}


@pytest.fixture()
def store(tmp_path):
    store = AnnotationStore(tmp_path / "feedback.db")
    store.import_tasks(read_tasks(make_candidates(tmp_path / "c.jsonl", 2, k=3)))
    yield store
    store.close()


@pytest.fixture()
def server(store):
    with serve_in_background(create_app(store, max_body_bytes=16384)) as url:
        yield url


def _post(url: str, key: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{url}/api/feedback",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        **kwargs,
    )


def test_feedback_with_a_valid_key_is_stored_and_exported_as_rankings(store, server):
    _, key = add_app(store, "chat", rate_per_minute=100)
    response = _post(server, key, CHOICE | {"id": "evt-1", "user": "u-42", "meta": {"page": "home"}})
    assert response.status_code == 201 and response.json() == {"ok": True, "feedback_id": 1, "duplicate": False}
    # a retry of the same event is not stored twice
    retry = _post(server, key, CHOICE | {"id": "evt-1", "user": "u-42", "meta": {"page": "home"}})
    assert retry.status_code == 200 and retry.json() == {"ok": True, "feedback_id": 1, "duplicate": True}
    conversation = [{"role": "user", "content": "Hi?"}]
    three = {
        "prompt": conversation,
        "responses": [
            {"id": 1, "text": [{"role": "assistant", "content": "Hello."}]},
            {"id": 2, "text": [{"role": "assistant", "content": "Go away."}]},
            {"id": 3, "text": [{"role": "assistant", "content": "Hey."}]},
        ],
        "choice": 3,
    }
    assert _post(server, key, three).status_code == 201
    # thumbs on single responses of one prompt: "7" up twice, "4" down, "9" up and down (no opinion)
    for text, thumb in (("7", "up"), ("4", "down"), ("7", "up"), ("9", "up"), ("9", "down")):
        assert (
            _post(
                server, key, {"prompt": "Name a prime.", "responses": [{"id": "x", "text": text}], "thumb": thumb}
            ).status_code
            == 201
        )
    assert (
        _post(
            server, key, {"prompt": "Only praise.", "responses": [{"id": "x", "text": "ok"}], "thumb": "up"}
        ).status_code
        == 201
    )
    rows = [row for row in export_rows(store, "rankings") if row["source"] == "app"]
    assert rows == [
        {
            "id": "app:chat:1",
            "prompt": "Name a prime.",
            "responses": CHOICE["responses"],
            "ranking": [["b"], ["a"]],
            "annotator": "app:chat",
            "all_bad": False,
            "source": "app",
            "app": "chat",
            "user": "u-42",
        },
        {
            "id": "app:chat:2",
            "prompt": conversation,
            "responses": [{"id": str(r["id"]), "text": r["text"]} for r in three["responses"]],
            "ranking": [["3"], ["1", "2"]],
            "annotator": "app:chat",
            "all_bad": False,
            "source": "app",
            "app": "chat",
        },
        {
            "id": "app:chat:thumbs:3",
            "prompt": "Name a prime.",
            "responses": [{"id": "t0", "text": "7"}, {"id": "t1", "text": "4"}],
            "ranking": [["t0"], ["t1"]],
            "annotator": "app:chat",
            "all_bad": False,
            "source": "app",
            "app": "chat",
            "thumbs": True,
        },
    ]
    raw = [row for row in export_rows(store, "raw") if row["type"] == "feedback"]
    assert len(raw) == 8 and raw[0]["client_id"] == "evt-1" and raw[0]["meta"] == {"page": "home"}
    assert key not in json.dumps(export_rows(store, "raw"))
    stats = httpx.get(f"{server}/api/admin/stats", headers={"Authorization": f"Bearer {store.admin_token}"}).json()
    assert stats["feedback"] == {"apps": 1, "choices": 2, "thumbs_up": 4, "thumbs_down": 2}


def test_feedback_refuses_wrong_keys_and_reviewer_or_admin_tokens(store, server):
    _, key = add_app(store, "chat")
    alice, _ = store.add_reviewer("alice")
    cases = [
        ({}, 401, "missing token"),
        ({"Authorization": "Bearer rlhf_app_not-a-real-key"}, 401, "unknown application key"),
        ({"Authorization": f"Bearer {key}x"}, 401, "unknown application key"),
        ({"Authorization": f"Bearer {alice.token}"}, 403, "reviewer and admin tokens cannot send feedback"),
        ({"Authorization": f"Bearer {store.admin_token}"}, 403, "reviewer and admin tokens cannot send feedback"),
    ]
    for headers, status, message in cases:
        response = httpx.post(f"{server}/api/feedback", json=CHOICE, headers=headers)
        assert response.status_code == status and message in response.json()["error"], response.text
    # and an application key opens nothing else
    response = httpx.get(f"{server}/api/next", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403 and "application key" in response.json()["error"]
    assert httpx.get(f"{server}/api/admin/stats", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    assert store.snapshot()["feedback"] == []
    # a rotated key replaces the old one
    _, new_key = add_app(store, "chat", rotate=True)
    assert _post(server, key, CHOICE).status_code == 401 and _post(server, new_key, CHOICE).status_code == 201


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 3000 + b"]" * 3000, "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({"responses": CHOICE["responses"], "choice": "a"}, "field 'prompt': Field required"),
        ({**CHOICE, "thumb": "up"}, "exactly one of 'choice'"),
        ({"prompt": "p", "responses": CHOICE["responses"]}, "exactly one of 'choice'"),
        ({**CHOICE, "choice": "c"}, "field 'choice': 'c' is not one of the response ids (a, b)"),
        ({**CHOICE, "thumb": "up", "choice": None}, "field 'responses': a thumb rates exactly one response, got 2"),
        (
            {"prompt": "p", "responses": [{"id": "a", "text": "x"}], "choice": "a"},
            "a choice needs two or more responses",
        ),
        ({**CHOICE, "thumb": "sideways", "choice": None}, "field 'thumb'"),
        ({**CHOICE, "admin": True}, "field 'admin': Extra inputs are not permitted"),
        ({**CHOICE, "prompt": 7}, "field 'prompt'"),
        ({**CHOICE, "prompt": ""}, "field 'prompt'"),
        (
            {**CHOICE, "responses": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
            "field 'responses[1].id': duplicate",
        ),
        ({**CHOICE, "responses": [{"id": "a", "text": "x"}, {"id": "b"}]}, "field 'responses.1.text': Field required"),
        ({**CHOICE, "responses": []}, "field 'responses'"),
        ({**CHOICE, "user": "u" * 129}, "field 'user'"),
        ({**CHOICE, "meta": [1]}, "field 'meta'"),
        ({**CHOICE, "choice": True}, "field 'choice'"),
    ],
)
def test_malformed_feedback_gets_a_422_naming_the_field(store, server, body, message):
    _, key = add_app(store, "chat", rate_per_minute=1000)
    response = _post(server, key, body)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"], response.text
    assert store.snapshot()["feedback"] == []


def test_a_burst_over_the_rate_limit_gets_429_and_stores_only_what_was_allowed(store, server):
    _, key = add_app(store, "small", rate_per_minute=5)
    _, other = add_app(store, "other", rate_per_minute=5)
    statuses = [_post(server, key, CHOICE).status_code for _ in range(8)]
    assert statuses == [201] * 5 + [429] * 3
    refused = _post(server, key, CHOICE)
    assert (
        refused.status_code == 429
        and "rate limit of 5 requests a minute exceeded for application 'small'" in refused.json()["error"]
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 13  # one token every 12 s
    # junk from a limited key is refused before its body is even read; other keys have their own bucket
    assert _post(server, key, b"{not json").status_code == 429
    assert _post(server, other, CHOICE).status_code == 201
    assert len(store.snapshot()["feedback"]) == 6


def test_rate_limiter_refills_one_token_per_interval():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.allow(1, 2)[0] for _ in range(3)] == [True, True, False]  # a burst of 2 (one minute's worth)
    allowed, wait = limiter.allow(1, 2)
    assert not allowed and wait == pytest.approx(30.0)  # 2 a minute: a token every 30 s
    now[0] = 29.0
    assert not limiter.allow(1, 2)[0]
    now[0] = 30.5
    assert limiter.allow(1, 2)[0] and not limiter.allow(1, 2)[0]


def test_eight_concurrent_writers_lose_no_feedback(store, server):
    writers, per_writer = 8, 40
    keys = [add_app(store, f"app{i}", rate_per_minute=10_000)[1] for i in range(writers)]
    acknowledged: list[tuple[int, str]] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(writers)

    def work(index: int) -> None:
        with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {keys[index]}"}, timeout=30) as client:
            start.wait(timeout=30)
            for number in range(per_writer):
                body = {
                    "prompt": f"p{index}-{number}",
                    "responses": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}],
                    "choice": "a",
                    "id": f"{index}-{number}",
                }
                response = client.post("/api/feedback", json=body)
                if response.status_code != 201:
                    errors.append(f"{response.status_code} {response.text}")
                    return
                with lock:
                    acknowledged.append((index, body["id"]))

    began = time.perf_counter()
    threads = [threading.Thread(target=work, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.perf_counter() - began
    assert errors == [] and len(acknowledged) == writers * per_writer
    stored = store.snapshot()["feedback"]
    assert sorted(item["client_id"] for item in stored) == sorted(client_id for _, client_id in acknowledged)
    assert len([row for row in export_rows(store, "rankings") if row["source"] == "app"]) == writers * per_writer
    print(
        f"{writers * per_writer} feedback posts from {writers} writers in {elapsed:.2f} s "
        f"({writers * per_writer / elapsed:.0f}/s)"
    )


# -------------------------------------------------------------------------------------------------
# the reviewer and admin API additions
# -------------------------------------------------------------------------------------------------


def test_too_fast_submission_is_409_until_confirmed_then_flagged(store, server):
    store.set_min_seconds(30)
    alice, _ = store.add_reviewer("alice")
    client = ReviewerClient(server, alice.token)
    offer = client.next()
    assert offer["min_seconds"] == 30.0
    url = f"/api/tasks/{offer['task']['id']}/ranking"
    response = client.client.post(url, json={"ranking": [["A"], ["B"], ["C"]]})
    assert response.status_code == 409
    data = response.json()
    assert (
        data["confirm"] == "too_fast"
        and data["min_seconds"] == 30.0
        and 0 <= data["seconds"] < 30
        and "at least 30 s" in data["error"]
    )
    assert (
        client.client.post(url, json={"ranking": [["A"], ["B"], ["C"]], "confirm_too_fast": "yes"}).status_code == 422
    )
    assert client.client.post(url, json={"ranking": [["A"], ["B"], ["C"]], "confirm_too_fast": True}).status_code == 200
    [answer] = store.snapshot()["annotations"]
    assert answer["too_fast"] is True
    client.close()


def test_reviewer_api_reports_quality_and_blocks(store, server):
    store.import_tasks(
        [
            Task(
                id="gold",
                prompt="2+2?",
                responses=[{"id": "right", "text": "4"}, {"id": "wrong", "text": "5"}],
                gold=[["right"], ["wrong"]],
            )
        ]
    )
    store.set_gold_rate(1.0)
    store.set_quality_rules(warn_below=0.7, block_below=0.5, min_answers=1)
    alice, _ = store.add_reviewer("alice")
    client = ReviewerClient(server, alice.token)
    offer = client.next()
    assert offer["task"]["id"] == "gold" and "gold" not in json.dumps(offer["task"]).replace(
        '"id": "gold"', ""
    )  # unmarked
    assert offer["quality"] == {"status": "ok", "gold_accuracy": None, "message": None}
    wrong_label = next(card["label"] for card in offer["task"]["cards"] if card["text"] == "5")
    right_label = next(card["label"] for card in offer["task"]["cards"] if card["text"] == "4")
    reply = client.rank("gold", [[wrong_label], [right_label]]).json()
    assert reply["task"] is None and reply["quality"]["status"] == "blocked" and "paused" in reply["quality"]["message"]
    admin = {"Authorization": f"Bearer {store.admin_token}"}
    response = httpx.post(f"{server}/api/admin/reviewers/alice/quality", json={"override": "restored"}, headers=admin)
    assert response.status_code == 200 and response.json()["status"] == "warned"
    assert client.next()["task"] is not None
    assert (
        httpx.post(f"{server}/api/admin/reviewers/nobody/quality", json={"override": None}, headers=admin).status_code
        == 404
    )
    response = httpx.post(f"{server}/api/admin/reviewers/alice/quality", json={"override": "forgiven"}, headers=admin)
    assert response.status_code == 422 and "override" in response.json()["error"]
    client.close()


def test_admin_adjudication_api(store, server):
    store.set_overlap(2)
    clients = [ReviewerClient(server, store.add_reviewer(name)[0].token) for name in ("ann", "ben")]
    for client, reverse in zip(clients, (False, True)):
        offer = client.next()
        labels = [
            card["label"] for card in sorted(offer["task"]["cards"], key=lambda card: card["text"], reverse=reverse)
        ]
        assert client.rank(offer["task"]["id"], [[label] for label in labels]).status_code == 200
    admin = {"Authorization": f"Bearer {store.admin_token}"}
    stats = httpx.get(f"{server}/api/admin/stats", headers=admin).json()
    assert [t["task_id"] for t in stats["disputed_tasks"]] == ["task0"]
    detail = httpx.get(f"{server}/api/admin/tasks/task0", headers=admin).json()
    assert sorted(a["annotator"] for a in detail["answers"]) == ["ann", "ben"] and [
        r["id"] for r in detail["responses"]
    ] == ["r0", "r1", "r2"]
    url = f"{server}/api/admin/tasks/task0/adjudication"
    bad = [
        ({"decision": "ranking", "ranking": [["r0"], ["r1"]]}, "r2 not ranked"),
        ({"decision": "maybe"}, "field 'decision'"),
        ({"decision": "discard", "extra": 1}, "field 'extra'"),
    ]
    for body, message in bad:
        response = httpx.post(url, json=body, headers=admin)
        assert response.status_code == 422 and message in response.json()["error"], response.text
    assert (
        httpx.post(
            url,
            json={"decision": "discard"},
            headers={"Authorization": f"Bearer {clients[0].client.headers['Authorization'][7:]}"},
        ).status_code
        == 403
    )
    response = httpx.post(
        url, json={"decision": "ranking", "ranking": [["r1"], ["r0"], ["r2"]], "adjudicator": "lead"}, headers=admin
    )
    assert response.status_code == 200 and response.json()["ranking"] == [["r1"], ["r0"], ["r2"]]
    [row] = [r for r in export_rows(store, "rankings") if r["id"] == "task0"]
    assert (row["annotator"], row["adjudicated"], row["overrides"]) == ("lead", True, ["ann", "ben"])
    assert httpx.delete(url, headers=admin).status_code == 200
    assert httpx.delete(url, headers=admin).status_code == 404
    assert httpx.get(f"{server}/api/admin/tasks/nope", headers=admin).status_code == 404
    for client in clients:
        client.close()


def test_cli_add_app_prints_a_working_key_once(store, server, capsys):
    from rlhf.app.cli import main

    assert main(["annotate", "add-app", "shop", "--db", str(store.path), "--rate-per-minute", "30"]) == 0
    printed = capsys.readouterr().out
    key = printed.split("key ", 1)[1].split()[0]
    assert key.startswith("rlhf_app_") and _post(server, key, CHOICE).status_code == 201
    assert main(["annotate", "add-app", "shop", "--db", str(store.path)]) == 0
    assert "its key is not stored" in capsys.readouterr().out
    assert main(["annotate", "reviewer-status", "nobody", "restore", "--db", str(store.path)]) != 0
    assert "no reviewer 'nobody'" in capsys.readouterr().err
    store.add_reviewer("rae")
    assert main(["annotate", "reviewer-status", "rae", "block", "--db", str(store.path)]) == 0
    assert "reviewer rae: blocked (gold accuracy n/a over 0 item(s))" in capsys.readouterr().out
