"""Alignment quality of the shipped defaults on the built-in tasks and seeds; prints one JSON table.

    python benchmarks/pipeline_quality.py --tasks tiny,lists --seeds 0,1,2
    python benchmarks/pipeline_quality.py --tasks tiny,lists --seeds 0 --out runs/quality-kl01 ppo.kl_coef=0.1

Each (task, seed) runs `rlhf pipeline --config configs/<task>/pipeline.yaml` in its own output directory
(<out>/<task>-seed<seed>, with run.seed and the reviewers' seed set to the seed), exactly as a user would,
then reads what the pipeline wrote: the PPO-over-SFT win rate under the task's gold judge with its 95%
interval, the gold scores of SFT and PPO, the RM-judged win rate, PPO's KL to the SFT reference, the
reward model's held-out pairwise accuracy against the reviewers' rankings (the RM stage's eval/accuracy)
and against the gold judge (the same held-out pairs, ordered by gold score; pairs the judge ties are
left out), and wall seconds per stage. A pipeline directory that already finished is only re-read (the
pipeline skips completed stages), so an interrupted sweep resumes where it stopped. Extra arguments are
pipeline overrides passed to every run (`ppo.kl_coef=0.1`, `sft.train.num_train_epochs=6`).

The bar (issue 19): on every task and seed, win rate >= 0.80 with the 95% interval's low end >= 0.75,
in <= 360 s of pipeline wall time (stage seconds summed, base model included, make-task excluded). The
full table (2 tasks x 3 seeds) takes about 40 minutes of an otherwise idle 2-core machine; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BAR = {"win_rate": 0.80, "ci_low": 0.75, "pipeline_seconds": 360.0}
SETUP_STAGES = ("task",)  # writing the task's files: not pipeline time (building the base model is)


def rm_gold_accuracy(run_dir: Path, judge_spec: str) -> dict[str, Optional[float]]:
    """The saved RM's held-out pairs (the RM stage's own split) ordered by RM score vs by the gold judge."""
    from reward_model.preference_data import train_eval_pairs
    from reward_model.scoring import score_pairs
    from rlhf.app.schema import load_config
    from rlhf.modeling import load_scalar_model, load_tokenizer
    from rlhf.plugins import load_judge

    rm_dir = run_dir / "rm"
    cfg = load_config(rm_dir / "config.yaml", require_complete=False)
    _, held_out = train_eval_pairs(cfg)
    if not held_out:
        return {"accuracy_vs_gold": None, "gold_ordered_pairs": 0}
    judge = load_judge(judge_spec)
    tokenizer = load_tokenizer(str(rm_dir / "model"))
    model = load_scalar_model(str(rm_dir / "model"), tokenizer).eval()
    chosen_rm, rejected_rm = score_pairs(model, tokenizer, held_out, batch_size=64, max_length=cfg.data.max_length)
    prompts = [str(pair["prompt"]) for pair in held_out]
    chosen_gold = judge.scores(prompts, [str(pair["chosen"]) for pair in held_out])
    rejected_gold = judge.scores(prompts, [str(pair["rejected"]) for pair in held_out])
    agree = ordered = 0
    for rm_c, rm_r, gold_c, gold_r in zip(chosen_rm.tolist(), rejected_rm.tolist(), chosen_gold, rejected_gold):
        if gold_c == gold_r:
            continue
        ordered += 1
        agree += (rm_c > rm_r) == (gold_c > gold_r)
    return {"accuracy_vs_gold": agree / ordered if ordered else None, "gold_ordered_pairs": ordered}


def run_pipeline(task: str, seed: int, out: Path, overrides: list[str], log: Path) -> tuple[int, float]:
    command = [sys.executable, "-m", "rlhf", "pipeline", "--config", f"configs/{task}/pipeline.yaml"]
    command += [f"run.output_dir={out}", f"run.seed={seed}", f"pipeline.reviewers.seed={seed}", *overrides]
    began = time.time()
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT).returncode
    return code, time.time() - began


def read_row(task: str, seed: int, out: Path, judge_spec: str) -> dict[str, Any]:
    """The table row of one finished pipeline directory."""
    summary = json.loads((out / "summary.json").read_text())
    report = json.loads((out / "report.json").read_text())
    state = json.loads((out / "pipeline_state.json").read_text())
    seconds = {stage: info.get("seconds") for stage, info in state["stages"].items() if "seconds" in info}
    entry = next(e for e in report["win_rates"] if e["policy"] == "ppo" and e["against"] == "sft")
    gold, rm = entry.get("gold", {}), entry.get("rm", {})
    policies = report["policies"]
    row = {
        "task": task,
        "seed": seed,
        "win_rate": gold.get("win_rate"),
        "ci95": gold.get("ci95"),
        "rm_win_rate": rm.get("win_rate"),
        "gold_score": {"sft": policies["sft"]["gold_score"], "ppo": policies["ppo"]["gold_score"]},
        "kl": policies["ppo"]["kl_to_reference"],
        "rm_heldout_accuracy": {"vs_reviewers": summary.get("rm/eval/accuracy")},
        "rm_heldout_loss": summary.get("rm/eval/loss"),  # above ln 2 = 0.693: over-fitted (the RM stage warns)
        "seconds": seconds,
        "pipeline_seconds": round(sum(v for k, v in seconds.items() if k not in SETUP_STAGES and v), 1),
    }
    row["rm_heldout_accuracy"].update(rm_gold_accuracy(out, judge_spec))
    blind = [r["rule"] for r in (report.get("gold_rules") or {}).get("rules", []) if r.get("blind_spot")]
    row["rm_blind_spots"] = blind
    row["meets_bar"] = (
        row["win_rate"] is not None
        and row["win_rate"] >= BAR["win_rate"]
        and row["ci95"][0] >= BAR["ci_low"]
        and row["pipeline_seconds"] <= BAR["pipeline_seconds"]
    )
    return row


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="tiny,lists", help="comma-separated built-in tasks (configs/<task>/)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--out", default="runs/quality", help="root of the per-(task, seed) pipeline directories")
    parser.add_argument("overrides", nargs="*", help="pipeline overrides passed to every run")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    tasks = [task for task in args.tasks.split(",") if task]
    seeds = [int(seed) for seed in args.seeds.split(",") if seed != ""]
    root = Path(args.out)
    if not root.is_absolute():
        root = REPO / root
    root.mkdir(parents=True, exist_ok=True)

    from rlhf.app.pipeline import load_pipeline_config, resolve_judge

    rows = []
    for task in tasks:
        judge_spec = resolve_judge(load_pipeline_config(str(REPO / "configs" / task / "pipeline.yaml"), []).pipeline)
        for seed in seeds:
            out = root / f"{task}-seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            code, wall = run_pipeline(task, seed, out, args.overrides, out / "benchmark.log")
            if code != 0:
                rows.append({"task": task, "seed": seed, "error": f"exit {code}; see {out / 'benchmark.log'}"})
                continue
            row = read_row(task, seed, out, judge_spec)
            row["wall_seconds_this_call"] = round(wall, 1)
            rows.append(row)
            print(json.dumps({"progress": f"{task} seed {seed}", "win_rate": row["win_rate"]}), file=sys.stderr)

    finished = [row for row in rows if "error" not in row]
    per_task = {}
    for task in tasks:
        mine = [row for row in finished if row["task"] == task]
        if mine:
            per_task[task] = {
                "mean_win_rate": sum(row["win_rate"] for row in mine) / len(mine),
                "min_ci_low": min(row["ci95"][0] for row in mine),
                "max_pipeline_seconds": max(row["pipeline_seconds"] for row in mine),
                "all_seeds_meet_bar": all(row["meets_bar"] for row in mine) and len(mine) == len(seeds),
            }
    print(
        json.dumps(
            {
                "command": "python benchmarks/pipeline_quality.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                "bar": BAR,
                "rows": rows,
                "per_task": per_task,
                "all_meet_bar": bool(finished) and len(finished) == len(rows) and all(r["meets_bar"] for r in finished),
                "load_average": os.getloadavg(),
            },
            indent=1,
        )
    )
    return 0 if len(finished) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
