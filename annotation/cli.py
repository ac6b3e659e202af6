"""`rlhf annotate serve|add-reviewer|export|stats`: the reviewers' tool from the command line.

    rlhf annotate serve --tasks candidates.jsonl --db annotations.db --overlap 2 [--guidelines guide.md]
    rlhf annotate add-reviewer alice --db annotations.db          # prints alice's private link
    rlhf annotate export --db annotations.db --format rankings --out rankings.jsonl
    rlhf annotate stats --db annotations.db
    rlhf annotate add-app chat-frontend --db annotations.db       # prints the app's feedback API key once
    rlhf annotate reviewer-status alice restore --db annotations.db

Everything lives in the one SQLite file given by --db: tasks, reviewers with their tokens, the admin token,
the overlap and the default guidelines, and the project's quality-control and judgement settings (gold rate
and thresholds, minimum seconds per task, ratings, flags, rationale), each kept until changed. `serve` imports
--tasks (new ids are added, known ids must be unchanged), stores --overlap and --guidelines when given, and
prints the admin link and every reviewer's link; `add-reviewer` prints one reviewer's link (again, if they
exist; `--rotate` replaces their token and so revokes the old link). Links put the token in the URL fragment
(`#t=...`), which the browser never sends to the server or to other sites. The server binds 127.0.0.1 unless
--host says otherwise; to let others in, put it behind an HTTPS reverse proxy rather than exposing plain HTTP.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from annotation.store import AnnotationStore
from rlhf.errors import UserError

DEFAULT_DB = "annotations.db"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def reviewer_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/review#t={token}"


def admin_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/admin#t={token}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf annotate", description="The reviewers' web tool: rank model responses, export rankings."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="import tasks and run the web tool")
    serve.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database (created if missing; default {DEFAULT_DB})")
    serve.add_argument(
        "--tasks", help="candidates JSONL to import: {id, prompt, responses: [{id, text}], meta, guidelines?}"
    )
    serve.add_argument("--guidelines", help="markdown file shown to reviewers (a task's own 'guidelines' field wins)")
    serve.add_argument("--overlap", type=int, help="rankings wanted per task (stored in the db; default 1)")
    serve.add_argument(
        "--lease-minutes", type=float, help="minutes a shown task stays reserved for its reviewer (default 30)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port; the links show the real one)")
    serve.add_argument(
        "--reviewer", action="append", default=[], metavar="NAME", help="add this reviewer first (repeatable)"
    )
    serve.add_argument("--max-body-kb", type=int, default=64, help="largest request body accepted (KiB)")
    quality = serve.add_argument_group("quality control (stored in the db)")
    quality.add_argument(
        "--gold", help="gold items to import: candidates rows with their known ranking in 'gold' (or 'ranking')"
    )
    quality.add_argument(
        "--gold-rate", type=float, help="chance that a reviewer's next task is a gold item (0-1; default 0)"
    )
    quality.add_argument(
        "--gold-warn-below", type=float, help="warn a reviewer whose gold accuracy is below this (default 0.7)"
    )
    quality.add_argument(
        "--gold-block-below", type=float, help="block a reviewer whose gold accuracy is below this (default 0.5)"
    )
    quality.add_argument(
        "--gold-min-answers", type=int, help="gold answers needed before a reviewer can be blocked (default 3)"
    )
    quality.add_argument(
        "--min-seconds", type=float, help="a faster submission asks for confirmation and is flagged (default 0: off)"
    )
    judged = serve.add_argument_group("judgements besides the ranking (stored in the db)")
    judged.add_argument(
        "--ratings", action=argparse.BooleanOptionalAction, default=None, help="ask for a 1-7 rating of every response"
    )
    judged.add_argument(
        "--flags",
        help="comma-separated flags reviewers can set per response, "
        "e.g. 'fails instruction,made-up facts,harmful' ('' for none)",
    )
    judged.add_argument(
        "--rationale", choices=("optional", "required", "off"), help="the free-text rationale (default optional)"
    )

    add = sub.add_parser("add-reviewer", help="add a reviewer and print their private link")
    add.add_argument("name")
    add.add_argument("--db", default=DEFAULT_DB)
    add.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL, used in the printed link")
    add.add_argument(
        "--rotate", action="store_true", help="give an existing reviewer a new token (the old link stops working)"
    )

    export = sub.add_parser("export", help="write rankings, agreed pairs or everything as JSONL")
    export.add_argument("--db", default=DEFAULT_DB)
    export.add_argument("--format", required=True, choices=("rankings", "pairs", "raw"))
    export.add_argument("--out", required=True, help="output JSONL (written atomically)")
    export.add_argument(
        "--min-agreement",
        type=float,
        default=0.5,
        help="pairs: keep a pair only with more than this share of the votes",
    )
    export.add_argument(
        "--include-all-bad",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count rankings flagged all-bad (default: yes for rankings, no for pairs)",
    )

    app = sub.add_parser("add-app", help="register an application for the feedback API and print its key (shown once)")
    app.add_argument("name")
    app.add_argument("--db", default=DEFAULT_DB)
    app.add_argument(
        "--rate-per-minute", type=float, default=60.0, help="requests a minute allowed for this key (default 60)"
    )
    app.add_argument(
        "--rotate", action="store_true", help="give an existing application a new key (the old one stops working)"
    )

    status = sub.add_parser(
        "reviewer-status", help="restore a blocked reviewer, block one by hand, or return them to the gold rules"
    )
    status.add_argument("name")
    status.add_argument("action", choices=("restore", "block", "auto"))
    status.add_argument("--db", default=DEFAULT_DB)

    stats = sub.add_parser("stats", help="progress and agreement")
    stats.add_argument("--db", default=DEFAULT_DB)
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.add_argument(
        "--min-agreement", type=float, default=0.5, help="a pair with at most this share of votes is disputed"
    )
    return parser


def _open_existing(db: str) -> AnnotationStore:
    if not Path(db).is_file():
        raise UserError(
            f"annotation database not found: {db} (create it with `rlhf annotate serve --tasks ... --db {db}`)"
        )
    return AnnotationStore(db, create=False)


def _configure(store: AnnotationStore, args: argparse.Namespace) -> None:
    """Store the quality-control and judgement options that were given; the others keep their stored values."""
    from annotation.judgements import make_config

    if args.gold_rate is not None:
        store.set_gold_rate(args.gold_rate)
    if any(value is not None for value in (args.gold_warn_below, args.gold_block_below, args.gold_min_answers)):
        store.set_quality_rules(args.gold_warn_below, args.gold_block_below, args.gold_min_answers)
    if args.min_seconds is not None:
        store.set_min_seconds(args.min_seconds)
    if any(value is not None for value in (args.ratings, args.flags, args.rationale)):
        current = store.judgements
        store.set_judgements(
            make_config(
                ratings=current.ratings if args.ratings is None else args.ratings,
                flags=current.flags if args.flags is None else args.flags.split(","),
                rationale=args.rationale or current.rationale,
            )
        )
    if store.gold_rate > 0 and store.task_count(gold=True) == 0:
        print(
            "warning: --gold-rate is set but the database holds no gold items (pass --gold FILE, or a 'gold' field "
            "in --tasks)",
            file=sys.stderr,
            flush=True,
        )


def _serve(args: argparse.Namespace) -> int:
    from annotation.server import bind_socket, create_app, make_server
    from annotation.tasks import read_tasks

    if args.port < 0 or args.port > 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_body_kb < 1:
        raise UserError(f"--max-body-kb must be at least 1, got {args.max_body_kb}")
    if args.overlap is not None and args.overlap < 1:  # before any task is read or imported
        raise UserError(f"--overlap must be at least 1, got {args.overlap}")
    tasks = read_tasks(args.tasks) if args.tasks else None  # check the whole files before touching the db
    gold = read_tasks(args.gold, require_gold=True) if args.gold else None
    guidelines = None
    if args.guidelines:
        if not Path(args.guidelines).is_file():
            raise UserError(f"guidelines file not found: {args.guidelines}")
        guidelines = Path(args.guidelines).read_text(encoding="utf-8")
    store = AnnotationStore(args.db)
    if tasks is not None:
        result = store.import_tasks(tasks, source=args.tasks)
        print(f"imported {args.tasks}: {result.added} new task(s), {result.unchanged} already present", flush=True)
    if gold is not None:
        result = store.import_tasks(gold, source=args.gold)
        print(f"imported {args.gold}: {result.added} new gold item(s), {result.unchanged} already present", flush=True)
    _configure(store, args)
    if store.task_count(gold=False) == 0:
        raise UserError(f"{args.db} holds no tasks: pass --tasks candidates.jsonl")
    if args.overlap is not None:
        store.set_overlap(args.overlap)
    if args.lease_minutes is not None:
        store.set_lease_seconds(args.lease_minutes * 60)
    if guidelines is not None:
        store.set_default_guidelines(guidelines)
    for name in args.reviewer:
        store.add_reviewer(name)

    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    base_url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    if args.host not in LOOPBACK_HOSTS:
        print(
            f"warning: listening on {args.host}; the links below carry tokens over plain HTTP, "
            "so use this only behind an HTTPS reverse proxy or on a trusted network",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"{store.task_count(gold=False)} task(s) and {store.task_count(gold=True)} gold item(s) in {args.db}, "
        f"overlap {store.overlap}",
        flush=True,
    )
    print(f"admin: {admin_link(base_url, store.admin_token)}", flush=True)
    for reviewer in store.reviewers():
        print(f"reviewer {reviewer.name}: {reviewer_link(base_url, reviewer.token)}", flush=True)
    if not store.reviewers():
        print(f"no reviewers yet: rlhf annotate add-reviewer NAME --db {args.db} --url {base_url}", flush=True)
    print(f"serving on {base_url} (Ctrl+C to stop)", flush=True)
    make_server(create_app(store, max_body_bytes=args.max_body_kb * 1024), log_level="warning").run(sockets=[sock])
    store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "serve":
        return _serve(args)
    if args.command == "add-reviewer":
        store = AnnotationStore(args.db)
        reviewer, created = store.add_reviewer(args.name, rotate=args.rotate)
        state = "added" if created else ("new token for" if args.rotate else "existing")
        print(f"{state} reviewer {reviewer.name}: {reviewer_link(args.url, reviewer.token)}")
        return 0
    if args.command == "add-app":
        from annotation.feedback import add_app

        application, key = add_app(AnnotationStore(args.db), args.name, args.rate_per_minute, rotate=args.rotate)
        if key is None:
            print(
                f"application {application.name} exists (rate {application.rate_per_minute:g}/min); its key is not "
                "stored: "
                "use --rotate for a new one"
            )
        else:
            print(f"application {application.name} (rate {application.rate_per_minute:g}/min): key {key}")
            print("the key is shown only now: keep it in the application's secrets; it opens POST /api/feedback only")
        return 0
    if args.command == "reviewer-status":
        override = {"restore": "restored", "block": "blocked", "auto": None}[args.action]
        quality = _open_existing(args.db).set_quality_override(args.name, override)
        accuracy = "n/a" if quality.gold_accuracy is None else f"{quality.gold_accuracy:.0%}"
        print(f"reviewer {args.name}: {quality.status} (gold accuracy {accuracy} over {quality.gold_answers} item(s))")
        return 0
    if args.command == "export":
        from annotation.export import export

        count = export(
            _open_existing(args.db),
            args.format,
            args.out,
            min_agreement=args.min_agreement,
            include_all_bad=args.include_all_bad,
        )
        print(f"wrote {count} {args.format} row(s) to {args.out}")
        return 0
    if args.command == "stats":
        from annotation.stats import collect_stats, format_stats

        if not 0.0 <= args.min_agreement < 1.0:
            raise UserError(f"--min-agreement must be in [0, 1), got {args.min_agreement}")
        stats = collect_stats(_open_existing(args.db), min_agreement=args.min_agreement)
        print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else format_stats(stats))
        return 0
    raise AssertionError(args.command)
