"""The shipped task-agnostic reward terms (rlhf/rewards.py), checked by hand and through the plug-in loader."""

import pytest
from families import build_tokenizer

from rlhf.plugins import load_reward_function
from rlhf.rewards import clause_break_ids, repeated_clause_tokens, repeated_clauses, repeated_words


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


def _flagged(tokenizer, response: str) -> list[str]:
    """The tokens of `response` that repeated_clause_tokens flags, as the tokenizer spells them."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    flags = repeated_clause_tokens(ids, clause_break_ids(tokenizer))
    return [token for token, flagged in zip(tokenizer.convert_ids_to_tokens(ids), flags) if flagged]


@pytest.mark.parametrize("family", ["llama3", "qwen", "gpt2"])
def test_repeated_clause_tokens_flag_the_repeat_from_where_it_is_decided(family):
    tokenizer, _ = build_tokenizer(family)
    # The third "Cats" could still start a new fact; "purr" makes it the repeat, and the "." ends it.
    assert _flagged(tokenizer, " Hi! Cats purr. Cats nap a lot. Cats purr. Hope this helps.") == ["Ġpurr", "."]
    # With one earlier clause that starts with "Cats", "Cats" already decides it.
    assert _flagged(tokenizer, " Hi! Cats purr. Cats purr.") == ["ĠCats", "Ġpurr", "."]
    # Distinct sentences that share words flag nothing.
    assert _flagged(tokenizer, " Hi! Cats purr. Cats nap a lot. Hope this helps.") == []


def test_clause_break_ids_are_punctuation_and_word_initial_and_or():
    tokenizer, _ = build_tokenizer("gpt2")
    breaks = {tokenizer.convert_ids_to_tokens(token_id) for token_id in clause_break_ids(tokenizer)}
    assert {".", ",", "!", "?", ":", ";", "Ċ"} <= breaks
    assert not {"ĠCats", "Ġpurr", "<|endoftext|>"} & breaks


def test_repeated_clause_tokens_split_at_standalone_and_or_ids():
    # ids stand for: 1 drum, 2 ",", 3 trumpet, 4 " and", 5 "."; a list item given twice is flagged with
    # the break that ends it, and an unterminated repeat at the end of the reply too.
    assert repeated_clause_tokens([1, 2, 3, 2, 1, 4, 6, 5], {2, 4, 5}) == [False] * 4 + [True, True, False, False]
    assert repeated_clause_tokens([1, 2, 3, 4, 1], {2, 4, 5}) == [False] * 4 + [True]
    assert repeated_clause_tokens([], {2}) == []


def test_glued_punctuation_finds_no_false_repeats():
    # A SentencePiece vocabulary that glues "." to words ("▁purr.") leaves one clause per reply: nothing is
    # flagged, never a false repeat.
    tokenizer, _ = build_tokenizer("llama2")
    assert _flagged(tokenizer, " Hi! Cats purr. Cats nap a lot. Cats purr.") == []
