"""TRL 1.12's PPOTrainer on ppo_scaling.py's work, in this machine's process: the same-machine baseline.

    pip install --no-deps --target .trl112 trl==1.12.0      # TRL removed PPOTrainer in 1.13
    PYTHONPATH=.trl112 python benchmarks/trl_ppo_baseline.py --sizes 0.2M 4.5M 26M
    PYTHONPATH=.trl112 python benchmarks/trl_ppo_baseline.py --sizes 135M --updates 3 --keep-gc
    PYTHONPATH=.trl112 python benchmarks/trl_ppo_baseline.py --precision bf16 --ours benchmarks/results/ppo_scaling.json

The work is ppo_scaling.py's: random-init Llama policy, reference, value and reward models of one shape
(the same init_tiny models and tokenizer), 16 prompts per rollout, 24 new tokens, 1 PPO epoch, 2
mini-batches, temperature 0.7, fp32 or bf16 (`--precision`: TRL's `bf16=True`, autocast), on the GPU when
there is one (as ours), else the CPU
(TRL: per_device_train_batch_size 16, the rollout, in 2 mini-batches of 8, one optimiser step each, as
ours). Seconds per update are the gaps between TRL's `on_step_end`
callbacks (one per update), medians after `--warmup`. TRL calls `gc.collect()` twice per update; they are
replaced by a no-op unless `--keep-gc`, so that only the computation is compared (as issue 21 did).
Prints one JSON table, with ppo_scaling.py's seconds at the same precision beside it when `--ours FILE`
names its JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ppo_scaling import EPOCHS, MINI_BATCHES, NEW_TOKENS, PROMPTS, SIZES, device_name  # noqa: E402


def run_one(size: str, updates: int, warmup: int, keep_gc: bool, precision: str = "fp32") -> dict:
    import torch
    import trl
    from datasets import Dataset
    from ppo_update import _texts
    from transformers import AutoModelForCausalLM, TrainerCallback

    from rlhf.modeling import init_tiny, load_scalar_model, load_tokenizer

    try:
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError as exc:
        raise SystemExit(f"TRL {trl.__version__} has no PPOTrainer: install trl==1.12.0 (see the docstring)") from exc
    if not keep_gc:
        gc.collect = lambda *args, **kwargs: 0  # TRL's two per-update collections; compare computation only
    hidden, layers, heads, ffn = SIZES[size]
    cuda = torch.cuda.is_available()  # TRL's Trainer takes the GPU when there is one, as ours does
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    with tempfile.TemporaryDirectory(prefix="trl-ppo-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        policy_dir = init_tiny(
            root / "policy", _texts(), vocab_size=500, hidden_size=hidden, num_layers=layers,
            num_heads=heads, intermediate_size=ffn,
        )  # fmt: skip
        tokenizer = load_tokenizer(str(policy_dir))
        tokenizer.padding_side = "left"
        policy = AutoModelForCausalLM.from_pretrained(policy_dir)
        reference = AutoModelForCausalLM.from_pretrained(policy_dir)
        value = load_scalar_model(str(policy_dir), tokenizer)
        reward = load_scalar_model(str(policy_dir), tokenizer)
        prompts = [f"User: Tell me about topic number {i}.\nAssistant:" for i in range(PROMPTS * (warmup + updates))]
        dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
        args = PPOConfig(
            output_dir=str(root / "out"), per_device_train_batch_size=PROMPTS,
            gradient_accumulation_steps=1, num_mini_batches=MINI_BATCHES, num_ppo_epochs=EPOCHS,
            local_rollout_forward_batch_size=PROMPTS, response_length=NEW_TOKENS, temperature=0.7,
            total_episodes=PROMPTS * (warmup + updates), learning_rate=1e-5, stop_token="eos",
            missing_eos_penalty=1.0, num_sample_generations=0, report_to=[], save_strategy="no",
            logging_steps=1000, use_cpu=not cuda, bf16=precision == "bf16", seed=0,
        )  # fmt: skip
        stamps: list[float] = []

        class Stamp(TrainerCallback):
            def on_step_end(self, *args, **kwargs):
                if cuda:
                    torch.cuda.synchronize()  # the update's kernels finished, as ours times it
                stamps.append(time.perf_counter())

        trainer = PPOTrainer(
            args=args, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward,
            train_dataset=dataset, value_model=value, callbacks=[Stamp()],
        )  # fmt: skip
        started = time.perf_counter()
        trainer.train()
    gaps = [b - a for a, b in zip([started, *stamps[:-1]], stamps)][warmup:]
    return {
        "size": size,
        "trl_version": trl.__version__,
        "precision": precision,
        "device": device_name(),
        "gc_collect": keep_gc,
        "seconds_per_update": round(statistics.median(gaps), 4),
        "measured_updates": len(gaps),
        "torch_threads": torch.get_num_threads(),
        # the process's peak so far: the size's own peak when each size runs in its own process (--sizes X)
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["0.2M", "4.5M", "26M", "135M"], choices=list(SIZES))
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--keep-gc", action="store_true", help="keep TRL's two gc.collect() calls per update")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="TRL's mixed precision")
    parser.add_argument("--ours", default=None, help="ppo_scaling.py's JSON, for the ratio column")
    args = parser.parse_args()
    ours = {}
    if args.ours:
        rows = json.loads(Path(args.ours).read_text())["rows"]
        ours = {r["size"]: r["seconds_per_update"] for r in rows if r["precision"] == args.precision}
    rows = []
    for size in args.sizes:
        # stdout is the JSON: what TRL, transformers (a wandb notice at import) and init_tiny print goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            row = run_one(size, args.updates, args.warmup, args.keep_gc, args.precision)
        if size in ours:
            row["ours_seconds"] = ours[size]
            row["ours_over_trl"] = round(ours[size] / row["seconds_per_update"], 3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
