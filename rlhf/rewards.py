"""Task-agnostic rule-based reward terms for `ppo.reward_functions`.

    rlhf ppo --config configs/tiny/ppo.yaml 'ppo.reward_functions=[{spec: rlhf.rewards:repeated_words, weight: -1.0}]'

Each is a plug-in of the shape `rlhf/plugins.py` describes, `fn(prompt, response) -> float`, and knows no
task: they encode what holds for any assistant reply, not what a particular judge rewards.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

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


PUNCTUATION_TOKEN = re.compile(r"[.,;:!?\n]+")
WORD_START = ("\u0120", "\u2581", " ")  # byte-level BPE's and SentencePiece's marks of a leading space


def clause_break_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokenizer's tokens that end a clause as `repeated_clauses` splits text: sentence or list
    punctuation, line breaks, a standalone "and"/"or" (a word-initial piece only: not the "or" in "f|or").
    A token that glues punctuation to a word ("purr.") is not one: its clause then runs on into the next,
    and fewer repeats are found, never false ones."""
    breaks = set()
    for token_id, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        text = tokenizer.decode([token_id]).strip(" ")
        word = piece.lstrip("".join(WORD_START)) if piece else ""
        standalone_and_or = word.casefold() in ("and", "or") and word != piece
        if (text and PUNCTUATION_TOKEN.fullmatch(text)) or standalone_and_or:
            breaks.add(token_id)
    return frozenset(breaks)


def repeated_clause_tokens(token_ids: Sequence[int], breaks: Iterable[int] | frozenset[int]) -> list[bool]:
    """Per token of one response: True on the tokens of a clause (the run of tokens between `breaks`) whose
    ids repeat an earlier clause's, from the first token at which every earlier clause that starts the same
    way is that clause, up to and including the break that ends it. The token-level form of
    `repeated_clauses`, for a penalty that lands where the repeat is decided: in "Cats purr. Cats nap.
    Cats purr." the third "Cats" is not flagged (it starts a new fact as well), "purr" and "." are. Charging
    the shared start would teach the policy to stop listing rather than to list something new."""
    breaks = breaks if isinstance(breaks, (set, frozenset)) else frozenset(breaks)
    flags = [False] * len(token_ids)
    earlier: list[tuple[int, ...]] = []
    start = 0
    for position in range(len(token_ids) + 1):
        at_end = position == len(token_ids)
        if not at_end and token_ids[position] not in breaks:
            continue
        clause = tuple(token_ids[start:position])
        if clause and clause in earlier:
            decided = next(
                width
                for width in range(1, len(clause) + 1)
                if all(other == clause for other in earlier if other[:width] == clause[:width])
            )
            stop = position if at_end else position + 1
            flags[start + decided - 1 : stop] = [True] * (stop - start - decided + 1)
        if clause:
            earlier.append(clause)
        start = position + 1
    return flags
