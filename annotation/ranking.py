"""Pure helpers on one reviewer's ranking: card labels, checking a submission, ranks and pair preferences.

A ranking is a list of tiers, best first; a tier holds response ids that the reviewer tied
(`[["r2"], ["r1", "r4"], ["r3"]]`). The page and the API speak in card labels (A, B, C...) so a reviewer
never sees response ids, which may give away which model wrote what; the shown order maps labels to ids.
"""

from __future__ import annotations

from typing import Any, Literal

from annotation.errors import InvalidInput
from annotation.tasks import CARD_LABELS

Preference = Literal["first", "second", "tie"]


def card_labels(count: int) -> list[str]:
    return list(CARD_LABELS[:count])


def label_tiers_to_ids(tiers: Any, shown_order: list[str]) -> list[list[str]]:
    """Check that `tiers` (lists of card labels) rank every card exactly once; return them as response ids."""
    labels = card_labels(len(shown_order))
    id_of_label = dict(zip(labels, shown_order, strict=True))
    if not isinstance(tiers, list) or not tiers:
        raise InvalidInput("'ranking' must be a non-empty list of tiers, each a list of card labels")
    seen: set[str] = set()
    ranking: list[list[str]] = []
    for index, tier in enumerate(tiers):
        if not isinstance(tier, list) or not tier:
            raise InvalidInput(f"'ranking[{index}]' must be a non-empty list of card labels")
        ids = []
        for label in tier:
            if not isinstance(label, str) or label not in id_of_label:
                raise InvalidInput(f"'ranking[{index}]' holds {label!r}; the cards are {', '.join(labels)}")
            if label in seen:
                raise InvalidInput(f"'ranking' names card {label} twice")
            seen.add(label)
            ids.append(id_of_label[label])
        ranking.append(ids)
    missing = [label for label in labels if label not in seen]
    if missing:
        raise InvalidInput(f"'ranking' leaves out card(s) {', '.join(missing)}; rank every card (tie them if equal)")
    return ranking


def ids_to_label_tiers(ranking: list[list[str]], shown_order: list[str]) -> list[list[str]]:
    label_of_id = dict(zip(shown_order, card_labels(len(shown_order)), strict=True))
    return [[label_of_id[response_id] for response_id in tier] for tier in ranking]


def is_unchanged_order(ranking: list[list[str]], shown_order: list[str]) -> bool:
    """True when the reviewer submitted the cards exactly as shown (A > B > C ...), often a slip."""
    return ranking == [[response_id] for response_id in shown_order]


def mid_ranks(ranking: list[list[str]]) -> dict[str, float]:
    """Rank of each response, 1 = best; tied responses share the mean of the places they cover.

    [["a"], ["b", "c"], ["d"]] -> a 1, b 2.5, c 2.5, d 4 (b and c cover places 2 and 3).
    Mid-ranks keep every reviewer's ranks on the same 1..K scale whatever they tied, which is what
    ordinal agreement statistics expect of tied ranks.
    """
    ranks: dict[str, float] = {}
    place = 1
    for tier in ranking:
        mean_place = place + (len(tier) - 1) / 2
        for response_id in tier:
            ranks[response_id] = mean_place
        place += len(tier)
    return ranks


def pair_preference(ranking: list[list[str]], first: str, second: str) -> Preference:
    """Which of two responses the ranking prefers, or "tie" when they share a tier."""
    tier_of = {response_id: index for index, tier in enumerate(ranking) for response_id in tier}
    if tier_of[first] == tier_of[second]:
        return "tie"
    return "first" if tier_of[first] < tier_of[second] else "second"
