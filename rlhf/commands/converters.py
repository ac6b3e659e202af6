"""Converters from public preference datasets to this project's formats.

    rlhf data convert --from hh Anthropic/hh-rlhf:train data/hh_pairs.jsonl

- `hh`: Anthropic HH-RLHF transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ..." in `chosen`/`rejected`)
  -> conversational pairs {"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}, TRL's
  layout; the two transcripts must share every turn but the last.
- `oasst`: OpenAssistant message trees (the flat message rows of the HF oasst1/oasst2 datasets, or the
  nested `*.trees.jsonl` export) -> rankings: every prompter message with at least two ranked assistant
  replies gives one ranking (rank 0 best, equal ranks tie), prompt = the conversation up to it.
- `ultrafeedback`: rows with an instruction and per-completion scores -> rankings by score (equal scores
  tie); the score is `overall_score`, `fine-grained_score`, or `mean_rating` (mean of the annotations'
  aspect ratings).
- `shp`: Stanford SHP rows (history, human_ref_A/B, score_A/B, labels) -> conversational pairs grouped
  by post, optionally only pairs whose score ratio is at least `min_score_ratio` (the SHP authors
  recommend 2) and with margin = log(score ratio).

Public dumps contain odd rows (identical answers, broken transcripts), so by default a row that cannot
be converted is skipped and counted with its reason; `strict=True` stops at the first one with the
file, 1-based row and field. Outputs are validated with the project's own checkers before writing.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional

from rlhf.data import SkipReport, validate_rows
from rlhf.errors import DataError

FORMATS = ("hh", "oasst", "ultrafeedback", "shp")
OUTPUT_KIND = {"hh": "pairs", "oasst": "rankings", "ultrafeedback": "rankings", "shp": "pairs"}


class _Skip(Exception):
    """A row that cannot be converted: (field, reason)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --------------------------------------------------------------------------------------------------
# Anthropic HH-RLHF
# --------------------------------------------------------------------------------------------------

HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str, field: str = "chosen") -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{"role": "user", "content": "a"}, {"role": "assistant", ...}]."""
    if not isinstance(text, str):
        raise _Skip(field, f"expected a transcript string, got {type(text).__name__}")
    parts = HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    if parts[0].strip():
        raise _Skip(field, "text before the first 'Human:' turn")
    messages = [{"role": HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]
    if not messages:
        raise _Skip(field, "no 'Human:'/'Assistant:' turns")
    return messages


def convert_hh_row(row: dict) -> dict:
    for name in ("chosen", "rejected"):
        if name not in row:
            raise _Skip(name, "missing field")
    chosen = parse_hh_transcript(row["chosen"], "chosen")
    rejected = parse_hh_transcript(row["rejected"], "rejected")
    for name, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[-1]["role"] != "assistant":
            raise _Skip(name, "the transcript does not end with an Assistant turn")
        if len(messages) < 2:
            raise _Skip(name, "no Human turn before the Assistant's answer")
    if chosen[:-1] != rejected[:-1]:
        raise _Skip("rejected", "chosen and rejected transcripts differ before the last Assistant turn")
    if chosen[-1] == rejected[-1]:
        raise _Skip("rejected", "identical to chosen")
    return {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


# --------------------------------------------------------------------------------------------------
# OpenAssistant
# --------------------------------------------------------------------------------------------------

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _flatten_oasst_tree(node: dict, parent_id: Optional[str], tree_id: Any, out: list[dict]) -> None:
    message = {key: value for key, value in node.items() if key != "replies"}
    message.setdefault("parent_id", parent_id)
    message.setdefault("message_tree_id", tree_id)
    out.append(message)
    for reply in node.get("replies") or []:
        _flatten_oasst_tree(reply, message.get("message_id"), tree_id, out)


def oasst_messages(rows: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Flat (row number, message) list from flat message rows or nested trees ({"prompt": {..., "replies"}})."""
    messages: list[tuple[int, dict]] = []
    for row_number, row in rows:
        if isinstance(row.get("prompt"), dict) and "message_id" not in row:
            flat: list[dict] = []
            _flatten_oasst_tree(row["prompt"], None, row.get("message_tree_id"), flat)
            messages.extend((row_number, message) for message in flat)
        else:
            messages.append((row_number, row))
    return messages


def convert_oasst(
    rows: list[tuple[int, dict]], source: str, strict: bool, lang: Optional[str] = None
) -> tuple[list[dict], SkipReport]:
    messages = oasst_messages(rows)
    report = SkipReport(source=source)
    by_id: dict[str, dict] = {}
    row_of: dict[str, int] = {}
    children: dict[str, list[dict]] = {}
    for row_number, message in messages:
        message_id = message.get("message_id")
        if (
            not isinstance(message_id, str)
            or message.get("role") not in OASST_ROLES
            or not isinstance(message.get("text"), str)
        ):
            report.total += 1
            _fail_or_count(
                source, row_number, _Skip("message_id/role/text", "not an OpenAssistant message"), strict, report
            )
            continue
        if message_id in by_id:
            report.total += 1
            _fail_or_count(
                source,
                row_number,
                _Skip("message_id", f"duplicate message id {message_id!r} (first seen on row {row_of[message_id]})"),
                strict,
                report,
            )
            continue
        by_id[message_id] = message
        row_of[message_id] = row_number
        if message.get("parent_id"):
            children.setdefault(message["parent_id"], []).append(message)
    out: list[dict] = []
    out_rows: list[int] = []
    for parent_id, replies in children.items():
        parent = by_id.get(parent_id)
        if parent is None or parent["role"] != "prompter":
            continue
        if lang and parent.get("lang") not in (None, lang):
            continue
        ranked = [
            reply
            for reply in replies
            if reply["role"] == "assistant" and reply.get("rank") is not None and not reply.get("deleted")
        ]
        if len(ranked) < 2:
            continue  # nothing to compare: not a skip, OASST has many single replies
        report.total += 1
        try:
            for reply in ranked:
                rank = reply["rank"]
                if isinstance(rank, bool) or not isinstance(rank, (int, float)) or not math.isfinite(rank):
                    raise _Skip(
                        "rank",
                        f"reply {reply['message_id']!r} (row {row_of[reply['message_id']]}): expected a number, "
                        f"got {rank!r}",
                    )
            thread = _oasst_thread(parent, by_id)
            ranks = sorted({reply["rank"] for reply in ranked})
            if len(ranks) < 2:
                raise _Skip("rank", "all ranked replies share one rank")
            out.append(
                {
                    "id": parent_id,
                    "prompt": thread,
                    "responses": [{"id": reply["message_id"], "text": reply["text"]} for reply in ranked],
                    "ranking": [[reply["message_id"] for reply in ranked if reply["rank"] == rank] for rank in ranks],
                    "meta": {"lang": parent.get("lang"), "message_tree_id": parent.get("message_tree_id")},
                }
            )
            out_rows.append(row_of[parent_id])
        except _Skip as skip:
            _fail_or_count(source, row_of[parent_id], skip, strict, report)
    report.kept = len(out)
    report.input_rows = out_rows
    return out, report


def _oasst_thread(message: dict, by_id: dict[str, dict]) -> list[dict]:
    """Root-to-`message` conversation as chat messages (a parent_id cycle is a bad row, not a hang)."""
    thread = []
    seen: set[str] = set()
    node: Optional[dict] = message
    while node is not None:
        if node["message_id"] in seen:
            raise _Skip("parent_id", f"the parent_id chain loops back to message {node['message_id']!r}")
        seen.add(node["message_id"])
        thread.append({"role": OASST_ROLES[node["role"]], "content": node["text"]})
        parent_id = node.get("parent_id")
        if parent_id and parent_id not in by_id:
            raise _Skip("parent_id", f"ancestor message {parent_id!r} is not in the file")
        node = by_id.get(parent_id) if parent_id else None
    return thread[::-1]


# --------------------------------------------------------------------------------------------------
# UltraFeedback
# --------------------------------------------------------------------------------------------------

UF_SCORES = ("overall_score", "fine-grained_score", "mean_rating")


def _mean_rating(completion: dict) -> Optional[float]:
    ratings = []
    for aspect in (completion.get("annotations") or {}).values():
        rating = aspect.get("Rating") if isinstance(aspect, dict) else None
        try:
            ratings.append(float(rating))
        except (TypeError, ValueError):
            continue  # "N/A" ratings are left out
    return sum(ratings) / len(ratings) if ratings else None


def convert_ultrafeedback_row(row: dict, row_number: int, score_field: str = "overall_score") -> dict:
    instruction = row.get("instruction", row.get("prompt"))
    if not isinstance(instruction, str) or not instruction.strip():
        raise _Skip("instruction", "missing or empty instruction")
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise _Skip("completions", "missing or not a list")
    scored = []
    for index, completion in enumerate(completions):
        if not isinstance(completion, dict) or not isinstance(completion.get("response"), str):
            raise _Skip(f"completions[{index}].response", "missing or not a string")
        score = _mean_rating(completion) if score_field == "mean_rating" else completion.get(score_field)
        if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
            scored.append((index, completion, float(score)))
    if len(scored) < 2:
        raise _Skip(f"completions[].{score_field}", f"fewer than two completions with a {score_field}")
    models = [completion.get("model") for _, completion, _ in scored]
    use_models = all(isinstance(model, str) and model for model in models) and len(set(models)) == len(models)
    ids = [model if use_models else f"c{index}" for (index, _, _), model in zip(scored, models)]
    levels = sorted({score for _, _, score in scored}, reverse=True)
    if len(levels) < 2:
        raise _Skip(f"completions[].{score_field}", "all completions have the same score")
    return {
        "id": str(row.get("id", row.get("prompt_id", f"uf-{row_number}"))),
        "prompt": [_user(instruction)],
        "responses": [
            {"id": response_id, "text": completion["response"]} for response_id, (_, completion, _) in zip(ids, scored)
        ],
        "ranking": [
            [response_id for response_id, (_, _, score) in zip(ids, scored) if score == level] for level in levels
        ],
        "meta": {"source": row.get("source"), "score_field": score_field, "scores": [score for _, _, score in scored]},
    }


# --------------------------------------------------------------------------------------------------
# Stanford SHP
# --------------------------------------------------------------------------------------------------


def convert_shp_row(
    row: dict, min_score_ratio: Optional[float] = None, log_ratio_margin: bool = False
) -> Optional[dict]:
    for name in ("history", "human_ref_A", "human_ref_B"):
        if not isinstance(row.get(name), str):
            raise _Skip(name, "missing or not a string")
    score_a, score_b = row.get("score_A"), row.get("score_B")
    label = row.get("labels")
    if label not in (0, 1):
        if not all(isinstance(score, (int, float)) for score in (score_a, score_b)) or score_a == score_b:
            raise _Skip("labels", "no label and no score difference to infer one from")
        label = 1 if score_a > score_b else 0
    chosen, rejected = (
        (row["human_ref_A"], row["human_ref_B"]) if label == 1 else (row["human_ref_B"], row["human_ref_A"])
    )
    if chosen == rejected:
        raise _Skip("human_ref_B", "identical to human_ref_A")
    ratio = row.get("score_ratio")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))):
        raise _Skip("score_ratio", f"expected a number, got {type(ratio).__name__} {ratio!r}")
    if ratio is None and all(isinstance(score, (int, float)) and score > 0 for score in (score_a, score_b)):
        ratio = max(score_a, score_b) / min(score_a, score_b)
    if min_score_ratio is not None and (ratio is None or ratio < min_score_ratio):
        return None  # filtered by choice, not a bad row
    pair = {"prompt": [_user(row["history"])], "chosen": [_assistant(chosen)], "rejected": [_assistant(rejected)]}
    if row.get("post_id") is not None:
        pair["group"] = str(row["post_id"])
    if log_ratio_margin:
        if ratio is None or ratio <= 0:
            raise _Skip("score_ratio", "missing; needed for the log-ratio margin")
        pair["margin"] = math.log(ratio)
    return pair


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def _fail_or_count(source: str, row_number: int, skip: _Skip, strict: bool, report: Optional[SkipReport]) -> None:
    message = f"{source}: row {row_number}: field '{skip.field}': {skip.reason}"
    if strict:
        raise DataError(message)
    if report is not None:
        report.add(message, f"{skip.field}: {skip.reason}")


def _convert_rows(
    rows: list[tuple[int, dict]], source: str, strict: bool, convert: Callable[[int, dict], Optional[dict]]
) -> tuple[list[dict], SkipReport]:
    report = SkipReport(source=source)
    out: list[dict] = []
    out_rows: list[int] = []
    for row_number, row in rows:
        try:
            converted = convert(row_number, row)
        except _Skip as skip:
            report.total += 1
            _fail_or_count(source, row_number, skip, strict, report)
            continue
        if converted is not None:
            report.total += 1
            out.append(converted)
            out_rows.append(row_number)
    report.kept = len(out)
    report.input_rows = out_rows
    return out, report


def convert_rows(
    fmt: str,
    rows: list[tuple[int, dict]],
    source: str = "input",
    strict: bool = False,
    score_field: str = "overall_score",
    min_score_ratio: Optional[float] = None,
    log_ratio_margin: bool = False,
    lang: Optional[str] = None,
) -> tuple[list[dict], SkipReport]:
    """Convert (row number, row) pairs of format `fmt`; returns (rows in our format, skip report)."""
    if fmt == "hh":
        out, report = _convert_rows(rows, source, strict, lambda _, row: convert_hh_row(row))
    elif fmt == "oasst":
        out, report = convert_oasst(rows, source, strict, lang=lang)
    elif fmt == "ultrafeedback":
        if score_field not in UF_SCORES:
            raise DataError(
                f"unknown UltraFeedback score field {score_field!r}; expected one of {', '.join(UF_SCORES)}"
            )
        out, report = _convert_rows(
            rows, source, strict, lambda number, row: convert_ultrafeedback_row(row, number, score_field)
        )
    elif fmt == "shp":
        out, report = _convert_rows(
            rows, source, strict, lambda _, row: convert_shp_row(row, min_score_ratio, log_ratio_margin)
        )
    else:
        raise DataError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if out:  # our own checkers guard the output contract; errors name the input row each output came from
        validate_rows(OUTPUT_KIND[fmt], list(zip(report.input_rows, out)), source)
    return out, report
