"""Generator of the built-in "tiny assistant" task: prompts, imperfect demonstrations, held-out prompts.

    rlhf data make-task --out data/tiny --seed 0

Everything comes from rlhf/tasks/tiny/task.json (topics and facts, phrase lists, prompt templates, contractor
profiles, sizes) and one `random.Random(seed)`, so the same seed writes byte-identical files. Prompts
are "User: {request}\\nAssistant:" with a request built from a template, an optional prefix and suffix;
some exact prompts and four whole templates are kept out of training and appear only in the eval
prompts. Demonstrations are written by simulated contractors of uneven quality: mostly helpful, but
with off-topic facts, filler, rude remarks, repeated phrases and missing greetings/closings at the rates
in task.json, so an SFT model inherits those habits and RLHF has something to fix. Responses start with
a space and carry no end-of-sequence text (trainers append the tokenizer's EOS).
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any, Optional

from rlhf.tasks.tiny.judge import TASK_FILE, gold_score, rules_from_task

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


def format_prompt(task: dict[str, Any], request: str) -> str:
    return task["prompt_format"].format(request=request)


def prompt_row(
    task: dict[str, Any], topic: str, template: str, prefix: str, suffix: str, heldout_template: bool
) -> dict:
    request = prefix + template.format(topic=topic) + suffix
    return {
        "prompt": format_prompt(task, request),
        "meta": {"topic": topic, "template": template, "heldout_template": heldout_template},
    }


def all_prompts(task: dict[str, Any], split: str) -> list[dict]:
    """Every (topic, template, prefix, suffix) prompt of the train or heldout templates, in task order."""
    heldout = split == "heldout"
    return [
        prompt_row(task, topic, template, prefix, suffix, heldout)
        for topic in task["topics"]
        for template in task["templates"][split]
        for prefix in task["prefixes"]
        for suffix in task["suffixes"]
    ]


def join_phrases(phrases: list[str]) -> str:
    """The response text: phrases joined by spaces, with the leading space that follows 'Assistant:'."""
    return " " + " ".join(phrases)


def ideal_response(task: dict[str, Any], topic: str, rng: random.Random, num_facts: int = 3) -> str:
    """What a perfect contractor writes: a greeting, distinct on-topic facts, a closing."""
    facts = rng.sample(task["topics"][topic]["facts"], num_facts)
    return join_phrases([rng.choice(task["greetings"]), *facts, rng.choice(task["closings"])])


def write_demonstration(task: dict[str, Any], topic: str, contractor: dict[str, Any], rng: random.Random) -> str:
    """One contractor's answer: on-topic facts plus this contractor's habits, drawn independently."""
    num_facts = rng.choices(range(1, len(contractor["num_facts"]) + 1), weights=contractor["num_facts"])[0]
    body = rng.sample(task["topics"][topic]["facts"], num_facts)
    if rng.random() < contractor["off_topic"]:
        other = rng.choice([name for name in task["topics"] if name != topic])
        body.insert(rng.randint(0, len(body)), rng.choice(task["topics"][other]["facts"]))
    if rng.random() < contractor["filler"]:
        body.insert(rng.randint(0, len(body)), rng.choice(task["fillers"]))
    if rng.random() < contractor["repeat"]:
        index = rng.randrange(len(body))
        body.insert(rng.randint(index + 1, len(body)), body[index])
    if rng.random() < contractor["rude"]:
        body.insert(rng.randint(0, len(body)), rng.choice(task["rude"]))
    phrases = body
    if rng.random() < contractor["greeting"]:
        phrases = [rng.choice(task["greetings"])] + phrases
    if rng.random() < contractor["closing"]:
        phrases = phrases + [rng.choice(task["closings"])]
    return join_phrases(phrases)


def make_demonstrations(
    task: dict[str, Any], prompts: list[dict], count: int, rng: random.Random
) -> list[tuple[dict, str]]:
    """`count` (row, contractor name) pairs on prompts drawn with replacement."""
    profiles = task["contractors"]["profiles"]
    shares = [profile["share"] for profile in profiles]
    rows = []
    for _ in range(count):
        source = rng.choice(prompts)
        contractor = rng.choices(profiles, weights=shares)[0]
        completion = write_demonstration(task, source["meta"]["topic"], contractor, rng)
        rows.append(({"prompt": source["prompt"], "completion": completion}, contractor["name"]))
    return rows


def build_task(seed: int = 0, task_file: str | Path | None = None) -> dict[str, Any]:
    """All rows of the task (no files written): sft_train, sft_eval, prompts_train, prompts_eval, prompts_test,
    stats."""
    task = load_task(task_file)
    sizes = task["sizes"]
    rng = random.Random(seed)

    seen_template_prompts = all_prompts(task, "train")
    rng.shuffle(seen_template_prompts)
    heldout_exact = seen_template_prompts[: sizes["heldout_seen_template_prompts"]]
    prompts_train = seen_template_prompts[sizes["heldout_seen_template_prompts"] :]
    heldout_template_prompts = all_prompts(task, "heldout")
    rng.shuffle(heldout_template_prompts)
    eval_from_heldout_templates = sizes["eval_prompts"] - len(heldout_exact)
    prompts_eval = heldout_exact + heldout_template_prompts[:eval_from_heldout_templates]
    rng.shuffle(prompts_eval)
    # The test split (the final report's) takes the next held-out-template prompts of the already shuffled
    # list, so it is disjoint from training and eval and draws nothing from `rng`: every other file is what
    # it was before the split existed. Every seen-template prompt is in training or eval, so the test split
    # holds only templates never used in training (compare it with eval's held-out-template part).
    test_end = eval_from_heldout_templates + sizes["test_prompts"]
    prompts_test = heldout_template_prompts[eval_from_heldout_templates:test_end]

    demonstrations = make_demonstrations(task, prompts_train, sizes["sft_train"] + sizes["sft_eval"], rng)
    sft_train = [row for row, _ in demonstrations[: sizes["sft_train"]]]
    sft_eval = [row for row, _ in demonstrations[sizes["sft_train"] :]]
    ideal = [ideal_response(task, row["meta"]["topic"], rng) for row in prompts_eval]
    stats = task_stats(task, demonstrations, prompts_eval, ideal)
    return {
        "task": task,
        "sft_train": sft_train,
        "sft_eval": sft_eval,
        "prompts_train": prompts_train,
        "prompts_eval": prompts_eval,
        "prompts_test": prompts_test,
        "stats": stats,
    }


def task_stats(
    task: dict[str, Any], demonstrations: list[tuple[dict, str]], prompts_eval: list[dict], ideal: list[str]
) -> dict[str, Any]:
    """Gold scores of the demonstrations (overall, per contractor) and of ideal answers; defect rates."""
    from rlhf.tasks.tiny.judge import judge_breakdown

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

    def rate(rule: str) -> float:
        return round(sum(1 for b, _ in breakdowns if b["counts"][rule]) / len(breakdowns), 3)

    return {
        "demonstrations_mean_gold": round(statistics.fmean(scores), 3),
        "demonstrations_std_gold": round(statistics.pstdev(scores), 3),
        "ideal_mean_gold": round(statistics.fmean(gold_score(p["prompt"], r) for p, r in zip(prompts_eval, ideal)), 3),
        "per_contractor": per_contractor,
        "rates": {
            rule: rate(rule)
            for rule in (
                "greeting_first",
                "closing_last",
                "off_topic_fact",
                "filler",
                "rude",
                "repetition",
                "word_over_budget",
            )
        },
        "mean_words": round(statistics.fmean(b["num_words"] for b, _ in breakdowns), 2),
    }


README_TEMPLATE = """# The "tiny assistant" task (generated; do not edit)

Written by `rlhf data make-task --out {out} --seed {seed}` from rlhf/tasks/tiny/task.json; the same seed gives
the same bytes. See rlhf/tasks/tiny/generator.py and judge.py (gold judge).

## Files

| file | rows | format |
|---|---|---|
| sft_train.jsonl | {n_sft_train} | `{{"prompt", "completion"}}` demonstrations by simulated contractors |
| sft_eval.jsonl | {n_sft_eval} | same, held-out rows |
| prompts_train.jsonl | {n_prompts_train} | `{{"prompt", "meta": {{"topic", "template", "heldout_template"}}}}` for generation and PPO |
| prompts_eval.jsonl | {n_prompts_eval} | held-out prompts: {n_eval_seen} unseen prompts of training templates, {n_eval_heldout} of templates never used in training; PPO's in-training evaluation and the sweeps' metric |
| prompts_test.jsonl | {n_prompts_test} | test prompts for the final report, in neither of the above: all of templates never used in training (every prompt of a training template is in prompts_train or prompts_eval) |
| task.json | - | topics, facts, phrase lists, templates, contractor profiles and the judge's rules and weights |

A prompt is `User: <request>\\nAssistant:`; a completion is the text after it, starting with a space, with
no end-of-sequence text (trainers append the tokenizer's EOS). Example:

    {example_prompt!r}
    {example_completion!r}

## The gold judge

The score of a response is a sum over its phrases (sentences ending in `.`, `!` or `?`): +1 per distinct
on-topic fact, -1 per off-topic fact, -2 per rude remark, -0.5 per filler, -1 per unknown or unfinished
phrase, -1 per repeated phrase, +0.5 for a greeting as the first phrase, +1 for a closing as the last
(-0.5 for either elsewhere), -1 if there is no on-topic fact, and -0.25 per word beyond
{budget} words. The exact rules are the `judge` section of task.json. The judge stands for the
reviewers' true preference: it makes the simulated rankings and scores evaluations, and is never a
training signal for the policy.

## Demonstrations

| | mean gold score |
|---|---|
| ideal answers (greeting, 3 on-topic facts, closing) on the eval prompts | {ideal:.2f} |
| all demonstrations | {demo:.2f} (std {demo_std:.2f}) |
{contractor_rows}

Share of demonstrations with: {rates}. Mean length {mean_words} words.
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
        budget=built["task"]["judge"]["length_budget_words"],
        ideal=stats["ideal_mean_gold"],
        demo=stats["demonstrations_mean_gold"],
        demo_std=stats["demonstrations_std_gold"],
        contractor_rows=contractor_rows,
        rates=rates,
        mean_words=stats["mean_words"],
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
