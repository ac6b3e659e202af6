"""The tiny task's gold judge on hand-written responses, one rule at a time."""

from __future__ import annotations

import pytest

from rlhf.tasks.tiny.judge import gold_score, judge_breakdown, load_rules, prompt_topic, split_phrases

CATS = "User: Tell me about cats.\nAssistant:"

# (response, expected score, hand computation)
CASES = [
    (" Cats purr.", 1.0, "one on-topic fact +1"),
    (" Cats purr. Cats chase mice.", 2.0, "two distinct on-topic facts +1 +1"),
    (" Cats purr. Dogs bark.", 0.0, "+1 on-topic, -1 off-topic"),
    (" Cats purr. Whatever.", -1.0, "+1, rude -2"),
    (" Cats purr. Um, well.", 0.5, "+1, filler -0.5"),
    (" Cats purr. Cats purr.", 0.0, "+1, repetition -1 (the repeat earns nothing)"),
    (" Hi! Cats purr.", 1.5, "greeting first +0.5, +1"),
    (" Cats purr. Hi!", 0.5, "+1, greeting not first -0.5"),
    (" Cats purr. Hope this helps.", 2.0, "+1, closing last +1"),
    (" Hope this helps. Cats purr.", 0.5, "closing not last -0.5, +1"),
    (" Hi! Hope this helps.", 0.5, "+0.5 +1, no on-topic fact -1"),
    (" Cats purr. Cats fly.", 0.0, "+1, unknown phrase -1"),
    (" Cats purr. Cats chase", 0.0, "+1, unfinished phrase -1"),
    ("", -1.0, "no on-topic fact -1"),
    (" cats   PURR.", 1.0, "case and spacing are normalised: +1"),
    # 2+3+4+3+3 = 15 words, within the 16-word budget: 5 facts = +5
    (" Cats purr. Cats chase mice. Cats nap a lot. Cats have whiskers. Cats climb trees.", 5.0, "+5"),
    # + 'Cats like fish.' = 18 words: +6 facts, 2 words over budget -0.5
    (
        " Cats purr. Cats chase mice. Cats nap a lot. Cats have whiskers. Cats climb trees. Cats like fish.",
        5.5,
        "+6 - 2*0.25",
    ),
    (
        " Hi! Cats purr. Cats nap a lot. Dogs bark. Um, well. Cats purr. Ugh, fine. Hope this helps.",
        -1.5,
        "+0.5 +1 +1 -1 -0.5 -1 (repeat) -2 +1 = -1; 18 words: 2 over budget -0.5",
    ),
]


@pytest.mark.parametrize("response,expected,why", CASES, ids=[why for _, _, why in CASES])
def test_gold_score_on_hand_written_responses(response, expected, why):
    assert gold_score(CATS, response) == pytest.approx(expected), why


def test_breakdown_contributions_sum_to_score_and_label_phrases():
    breakdown = judge_breakdown(CATS, " Hi! Cats purr. Dogs bark. Cats purr. Glad to help.")
    assert breakdown["topic"] == "cats"
    assert [label for _, label in breakdown["phrases"]] == [
        "greeting_first",
        "on_topic_fact",
        "off_topic_fact",
        "repetition",
        "closing_last",
    ]
    assert breakdown["contributions"] == {
        "greeting_first": 0.5,
        "on_topic_fact": 1.0,
        "off_topic_fact": -1.0,
        "repetition": -1.0,
        "closing_last": 1.0,
    }
    assert breakdown["score"] == sum(breakdown["contributions"].values()) == 0.5


def test_topic_comes_from_the_prompt_including_heldout_templates():
    assert prompt_topic("User: Please explain the sea.\nAssistant:") == "the sea"
    assert prompt_topic("User: Quick question. Give me a few facts about volcanoes. Thanks!\nAssistant:") == "volcanoes"
    assert prompt_topic("User: Tell me about engines.\nAssistant:") is None
    # a fact is on-topic only for its own topic
    assert gold_score("User: Please explain the sea.\nAssistant:", " The sea is salty.") == 1.0
    assert (
        gold_score("User: Tell me about engines.\nAssistant:", " The sea is salty.") == -2.0
    )  # off-topic -1, no fact -1


def test_phrase_splitting():
    assert split_phrases(" Hi! Cats purr. Why? trailing") == ["Hi!", "Cats purr.", "Why?", "trailing"]
    assert split_phrases("   ") == []


def test_phrase_lists_are_disjoint_and_topics_have_facts():
    import json

    from rlhf.tasks.tiny.judge import TASK_FILE, normalize_phrase

    task = json.loads(TASK_FILE.read_text())
    phrases = [*task["greetings"], *task["closings"], *task["fillers"], *task["rude"]]
    phrases += [fact for spec in task["topics"].values() for fact in spec["facts"]]
    normalized = [normalize_phrase(phrase) for phrase in phrases]
    assert len(normalized) == len(set(normalized)), "a phrase appears in two lists"
    assert len(task["topics"]) >= 10
    assert all(len(spec["facts"]) >= 4 for spec in task["topics"].values())
    assert set(load_rules().weights) == set(task["judge"]["weights"])
