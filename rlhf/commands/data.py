"""`rlhf data ...`: make the built-in task, validate files, convert public datasets, simulate reviewers, make pairs.

    rlhf data make-task --out data/tiny --seed 0
    rlhf data validate data/tiny/sft_train.jsonl --format sft
    rlhf data convert --from hh Anthropic/hh-rlhf:train hh_pairs.jsonl
    rlhf data rank --candidates candidates.jsonl --out rankings.jsonl --reviewers 3 --noise 0.1
    rlhf data pairs --rankings rankings.jsonl --out pairs.jsonl --min-agreement 0.5

Each subcommand validates its input completely before writing anything, writes outputs atomically, and
prints a one-line JSON summary (rows in, rows out, what was skipped and why) so scripts can read it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rlhf.data import CHECKERS, detect_format, load_rows, majority_vote_pairs, read_rows, validate_rows
from rlhf.errors import DataError, UserError
from rlhf.files import write_jsonl_atomic
from rlhf.plugins import load_judge


def _print_json(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, ensure_ascii=False))


def cmd_make_task(args: argparse.Namespace) -> int:
    from rlhf.tasks import task_generator

    _print_json(task_generator(args.task)(args.out, seed=args.seed, task_file=args.task_file))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    rows = read_rows(args.file)
    if not rows:
        raise DataError(f"{args.file}: no rows")
    kind = detect_format(rows[0][1]) if args.format == "auto" else args.format
    kept, report = validate_rows(kind, rows, args.file, skip_bad_rows=args.skip_bad_rows)
    summary: dict[str, Any] = {"file": args.file, "format": kind, "rows": report.total, "valid": report.kept}
    if report.skipped:
        summary.update(skipped=report.skipped, reasons=dict(report.reasons), examples=report.examples)
    _print_json(summary)
    return 0 if not report.skipped else 1


def cmd_convert(args: argparse.Namespace) -> int:
    from rlhf.commands.converters import OUTPUT_KIND, convert_rows

    rows = read_rows(args.input)
    out, report = convert_rows(
        args.source_format,
        rows,
        source=args.input,
        strict=args.strict,
        score_field=args.score_field,
        min_score_ratio=args.min_score_ratio,
        log_ratio_margin=args.log_ratio_margin,
        lang=args.lang,
    )
    if not out:
        raise DataError(f"{args.input}: nothing to convert ({report.summary()})")
    write_jsonl_atomic(args.output, out)
    summary = {
        "from": args.source_format,
        "input": args.input,
        "output": args.output,
        "format": OUTPUT_KIND[args.source_format],
        "rows_in": len(rows),
        "rows_out": len(out),
        "skipped": report.skipped,
    }
    if report.skipped:
        summary.update(reasons=dict(report.reasons))
    _print_json(summary)
    return 0


def check_rank_args(args: argparse.Namespace) -> None:
    """Bounds of the reviewers' knobs, checked before any file is read."""
    if args.reviewers < 1:
        raise UserError(f"--reviewers {args.reviewers}: expected at least 1 reviewer per prompt")
    if not 0 <= args.noise <= 1:
        raise UserError(f"--noise {args.noise}: expected a probability in [0, 1]")
    if not args.temperature > 0:
        raise UserError(f"--temperature {args.temperature}: expected a positive number")


def cmd_rank(args: argparse.Namespace) -> int:
    from rlhf.tasks.reviewers import pairwise_gold_agreement, simulate_rankings

    check_rank_args(args)
    candidates, _ = load_rows(args.candidates, "candidates")
    judge = load_judge(args.judge, "--judge")
    if judge is None:
        raise UserError("rlhf data rank needs a judge: --judge NAME, package.module:function or file.py:function")
    rankings = simulate_rankings(
        candidates,
        temperature=args.temperature,
        noise=args.noise,
        reviewers_per_prompt=args.reviewers,
        seed=args.seed,
        score_fn=judge,
    )
    if not rankings:
        raise DataError(f"{args.candidates}: every candidate's responses are identical; nothing to rank")
    write_jsonl_atomic(args.out, rankings)
    agreement = pairwise_gold_agreement(rankings, score_fn=judge)
    _print_json(
        {
            "candidates": len(candidates),
            "rankings": len(rankings),
            "skipped_identical": len(candidates) * args.reviewers - len(rankings),
            "careless": sum(1 for row in rankings if row["meta"]["careless"]),
            # None when no pair has a gold order (JSON has no NaN)
            "pairwise_gold_agreement": None
            if agreement["ordered_pairs"] == 0
            else round(agreement["pairwise_agreement"], 4),
            "out": args.out,
        }
    )
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    if not 0 <= args.min_agreement < 1:  # a majority share is at most 1 and "exceeds" is strict
        raise UserError(f"--min-agreement {args.min_agreement}: expected a share in [0, 1)")
    rankings, _ = load_rows(args.rankings, "rankings")
    kept, disputed = majority_vote_pairs(rankings, min_agreement=args.min_agreement)
    if not kept:
        raise DataError(f"{args.rankings}: no pair reaches the agreement threshold {args.min_agreement}")
    disputed_out = args.disputed_out or str(Path(args.out).with_suffix("")) + ".disputed.jsonl"
    write_jsonl_atomic(args.out, kept)
    write_jsonl_atomic(disputed_out, disputed)
    _print_json(
        {
            "rankings": len(rankings),
            "pairs": len(kept),
            "disputed": len(disputed),
            "out": args.out,
            "disputed_out": disputed_out,
        }
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf data", description="Data utilities: the built-in task, validation, conversion, simulated reviewers."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make-task", help="write a built-in task's files (deterministic)")
    make.add_argument("--task", default="tiny", help="the built-in task: tiny | lists (see rlhf/tasks/)")
    make.add_argument("--out", required=True, help="output directory, e.g. data/tiny")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--task-file", default=None, help="task definition (default: the task's own task.json)")
    make.set_defaults(handler=cmd_make_task)

    validate = sub.add_parser("validate", help="check every row of a data file; exit 1 if rows were skipped")
    validate.add_argument("file", help=".jsonl/.json/.parquet, a save_to_disk directory or a hub name")
    validate.add_argument("--format", default="auto", choices=["auto", *CHECKERS])
    validate.add_argument(
        "--skip-bad-rows", action="store_true", help="report every bad row instead of stopping at the first"
    )
    validate.set_defaults(handler=cmd_validate)

    convert = sub.add_parser("convert", help="convert a public preference dataset to pairs or rankings")
    convert.add_argument("--from", dest="source_format", required=True, choices=["hh", "oasst", "ultrafeedback", "shp"])
    convert.add_argument("input", help="input file/directory or hub name (owner/name[:split])")
    convert.add_argument("output", help="output .jsonl")
    convert.add_argument("--strict", action="store_true", help="stop at the first row that cannot be converted")
    convert.add_argument(
        "--score-field", default="overall_score", help="ultrafeedback: overall_score | fine-grained_score | mean_rating"
    )
    convert.add_argument(
        "--min-score-ratio",
        type=float,
        default=None,
        help="shp: keep pairs whose score ratio is at least this (e.g. 2)",
    )
    convert.add_argument("--log-ratio-margin", action="store_true", help="shp: set margin = log(score ratio)")
    convert.add_argument("--lang", default=None, help="oasst: keep prompts in this language only (e.g. en)")
    convert.set_defaults(handler=cmd_convert)

    rank = sub.add_parser(
        "rank", help="simulated reviewers: candidates -> rankings by any judge (Plackett-Luce over its scores)"
    )
    rank.add_argument("--candidates", required=True)
    rank.add_argument("--out", required=True)
    rank.add_argument("--reviewers", type=int, default=1, help="reviewers per prompt")
    rank.add_argument("--noise", type=float, default=None, help="probability a ranking is a random order (default 0.1)")
    rank.add_argument(
        "--temperature", type=float, default=None, help="Plackett-Luce temperature on gold scores (default 0.5)"
    )
    rank.add_argument("--seed", type=int, default=0)
    rank.add_argument(
        "--judge",
        default="tiny",
        help="the reviewers' true preference: a built-in task name, package.module:function or file.py:function",
    )
    rank.set_defaults(handler=cmd_rank)

    pairs = sub.add_parser("pairs", help="rankings -> pairs (majority vote across reviewers of one prompt)")
    pairs.add_argument("--rankings", required=True)
    pairs.add_argument("--out", required=True)
    pairs.add_argument("--disputed-out", default=None, help="pairs below the threshold (default: <out>.disputed.jsonl)")
    pairs.add_argument(
        "--min-agreement", type=float, default=0.5, help="keep a pair when its majority share exceeds this"
    )
    pairs.set_defaults(handler=cmd_pairs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "rank":
        from rlhf.tasks.reviewers import DEFAULT_NOISE, DEFAULT_TEMPERATURE

        args.noise = DEFAULT_NOISE if args.noise is None else args.noise
        args.temperature = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
    return args.handler(args)
