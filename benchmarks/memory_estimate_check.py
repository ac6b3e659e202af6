"""rlhf.memory's estimate against the measured peak RSS of short CPU PPO runs at two model sizes; prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/memory_estimate_check.py
    OMP_NUM_THREADS=1 python benchmarks/memory_estimate_check.py --sizes 256x4 512x8 --updates 2

Each size is a tiny Llama (hidden x layers, FFN 2.6875 x hidden as Llama's, vocab 1024) used as policy,
reference, reward and value model, trained for `--updates` PPO updates in a fresh process, fp32 on the CPU,
no LoRA. The process records its RSS high-water mark after importing everything (the baseline: torch,
transformers, the trainer) and again after training; `measured` is the difference, what the models, their
optimiser and the activations added. `estimated` is `rlhf.memory.estimate_from_config` for the same
config (one process, no ZeRO). Memory, not time: sharing the CPU with other jobs does not change it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch, transformers, peft  # noqa: F401  (the baseline includes every import the run needs)
from ppo.trainer import train
from rlhf.app.schema import load_config
from rlhf.memory import estimate_from_config
cfg = load_config(None, json.loads(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
train(cfg)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
budget = estimate_from_config(cfg, "ppo")
print(json.dumps({"baseline": before, "peak": after, "estimate": budget.as_dict(), "estimate_bytes": budget.peak}))
"""


def run_size(hidden: int, layers: int, updates: int, root: Path) -> dict:
    from rlhf.modeling import init_tiny, load_scalar_model, load_tokenizer, save_model

    texts = [f"User: Tell me about topic number {i}.\nAssistant: It is a fine topic, {i}." for i in range(400)]
    model_dir = init_tiny(
        root / "policy",
        texts,
        vocab_size=1024,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=max(hidden // 64, 1),
        intermediate_size=int(hidden * 2.6875),
        max_position_embeddings=256,
    )
    tokenizer = load_tokenizer(str(model_dir))
    save_model(load_scalar_model(str(model_dir), tokenizer), tokenizer, root / "rm", merge=False)
    prompts = root / "prompts.jsonl"
    # Prompts of about 60 tokens and data.max_prompt_length at the longest of them: the estimate uses the
    # configured lengths, so the run should have them too.
    long = " ".join(f"topic number {j}, a fine topic." for j in range(8))
    rows = [{"prompt": f"User: Tell me about {long} {i}.\nAssistant:"} for i in range(64)]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from rlhf.tokens import Encoder

    prompt_length = max(len(Encoder(tokenizer).prompt_ids(row["prompt"])) for row in rows)  # as PPO encodes them
    overrides = [
        f"model.name_or_path={model_dir}",
        f"ppo.reward_model_path={root / 'rm'}",
        f"data.train_file={prompts}",
        f"run.output_dir={root / 'run'}",
        "tracking.plots=false",
        "tracking.report_to=[jsonl]",
        "ppo.sample_every=0",
        f"ppo.num_updates={updates}",
        "ppo.rollout_batch_size=16",
        "ppo.rollout_forward_batch_size=16",
        "ppo.max_new_tokens=32",
        "ppo.num_mini_batches=2",
        f"data.max_prompt_length={prompt_length}",
        "ppo.save_every=0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), json.dumps(overrides)], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    measured = result["peak"] - result["baseline"]
    return {
        "size": f"{hidden}x{layers}",
        "parameters_per_model": None,
        "baseline_mib": round(result["baseline"] / 2**20, 1),
        "measured_mib": round(measured / 2**20, 1),
        "estimated_mib": round(result["estimate_bytes"] / 2**20, 1),
        "estimated_over_measured": round(result["estimate_bytes"] / measured, 3),
        "estimate": result["estimate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["256x4", "512x8"], help="hidden x layers of each run")
    parser.add_argument("--updates", type=int, default=2)
    args = parser.parse_args()
    from rlhf.memory import ModelShape

    rows = []
    for size in args.sizes:
        hidden, layers = (int(part) for part in size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            row = run_size(hidden, layers, args.updates, Path(tmp))
            row["parameters_per_model"] = ModelShape.from_pretrained(Path(tmp) / "policy").causal_lm_parameters()
        rows.append(row)
    print(json.dumps({"runs": rows, "threads": os.environ.get("OMP_NUM_THREADS")}, indent=1))


if __name__ == "__main__":
    main()
