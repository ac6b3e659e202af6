"""The plug-in forms of a rule-based gold judge, built once from its breakdown function.

A built-in task's judge module defines `judge_breakdown(prompt, response) -> {"score", "contributions", ...}`
and its rule names; this gives it the three forms rlhf.plugins reads: the judge, its batched twin (one
call per file) and the per-rule split that the evaluation report tabulates.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

Breakdown = Callable[[str, str], dict[str, Any]]


def rule_judge(breakdown: Breakdown, rule_names: Callable[[], Iterable[str]]) -> tuple[Callable, Callable, Callable]:
    """(gold_score, gold_scores, rule_points) for a judge whose `breakdown` returns score and contributions."""

    def gold_score(prompt: str, response: str) -> float:
        """The gold score of `response` to `prompt` under the task's rules (higher is better)."""
        return breakdown(prompt, response)["score"]

    def gold_scores(prompts: list[str], responses: list[str]) -> list[float]:
        """`gold_score` of aligned lists."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [gold_score(prompt, response) for prompt, response in zip(prompts, responses)]

    def rule_points(prompt: str, response: str) -> dict[str, float]:
        """The score split by rule (every rule, 0.0 when it did not fire); sums to the score."""
        contributions = breakdown(prompt, response)["contributions"]
        return {rule: float(contributions.get(rule, 0.0)) for rule in rule_names()}

    gold_score.batch = gold_scores  # type: ignore[attr-defined]
    gold_score.breakdown = rule_points  # type: ignore[attr-defined]
    return gold_score, gold_scores, rule_points
