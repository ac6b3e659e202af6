"""Generator of the built-in "tiny lister" task: prompts, imperfect demonstrations, held-out prompts.

    rlhf data make-task --task lists --out data/lists --seed 0

Everything comes from rlhf/tasks/lists/task.json and one `random.Random(seed)`, so the same seed writes
byte-identical files. A prompt asks for two to five items of a category ("User: Name three fruits. But
not plum.\\nAssistant:"); half of them exclude one item. Some exact prompts and two whole templates are
kept out of training and appear only in the eval prompts. Demonstrations are written by simulated
contractors of uneven quality: missing or wrong-count headers, one item too few, the excluded item,
items of another category, repeats and missing periods, at the rates in task.json; listing one item
too many is rare, so the reward model sees little of it (see judge.py). Responses start with a space
and carry no end-of-sequence text.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any, Optional

from rlhf.tasks.lists.judge import TASK_FILE, judge_breakdown, rules_from_task

OUTPUT_FILES = (
    "sft_train.jsonl",
    "sft_eval.jsonl",
    "prompts_train.jsonl",
    "prompts_eval.jsonl",
    "prompts_test.jsonl",
    "task.json",
    "README.md",
)


def load_task(task_file: str | Path | None = None) -> dict[str, Any]:
    return json.loads(Path(task_file or TASK_FILE).read_text(encoding="utf-8"))


def all_prompts(task: dict[str, Any], split: str, rng: random.Random) -> list[dict]:
    """Per (category, count, template, prefix): one prompt without an exclusion and one excluding a random
    item of the category, in task order."""
    rows = []
    for category, items in task["categories"].items():
        for count, word in task["counts"].items():
            for template in task["templates"][split]:
                for prefix in task["prefixes"]:
                    request = prefix + template.format(count=word, category=category)
                    for excluded in [None, *rng.sample(items, task["exclusions_per_prompt"])]:
                        text = request + (task["exclusion_format"].format(item=excluded) if excluded else "")
                        rows.append(
                            {
                                "prompt": task["prompt_format"].format(request=text),
                                "meta": {
                                    "category": category,
                                    "count": int(count),
                                    "excluded": excluded,
                                    "template": template,
                                    "heldout_template": split == "heldout",
                                },
                            }
                        )
    return rows


def render_reply(header: Optional[str], items: list[str], period: bool = True) -> str:
    """' Three fruits: apple, mango and peach.' (no header: ' apple, mango and peach.')."""
    body = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return " " + (f"{header}: " if header else "") + body + ("." if period else "")


def header_text(task: dict[str, Any], count: int, category: str) -> str:
    return f"{task['counts'][str(count)].capitalize()} {category}"


def ideal_response(task: dict[str, Any], meta: dict, rng: random.Random) -> str:
    """What a perfect contractor writes: the header, exactly `count` distinct allowed items, a period."""
    allowed = [item for item in task["categories"][meta["category"]] if item != meta["excluded"]]
    return render_reply(header_text(task, meta["count"], meta["category"]), rng.sample(allowed, meta["count"]))


def write_demonstration(task: dict[str, Any], meta: dict, contractor: dict[str, Any], rng: random.Random) -> str:
    """One contractor's answer: a list of about `count` items plus this contractor's habits."""
    count, category = meta["count"], meta["category"]
    offset = rng.choices((-2, -1, 0, 1), weights=contractor["num_items"])[0]
    allowed = [item for item in task["categories"][category] if item != meta["excluded"]]
    items = rng.sample(allowed, min(max(1, count + offset), len(allowed)))
    if meta["excluded"] and rng.random() < contractor["excluded"]:
        items[rng.randrange(len(items))] = meta["excluded"]
    if rng.random() < contractor["wrong_category"]:
        other = rng.choice([name for name in task["categories"] if name != category])
        items[rng.randrange(len(items))] = rng.choice(task["categories"][other])
    if rng.random() < contractor["duplicate"]:
        items.insert(rng.randint(1, len(items)), rng.choice(items))
    header = None
    if rng.random() < contractor["header"]:
        said = count
        if rng.random() < contractor["wrong_count_header"]:
            said = rng.choice([int(number) for number in task["counts"] if int(number) != count])
        header = header_text(task, said, category)
    return render_reply(header, items, period=rng.random() >= contractor["no_period"])


def build_task(seed: int = 0, task_file: str | Path | None = None) -> dict[str, Any]:
    """All rows of the task (no files written): sft_train, sft_eval, prompts_train, prompts_eval, prompts_test,
    stats."""
    task = load_task(task_file)
    sizes = task["sizes"]
    rng = random.Random(seed)

    seen_template_prompts = all_prompts(task, "train", rng)
    rng.shuffle(seen_template_prompts)
    held = sizes["heldout_seen_template_prompts"]
    heldout_exact = seen_template_prompts[:held]
    prompts_train = seen_template_prompts[held : held + sizes["prompts_train"]]
    heldout_template_prompts = all_prompts(task, "heldout", rng)
    rng.shuffle(heldout_template_prompts)
    eval_from_heldout_templates = sizes["eval_prompts"] - len(heldout_exact)
    prompts_eval = heldout_exact + heldout_template_prompts[:eval_from_heldout_templates]
    rng.shuffle(prompts_eval)
    # The final report's test split: the next held-out-template prompts, disjoint from training and eval
    # (as the tiny task's), drawing nothing from `rng`.
    prompts_test = heldout_template_prompts[
        eval_from_heldout_templates : eval_from_heldout_templates + sizes["test_prompts"]
    ]

    profiles = task["contractors"]["profiles"]
    shares = [profile["share"] for profile in profiles]
    demonstrations = []
    for _ in range(sizes["sft_train"] + sizes["sft_eval"]):
        source = rng.choice(prompts_train)
        contractor = rng.choices(profiles, weights=shares)[0]
        completion = write_demonstration(task, source["meta"], contractor, rng)
        demonstrations.append(({"prompt": source["prompt"], "completion": completion}, contractor["name"]))
    ideal = [ideal_response(task, row["meta"], rng) for row in prompts_eval]
    return {
        "task": task,
        "sft_train": [row for row, _ in demonstrations[: sizes["sft_train"]]],
        "sft_eval": [row for row, _ in demonstrations[sizes["sft_train"] :]],
        "prompts_train": prompts_train,
        "prompts_eval": prompts_eval,
        "prompts_test": prompts_test,
        "stats": task_stats(task, demonstrations, prompts_eval, ideal),
    }


RATED_RULES = ("header", "header_wrong_count", "exact_count", "over_count", "excluded_item", "wrong_category")


def task_stats(
    task: dict[str, Any], demonstrations: list[tuple[dict, str]], prompts_eval: list[dict], ideal: list[str]
) -> dict[str, Any]:
    """Gold scores of the demonstrations (overall, per contractor) and of ideal answers; defect rates."""
    rules = rules_from_task(task)
    breakdowns = [(judge_breakdown(row["prompt"], row["completion"], rules), name) for row, name in demonstrations]
    scores = [breakdown["score"] for breakdown, _ in breakdowns]
    per_contractor = {}
    for profile in task["contractors"]["profiles"]:
        mine = [b["score"] for b, name in breakdowns if name == profile["name"]]
        per_contractor[profile["name"]] = {
            "rows": len(mine),
            "mean_gold": round(statistics.fmean(mine), 3) if mine else None,
        }
    rates = {
        rule: round(sum(1 for b, _ in breakdowns if b["counts"][rule]) / len(breakdowns), 3)
        for rule in (*RATED_RULES, "duplicate", "unterminated")
    }
    excluding = [(b, name) for (b, name), (row, _) in zip(breakdowns, demonstrations) if "But not" in row["prompt"]]
    rates["excluded_item_when_asked"] = round(
        sum(1 for b, _ in excluding if b["counts"]["excluded_item"]) / max(len(excluding), 1), 3
    )
    ideal_scores = [judge_breakdown(p["prompt"], r, rules)["score"] for p, r in zip(prompts_eval, ideal)]
    return {
        "demonstrations_mean_gold": round(statistics.fmean(scores), 3),
        "demonstrations_std_gold": round(statistics.pstdev(scores), 3),
        "ideal_mean_gold": round(statistics.fmean(ideal_scores), 3),
        "per_contractor": per_contractor,
        "rates": rates,
        "mean_items": round(statistics.fmean(len(b["items"]) for b, _ in breakdowns), 2),
    }


README_TEMPLATE = """# The "tiny lister" task (generated; do not edit)

Written by `rlhf data make-task --task lists --out {out} --seed {seed}` from rlhf/tasks/lists/task.json; the
same seed gives the same bytes. See rlhf/tasks/lists/generator.py (generator) and rlhf/tasks/lists/judge.py
(gold judge). Run the whole loop on it with `rlhf pipeline --config configs/lists/pipeline.yaml`.

## Files

| file | rows | format |
|---|---|---|
| sft_train.jsonl | {n_sft_train} | `{{"prompt", "completion"}}` demonstrations by simulated contractors |
| sft_eval.jsonl | {n_sft_eval} | same, held-out rows |
| prompts_train.jsonl | {n_prompts_train} | `{{"prompt", "meta": {{"category", "count", "excluded", "template", "heldout_template"}}}}` for generation and PPO |
| prompts_eval.jsonl | {n_prompts_eval} | held-out prompts: {n_eval_seen} unseen prompts of training templates, {n_eval_heldout} of templates never used in training; PPO's in-training evaluation and the sweeps' metric |
| prompts_test.jsonl | {n_prompts_test} | test prompts for the final report, in none of the above: prompts of templates never used in training |
| task.json | - | categories, items, count words, templates, contractor profiles and the judge's rules and weights |

A prompt asks for two to five items of a category, half of them with one item excluded; a completion
is a header that echoes the count and the category, then a comma-separated list with a final period.
It starts with a space and has no end-of-sequence text (trainers append the tokenizer's EOS). Example:

    {example_prompt!r}
    {example_completion!r}

## The gold judge

+1 per distinct allowed item of the category up to the requested count, +1 once for exactly that many,
+1 for the header `<Count> <category>`; -1 per item beyond the count, -2 for the excluded item, -1 per
item of another category, repeated item or unknown word, -1 for a header with the wrong count or any
other header, -1 for a missing final period, -1 if no allowed item is listed. A perfect answer scores
count + 2 (4 to 7). Two rules need the prompt read against the list (the count and the exclusion), the
ones a small reward model tends not to see; the evaluation report shows each rule for SFT and PPO. The
exact rules are the `judge` section of task.json.

## Demonstrations

| | mean gold score |
|---|---|
| perfect answers (header, exactly `count` allowed items, period) on the eval prompts | {ideal:.2f} |
| all demonstrations | {demo:.2f} (std {demo_std:.2f}) |
{contractor_rows}

Share of demonstrations with: {rates}. Mean {mean_items} listed items.
"""


def render_readme(built: dict[str, Any], out: str, seed: int) -> str:
    stats = built["stats"]
    contractor_rows = "\n".join(
        f"| contractor '{name}' ({info['rows']} rows) | {info['mean_gold']:.2f} |"
        for name, info in stats["per_contractor"].items()
    )
    rates = ", ".join(f"{rule.replace('_', ' ')} {value:.0%}" for rule, value in stats["rates"].items())
    heldout = sum(1 for row in built["prompts_eval"] if row["meta"]["heldout_template"])
    example = built["sft_train"][0]
    return README_TEMPLATE.format(
        out=out,
        seed=seed,
        n_sft_train=len(built["sft_train"]),
        n_sft_eval=len(built["sft_eval"]),
        n_prompts_train=len(built["prompts_train"]),
        n_prompts_eval=len(built["prompts_eval"]),
        n_eval_seen=len(built["prompts_eval"]) - heldout,
        n_eval_heldout=heldout,
        n_prompts_test=len(built["prompts_test"]),
        example_prompt=example["prompt"],
        example_completion=example["completion"],
        ideal=stats["ideal_mean_gold"],
        demo=stats["demonstrations_mean_gold"],
        demo_std=stats["demonstrations_std_gold"],
        contractor_rows=contractor_rows,
        rates=rates,
        mean_items=stats["mean_items"],
    )


def make_task(out_dir: str | Path, seed: int = 0, task_file: Optional[str | Path] = None) -> dict[str, Any]:
    """Write the task files into `out_dir` (each atomically) and return the stats and sizes."""
    from rlhf.files import write_json_atomic, write_jsonl_atomic, write_text_atomic

    built = build_task(seed, task_file)
    out = Path(out_dir)
    sizes = {}
    for name in ("sft_train", "sft_eval", "prompts_train", "prompts_eval", "prompts_test"):
        sizes[name] = write_jsonl_atomic(out / f"{name}.jsonl", built[name])
    write_json_atomic(out / "task.json", built["task"], indent=1)
    write_text_atomic(out / "README.md", render_readme(built, str(out_dir), seed))
    return {"out": str(out), "seed": seed, "sizes": sizes, **built["stats"]}
