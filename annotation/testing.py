"""Helpers shared by the annotation tests and benchmarks/annotation_concurrency.py (no test code here).

`make_candidates` writes a small candidates file; `ReviewerClient` is one reviewer driving the HTTP API
the way the page does (fetch a task, submit a ranking, read the next task from the answer).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import httpx


def make_candidates(path: str | Path, num_tasks: int, k: int = 4, prefix: str = "task") -> Path:
    """Write `num_tasks` candidates rows with `k` responses each; response texts name their ids."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as handle:
        for task_index in range(num_tasks):
            row = {
                "id": f"{prefix}{task_index}",
                "prompt": f"Prompt number {task_index}: say something useful.",
                "responses": [{"id": f"r{j}", "text": f"response r{j} of {prefix}{task_index}"} for j in range(k)],
                "meta": {"index": task_index},
            }
            handle.write(json.dumps(row) + "\n")
    return path


class ReviewerClient:
    """One reviewer on the JSON API; records the latency of every request."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0):
        self.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        self.latencies: list[float] = []

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        start = time.perf_counter()
        response = self.client.request(method, path, **kwargs)
        self.latencies.append(time.perf_counter() - start)
        return response

    def next(self) -> dict:
        response = self._request("GET", "/api/next")
        response.raise_for_status()
        return response.json()

    def rank(
        self, task_id: str, ranking: list[list[str]], all_bad: bool = False, rationale: str | None = None
    ) -> httpx.Response:
        return self._request(
            "POST",
            f"/api/tasks/{task_id}/ranking",
            json={"ranking": ranking, "all_bad": all_bad, "rationale": rationale},
        )

    def skip(self, task_id: str, reason: str) -> httpx.Response:
        return self._request("POST", f"/api/tasks/{task_id}/skip", json={"reason": reason})

    def undo(self) -> httpx.Response:
        return self._request("POST", "/api/undo")

    def close(self) -> None:
        self.client.close()


def random_label_ranking(labels: list[str], rng: random.Random) -> list[list[str]]:
    """A random strict ranking of the card labels (what a reviewer might submit)."""
    order = labels[:]
    rng.shuffle(order)
    return [[label] for label in order]


def annotate_many(
    client: ReviewerClient, count: int, rng: random.Random, max_requests: int | None = None
) -> list[tuple[str, list[list[str]]]]:
    """Submit up to `count` rankings as fast as possible; returns (task id, label ranking) of each acknowledged one.

    Bounded: stops after `max_requests` submissions (default 3 * count) or when no task is left.
    """
    acknowledged: list[tuple[str, list[list[str]]]] = []
    offer = client.next()
    attempts = 0
    limit = max_requests if max_requests is not None else 3 * count
    while len(acknowledged) < count and offer.get("task") is not None and attempts < limit:
        attempts += 1
        task = offer["task"]
        ranking = random_label_ranking([card["label"] for card in task["cards"]], rng)
        response = client.rank(task["id"], ranking)
        if response.status_code != 200:
            raise RuntimeError(f"submission of {task['id']} failed: HTTP {response.status_code} {response.text}")
        acknowledged.append((task["id"], ranking))
        offer = response.json()
    return acknowledged


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str:
    """The system Chromium (Debian's `chromium` package); RLHF_CHROMIUM overrides. Never a downloaded build."""
    import os

    return os.environ.get("RLHF_CHROMIUM", "/usr/bin/chromium")


def launch_chromium(playwright: Any):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


class ServerProcess:
    """`rlhf annotate serve` in a child process on a free loopback port, with its reviewers' tokens.

    Used where the server must be a real separate process: to kill it with SIGKILL, or to measure it
    without the clients sharing its interpreter.
    """

    def __init__(
        self,
        tasks: str | Path,
        db: str | Path,
        reviewers: list[str],
        extra_args: list[str] = (),
        log_dir: str | Path | None = None,
    ):
        import os
        import subprocess
        import sys
        import tempfile
        import threading

        command = [
            sys.executable,
            "-m",
            "rlhf",
            "annotate",
            "serve",
            "--tasks",
            str(tasks),
            "--db",
            str(db),
            "--port",
            "0",
            *extra_args,
        ]
        for name in reviewers:
            command += ["--reviewer", name]
        repo = Path(__file__).resolve().parents[1]
        env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.stderr_path = Path(log_dir or tempfile.mkdtemp()) / "server.err"
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=repo, env=env)
        self.lines: list[str] = []
        # a thread drains stdout so waiting for a line never blocks on the pipe
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()
        try:
            self.tokens = {name: self._wait_for(f"reviewer {name}: ", 60).split("#t=", 1)[1] for name in reviewers}
            self.url = self._wait_for("serving on ", 30).split()[2]
        except BaseException:
            self.stop()
            raise

    def _wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line.strip()
            if self.proc.poll() is not None and not any(line.startswith(prefix) for line in self.lines):
                break
            time.sleep(0.02)
        raise RuntimeError(
            f"the server never printed {prefix!r}; output: {''.join(self.lines)}; errors: "
            f"{self.stderr_path.read_text()}"
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed or checkpointed."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except Exception:  # noqa: BLE001 - a stuck server is killed
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
