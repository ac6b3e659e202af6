"""Task-agnostic rule-based reward terms for `ppo.reward_functions`.

    rlhf ppo --config configs/tiny/ppo.yaml 'ppo.reward_functions=[{spec: rlhf.rewards:repeated_words, weight: -1.0}]'

Each is a plug-in of the shape `rlhf/plugins.py` describes, `fn(prompt, response) -> float`, and knows no
task: they encode what holds for any assistant reply, not what a particular judge rewards.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")  # letters (any script), with one inner apostrophe: "don't"
# Clause boundaries: sentence and list punctuation, line breaks, and a standalone "and"/"or" (a list's last
# item: "tea, milk and tea").
CLAUSE_BREAK = re.compile(r"[.,;:!?\n]+|\s(?:and|or)\s", re.IGNORECASE)


def repeated_words(prompt: str, response: str) -> float:
    """The fraction of the response's words that repeat an earlier word of it (case-folded): 1 - distinct-1
    (Li et al., 2016). 0 for a reply with no word repeated or no words; a duplicated list item or a phrase
    said twice raises it. Use with a negative weight."""
    return _repeated_fraction([word.casefold() for word in WORD.findall(response)])


def repeated_clauses(prompt: str, response: str) -> float:
    """The fraction of the response's clauses that repeat an earlier clause of it: a sentence said twice,
    a list item given twice. Clauses are what lies between sentence or list punctuation, line breaks and a
    standalone "and"/"or", case-folded with whitespace collapsed. Unlike `repeated_words` it does not tax
    distinct sentences that share words ("Bees make honey. Bees live in hives." repeats nothing). 0 for a
    reply with no clause repeated or no clauses. Use with a negative weight."""
    clauses = [" ".join(part.casefold().split()) for part in CLAUSE_BREAK.split(response)]
    return _repeated_fraction([clause for clause in clauses if clause])


def _repeated_fraction(units: list[str]) -> float:
    """The share of `units` equal to an earlier one (0 for none)."""
    return 1.0 - len(set(units)) / len(units) if units else 0.0
