"""Regenerate the documentation screenshots of the reviewer's page and the admin page with headless Chromium.

    python -m annotation.screenshot docs        # writes docs/reviewer_page.png and docs/admin_page.png

Builds throwaway databases, serves them on loopback and saves PNGs:
- the reviewer's page of a project with 1-7 ratings and flags: two cards ranked and tied with the
  keyboard, ratings and a flag entered with the keyboard, a rationale, and the gold-accuracy warning;
- the admin page of a small project: reviewers with their status, median time, gold accuracy and
  agreement (one warned, one blocked), alpha over time, disputed tasks, and a task being adjudicated.
Uses the system Chromium (`/usr/bin/chromium`, or RLHF_CHROMIUM); nothing is downloaded.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

from annotation.judgements import make_config
from annotation.server import create_app, serve_in_background
from annotation.store import AnnotationStore
from annotation.tasks import Task
from annotation.testing import launch_chromium

SAMPLE = Task(
    id="sky-17",
    prompt="Explain in two sentences why the sky is blue.",
    responses=[
        {
            "id": "r0",
            "text": "Sunlight is scattered by air molecules, and short (blue) wavelengths scatter far more than "
            "long ones (Rayleigh scattering). So blue light reaches our eyes from every part of the sky.",
        },
        {"id": "r1", "text": "Because it reflects the colour of the oceans."},
        {
            "id": "r2",
            "text": "Rayleigh scattering: air molecules scatter blue light more strongly than red.\n"
            "That scattered blue light fills the sky.",
        },
        {"id": "r3", "text": "The sky is blue. <script>alert('hi')</script> is shown as text, never run."},
    ],
)
FLAGS = ["fails instruction", "made-up facts", "inappropriate", "harmful"]
GOLD = Task(
    id="gold-1",
    prompt="What is 12 x 12?",
    responses=[{"id": "a", "text": "144"}, {"id": "b", "text": "124"}, {"id": "c", "text": "12 x 12 = 144."}],
    gold=[["c"], ["a"], ["b"]],
)
GOLD_2 = Task(
    id="gold-2",
    prompt="Which city is the capital of France?",
    responses=[{"id": "a", "text": "Paris."}, {"id": "b", "text": "Lyon."}],
    gold=[["a"], ["b"]],
)


def _labels(offer, id_tiers: list[list[str]]) -> list[list[str]]:
    label_of = {response_id: "ABCDEFGH"[index] for index, response_id in enumerate(offer.shown_order)}
    return [[label_of[response_id] for response_id in tier] for tier in id_tiers]


def take_reviewer_page(out: Path, browser) -> Path:
    with tempfile.TemporaryDirectory() as workdir:
        store = AnnotationStore(Path(workdir) / "demo.db")
        store.import_tasks([GOLD, SAMPLE])
        store.set_judgements(make_config(ratings=True, flags=FLAGS))
        store.set_quality_rules(warn_below=0.7, block_below=0.4, min_answers=3)
        alice = store.add_reviewer("alice")[0]
        # alice's first (gold) answer was half wrong, so the page shows the warning
        store.set_gold_rate(1.0)
        offer = store.next_task(alice.id, now=1000.0)
        store.submit_ranking(
            alice.id,
            offer.task.id,
            _labels(offer, [["b"], ["a"], ["c"]]),
            now=1030.0,
            ratings={label: 4 for label in "ABC"},
        )
        store.set_gold_rate(0.0)
        with serve_in_background(create_app(store)) as url:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{url}/review#t={alice.token}")
            page.wait_for_selector("#ranking .card")
            label_of = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('#ranking .card')]
                       .map(c => [c.querySelector('.response').textContent.slice(0, 12), c.dataset.label]))"""
            )
            best = next(label for text, label in label_of.items() if text.startswith("Sunlight"))
            second = next(label for text, label in label_of.items() if text.startswith("Rayleigh"))
            wrong = next(label for text, label in label_of.items() if text.startswith("Because"))
            page.locator(f'.card[data-label="{best}"]').focus()
            page.keyboard.press("1")
            page.keyboard.press("Shift+Digit7")
            page.locator(f'.card[data-label="{second}"]').focus()
            page.keyboard.press("2")
            page.keyboard.press("t")  # tie the two good answers
            page.keyboard.press("Shift+Digit6")
            page.locator(f'.card[data-label="{wrong}"]').focus()
            page.keyboard.press("Shift+Digit2")
            page.keyboard.press("f")
            page.keyboard.press("2")  # made-up facts
            page.fill("#rationale", "Both explain Rayleigh scattering correctly; the ocean one is a myth.")
            page.locator(f'.card[data-label="{second}"]').focus()
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            page.close()
        store.close()
    return out


def _admin_demo(store: AnnotationStore) -> None:
    """Five reviewers over twelve tasks (overlap 2), two gold items, a careless reviewer (blocked), disputes and
    app feedback."""
    from annotation.adjudication import decide
    from annotation.feedback import add_app, add_feedback

    rng = random.Random(7)
    tasks = [
        Task(
            id=f"q{i:02d}",
            prompt=f"Question {i}: summarise the paragraph.",
            responses=[{"id": f"r{j}", "text": f"Summary {j} of question {i}."} for j in range(4)],
        )
        for i in range(12)
    ]
    store.import_tasks(tasks + [GOLD, GOLD_2])
    store.set_overlap(2)
    store.set_min_seconds(8)
    store.set_judgements(make_config(ratings=True, flags=FLAGS))
    store.set_quality_rules(warn_below=0.7, block_below=0.4, min_answers=2)
    truth = [["r0"], ["r1"], ["r2"], ["r3"]]
    now = 1_767_000_000.0
    plan = {"alice": (0.1, 40), "bob": (0.3, 55), "carol": (0.4, 35), "dan": (0.9, 6), "erin": (0.3, 70)}
    reviewers = {name: store.add_reviewer(name)[0] for name in plan}
    for round_index in range(12):
        for name, (noise, seconds) in plan.items():
            store.set_gold_rate(1.0 if round_index in (1, 3) else 0.0)
            offer = store.next_task(reviewers[name].id, now=now, rng=rng)
            if offer is None:
                continue
            order = [tier[0] for tier in (offer.task.gold or truth)]
            if name == "dan" and offer.task.gold:
                order.reverse()  # the careless reviewer gets the checked items wrong
            elif rng.random() < noise:
                rng.shuffle(order)
            spent = max(2.0, rng.gauss(seconds, seconds / 4))
            label_tiers = _labels(offer, [[r] for r in order])
            ratings = {tier[0]: max(1, 7 - 2 * place) for place, tier in enumerate(label_tiers)}
            flags = {label_tiers[-1][0]: ["made-up facts"]} if name == "carol" else None
            store.submit_ranking(
                reviewers[name].id,
                offer.task.id,
                label_tiers,
                now=now + spent,
                ratings=ratings,
                flags=flags,
                confirm_too_fast=True,
            )
            now += spent + 5
        now += 3600
    decide(store, "q05", "ranking", truth, adjudicator="lead", note="r0 is the only faithful summary")
    store.set_gold_rate(0.1)  # the project's setting from now on (the demo forced gold items in two rounds)
    shop, _ = add_app(store, "chat-frontend")
    for index in range(6):
        add_feedback(
            store,
            shop,
            {
                "prompt": f"User question {index}",
                "responses": [{"id": "a", "text": "Short answer."}, {"id": "b", "text": "Long answer."}],
                "choice": "a" if index % 3 else "b",
                "thumb": None,
                "client_id": None,
                "user_ref": f"user-{index}",
                "meta": {},
            },
        )


def take_admin_page(out: Path, browser) -> Path:
    with tempfile.TemporaryDirectory() as workdir:
        store = AnnotationStore(Path(workdir) / "admin.db")
        _admin_demo(store)
        with serve_in_background(create_app(store)) as url:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/admin#t={store.admin_token}")
            page.wait_for_selector("#reviewers tbody tr")
            if page.locator("#disputed-tasks tbody tr button").count():
                page.locator("#disputed-tasks tbody tr button").first.click()
                page.wait_for_selector("#adjudicate:visible")
                for index, place in enumerate(
                    ("1", "2", "2", "3")[: page.locator("#adjudicate-responses input").count()]
                ):
                    page.locator("#adjudicate-responses input").nth(index).fill(place)
                page.fill("#adjudicate-note", "r0 is faithful; r1 and r2 are equally vague")
            page.evaluate("window.scrollTo(0, 0)")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            page.close()
        store.close()
    return out


def take(out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            return [
                take_reviewer_page(out_dir / "reviewer_page.png", browser),
                take_admin_page(out_dir / "admin_page.png", browser),
            ]
        finally:
            browser.close()


if __name__ == "__main__":
    for path in take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(path)
