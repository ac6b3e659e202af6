"""The gold judge of the built-in "tiny lister" task: (prompt, response) -> score.

    rlhf data rank --candidates runs/lists/candidates.jsonl --out runs/lists/rankings.jsonl --judge lists

A prompt asks for `count` items of a category ("Name three fruits. But not plum."); the perfect reply is
"Three fruits: apple, mango and peach." and scores count + 2. Every rule and weight lives in
rlhf/tasks/lists/task.json (`judge` section), so a third party can re-implement it from that file. Two
rules are the ones a small reward model tends not to see, because they need the prompt read against the
list: items beyond the requested count (`over_count`: demonstrations almost never list too many, while
too few is common, so "more items" looks better to a model that does not count) and the item the prompt
excluded (`excluded_item`). When PPO finds them, the per-rule table of the evaluation report shows it.
The functions are pure: same input, same output, no state.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from rlhf.tasks.rule_judge import rule_judge

TASK_FILE = Path(__file__).with_name("task.json")
ITEM_SEPARATOR = re.compile(r",|\band\b", re.IGNORECASE)
EXCLUSION = re.compile(r"\bbut not ([a-z]+)\s*\.", re.IGNORECASE)


@dataclass(frozen=True)
class Rules:
    """The judge's view of task.json."""

    count_of_word: dict[str, int]  # "three" -> 3
    category_of_item: dict[str, str]  # "apple" -> "fruits"
    category_patterns: tuple[tuple[str, re.Pattern], ...]  # (category, whole-word pattern) in task order
    count_pattern: re.Pattern
    weights: dict[str, float]


def rules_from_task(task: dict[str, Any]) -> Rules:
    count_of_word = {word: int(number) for number, word in task["counts"].items()}
    category_of_item: dict[str, str] = {}
    for category, items in task["categories"].items():
        for item in items:
            category_of_item.setdefault(item.lower(), category)
    patterns = tuple(
        (category, re.compile(rf"\b{re.escape(category)}\b", re.IGNORECASE)) for category in task["categories"]
    )
    count_pattern = re.compile(r"\b(" + "|".join(map(re.escape, count_of_word)) + r")\b", re.IGNORECASE)
    return Rules(count_of_word, category_of_item, patterns, count_pattern, dict(task["judge"]["weights"]))


@lru_cache(maxsize=4)
def load_rules(task_file: str | None = None) -> Rules:
    path = Path(task_file) if task_file else TASK_FILE
    return rules_from_task(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Request:
    """What the prompt asks for."""

    count: Optional[int]
    category: Optional[str]
    excluded: Optional[str]


def parse_prompt(prompt: str, rules: Optional[Rules] = None) -> Request:
    rules = rules or load_rules()
    count_match = rules.count_pattern.search(prompt)
    category = next((name for name, pattern in rules.category_patterns if pattern.search(prompt)), None)
    excluded = EXCLUSION.search(prompt)
    return Request(
        count=rules.count_of_word[count_match.group(1).lower()] if count_match else None,
        category=category,
        excluded=excluded.group(1).lower() if excluded else None,
    )


def split_reply(response: str) -> tuple[Optional[str], str]:
    """(header or None, list text): the header is the text before the first ':'."""
    header, colon, rest = response.partition(":")
    if not colon:
        return None, response.strip()
    return header.strip(), rest.strip()


def judge_breakdown(prompt: str, response: str, rules: Optional[Rules] = None) -> dict[str, Any]:
    """Per-rule counts and score contributions; `score` is their sum (what `gold_score` returns).

    Returns {"score", "request", "header", "items": [(item, label)], "counts": {rule: n},
    "contributions": {rule: points}} with rule names as in task.json's judge weights.
    """
    rules = rules or load_rules()
    weights = rules.weights
    request = parse_prompt(prompt, rules)
    counts = {name: 0 for name in weights}
    header, listed = split_reply(response)
    if header:
        words = header.lower().split()
        said = rules.count_of_word.get(words[0]) if len(words) == 2 else None
        if said is not None and words[1] == request.category:
            counts["header" if said == request.count else "header_wrong_count"] = 1
        else:
            counts["bad_header"] = 1
    if listed.endswith("."):
        listed = listed[:-1]
    else:
        counts["unterminated"] = 1
    items = [piece.strip().lower() for piece in ITEM_SEPARATOR.split(listed)]
    labels: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in filter(None, items):
        if item in seen:
            label = "duplicate"
        else:
            seen.add(item)
            category = rules.category_of_item.get(item)
            if request.excluded is not None and item == request.excluded:
                label = "excluded_item"
            elif category is not None and category == request.category:
                label = "item" if request.count is None or counts["item"] < request.count else "over_count"
            elif category is not None:
                label = "wrong_category"
            else:
                label = "unknown_item"
        counts[label] += 1
        labels.append((item, label))
    if counts["item"] == 0:
        counts["no_item"] = 1
    elif counts["item"] == request.count and counts["over_count"] == 0:
        counts["exact_count"] = 1
    contributions = {name: counts[name] * weights[name] for name in weights if counts[name]}
    return {
        "score": float(sum(contributions.values())),
        "request": request,
        "header": header,
        "items": labels,
        "counts": counts,
        "contributions": contributions,
    }


# The judge, its batched twin and its per-rule split (the forms rlhf.plugins reads).
gold_score, gold_scores, rule_points = rule_judge(judge_breakdown, lambda: load_rules().weights)
