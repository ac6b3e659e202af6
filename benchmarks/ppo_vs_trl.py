"""Ours against TRL 1.12's PPOTrainer on ppo_scaling.py's work, interleaved: the ratio with the machine's drift removed.

    PYTHONPATH=.trl112 python benchmarks/ppo_vs_trl.py                         # 0.2M 4.5M 26M, 3 rounds (~6 min alone)
    PYTHONPATH=.trl112 python benchmarks/ppo_vs_trl.py --sizes 135M --rounds 2   # ~6 min alone
    PYTHONPATH=.trl112 python benchmarks/ppo_vs_trl.py --precision bf16

On a shared 2-core VM the same update drifts by 10-25% between runs minutes apart (measured: ours at 26M 3.12
then 3.89 s), more than the gap being measured. So each round runs ours then TRL (odd rounds: TRL first) at one
size, each in a fresh process (`ppo_scaling.py --one`, `trl_ppo_baseline.py --sizes S`), and the ratio is taken
per round, where both saw the same machine; the report gives every round's ratio and their median. TRL's two
`gc.collect()` calls per update are removed (compute only, as issue 21 compares). Needs TRL 1.12 importable
(`pip install --no-deps --target .trl112 trl==1.12.0`; TRL removed PPOTrainer in 1.13). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ppo_scaling import run_child  # noqa: E402


def ours(size: str, precision: str, updates: int) -> dict:
    row, exit_code = run_child(size, precision, updates)
    if row is None:
        raise SystemExit(f"ours {size} {precision} failed (exit {exit_code})")
    return row


def trl(size: str, precision: str, updates: int) -> dict:
    command = [sys.executable, str(HERE / "trl_ppo_baseline.py"), "--sizes", size, "--precision", precision]
    child = subprocess.run([*command, "--updates", str(updates)], capture_output=True, text=True)
    if child.returncode:
        sys.stderr.write(child.stderr[-3000:])
        raise SystemExit(f"TRL {size} {precision} failed (exit {child.returncode})")
    return json.loads(child.stdout)["rows"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["0.2M", "4.5M", "26M"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=3, help="ours-and-TRL pairs per size, alternating who goes first")
    parser.add_argument("--updates", type=int, default=4, help="measured updates per run, after one warm-up")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")  # the children inherit it
    report = {"precision": args.precision, "updates_per_run": args.updates, "sizes": {}}
    for size in args.sizes:
        rounds = []
        for index in range(args.rounds):
            pair = {}
            for who in ("ours", "trl") if index % 2 == 0 else ("trl", "ours"):
                row = (ours if who == "ours" else trl)(size, args.precision, args.updates)
                pair[who] = {"seconds": row["seconds_per_update"], "peak_rss_mb": row["peak_rss_mb"]}
                if who == "ours":
                    pair[who]["seconds_by_phase"] = row["seconds_by_phase"]
            pair["ratio"] = round(pair["ours"]["seconds"] / pair["trl"]["seconds"], 3)
            rounds.append(pair)
            print(f"[ppo_vs_trl] {size} round {index + 1}: ours/TRL {pair['ratio']}", file=sys.stderr, flush=True)
        ratios = [pair["ratio"] for pair in rounds]
        report["sizes"][size] = {
            "median_ratio": round(statistics.median(ratios), 3),
            "ratios": ratios,
            "median_seconds": {
                who: round(statistics.median(pair[who]["seconds"] for pair in rounds), 4) for who in ("ours", "trl")
            },
            "peak_rss_mb": {who: max(pair[who]["peak_rss_mb"] for pair in rounds) for who in ("ours", "trl")},
            "rounds": rounds,
        }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
