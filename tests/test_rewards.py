"""The shipped task-agnostic reward terms (rlhf/rewards.py), checked by hand and through the plug-in loader."""

import pytest

from rlhf.plugins import load_reward_function
from rlhf.rewards import repeated_clauses, repeated_words


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (" Three sports: rugby, hockey and tennis.", 0.0),
        (" Three sports: rugby, Rugby and tennis.", 1 / 6),  # case-folded: the second rugby repeats
        (" Hello! I like tea. I like tea.", 3 / 7),  # i, like, tea said twice: 3 of 7 words repeat
        (" Don't, don't stop.", 1 / 3),  # an apostrophe keeps the word whole
        ("", 0.0),
        (" 1, 2, 3.", 0.0),  # no words at all
    ],
)
def test_repeated_words_is_the_fraction_of_words_seen_before(response, expected):
    assert repeated_words("User: any prompt\nAssistant:", response) == pytest.approx(expected)


def test_repeated_words_loads_as_a_reward_function_spec():
    function = load_reward_function("rlhf.rewards:repeated_words")
    assert function.scores(["p", "p"], [" a b a b", " a b c"]) == pytest.approx([0.5, 0.0])


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (" Hey there! Bees make honey. Bees live in hives. Glad to help.", 0.0),  # shared words, no clause twice
        (" Hi! Bees make honey. Bees make honey. Bees live in hives.", 1 / 4),
        (" Five fruits: mango, peach, peach, lemon and mango.", 2 / 6),  # "five fruits" + 5 items, 2 repeats
        (" Tea or TEA\n  tea.", 2 / 3),  # "or" and a line break split; case and spacing folded
        ("", 0.0),
        (" ...", 0.0),  # punctuation only: no clause
    ],
)
def test_repeated_clauses_is_the_fraction_of_clauses_seen_before(response, expected):
    assert repeated_clauses("User: any prompt\nAssistant:", response) == pytest.approx(expected)


def test_repeated_clauses_loads_as_a_reward_function_spec():
    function = load_reward_function("rlhf.rewards:repeated_clauses")
    assert function.scores(["p", "p"], [" a. b. a.", " a, b and c"]) == pytest.approx([1 / 3, 0.0])
