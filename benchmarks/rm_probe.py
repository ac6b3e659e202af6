"""Does the reward model prefer what the gold judge prefers? Controlled replies built from the task's own
facts or items, scored by a run's reward model and by the gold judge.

    python benchmarks/rm_probe.py runs/tiny                  # a pipeline run directory (its rm/model)
    python benchmarks/rm_probe.py runs/lists --task lists
    python benchmarks/rm_probe.py runs/tiny --reward-model runs/tiny-other/rm/model

For each of the first `--prompts` test prompts it writes the same reply several ways that differ in one
thing the judge counts (tiny: how many distinct facts, a fact said twice, no greeting, no closing, an
off-topic fact; lists: one item fewer or more than asked, an item twice, the excluded item, no header),
scores every variant with the reward model and the judge, and prints one JSON object:

- per variant: the mean reward-model score and the mean gold score;
- `pairs`: for each two variants, the share of prompts on which the reward model orders them as the judge
  does (only where the judge's scores differ); 0.5 is no better than chance, and a low value is a blind
  spot that PPO can be pushed along (the tiny base reward model prefers two facts and a repeat to three
  distinct facts: see docs/quality.md);
- `agreement`: the same share over every pair of variants of every prompt.

Sampled replies mix many rules at once; these isolate one rule each, so a blind spot is not averaged away.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GREETING, CLOSING = "Hello!", "Glad to help."


def tiny_variants(task: dict, meta: dict) -> dict[str, str]:
    """Replies to one tiny prompt, each one rule away from 'greeting, three facts, closing'."""
    facts = task["topics"][meta["topic"]]["facts"]
    other_topic = next(name for name in task["topics"] if name != meta["topic"])
    off_topic = task["topics"][other_topic]["facts"][0]

    def reply(*phrases: str) -> str:
        return " " + " ".join(phrases)

    return {
        "3 facts": reply(GREETING, facts[0], facts[1], facts[2], CLOSING),
        "2 facts": reply(GREETING, facts[0], facts[1], CLOSING),
        "4 facts": reply(GREETING, facts[0], facts[1], facts[2], facts[3], CLOSING),
        "2 facts + a repeat": reply(GREETING, facts[0], facts[1], facts[0], CLOSING),
        "3 facts + a repeat": reply(GREETING, facts[0], facts[1], facts[2], facts[1], CLOSING),
        "2 facts + off-topic": reply(GREETING, facts[0], facts[1], off_topic, CLOSING),
        "3 facts, no greeting": reply(facts[0], facts[1], facts[2], CLOSING),
        "3 facts, no closing": reply(GREETING, facts[0], facts[1], facts[2]),
    }


def lists_variants(task: dict, meta: dict) -> dict[str, str]:
    """Replies to one lists prompt, each one rule away from 'header, exactly the asked items'."""
    count, category, excluded = meta["count"], meta["category"], meta.get("excluded")
    items = [item for item in task["categories"][category] if item != excluded]
    header = f"{task['counts'][str(count)].capitalize()} {category}"

    def reply(listed: list[str], with_header: bool = True) -> str:
        body = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + f" and {listed[-1]}"
        return f" {header + ': ' if with_header else ''}{body}."

    exact = items[:count]
    variants = {
        "exact count": reply(exact),
        "one fewer": reply(exact[:-1]) if count > 1 else None,
        "one more": reply(items[: count + 1]),
        "an item twice": reply(exact[:-1] + [exact[0]]),
        "no header": reply(exact, with_header=False),
    }
    if excluded:
        variants["the excluded item"] = reply(exact[:-1] + [excluded])
    return {name: text for name, text in variants.items() if text is not None}


VARIANTS: dict[str, Callable[[dict, dict], dict[str, str]]] = {"tiny": tiny_variants, "lists": lists_variants}


def ordered_alike(rm: list[float], gold: list[float]) -> tuple[int, int]:
    """(pairs the RM orders as the judge does, pairs the judge tells apart) over every two of the values."""
    agree = total = 0
    for a, b in itertools.combinations(range(len(gold)), 2):
        if gold[a] == gold[b]:
            continue
        total += 1
        agree += (rm[a] - rm[b]) * (gold[a] - gold[b]) > 0
    return agree, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a pipeline run directory (its rm/model is probed unless --reward-model)")
    parser.add_argument("--task", default="tiny", choices=sorted(VARIANTS))
    parser.add_argument("--reward-model", help="a reward model directory (default: RUN_DIR/rm/model)")
    parser.add_argument("--prompts", type=int, default=128, help="test prompts to build replies for")
    args = parser.parse_args()

    from rlhf.modeling import load_scalar_model, load_tokenizer
    from rlhf.plugins import load_judge
    from rlhf.scoring import reward_scores
    from rlhf.tokens import Encoder

    model_dir = args.reward_model or str(Path(args.run_dir) / "rm" / "model")
    tokenizer = load_tokenizer(model_dir)
    reward_model = load_scalar_model(model_dir, tokenizer=tokenizer).eval()
    encoder = Encoder(tokenizer)
    judge = load_judge(args.task, "--judge")
    task = json.loads((REPO / "data" / args.task / "task.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (REPO / "data" / args.task / "prompts_test.jsonl").open(encoding="utf-8")]

    per_prompt = []  # (variant names, rm scores, gold scores) per prompt
    for row in rows[: args.prompts]:
        variants = VARIANTS[args.task](task, row["meta"])
        names, texts = list(variants), list(variants.values())
        prompt_ids = encoder.prompt_ids(row["prompt"])
        response_ids = [encoder.response_ids(row["prompt"], text, prompt_ids) for text in texts]
        rm = reward_scores(reward_model, [prompt_ids] * len(texts), response_ids, tokenizer.pad_token_id).tolist()
        gold = judge.scores([row["prompt"]] * len(texts), texts)
        per_prompt.append((names, rm, gold))

    variant_names = list(dict.fromkeys(name for names, _, _ in per_prompt for name in names))
    by_variant = {name: {"rm": [], "gold": []} for name in variant_names}
    pair_counts = {pair: [0, 0] for pair in itertools.combinations(variant_names, 2)}
    agree_all = total_all = 0
    for names, rm, gold in per_prompt:
        scored = dict(zip(names, zip(rm, gold)))
        for name, (rm_score, gold_score) in scored.items():
            by_variant[name]["rm"].append(rm_score)
            by_variant[name]["gold"].append(gold_score)
        for a, b in pair_counts:
            if a in scored and b in scored and scored[a][1] != scored[b][1]:
                pair_counts[(a, b)][1] += 1
                pair_counts[(a, b)][0] += (scored[a][0] - scored[b][0]) * (scored[a][1] - scored[b][1]) > 0
        agree, total = ordered_alike(rm, gold)
        agree_all, total_all = agree_all + agree, total_all + total
    print(
        json.dumps(
            {
                "reward_model": model_dir,
                "task": args.task,
                "prompts": len(per_prompt),
                "variants": {
                    name: {
                        "rm_mean": round(statistics.mean(values["rm"]), 4),
                        "gold_mean": round(statistics.mean(values["gold"]), 4),
                    }
                    for name, values in by_variant.items()
                },
                "pairs": {
                    f"{a} | {b}": round(agree / total, 3) for (a, b), (agree, total) in pair_counts.items() if total
                },
                "agreement": round(agree_all / total_all, 4) if total_all else None,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
