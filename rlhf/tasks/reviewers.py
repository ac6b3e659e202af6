"""Simulated reviewers over any judge: candidates -> noisy, human-like rankings.

    rlhf data rank --candidates runs/tiny/candidates.jsonl --out runs/tiny/rankings.jsonl --judge tiny --noise 0.1
    rlhf data rank --candidates c.jsonl --out r.jsonl --judge my_project/judge.py:score

A reviewer orders a prompt's responses by sampling a Plackett-Luce ranking over their gold scores
divided by a temperature (Gumbel-max: sort score/T + Gumbel noise), so close calls are often flipped
and clear ones rarely; the pairwise marginal of that ranking is exactly Bradley-Terry,
P(a above b) = sigmoid((gold_a - gold_b) / T), the model the reward model fits. On top of that, with
probability `noise` a reviewer is careless and returns a uniformly random order (label noise). Responses
with identical text share a tier (no one can prefer a text over itself); a candidate whose responses are
all the same text has nothing to rank and gives no ranking row. Each (candidate, reviewer) draws from
its own seeded stream, so results do not depend on file order or on the other reviewers. The judge is
any `rlhf.plugins` judge (or a plain `fn(prompt, response)`); every distinct (prompt, response) of the
file is scored in one call of its batched form when it has one (an LLM judge batches on its device).
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

from rlhf.plugins import Scorer

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


def as_scorer(score_fn: Callable[[str, str], float] | Scorer) -> Scorer:
    """A plugins.Scorer (checked, batched when it can be) from a judge or a plain function."""
    if isinstance(score_fn, Scorer):
        return score_fn
    return Scorer(score_fn, getattr(score_fn, "__name__", "score_fn"), "judge")


def text_key(text: Any) -> str:
    """A response as the judge reads it (a conversational response: its repr)."""
    return text if isinstance(text, str) else repr(text)


def distinct_texts(candidate: dict) -> dict[str, list]:
    """Response text -> the ids that carry it, in first-seen order."""
    ids_by_text: dict[str, list] = {}
    for response in candidate["responses"]:
        ids_by_text.setdefault(text_key(response["text"]), []).append(response["id"])
    return ids_by_text


def score_candidates(candidates: list[dict], scorer: Scorer) -> list[list[float]]:
    """Gold scores of each candidate's distinct texts, in one batched call over the whole file."""
    prompts, texts, sizes = [], [], []
    for candidate in candidates:
        mine = list(distinct_texts(candidate))
        prompts += [prompt_text(candidate["prompt"])] * len(mine)
        texts += mine
        sizes.append(len(mine))
    flat = scorer.scores(prompts, texts) if texts else []
    out, start = [], 0
    for size in sizes:
        out.append(flat[start : start + size])
        start += size
    return out


def review_one(
    candidate: dict,
    reviewer_index: int,
    temperature: float,
    noise: float,
    seed: int,
    scores: list[float],
) -> Optional[dict]:
    """One reviewer's ranking row of one candidate, or None when all responses are the same text.

    `scores` are the gold scores of the candidate's distinct texts in first-seen order (`distinct_texts`)."""
    rng = random.Random(f"{seed}:{candidate['id']}:{reviewer_index}")
    ids_by_text = distinct_texts(candidate)
    texts = list(ids_by_text)
    if len(texts) < 2:
        return None
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
    score_fn: Optional[Callable[[str, str], float] | Scorer] = None,
) -> list[dict]:
    """Rankings rows (one per candidate and reviewer, `annotator` "sim-<j>"), ordered by candidate.

    `score_fn` is the reviewers' true preference: a judge from `rlhf.plugins.load_judge` or any
    `fn(prompt, response) -> float`. Candidates whose responses are all one text are left out (a single
    tie is not a ranking).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    if reviewers_per_prompt < 1:
        raise ValueError(f"reviewers_per_prompt must be >= 1, got {reviewers_per_prompt}")
    if score_fn is None:
        raise ValueError("simulated reviewers need a judge (score_fn), e.g. rlhf.plugins.load_judge('tiny')")
    scores = score_candidates(candidates, as_scorer(score_fn))
    rankings = []
    for candidate, candidate_scores in zip(candidates, scores):
        for reviewer_index in range(reviewers_per_prompt):
            row = review_one(candidate, reviewer_index, temperature, noise, seed, candidate_scores)
            if row is not None:
                rankings.append(row)
    return rankings


def pairwise_gold_agreement(rankings: list[dict], score_fn: Callable[[str, str], float] | Scorer) -> dict[str, float]:
    """How often the reviewers' pairs agree with the gold order.

    Over every pair a ranking implies (higher tier beats lower tier) whose two responses have different
    gold scores: the fraction where the chosen response has the higher gold score. Pairs with equal gold
    scores have no gold order and are counted separately.
    """
    from rlhf.data import ranking_to_pairs

    scorer = as_scorer(score_fn)
    by_text = [
        dict(zip(distinct_texts(row), scores)) for row, scores in zip(rankings, score_candidates(rankings, scorer))
    ]
    agree = disagree = equal = 0
    for row, gold in zip(rankings, by_text):
        for pair in ranking_to_pairs(row):
            chosen, rejected = gold[text_key(pair["chosen"])], gold[text_key(pair["rejected"])]
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
