"""Simulated reviewers for the tiny task: candidates -> noisy, human-like rankings.

    rlhf data rank --candidates runs/tiny/candidates.jsonl --out runs/tiny/rankings.jsonl --reviewers 1 --noise 0.1

A reviewer orders a prompt's responses by sampling a Plackett-Luce ranking over their gold scores
divided by a temperature (Gumbel-max: sort score/T + Gumbel noise), so close calls are often flipped
and clear ones rarely; the pairwise marginal of that ranking is exactly Bradley-Terry,
P(a above b) = sigmoid((gold_a - gold_b) / T), the model the reward model fits. On top of that, with
probability `noise` a reviewer is careless and returns a uniformly random order (label noise). Responses
with identical text share a tier (no one can prefer a text over itself); a candidate whose responses are
all the same text has nothing to rank and gives no ranking row. Each (candidate, reviewer) draws from
its own seeded stream, so results do not depend on file order or on the other reviewers.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

DEFAULT_TEMPERATURE = 0.5
DEFAULT_NOISE = 0.1


def prompt_text(prompt: Any) -> str:
    """The judge reads plain text; a conversational prompt is read as its messages' contents."""
    if isinstance(prompt, list):
        return "\n".join(str(message.get("content", "")) for message in prompt)
    return str(prompt)


def plackett_luce_order(scores: list[float], temperature: float, rng: random.Random) -> list[int]:
    """Indices best first, sampled from Plackett-Luce with weights exp(score / temperature).

    Temperature 0 sorts by score (ties broken at random).
    """
    keys = []
    for score in scores:
        gumbel = -math.log(-math.log(max(rng.random(), 1e-300)))
        keys.append((score / temperature + gumbel) if temperature > 0 else (score, rng.random()))
    return sorted(range(len(scores)), key=lambda index: keys[index], reverse=True)


def review_one(
    candidate: dict,
    reviewer_index: int,
    temperature: float,
    noise: float,
    seed: int,
    score_fn: Callable[[str, str], float],
) -> Optional[dict]:
    """One reviewer's ranking row of one candidate, or None when all responses are the same text."""
    rng = random.Random(f"{seed}:{candidate['id']}:{reviewer_index}")
    prompt = prompt_text(candidate["prompt"])
    ids_by_text: dict[Any, list] = {}
    for response in candidate["responses"]:
        key = response["text"] if isinstance(response["text"], str) else repr(response["text"])
        ids_by_text.setdefault(key, []).append(response["id"])
    texts = list(ids_by_text)
    if len(texts) < 2:
        return None
    scores = [score_fn(prompt, text) for text in texts]
    careless = rng.random() < noise
    if careless:
        order = list(range(len(texts)))
        rng.shuffle(order)
    else:
        order = plackett_luce_order(scores, temperature, rng)
    gold_by_id = {}
    for text, score in zip(texts, scores):
        for response_id in ids_by_text[text]:
            gold_by_id[response_id] = score
    meta = dict(candidate.get("meta") or {})
    meta.update(
        gold_scores=[gold_by_id[response["id"]] for response in candidate["responses"]],
        careless=careless,
        temperature=temperature,
    )
    return {
        "id": candidate["id"],
        "prompt": candidate["prompt"],
        "responses": candidate["responses"],
        "ranking": [list(ids_by_text[texts[index]]) for index in order],
        "annotator": f"sim-{reviewer_index}",
        "meta": meta,
    }


def simulate_rankings(
    candidates: list[dict],
    temperature: float = DEFAULT_TEMPERATURE,
    noise: float = DEFAULT_NOISE,
    reviewers_per_prompt: int = 1,
    seed: int = 0,
    score_fn: Optional[Callable[[str, str], float]] = None,
) -> list[dict]:
    """Rankings rows (one per candidate and reviewer, `annotator` "sim-<j>"), ordered by candidate.

    `score_fn(prompt, response)` defaults to the tiny task's gold judge. Candidates whose responses are
    all one text are left out (a single tie is not a ranking).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    if reviewers_per_prompt < 1:
        raise ValueError(f"reviewers_per_prompt must be >= 1, got {reviewers_per_prompt}")
    if score_fn is None:
        from rlhf.tasks.tiny.judge import gold_score as score_fn
    rankings = []
    for candidate in candidates:
        for reviewer_index in range(reviewers_per_prompt):
            row = review_one(candidate, reviewer_index, temperature, noise, seed, score_fn)
            if row is not None:
                rankings.append(row)
    return rankings


def pairwise_gold_agreement(
    rankings: list[dict], score_fn: Optional[Callable[[str, str], float]] = None
) -> dict[str, float]:
    """How often the reviewers' pairs agree with the gold order.

    Over every pair a ranking implies (higher tier beats lower tier) whose two responses have different
    gold scores: the fraction where the chosen response has the higher gold score. Pairs with equal gold
    scores have no gold order and are counted separately.
    """
    from rlhf.data import ranking_to_pairs

    if score_fn is None:
        from rlhf.tasks.tiny.judge import gold_score as score_fn
    agree = disagree = equal = 0
    for row in rankings:
        prompt = prompt_text(row["prompt"])
        for pair in ranking_to_pairs(row):
            chosen, rejected = score_fn(prompt, pair["chosen"]), score_fn(prompt, pair["rejected"])
            if chosen > rejected:
                agree += 1
            elif chosen < rejected:
                disagree += 1
            else:
                equal += 1
    ordered = agree + disagree
    return {
        "pairwise_agreement": agree / ordered if ordered else float("nan"),
        "ordered_pairs": ordered,
        "equal_gold_pairs": equal,
    }


def expected_pair_agreement(
    gold_gap: float, temperature: float = DEFAULT_TEMPERATURE, noise: float = DEFAULT_NOISE
) -> float:
    """P(a reviewer orders a pair correctly) for a gold gap > 0: (1 - noise) * sigmoid(gap / T) + noise / 2."""
    if temperature == 0:
        return (1 - noise) + noise / 2
    return (1 - noise) / (1 + math.exp(-gold_gap / temperature)) + noise / 2
