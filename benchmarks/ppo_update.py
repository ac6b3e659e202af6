"""Seconds per PPO update by phase, tokens/s and peak RSS on the reference tiny configuration; prints JSON.

    python benchmarks/ppo_update.py
    python benchmarks/ppo_update.py --updates 20 --threads 1

The configuration matches the figures quoted for TRL 1.12's PPOTrainer on this machine (0.58 s per update,
0.08 s of it compute, the rest two gc.collect() calls per update; 490 MB peak RSS): a tiny Llama
(hidden 64, 2 layers, 4 heads, FFN 256, vocab about 500), a reward model and value model of the same
shape, 16 prompts per rollout, 24 response tokens, 1 PPO epoch, 2 mini-batches, fp32, CPU. The run goes
through `ppo.trainer.train` exactly as `rlhf ppo` does (checkpointing and sample tables off, metrics to
metrics.jsonl); the first `--warmup` updates are dropped and the medians of the rest are reported.
Peak RSS is the whole process's high-water mark (imports included: torch + transformers alone are
about 340 MB). Machines shared with other jobs are noisy: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _texts(count: int = 400) -> list[str]:
    """Text to train the tiny tokenizer (the built-in task's files when present)."""
    from rlhf.files import read_jsonl

    texts = []
    for name in ("sft_train.jsonl", "prompts_train.jsonl"):
        path = REPO / "data" / "tiny" / name
        if path.is_file():
            for row in read_jsonl(path):
                texts.extend(str(value) for value in row.values() if isinstance(value, str))
    if not texts:  # synthetic fallback: enough distinct words for a ~500-token BPE vocabulary
        import random

        rng = random.Random(0)
        words = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(600)
        ]
        texts = [" ".join(rng.choice(words) for _ in range(20)) for _ in range(count)]
    return texts


def _prompts(path: Path, count: int = 256) -> None:
    rows = [{"prompt": f"User: Tell me about topic number {i}.\nAssistant:"} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10, help="measured updates (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="updates run first and not measured")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    from transformers import LlamaForCausalLM  # noqa: F401  (the model class the run builds: counted with the imports)

    from ppo.trainer import train
    from rlhf.app.schema import load_config
    from rlhf.modeling import init_tiny, load_scalar_model, load_tokenizer, save_model

    # The same process's high-water mark before any model exists: what the imports alone cost, so the
    # run's own share of the peak is visible beside it.
    rss_after_imports_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp:
        root = Path(tmp)
        with contextlib.redirect_stdout(sys.stderr):
            policy_dir = init_tiny(
                root / "policy",
                _texts(),
                vocab_size=500,
                hidden_size=64,
                num_layers=2,
                num_heads=4,
                intermediate_size=256,
            )
            tokenizer = load_tokenizer(str(policy_dir))
            save_model(load_scalar_model(str(policy_dir), tokenizer), tokenizer, root / "rm", merge=False)
        _prompts(root / "prompts.jsonl")
        cfg = load_config(
            None,
            [
                f"model.name_or_path={policy_dir}",
                f"ppo.reward_model_path={root / 'rm'}",
                f"data.train_file={root / 'prompts.jsonl'}",
                f"run.output_dir={root / 'run'}",
                f"ppo.num_updates={args.warmup + args.updates}",
                "ppo.rollout_batch_size=16",
                "ppo.rollout_forward_batch_size=16",
                "ppo.max_new_tokens=24",
                "ppo.temperature=0.7",
                "ppo.ppo_epochs=1",
                "ppo.num_mini_batches=2",
                "train.gradient_accumulation_steps=1",
                "train.precision=fp32",
                "ppo.sample_every=0",
                "ppo.save_every=0",
                "tracking.report_to=[jsonl]",
                "tracking.plots=false",
                "train.logging_steps=1000000",
            ],
        )
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON report
            result = train(cfg)
        wall = time.perf_counter() - start
        measured = result["history"][args.warmup :]

    def median(key: str) -> float:
        return round(statistics.median(row[key] for row in measured), 4)

    vocab = len(tokenizer)
    report = {
        "config": {
            "hidden": 64,
            "layers": 2,
            "heads": 4,
            "ffn": 256,
            "vocab": vocab,
            "prompts_per_rollout": 16,
            "response_tokens": 24,
            "ppo_epochs": 1,
            "mini_batches": 2,
            "dtype": "fp32",
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
            "measured_updates": len(measured),
            "warmup_updates": args.warmup,
        },
        "seconds_per_update": median("time/update"),
        "seconds_by_phase": {
            "generation": median("time/generation"),
            "scoring": median("time/scoring"),
            "training": median("time/training"),
        },
        "seconds_per_update_min": round(min(row["time/update"] for row in measured), 4),
        "tokens_per_second": median("perf/tokens_per_second"),
        "response_tokens_per_update": round(statistics.mean(row["val/response_length"] * 16 for row in measured), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mb": rss_after_imports_mb,
        "total_wall_seconds_including_setup": round(wall, 2),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "reference_trl_1.12": {"seconds_per_update": 0.58, "compute_seconds_per_update": 0.08, "peak_rss_mb": 490},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
