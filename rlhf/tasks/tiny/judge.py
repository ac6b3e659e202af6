"""The gold judge of the built-in "tiny assistant" task: (prompt, response) -> score.

    rlhf data rank --candidates runs/tiny/candidates.jsonl --out runs/tiny/rankings.jsonl --judge tiny

It stands for the reviewers' true preference: simulated reviewers rank candidates by it and `rlhf eval`
reports it; the policy never trains on it. Every rule, weight and phrase list lives in rlhf/tasks/tiny/task.json
(`judge` section and the phrase lists) so a third party can re-implement it from that file alone. The
score is a sum of per-phrase terms (+ on-topic facts, - off-topic facts, rudeness, filler, unknown or
incomplete phrases, repetition; + a greeting first and a closing last) plus a length term, so each
improvement a tiny policy can learn (drop a rude remark, add a closing, stop before the budget) moves the
score by a fixed, visible amount. The functions are pure: same input, same output, no state.
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
PHRASE_PATTERN = re.compile(r"[^.!?]*[.!?]|[^.!?]+$")


@dataclass(frozen=True)
class Rules:
    """The judge's view of task.json: phrase lookup tables and weights."""

    kind_of_phrase: dict[str, str]  # normalised phrase -> greeting | closing | filler | rude | fact
    topic_of_fact: dict[str, str]  # normalised fact -> topic name
    topic_keywords: tuple[tuple[str, re.Pattern], ...]  # (topic, whole-word pattern) in task order
    weights: dict[str, float]
    length_budget_words: int


def normalize_phrase(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def rules_from_task(task: dict[str, Any]) -> Rules:
    kind_of_phrase: dict[str, str] = {}
    topic_of_fact: dict[str, str] = {}
    # Lookup order of task.json's rules: greeting, closing, filler, rude, fact (first list wins).
    for kind, key in (("greeting", "greetings"), ("closing", "closings"), ("filler", "fillers"), ("rude", "rude")):
        for phrase in task[key]:
            kind_of_phrase.setdefault(normalize_phrase(phrase), kind)
    for topic, spec in task["topics"].items():
        for fact in spec["facts"]:
            kind_of_phrase.setdefault(normalize_phrase(fact), "fact")
            topic_of_fact.setdefault(normalize_phrase(fact), topic)
    keywords = tuple(
        (topic, re.compile(rf"\b{re.escape(spec['keyword'])}\b", re.IGNORECASE))
        for topic, spec in task["topics"].items()
    )
    judge = task["judge"]
    return Rules(kind_of_phrase, topic_of_fact, keywords, dict(judge["weights"]), int(judge["length_budget_words"]))


@lru_cache(maxsize=4)
def load_rules(task_file: str | None = None) -> Rules:
    """Rules from a task.json (default: the one shipped next to this module)."""
    path = Path(task_file) if task_file else TASK_FILE
    return rules_from_task(json.loads(path.read_text(encoding="utf-8")))


def split_phrases(response: str) -> list[str]:
    """Phrases ending in . ! or ?, plus a trailing incomplete phrase; stripped, empty ones dropped."""
    return [match.strip() for match in PHRASE_PATTERN.findall(response) if match.strip()]


def prompt_topic(prompt: str, rules: Optional[Rules] = None) -> Optional[str]:
    """The first topic whose keyword occurs in the prompt as a whole word, or None."""
    rules = rules or load_rules()
    for topic, pattern in rules.topic_keywords:
        if pattern.search(prompt):
            return topic
    return None


def judge_breakdown(prompt: str, response: str, rules: Optional[Rules] = None) -> dict[str, Any]:
    """Per-rule counts and score contributions; `score` is their sum (what `gold_score` returns).

    Returns {"score", "topic", "num_words", "phrases": [(phrase, label)], "counts": {rule: n},
    "contributions": {rule: points}} with rule names as in task.json's judge weights.
    """
    rules = rules or load_rules()
    weights = rules.weights
    topic = prompt_topic(prompt, rules)
    phrases = split_phrases(response)
    counts = {name: 0 for name in weights}
    labels: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, phrase in enumerate(phrases):
        key = normalize_phrase(phrase)
        complete = phrase[-1] in ".!?"
        if key in seen:
            label = "repetition"
        else:
            seen.add(key)
            kind = rules.kind_of_phrase.get(key) if complete else None
            if kind == "greeting":
                label = "greeting_first" if index == 0 else "misplaced_greeting_or_closing"
            elif kind == "closing":
                label = "closing_last" if index == len(phrases) - 1 else "misplaced_greeting_or_closing"
            elif kind == "fact":
                label = "on_topic_fact" if rules.topic_of_fact[key] == topic else "off_topic_fact"
            elif kind in ("filler", "rude"):
                label = kind
            else:
                label = "unknown_phrase"
        counts[label] += 1
        labels.append((phrase, label))
    if counts["on_topic_fact"] == 0:
        counts["no_on_topic_fact"] = 1
    num_words = len(response.split())
    counts["word_over_budget"] = max(0, num_words - rules.length_budget_words)
    contributions = {name: counts[name] * weights[name] for name in weights if counts[name]}
    return {
        "score": float(sum(contributions.values())),
        "topic": topic,
        "num_words": num_words,
        "phrases": labels,
        "counts": counts,
        "contributions": contributions,
    }


# The judge, its batched twin and its per-rule split (the forms rlhf.plugins reads).
gold_score, gold_scores, rule_points = rule_judge(judge_breakdown, lambda: load_rules().weights)
