"""Concurrent reviewers against the annotation server: throughput, latency, and whether anything is lost.

    python benchmarks/annotation_concurrency.py --reviewers 8 --per-reviewer 50

The server runs as its own process (`rlhf annotate serve` on a free loopback port), as in real use, so
the clients' threads do not share its interpreter. Each reviewer thread fetches a task, submits a random
ranking, and takes the next task from the reply, as the page does. Afterwards the database and the
`rankings` export are counted against the answers the clients saw acknowledged. Latencies are of the
ranking submissions (each one also leases and returns the next task). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotation.export import export_rows  # noqa: E402
from annotation.store import AnnotationStore  # noqa: E402
from annotation.testing import ReviewerClient, ServerProcess, annotate_many, make_candidates  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviewers", type=int, default=8)
    parser.add_argument("--per-reviewer", type=int, default=50)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--k", type=int, default=4, help="responses per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="annotation_bench_"))
    needed = args.reviewers * args.per_reviewer
    num_tasks = -(-needed // args.overlap) + args.reviewers  # enough slots for everyone, plus slack
    tasks = make_candidates(workdir / "candidates.jsonl", num_tasks, k=args.k)
    db = workdir / "bench.db"
    names = [f"reviewer{i}" for i in range(args.reviewers)]
    acknowledged: dict[str, list] = {}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    with ServerProcess(tasks, db, names, ["--overlap", str(args.overlap)], log_dir=workdir) as server:
        barrier = threading.Barrier(args.reviewers + 1)

        def work(name: str, seed: int) -> None:
            client = ReviewerClient(server.url, server.tokens[name])
            try:
                barrier.wait(timeout=60)
                done = annotate_many(client, args.per_reviewer, random.Random(seed))
                with lock:
                    acknowledged[name] = done
                    latencies.extend(client.latencies[1:])  # the first request is the initial GET
            except Exception as exc:  # noqa: BLE001 - counted and printed
                errors.append(f"{name}: {exc!r}")
            finally:
                client.close()

        threads = [threading.Thread(target=work, args=(name, args.seed + i)) for i, name in enumerate(names)]
        for thread in threads:
            thread.start()
        barrier.wait(timeout=60)
        start = time.perf_counter()
        for thread in threads:
            thread.join(timeout=600)
        wall = time.perf_counter() - start

    acknowledged_pairs = {(name, task_id) for name, done in acknowledged.items() for task_id, _ in done}
    with sqlite3.connect(db) as conn:
        in_db = conn.execute(
            "SELECT count(*) FROM annotations WHERE kind = 'ranking' AND undone_at IS NULL"
        ).fetchone()[0]
    store = AnnotationStore(db, create=False)
    exported = {(row["annotator"], row["id"]) for row in export_rows(store, "rankings")}
    store.close()
    result = {
        "reviewers": args.reviewers,
        "per_reviewer": args.per_reviewer,
        "overlap": args.overlap,
        "responses_per_task": args.k,
        "acknowledged": len(acknowledged_pairs),
        "in_database": in_db,
        "in_export": len(exported),
        "lost": len(acknowledged_pairs - exported),
        "errors": errors,
        "wall_s": round(wall, 3),
        "annotations_per_s": round(len(acknowledged_pairs) / wall, 1) if wall else None,
        "submit_latency_ms": {
            "p50": round(1000 * percentile(latencies, 0.50), 2),
            "p95": round(1000 * percentile(latencies, 0.95), 2),
            "max": round(1000 * max(latencies), 2),
            "mean": round(1000 * statistics.fmean(latencies), 2),
        }
        if latencies
        else None,
        "sqlite": "WAL, synchronous=FULL (fsync per acknowledged answer)",
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
