"""Regenerate the documentation screenshot of the reviewer's page with headless Chromium.

    python -m annotation.screenshot docs/reviewer_page.png

Builds a throwaway database with one sample task, serves it on loopback, ranks two cards with the
keyboard (one tie) so the picture shows tiers, and saves a PNG. Uses the system Chromium
(`/usr/bin/chromium`, or RLHF_CHROMIUM); nothing is downloaded.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from annotation.server import create_app, serve_in_background
from annotation.store import AnnotationStore
from annotation.tasks import Task
from annotation.testing import launch_chromium

SAMPLE = Task(
    id="sky-17",
    prompt="Explain in two sentences why the sky is blue.",
    responses=[
        {"id": "r0", "text": "Sunlight is scattered by air molecules, and short (blue) wavelengths scatter far more than "
                             "long ones (Rayleigh scattering). So blue light reaches our eyes from every part of the sky."},
        {"id": "r1", "text": "Because it reflects the colour of the oceans."},
        {"id": "r2", "text": "Rayleigh scattering: air molecules scatter blue light more strongly than red.\nThat scattered blue light fills the sky."},
        {"id": "r3", "text": "The sky is blue. <script>alert('hi')</script> is shown as text, never run."},
    ],
)


def take(out: Path) -> Path:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as workdir:
        store = AnnotationStore(Path(workdir) / "demo.db")
        store.import_tasks([SAMPLE])
        token = store.add_reviewer("alice")[0].token
        with serve_in_background(create_app(store)) as url, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{url}/review#t={token}")
            page.wait_for_selector("#ranking .card")
            label_of = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('#ranking .card')]
                       .map(c => [c.querySelector('.response').textContent.slice(0, 12), c.dataset.label]))""")
            best = next(label for text, label in label_of.items() if text.startswith("Sunlight"))
            second = next(label for text, label in label_of.items() if text.startswith("Rayleigh"))
            page.locator(f'.card[data-label="{best}"]').focus()
            page.keyboard.press("1")
            page.locator(f'.card[data-label="{second}"]').focus()
            page.keyboard.press("2")
            page.keyboard.press("t")  # tie the two good answers
            page.fill("#rationale", "Both explain Rayleigh scattering correctly.")
            page.locator(f'.card[data-label="{second}"]').focus()
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
        store.close()
    return out


if __name__ == "__main__":
    print(take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reviewer_page.png")))
