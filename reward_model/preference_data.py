"""Reward-model data: rankings or pairs -> pairs with a `group`, a held-out split by group, kwise rows.

Everything becomes pairs first, through `rlhf.data` (rankings: every higher tier beats every lower tier,
ties give none; several reviewers of one set are combined by `majority_vote_pairs`). Each pair keeps its
`group` (the ranking it came from), which does three jobs: the held-out split is drawn over groups, so the
same prompt and responses never sit on both sides; the kwise loss gathers a group's pairs back into one
batch element (each distinct response tokenised and scored once); and evaluation reports accuracy per
group. Pairs files without `group` make each pair its own group (kwise then reduces to pairwise).
"""

from __future__ import annotations

import random
from typing import Any, Optional

from rlhf.errors import ConfigError, DataError


def detect_format(path: str, declared: str = "auto") -> str:
    """`rankings` or `pairs`: as declared, or from the first row's fields."""
    if declared in ("rankings", "pairs"):
        return declared
    from rlhf.data import read_rows

    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    row_number, first = rows[0]
    if "ranking" in first:
        return "rankings"
    if "chosen" in first and "rejected" in first:
        return "pairs"
    raise DataError(
        f"{path}: row {row_number}: cannot tell the format: expected a 'ranking' field (rankings) or 'chosen' and "
        "'rejected' (pairs); set rm.data_format"
    )


def _loaded(result):
    """load_* return a Dataset, or (Dataset, SkipReport) with skip_bad_rows; print what was skipped."""
    if isinstance(result, tuple):
        dataset, report = result
        if report.skipped:
            print(f"rlhf rm: {report.summary()}")
        return dataset
    return result


def drop_low_gold_accuracy(rankings: list[dict], min_gold_accuracy: Optional[float], path: str) -> list[dict]:
    """Leave out rankings whose `gold_accuracy` (the annotator's accuracy on gold items, written by
    `rlhf annotate export`) is below the threshold. Rows without one (reviewers not yet measured, gold
    items, adjudicated tasks, app feedback) are kept: there is nothing to hold against them."""
    if min_gold_accuracy is None:
        return rankings
    if not 0.0 <= min_gold_accuracy <= 1.0:
        raise ConfigError(f"rm.min_gold_accuracy must be between 0 and 1, got {min_gold_accuracy}")
    kept = [row for row in rankings if row.get("gold_accuracy") is None or row["gold_accuracy"] >= min_gold_accuracy]
    if len(kept) < len(rankings):
        print(
            f"rlhf rm: {path}: {len(rankings) - len(kept)} ranking(s) by annotators with gold accuracy below "
            f"rm.min_gold_accuracy={min_gold_accuracy} left out"
        )
    return kept


def load_preference_pairs(
    path: str,
    data_format: str = "auto",
    min_agreement: float = 0.5,
    skip_bad_rows: bool = False,
    min_gold_accuracy: Optional[float] = None,
    weight_by_quality: bool = False,
) -> list[dict]:
    """Validated pairs {"prompt", "chosen", "rejected", "group"[, "margin"]} from a rankings or pairs file.

    Rankings only: `min_gold_accuracy` drops rankings of annotators below it; `weight_by_quality` makes
    each ranking's vote count its `quality_weight` in the majority vote (see rlhf.data.majority_vote_pairs).
    """
    from rlhf.data import load_pairs, load_rankings, majority_vote_pairs

    fmt = detect_format(path, data_format)
    if fmt == "rankings":
        rankings = _loaded(load_rankings(path, skip_bad_rows=skip_bad_rows)).to_list()
        rankings = drop_low_gold_accuracy(rankings, min_gold_accuracy, path)
        weight_key = "quality_weight" if weight_by_quality else None
        pairs, disputed = majority_vote_pairs(rankings, min_agreement, weight_key=weight_key)
        if disputed:
            print(
                f"rlhf rm: {path}: {len(disputed)} pair(s) without a clear reviewer majority left out "
                f"(rm.min_agreement={min_agreement})"
            )
    else:
        pairs = _loaded(load_pairs(path, skip_bad_rows=skip_bad_rows)).to_list()
        for index, pair in enumerate(pairs):
            if pair.get("group") is None:
                pair["group"] = f"pair-{index}"
            pair["group"] = str(pair["group"])
    if not pairs:
        raise DataError(f"{path}: no preference pairs (every ranking was a tie or all_bad)")
    return [
        {
            key: value
            for key, value in pair.items()
            if key in ("prompt", "chosen", "rejected", "group", "margin") and value is not None
        }
        for pair in pairs
    ]


def split_by_group(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out round(eval_fraction * groups) whole groups (at least one), chosen with `seed`."""
    groups = sorted({pair["group"] for pair in pairs})
    num_eval = max(1, round(len(groups) * eval_fraction))
    if num_eval >= len(groups):
        raise ConfigError(
            f"data.eval_fraction={eval_fraction} leaves no training rankings ({len(groups)} in all); lower it or "
            "give data.eval_file"
        )
    held_out = set(random.Random(seed).sample(groups, num_eval))
    return [p for p in pairs if p["group"] not in held_out], [p for p in pairs if p["group"] in held_out]


def first_groups(pairs: list[dict], max_groups: Optional[int]) -> list[dict]:
    """The pairs of the first `max_groups` groups (data.max_samples counts rankings)."""
    if not max_groups:
        return pairs
    kept: list[str] = []
    for pair in pairs:
        if pair["group"] not in kept:
            kept.append(pair["group"])
    allowed = set(kept[:max_groups])
    return [pair for pair in pairs if pair["group"] in allowed]


def train_eval_pairs(cfg) -> tuple[list[dict], list[dict]]:
    """Training and held-out pairs from data.train_file / data.eval_file / data.eval_fraction."""
    load = lambda path: load_preference_pairs(  # noqa: E731
        path,
        cfg.rm.data_format,
        cfg.rm.min_agreement,
        cfg.data.skip_bad_rows,
        cfg.rm.min_gold_accuracy,
        cfg.rm.weight_by_quality,
    )
    pairs = load(cfg.data.train_file)
    if cfg.data.eval_file:
        train, held_out = pairs, load(cfg.data.eval_file)
    elif cfg.data.eval_fraction and cfg.data.eval_fraction > 0:
        train, held_out = split_by_group(pairs, cfg.data.eval_fraction, cfg.run.seed)
    else:
        train, held_out = pairs, []
    return first_groups(train, cfg.data.max_samples), held_out


def require_margins(pairs: list[dict]) -> None:
    """rm.use_margin needs a margin on every pair (rankings give theirs to each of their pairs)."""
    missing = sum(1 for pair in pairs if "margin" not in pair)
    if missing:
        raise ConfigError(
            f"rm.use_margin=true but {missing} pair(s) have no 'margin' (add it to the data, or set "
            "rm.use_margin=false)"
        )


def group_rankings(pairs: list[dict]) -> list[dict[str, Any]]:
    """Pairs -> one row per group: its distinct responses and (better, worse) indices into them."""
    import json

    rows: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        row = rows.setdefault(
            pair["group"],
            {
                "group": pair["group"],
                "prompt": pair["prompt"],
                "responses": [],
                "better": [],
                "worse": [],
                "margin": [],
                "_index": {},
            },
        )
        indices = []
        for response in (pair["chosen"], pair["rejected"]):
            key = json.dumps(response, ensure_ascii=False)
            if key not in row["_index"]:
                row["_index"][key] = len(row["responses"])
                row["responses"].append(response)
            indices.append(row["_index"][key])
        row["better"].append(indices[0])
        row["worse"].append(indices[1])
        row["margin"].append(float(pair.get("margin", 0.0)))
    for row in rows.values():
        del row["_index"]
    return list(rows.values())


def kwise_dataset(pairs: list[dict], tokenizer, max_length: Optional[int]):
    """A datasets.Dataset of rankings for KwiseRewardTrainer; pairs with a response over max_length drop out."""
    import datasets

    from reward_model.scoring import preference_input_ids, surely_longer_than
    from rlhf.tokens import Encoder

    tokenizer = Encoder.of(tokenizer)  # built once: its probes render the chat template
    rows = []
    dropped = 0
    for ranking in group_rankings(pairs):
        ids = [
            None  # too long to be worth tokenising
            if surely_longer_than(max_length, ranking["prompt"], response)
            else preference_input_ids(tokenizer, ranking["prompt"], response)
            for response in ranking["responses"]
        ]
        fits = [sequence is not None and (not max_length or len(sequence) <= max_length) for sequence in ids]
        keep = [i for i, (b, w) in enumerate(zip(ranking["better"], ranking["worse"])) if fits[b] and fits[w]]
        dropped += len(ranking["better"]) - len(keep)
        if keep:
            # Only the responses a kept pair uses enter the batch: the collator pads to the longest
            # response, so one over-long response left in would set the width for the whole batch.
            used = sorted({ranking["better"][i] for i in keep} | {ranking["worse"][i] for i in keep})
            new_index = {old: new for new, old in enumerate(used)}
            rows.append(
                {
                    "response_ids": [ids[i] for i in used],
                    "better": [new_index[ranking["better"][i]] for i in keep],
                    "worse": [new_index[ranking["worse"][i]] for i in keep],
                    "margin": [ranking["margin"][i] for i in keep],
                }
            )
    if dropped:
        print(f"rlhf rm: {dropped} pair(s) longer than data.max_length={max_length} tokens left out")
    if not rows:
        raise DataError(f"no ranking has a pair within data.max_length={max_length} tokens")
    return datasets.Dataset.from_list(rows)


def pairwise_dataset(pairs: list[dict], tokenizer, use_margin: bool, max_length: Optional[int] = None):
    """A datasets.Dataset of pre-tokenised chosen_ids/rejected_ids (+ margin) rows for trl.RewardTrainer.

    Tokenised here by `rlhf.tokens.Encoder`, not by TRL: the ids are the ones PPO and eval score (TRL
    would concatenate a message-list prompt with a text response, a TypeError, and read a chat row's
    score after the template's turn terminator). Pairs with a sequence over `max_length` are left out
    and counted (TRL would drop them silently)."""
    import datasets

    from reward_model.scoring import surely_longer_than
    from rlhf.tokens import Encoder

    encoder = Encoder.of(tokenizer)
    rows = []
    for pair in pairs:
        if surely_longer_than(max_length, pair["prompt"], pair["chosen"], pair["rejected"]):
            continue  # dropped below anyway; not tokenised at all
        row = {
            "chosen_ids": encoder.sequence(pair["prompt"], pair["chosen"]),
            "rejected_ids": encoder.sequence(pair["prompt"], pair["rejected"]),
        }
        if max_length and max(len(row["chosen_ids"]), len(row["rejected_ids"])) > max_length:
            continue
        if use_margin:
            row["margin"] = pair["margin"]
        rows.append(row)
    if len(rows) < len(pairs):
        print(f"rlhf rm: {len(pairs) - len(rows)} pair(s) longer than data.max_length={max_length} tokens left out")
    if pairs and not rows:
        raise DataError(f"no pair is within data.max_length={max_length} tokens")
    return datasets.Dataset.from_list(rows)
