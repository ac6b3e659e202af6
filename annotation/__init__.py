"""The reviewers' web tool: rank K responses per prompt in the browser, export rankings for `rlhf rm`.

    rlhf annotate serve --tasks candidates.jsonl --db annotations.db --overlap 2 --guidelines guide.md
    rlhf annotate add-reviewer alice --db annotations.db
    rlhf annotate add-app chat-frontend --db annotations.db
    rlhf annotate export --db annotations.db --format rankings --out rankings.jsonl
    rlhf annotate stats --db annotations.db

One SQLite file holds everything (store.py, schema.py). Guidelines are markdown: `--guidelines FILE` sets
the default, and a candidates row may carry its own top-level `guidelines` field, shown with that task
instead. The admin token and the reviewers' tokens live in the database; `serve` prints the admin link
and every reviewer's link, `add-reviewer` prints one. Modules: tasks (reading candidates and gold items),
schema (tables and migrations), store, ranking (labels, ranks), quality (gold accuracy, warn/block),
judgements (ratings, flags, rationale), adjudication, feedback (applications' end users), ratelimit,
agreement, export, stats, rendering (guidelines markdown), server (FastAPI), cli, static/ (the pages),
testing (helpers for tests and benchmarks), screenshot (docs/*.png). docs/annotation.md is the reference.
"""
