"""Quality control of reviewers from their answers on gold items: pure functions, no database.

A gold item is a task imported with a known ranking (`gold`); it is served like any other task, so a
reviewer cannot tell it apart. An attention check is a gold item whose answer is obvious to anyone who
reads (e.g. one response says "rank me last"); it uses the same mechanism.

Choices:
- One gold answer scores the share of the gold ranking's strictly ordered pairs that the reviewer put
  in the same order (a tie where gold has an order scores 0 for that pair). Pairs rather than exact
  match, so swapping two near-equal responses of a K=4 item costs 1/6, not everything. A gold ranking
  with no strict pair (all tied) cannot be scored and is ignored.
- A reviewer's gold accuracy is the mean of their item scores (each gold item counts once, whatever K).
  Only the first answer a reviewer gave to each gold item counts: the warning appears right after a
  wrong gold answer, and undoing it to answer again must not erase the mistake.
- Warn as soon as accuracy is below `warn_below` (one answer is enough to tell the reviewer to slow
  down); block only with at least `min_answers` gold answers below `block_below`, so one slip does not
  lock anyone out. An admin's override wins: `restored` is never blocked automatically again (it is
  still warned), `blocked` is blocked whatever the accuracy.
- The quality weight used to weight votes (`rlhf rm` with rm.weight_by_quality) is the gold accuracy
  shrunk towards 1 by two virtual perfect answers, (sum of scores + 2) / (answers + 2): a reviewer with
  no gold answers weighs 1, one wrong answer in one brings it to 2/3, and a steady 50% tends to 0.5.
  Trusting until evidence arrives suits a hired team screened beforehand; the prior is small enough
  that ten gold answers dominate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from annotation.ranking import pair_preference

Status = Literal["ok", "warned", "blocked"]
Override = Optional[Literal["restored", "blocked"]]
QUALITY_PRIOR_ANSWERS = 2.0


@dataclass(frozen=True)
class QualityRules:
    warn_below: float = 0.7
    block_below: float = 0.5
    min_answers: int = 3


@dataclass(frozen=True)
class ReviewerQuality:
    gold_answers: int
    gold_accuracy: Optional[float]  # None: no scored gold answer yet
    status: Status
    override: Override

    @property
    def weight(self) -> float:
        return quality_weight(self.gold_accuracy, self.gold_answers)

    def as_dict(self) -> dict:
        return {
            "gold_answers": self.gold_answers,
            "gold_accuracy": self.gold_accuracy,
            "status": self.status,
            "override": self.override,
            "weight": round(self.weight, 6),
        }


def gold_item_score(answer: list[list[str]], gold: list[list[str]]) -> Optional[float]:
    """Share of gold's strictly ordered pairs that `answer` orders the same way; None if gold has none.

    gold [[a], [b], [c]] vs answer [[a], [c], [b]]: pairs a>b yes, a>c yes, b>c no -> 2/3.
    """
    ids = [response_id for tier in gold for response_id in tier]
    agreed = compared = 0
    for first_index, first in enumerate(ids):
        for second in ids[first_index + 1 :]:
            expected = pair_preference(gold, first, second)
            if expected == "tie":
                continue
            compared += 1
            agreed += int(pair_preference(answer, first, second) == expected)
    return agreed / compared if compared else None


def reviewer_quality(scores: list[float], rules: QualityRules, override: Override = None) -> ReviewerQuality:
    """Accuracy and status from the reviewer's gold item scores (first answer per item)."""
    accuracy = sum(scores) / len(scores) if scores else None
    below_warn = accuracy is not None and accuracy < rules.warn_below
    if override == "blocked":
        status: Status = "blocked"
    elif (
        override != "restored"
        and accuracy is not None
        and len(scores) >= rules.min_answers
        and accuracy < rules.block_below
    ):
        status = "blocked"
    else:
        status = "warned" if below_warn else "ok"
    return ReviewerQuality(gold_answers=len(scores), gold_accuracy=accuracy, status=status, override=override)


def quality_weight(accuracy: Optional[float], answers: int) -> float:
    """Gold accuracy shrunk towards 1 by QUALITY_PRIOR_ANSWERS perfect answers (see the module doc)."""
    total = (accuracy or 0.0) * answers
    return (total + QUALITY_PRIOR_ANSWERS) / (answers + QUALITY_PRIOR_ANSWERS)
