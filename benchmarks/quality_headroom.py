"""How much of the gold win-rate gap one failure explains: PPO's responses with their repeats removed.

    python benchmarks/quality_headroom.py runs/tiny            # a finished pipeline run (its report.json)
    python benchmarks/quality_headroom.py runs/lists --task lists

Reads the evaluation report's 256 per-prompt responses and re-judges PPO's with every repeated phrase
(tiny: a phrase said earlier in the reply) or repeated list item (lists) dropped, everything else as it
was; prints one JSON object: the PPO-over-SFT gold win rate as evaluated and after the edit, with Wilson
intervals, and the mean gold scores. It is an upper bound on what curing repetition alone could give, the
other rules held, not a policy anyone trained. `both_repeats_removed` edits the SFT responses too: the win
rate left if the repeats were cured upstream of PPO (in the SFT model both policies start from).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def without_repeated_phrases(response: str) -> str:
    from rlhf.tasks.tiny.judge import normalize_phrase, split_phrases

    seen: set[str] = set()
    kept = []
    for phrase in split_phrases(response):
        if normalize_phrase(phrase) not in seen:
            seen.add(normalize_phrase(phrase))
            kept.append(phrase)
    return " " + " ".join(kept)


def without_repeated_items(response: str) -> str:
    from rlhf.tasks.lists.judge import ITEM_SEPARATOR, split_reply

    header, listed = split_reply(response)
    ended = listed.endswith(".")
    items: list[str] = []
    seen: set[str] = set()
    for item in filter(None, (piece.strip() for piece in ITEM_SEPARATOR.split(listed[:-1] if ended else listed))):
        if item.lower() not in seen:  # the judge compares items lower-cased
            seen.add(item.lower())
            items.append(item)
    body = items[0] if len(items) == 1 else ", ".join(items[:-1]) + (f" and {items[-1]}" if items else "")
    return f" {header + ': ' if header else ''}{body}{'.' if ended else ''}"


EDITS = {"tiny": without_repeated_phrases, "lists": without_repeated_items}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a pipeline run directory holding report.json")
    parser.add_argument("--task", default="tiny", choices=sorted(EDITS))
    args = parser.parse_args()

    from rlhf.commands.evaluate import win_rate
    from rlhf.plugins import load_judge

    judge = load_judge(args.task, "--judge")
    report = json.loads((Path(args.run_dir) / "report.json").read_text(encoding="utf-8"))
    prompts = [item["prompt"] for item in report["samples"]]
    sft_responses = [item["responses"]["sft"]["response"] for item in report["samples"]]
    sft = judge.scores(prompts, sft_responses)
    ppo_responses = [item["responses"]["ppo"]["response"] for item in report["samples"]]
    ppo = judge.scores(prompts, ppo_responses)
    edited = judge.scores(prompts, [EDITS[args.task](response) for response in ppo_responses])
    sft_edited = judge.scores(prompts, [EDITS[args.task](response) for response in sft_responses])
    as_evaluated, repeats_removed = win_rate(ppo, sft), win_rate(edited, sft)
    both_removed = win_rate(edited, sft_edited)
    print(
        json.dumps(
            {
                "run_dir": args.run_dir,
                "task": args.task,
                "prompts": len(prompts),
                "gold_mean": {
                    "sft": statistics.mean(sft),
                    "ppo": statistics.mean(ppo),
                    "ppo_repeats_removed": statistics.mean(edited),
                    "sft_repeats_removed": statistics.mean(sft_edited),
                },
                "win_rate": {
                    "ppo": as_evaluated["win_rate"],
                    "ppo_repeats_removed": repeats_removed["win_rate"],
                    "both_repeats_removed": both_removed["win_rate"],
                },
                "ci95": {
                    "ppo": as_evaluated["ci95"],
                    "ppo_repeats_removed": repeats_removed["ci95"],
                    "both_repeats_removed": both_removed["ci95"],
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
