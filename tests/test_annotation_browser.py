"""The reviewer's page in real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

Every test acts like a reviewer (keys, mouse, drags) and then checks what the database and the export
hold. The browser is the system Chromium: `playwright install` is never run.
"""

from __future__ import annotations

import os

import pytest

from annotation.export import export_rows
from annotation.judgements import make_config
from annotation.server import create_app, serve_in_background
from annotation.store import AnnotationStore
from annotation.tasks import Task, read_tasks
from annotation.testing import chromium_path, launch_chromium, make_candidates

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(chromium_path()),
        reason=f"Chromium not found at {chromium_path()} (apt-get install chromium, or set RLHF_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


class Tool:
    """A store with tasks, served on loopback; opens reviewers' pages."""

    def __init__(self, store: AnnotationStore, url: str, browser):
        self.store, self.url, self.browser = store, url, browser
        self.page_errors: list[str] = []

    def open(self, name: str, path: str = "/review", token: str | None = None):
        token = token or self.store.add_reviewer(name)[0].token
        page = self.browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.goto(f"{self.url}{path}#t={token}")
        if path == "/review":
            page.wait_for_selector("#ranking .card, #pair-a:visible, #done:visible")
        return page


@pytest.fixture()
def make_tool(tmp_path, browser):
    servers = []

    def make(tasks: list[Task] | None = None, num_tasks: int = 4, k: int = 4, overlap: int = 1, configure=None) -> Tool:
        store = AnnotationStore(tmp_path / f"db{len(servers)}.db")
        store.import_tasks(tasks or read_tasks(make_candidates(tmp_path / "c.jsonl", num_tasks, k=k)))
        store.set_overlap(overlap)
        if configure is not None:
            configure(store)  # project settings: gold items, thresholds, minimum time, judgements
        server = serve_in_background(create_app(store))
        servers.append((server, store))
        tool = Tool(store, server.__enter__(), browser)
        return tool

    yield make
    for server, store in servers:
        server.__exit__(None, None, None)
        store.close()


# -------------------------------------------------------------------------------------------------
# reading the page
# -------------------------------------------------------------------------------------------------


def label_of(page) -> dict[str, str]:
    """response id -> card label (the test texts read 'response r2 of task0')."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#ranking .card, #pair-cards .card')]
               .map(card => [card.querySelector('.response').textContent.split(' ')[1], card.dataset.label]))"""
    )


def shown_ids(page) -> list[str]:
    """Response ids in card order A, B, C... (the reviewer's shuffle)."""
    by_label = {label: response_id for response_id, label in label_of(page).items()}
    return [by_label[label] for label in sorted(by_label)]


def card_order(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#ranking .card')].map(card => card.dataset.label)")


def shown_task(page) -> str:
    return page.locator("#task-id").inner_text().lstrip("#")


def wait_for_task(page, task_id: str) -> None:
    page.wait_for_function("id => document.querySelector('#task-id').textContent === '#' + id", arg=task_id)


def focused_label(page) -> str | None:
    return page.evaluate(
        "() => document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.label : null"
    )


def live_answers(store: AnnotationStore) -> list[dict]:
    return [a for a in store.snapshot()["annotations"] if a["undone_at"] is None]


def keyboard_rank(page, desired_ids: list[str], labels: dict[str, str] | None = None) -> None:
    """Strict ranking with Tab and the arrow keys only: bubble each card up to its place."""
    labels = labels or label_of(page)
    assert focused_label(page) == card_order(page)[0]  # the page focuses the first card
    focus_index = 0
    for place, response_id in enumerate(desired_ids):
        target = card_order(page).index(labels[response_id])
        for _ in range(target - focus_index):
            page.keyboard.press("Tab")
        assert focused_label(page) == labels[response_id]
        for _ in range(target - place):
            page.keyboard.press("ArrowUp")
        focus_index = place
    assert card_order(page) == [labels[r] for r in desired_ids]


# -------------------------------------------------------------------------------------------------
# tests
# -------------------------------------------------------------------------------------------------


def test_rank_four_responses_with_the_keyboard_only(make_tool):
    tool = make_tool()
    page = tool.open("kim")
    task_id = shown_task(page)
    shown = shown_ids(page)
    desired = [shown[2], shown[0], shown[3], shown[1]]  # never the order as shown (that asks first)
    keyboard_rank(page, desired)
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=task_id)
    [answer] = live_answers(tool.store)
    assert (answer["task_id"], answer["ranking"], answer["unchanged_order"]) == (task_id, [[r] for r in desired], False)
    assert tool.page_errors == []


def test_rank_four_responses_by_dragging_with_the_mouse(make_tool):
    tool = make_tool()
    page = tool.open("max")
    task_id = shown_task(page)
    labels = label_of(page)
    shown = shown_ids(page)
    desired = [shown[3], shown[1], shown[0], shown[2]]  # never the order as shown
    for place, response_id in enumerate(desired):
        order = card_order(page)
        if order[place] == labels[response_id]:
            continue
        # drop on the upper half of the card now at this place: the dragged card goes just above it
        page.drag_and_drop(
            f'#ranking .card[data-label="{labels[response_id]}"]',
            f'#ranking .card[data-label="{order[place]}"]',
            target_position={"x": 40, "y": 6},
        )
    assert card_order(page) == [labels[r] for r in desired]
    page.click("#submit")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=task_id)
    [answer] = live_answers(tool.store)
    assert answer["ranking"] == [[r] for r in desired]
    assert tool.page_errors == []


def test_tie_all_bad_and_skip_and_the_export_holds_exactly_that(make_tool):
    tool = make_tool(num_tasks=4)
    page = tool.open("ana")
    done: list[str] = []

    # task 1: r1 first, r0 and r3 tied second, r2 last; number keys and T
    done.append(shown_task(page))
    labels = label_of(page)
    for place, response_id in ((1, "r1"), (2, "r0"), (3, "r3")):
        order = card_order(page)
        steps = order.index(labels[response_id]) - order.index(focused_label(page))
        for _ in range(steps):
            page.keyboard.press("Tab")
        page.keyboard.press(str(place))
    page.keyboard.press("t")  # r3 joins r0's tier
    assert page.locator("#ranking .tier.tied .card").count() == 2
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=done[-1])

    # task 2: all bad, without reordering (no preference among them); mouse
    done.append(shown_task(page))
    page.check("#all-bad")
    page.click("#submit")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=done[-1])

    # task 3: skip with a reason
    done.append(shown_task(page))
    page.click("#skip")
    page.fill("#skip-reason", "needs a chemist")
    page.click("#skip-confirm")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=done[-1])

    # task 4: all bad but ranked: the order is kept, with the flag and a rationale
    done.append(shown_task(page))
    last_label = card_order(page)[-1]  # moving the last card to the top always changes the order
    last_id = {label: response_id for response_id, label in label_of(page).items()}[last_label]
    page.locator(f'#ranking .card[data-label="{last_label}"]').focus()
    page.keyboard.press("1")
    page.check("#all-bad")
    page.fill("#rationale", "all wrong, the top one least so")
    page.click("#submit")
    page.wait_for_selector("#done:visible")
    assert page.locator("#progress-text").inner_text() == "3 ranked · 1 skipped · 0 left"

    tasks = {task.id: task for task in tool.store.snapshot()["tasks"]}
    shown = {a["task_id"]: a["shown_order"] for a in tool.store.snapshot()["assignments"]}
    row = lambda task_id, ranking, all_bad=False, **extra: {  # noqa: E731
        "id": task_id,
        "prompt": tasks[task_id].prompt,
        "responses": tasks[task_id].responses,
        "ranking": ranking,
        "annotator": "ana",
        "all_bad": all_bad,
        **extra,
        "source": "reviewer",
        "quality_weight": 1.0,
    }
    fourth_ranking = [[last_id]] + [[r] for r in shown[done[3]] if r != last_id]
    rankings = export_rows(tool.store, "rankings")
    assert all(0 <= ranking.pop("seconds") < 60 for ranking in rankings)  # time on task, measured by the server
    assert rankings == [
        row(done[0], [["r1"], ["r0", "r3"], ["r2"]]),
        row(done[1], [shown[done[1]]], all_bad=True),
        row(done[3], fourth_ranking, all_bad=True, rationale="all wrong, the top one least so"),
    ]
    raw_answers = [r for r in export_rows(tool.store, "raw") if r["type"] == "annotation"]
    assert [(a["task_id"], a["kind"], a["skip_reason"]) for a in raw_answers] == [
        (done[0], "ranking", None),
        (done[1], "ranking", None),
        (done[2], "skip", "needs a chemist"),
        (done[3], "ranking", None),
    ]
    # pairs come from task 1 only (all-bad rankings are left out); the r0 = r3 tie gives no pair
    pairs = {(p["chosen"].split()[1], p["rejected"].split()[1]) for p in export_rows(tool.store, "pairs")}
    assert pairs == {("r1", "r0"), ("r1", "r3"), ("r1", "r2"), ("r0", "r2"), ("r3", "r2")}
    assert tool.page_errors == []


def test_two_responses_get_three_big_buttons(make_tool):
    tool = make_tool(num_tasks=3, k=2)
    page = tool.open("lee")
    assert (
        page.locator("#pair-a").is_visible()
        and page.locator("#pair-tie").is_visible()
        and page.locator("#pair-b").is_visible()
    )
    assert not page.locator("#submit").is_visible() and not page.locator("#ranking").is_visible()
    chosen = []
    for how in ("click A", "key t", "click B"):
        task_id = shown_task(page)
        labels = label_of(page)
        response_of = {label: response_id for response_id, label in labels.items()}
        if how == "click A":
            page.click("#pair-a")
            chosen.append((task_id, [[response_of["A"]], [response_of["B"]]]))
        elif how == "key t":
            page.keyboard.press("t")
            chosen.append((task_id, [[response_of["A"], response_of["B"]]]))
        else:
            page.click("#pair-b")
            chosen.append((task_id, [[response_of["B"]], [response_of["A"]]]))
        if how != "click B":
            page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=task_id)
    page.wait_for_selector("#done:visible")
    assert [(a["task_id"], a["ranking"]) for a in live_answers(tool.store)] == chosen
    assert all(
        not a["unchanged_order"] or a["ranking"] == [[a["shown_order"][0]], [a["shown_order"][1]]]
        for a in live_answers(tool.store)
    )


def test_submitting_the_unchanged_order_asks_once(make_tool):
    tool = make_tool(num_tasks=2)
    page = tool.open("una")
    task_id = shown_task(page)
    page.keyboard.press("Enter")
    assert page.locator("#confirm").is_visible()
    assert "You have not changed the order (A > B > C > D)" in page.locator("#confirm-text").inner_text()
    assert live_answers(tool.store) == []  # nothing stored yet
    page.keyboard.press("Enter")  # asked once: the second Enter submits
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=task_id)
    [answer] = live_answers(tool.store)
    assert answer["unchanged_order"] is True and answer["ranking"] == [[r] for r in answer["shown_order"]]
    assert not page.locator("#confirm").is_visible()  # a new task asks again
    page.click("#submit")
    assert page.locator("#confirm").is_visible()
    page.click("#confirm-no")
    assert not page.locator("#confirm").is_visible() and len(live_answers(tool.store)) == 1


def test_undo_brings_back_the_last_answer_to_change_it(make_tool):
    tool = make_tool(num_tasks=3)
    page = tool.open("ulla")
    first_task = shown_task(page)
    assert page.locator("#undo").is_disabled()
    first_ranking = shown_ids(page)[::-1]
    keyboard_rank(page, first_ranking)
    page.fill("#rationale", "first thought")
    page.keyboard.press("Tab")  # leave the textarea: Enter there would be a newline
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=first_task)
    page.click("#undo")
    wait_for_task(page, first_task)
    labels = label_of(page)
    # the undone answer comes back pre-filled
    assert card_order(page) == [labels[r] for r in first_ranking]
    assert page.locator("#rationale").input_value() == "first thought"
    assert "Undone" in page.locator("#status").inner_text()
    page.locator(f'#ranking .card[data-label="{labels[first_ranking[-1]]}"]').focus()
    page.keyboard.press("1")
    page.fill("#rationale", "second thought")
    page.click("#submit")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=first_task)
    rows = export_rows(tool.store, "rankings")
    assert [(r["id"], r["ranking"], r["rationale"]) for r in rows] == [
        (first_task, [[r] for r in first_ranking[-1:] + first_ranking[:-1]], "second thought")
    ]
    raw = [r for r in export_rows(tool.store, "raw") if r["type"] == "annotation"]
    assert [(r["rationale"], r["undone_at"] is not None) for r in raw] == [
        ("first thought", True),
        ("second thought", False),
    ]


XSS_PROMPT = "Summarise: <script>window.__xss = 'prompt'</script> please"
XSS_RESPONSES = [
    "<img src=x onerror=\"window.__xss = 'img'\">",
    "<script>window.__xss = 'script'</script>",
    "<svg onload=\"window.__xss = 'svg'\"></svg> <a href=\"javascript:window.__xss='link'\">click</a>",
    "a plain, harmless answer",
]


def test_script_and_onerror_payloads_are_shown_as_text_and_run_nothing(make_tool):
    task = Task(
        id="xss",
        prompt=XSS_PROMPT,
        responses=[{"id": f"x{i}", "text": t} for i, t in enumerate(XSS_RESPONSES)],
        guidelines="**Careful** <img src=x onerror=\"window.__xss='guidelines'\">",
    )
    tool = make_tool(tasks=[task], overlap=2)
    hostile_name = "<img src=x onerror=window.__xss='name'>"
    page = tool.open(hostile_name)
    page.wait_for_timeout(300)  # give any injected handler (img onerror) time to fire
    assert page.evaluate("window.__xss") is None
    assert page.locator("#prompt").inner_text() == XSS_PROMPT
    shown_texts = page.locator("#ranking .response").all_inner_texts()
    assert sorted(shown_texts) == sorted(XSS_RESPONSES)
    assert page.locator("#reviewer-name").inner_text() == hostile_name
    # no element came from the payloads: no img/script/svg anywhere in the task or the guidelines
    assert page.locator("#task img, #task script, #task svg, #guidelines img").count() == 0
    assert "<img" in page.locator("#guidelines-body").inner_text()  # shown as text
    # rank and submit, then look at the admin page, which shows names and disputed texts
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    page.wait_for_selector("#done:visible")
    other = tool.open("second", path="/review")
    # the second reviewer reverses the first one's ranking, so every pair is disputed
    first_ranking = [tier[0] for tier in live_answers(tool.store)[0]["ranking"]]
    text_of = {response["id"]: response["text"] for response in task.responses}
    label_of_text = other.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#ranking .card')].map(c => "
        "[c.querySelector('.response').textContent, c.dataset.label]))"
    )
    keyboard_rank(other, first_ranking[::-1], labels={r: label_of_text[text_of[r]] for r in first_ranking})
    other.keyboard.press("Enter")
    if other.locator("#confirm").is_visible():  # the reversal happened to be this reviewer's shown order
        other.keyboard.press("Enter")
    other.wait_for_selector("#done:visible")
    admin = tool.open("", path="/admin", token=tool.store.admin_token)
    admin.wait_for_selector("#disputed tbody tr")
    admin.wait_for_timeout(300)
    assert admin.evaluate("window.__xss") is None and page.evaluate("window.__xss") is None
    assert hostile_name in admin.locator("#reviewers").inner_text()
    assert any(payload in admin.locator("#disputed").inner_text() for payload in XSS_RESPONSES[:3])
    assert admin.locator("#reviewers img, #disputed img, #disputed script, #disputed svg").count() == 0
    assert tool.page_errors == []


def test_admin_page_needs_the_admin_token(make_tool):
    tool = make_tool(num_tasks=1)
    reviewer_token = tool.store.add_reviewer("rita")[0].token
    admin = tool.open("", path="/admin", token=reviewer_token)
    admin.wait_for_function("() => document.querySelector('#status').textContent.length > 0")
    assert "admin token" in admin.locator("#status").inner_text()
    assert admin.locator("#reviewers tbody tr").count() == 0
    good = tool.open("", path="/admin", token=tool.store.admin_token)
    good.wait_for_selector("#reviewers tbody tr")
    assert "rita" in good.locator("#reviewers").inner_text()
    assert tool.page_errors == []


def test_conversations_are_shown_turn_by_turn_as_text(make_tool):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<img src=x onerror=\"window.__xss='chat'\"> hi?"},
    ]
    task = Task(
        id="chat",
        prompt=conversation,
        responses=[
            {"id": "a", "text": [{"role": "assistant", "content": "Hello <b>there</b>."}]},
            {"id": "b", "text": [{"role": "assistant", "content": "Hi."}]},
        ],
    )
    tool = make_tool(tasks=[task])
    page = tool.open("cora")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#prompt .turn .role").all_text_contents() == ["system", "user"]
    assert page.locator("#prompt .turn .content").all_text_contents() == [
        message["content"] for message in conversation
    ]
    assert "Hello <b>there</b>." in page.locator("#pair-cards").inner_text()
    assert page.locator("#prompt img, #pair-cards b").count() == 0
    page.click("#pair-b")
    page.wait_for_selector("#done:visible")
    [row] = export_rows(tool.store, "rankings")
    assert row["prompt"] == conversation and row["responses"] == task.responses
    assert tool.page_errors == []


# -------------------------------------------------------------------------------------------------
# quality control, ratings and flags, adjudication (issue 20)
# -------------------------------------------------------------------------------------------------

GOLD = Task(
    id="g-7",
    prompt="What is 3 + 4?",
    responses=[{"id": "right", "text": "response right is 7"}, {"id": "wrong", "text": "response wrong is 8"}],
    gold=[["right"], ["wrong"]],
)


def _gold_project(block_after: int):
    def configure(store: AnnotationStore) -> None:
        store.import_tasks([GOLD])
        store.set_gold_rate(1.0)  # the first new task is the gold item
        store.set_quality_rules(warn_below=0.7, block_below=0.5, min_answers=block_after)

    return configure


def _answer_gold_wrongly(page) -> None:
    assert shown_task(page) == "g-7" and page.locator("#pair-a").is_visible()
    assert "gold" not in page.locator("#task").inner_text().lower()  # served unmarked
    assert page.locator("#quality").is_hidden()
    wrong = label_of(page)["wrong"]
    page.click("#pair-a" if wrong == "A" else "#pair-b")


def test_a_wrong_answer_on_a_gold_item_raises_the_reviewers_warning(make_tool):
    tool = make_tool(num_tasks=2, configure=_gold_project(block_after=3))
    page = tool.open("gil")
    _answer_gold_wrongly(page)
    page.wait_for_selector("#quality:visible")
    assert "only 0% of your answers on checked items matched" in page.locator("#quality").inner_text()
    assert shown_task(page).startswith("task")  # warned, not blocked: work goes on
    quality = tool.store.quality(tool.store.reviewers()[0].id)
    assert (quality.status, quality.gold_answers, quality.gold_accuracy) == ("warned", 1, 0.0)
    page.reload()
    page.wait_for_selector("#quality:visible")  # the warning stays until the accuracy recovers
    assert tool.page_errors == []


def test_a_blocked_reviewer_gets_no_task(make_tool):
    tool = make_tool(num_tasks=2, configure=_gold_project(block_after=1))
    page = tool.open("bo")
    _answer_gold_wrongly(page)
    page.wait_for_selector("#blocked:visible")
    assert "Your account is paused" in page.locator("#blocked-text").inner_text()
    assert page.locator("#task").is_hidden() and page.locator("#done").is_hidden()
    page.reload()
    page.wait_for_selector("#blocked:visible")
    assert page.locator("#task").is_hidden()
    # the tasks are still there for others; the blocked reviewer's gold answer is not exported as a ranking
    other = tool.open("cy")
    assert shown_task(other) == "g-7"
    assert [row["source"] for row in export_rows(tool.store, "rankings")] == ["gold"]
    # an admin restores them from the admin page; their page offers a task again
    admin = tool.open("", path="/admin", token=tool.store.admin_token)
    admin.wait_for_selector('#reviewers tr[data-name="bo"] .status-blocked')
    admin.click('#reviewers tr[data-name="bo"] button:has-text("Restore")')
    admin.wait_for_selector('#reviewers tr[data-name="bo"] .status-warned')
    page.reload()
    page.wait_for_selector("#ranking .card")
    assert page.locator("#blocked").is_hidden() and page.locator("#quality").is_visible()
    assert tool.page_errors == []


def test_a_too_fast_submission_asks_for_confirmation(make_tool):
    tool = make_tool(num_tasks=2, configure=lambda store: store.set_min_seconds(60))
    page = tool.open("fay")
    task_id = shown_task(page)
    desired = shown_ids(page)[::-1]
    keyboard_rank(page, desired)
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm:visible")
    assert (
        "You spent only" in page.locator("#confirm-text").inner_text()
        and "at least 60 s" in page.locator("#confirm-text").inner_text()
    )
    assert live_answers(tool.store) == [] and shown_task(page) == task_id  # nothing stored, same task
    page.keyboard.press("Enter")  # asked once: the second Enter confirms
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=task_id)
    [answer] = live_answers(tool.store)
    assert answer["too_fast"] is True and answer["ranking"] == [[r] for r in desired]
    assert page.locator("#confirm").is_hidden()
    assert tool.page_errors == []


def test_ratings_and_flags_entered_by_keyboard(make_tool):
    def configure(store: AnnotationStore) -> None:
        store.set_judgements(make_config(ratings=True, flags=["made-up facts", "harmful"]))

    tool = make_tool(num_tasks=2, k=3, configure=configure)
    page = tool.open("kai")
    task_id = shown_task(page)
    labels = label_of(page)
    order = card_order(page)  # A, B, C as shown
    assert page.locator("#keys-rating").is_visible() and page.locator("#keys-flags").is_visible()
    # card A: rating 7; card B: rating 2 and flag 2 (harmful); card C: rating 1 and flags 1 and 2
    assert focused_label(page) == order[0]
    page.keyboard.press("Shift+Digit7")
    page.keyboard.press("Tab")
    page.keyboard.press("Shift+Digit2")
    page.keyboard.press("f")
    assert page.locator(f'.card[data-label="{order[1]}"] .flags.flag-mode').count() == 1
    page.keyboard.press("2")
    page.keyboard.press("Enter")  # C has no rating yet: refused on the page, nothing sent
    assert "card(s) C have no rating" in page.locator("#status").inner_text()
    assert live_answers(tool.store) == []
    page.keyboard.press("Tab")
    page.keyboard.press("Shift+Digit1")
    page.keyboard.press("f")
    page.keyboard.press("1")
    page.keyboard.press("f")
    page.keyboard.press("2")
    assert focused_label(page) == order[2]
    assert page.locator(f'.card[data-label="{order[2]}"] button.flag.on').count() == 2
    assert page.locator(f'.card[data-label="{order[0]}"] button.rate.selected').inner_text() == "7"
    page.keyboard.press("ArrowUp")  # C above B: the order is no longer the one shown
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.querySelector('#task-id').textContent !== '#' + id", arg=task_id)
    [answer] = live_answers(tool.store)
    response_of = {label: response_id for response_id, label in labels.items()}
    a, b, c = (response_of[label] for label in order)
    assert answer["ranking"] == [[a], [c], [b]]
    assert answer["ratings"] == {a: 7, b: 2, c: 1}
    assert answer["flags"] == {b: ["harmful"], c: ["made-up facts", "harmful"]}
    [row] = export_rows(tool.store, "rankings")
    assert {j["id"]: (j["rating"], j["flags"]) for j in row["judgements"]} == {
        a: (7, []),
        b: (2, ["harmful"]),
        c: (1, ["made-up facts", "harmful"]),
    }
    assert tool.page_errors == []


def test_adjudicating_a_disputed_task_in_the_admin_view(make_tool):
    tool = make_tool(num_tasks=2, k=3, overlap=2)
    for name, id_tiers in (("ann", [["r0"], ["r1"], ["r2"]]), ("ben", [["r2"], ["r1"], ["r0"]])):
        reviewer = tool.store.add_reviewer(name)[0]
        offer = tool.store.next_task(reviewer.id)
        label_of_id = {response_id: "ABC"[index] for index, response_id in enumerate(offer.shown_order)}
        tool.store.submit_ranking(reviewer.id, offer.task.id, [[label_of_id[r] for r in tier] for tier in id_tiers])
    admin = tool.open("", path="/admin", token=tool.store.admin_token)
    admin.wait_for_selector('#disputed-tasks tr[data-task="task0"]')
    assert admin.locator("#disputed-tasks tbody tr").count() == 1
    admin.click('#disputed-tasks tr[data-task="task0"] button')
    admin.wait_for_selector("#adjudicate:visible")
    assert admin.locator("#adjudicate-answers tbody tr").count() == 2
    assert "r0 > r1 > r2" in admin.locator("#adjudicate-answers").inner_text()
    # places by keyboard: r0 2nd, r1 1st, r2 2nd (tied with r0); the first place box has the focus
    for place in ("2", "1", "2"):
        admin.keyboard.type(place)
        admin.keyboard.press("Tab")
    admin.fill("#adjudicate-note", "r1 is the only correct answer")
    admin.click("#adjudicate-decide")
    admin.wait_for_selector('#adjudicated tr[data-task="task0"]')
    assert admin.locator("#adjudicate").is_hidden() and admin.locator("#disputed-tasks tbody tr").count() == 0
    assert "r1 > r0 = r2" in admin.locator("#adjudicated").inner_text()
    [row] = [r for r in export_rows(tool.store, "rankings") if r["id"] == "task0"]
    assert (row["ranking"], row["adjudicated"], row["overrides"], row["rationale"]) == (
        [["r1"], ["r0", "r2"]],
        True,
        ["ann", "ben"],
        "r1 is the only correct answer",
    )
    assert tool.page_errors == []
