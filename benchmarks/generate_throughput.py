"""Tokens per second of `rlhf generate` and `rlhf eval` at the 26M size, prompts batched by length or not.

    python benchmarks/generate_throughput.py                      # 26M (h512 L6), 128 prompts, 2 repeats
    python benchmarks/generate_throughput.py --size 4.5M --prompts 64 --repeats 1 --threads 1

A random-init Llama of `benchmarks/ppo_scaling.py`'s shapes with the tiny tokenizer (it rarely samples
EOS, so nearly every response runs the whole budget), prompts of 4 to 60 words in shuffled order.
`generate`: `rlhf.commands.generate.sample` (what `rlhf generate` runs) with `sort_by_length` on and off,
interleaved and repeated, medians reported: new tokens per second, and the share of prompt positions
that were padding. `eval`: `rlhf.commands.evaluate.evaluate` of one policy against itself as reference
with a reward model (sampling, two log-prob passes, the RM) in seconds and new tokens per second. fp32
unless `--precision bf16`. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _prompts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = "cats sea volcano rain music bread river stars garden trains winter paper light stone".split()
    return [
        "User: Tell me about " + " ".join(rng.choice(words) for _ in range(rng.randint(4, 60))) + ".\nAssistant:"
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="26M", help="a size of benchmarks/ppo_scaling.py")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ppo_scaling import SIZES
    from ppo_update import _texts

    from rlhf.commands.evaluate import evaluate
    from rlhf.commands.generate import sample
    from rlhf.modeling import init_tiny, load_causal_lm, load_scalar_model, load_tokenizer, save_model

    hidden, layers, heads, ffn = SIZES[args.size]
    prompts = _prompts(args.prompts)
    dtype = {"fp32": "float32", "bf16": "bfloat16"}[args.precision]
    with tempfile.TemporaryDirectory(prefix="gen-bench-") as tmp, contextlib.redirect_stdout(sys.stderr):
        root = Path(tmp)
        torch.manual_seed(0)
        policy_dir = init_tiny(
            root / "policy",
            _texts() + prompts,
            vocab_size=500,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            intermediate_size=ffn,
        )
        tokenizer = load_tokenizer(str(policy_dir))
        save_model(load_scalar_model(str(policy_dir), tokenizer), tokenizer, root / "rm", merge=False)
        model = load_causal_lm(str(policy_dir), tokenizer=tokenizer, dtype=dtype).eval()
        common = dict(max_new_tokens=args.max_new_tokens, temperature=1.0, batch_size=args.batch_size, seed=0)
        sample(model, tokenizer, prompts[: args.batch_size], **common)  # warm-up
        runs: dict[str, list[tuple[float, int]]] = {"by_length": [], "input_order": []}
        padding: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, by_length in (("by_length", True), ("input_order", False)):
                start = time.perf_counter()
                samples = sample(model, tokenizer, prompts, sort_by_length=by_length, **common)
                runs[name].append((time.perf_counter() - start, sum(item.num_tokens for item in samples)))
                lengths = [len(item.prompt_ids) for item in samples]
                order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if by_length else range(len(lengths))
                ordered = [lengths[i] for i in order]
                batches = [ordered[i : i + args.batch_size] for i in range(0, len(ordered), args.batch_size)]
                padded = sum(len(batch) * max(batch) for batch in batches)
                padding[name] = round(1 - sum(lengths) / padded, 3)
        start = time.perf_counter()
        report = evaluate(
            {"policy": str(policy_dir)},
            prompts,
            reward_model=str(root / "rm"),
            max_new_tokens=args.max_new_tokens,
            temperature=1.0,
            batch_size=args.batch_size,
            precision=args.precision,
        )
        eval_seconds = time.perf_counter() - start

    def figures(name: str) -> dict:
        seconds = statistics.median(s for s, _ in runs[name])
        tokens = statistics.median(t for _, t in runs[name])
        return {
            "seconds": round(seconds, 3),
            "new_tokens_per_second": round(tokens / seconds, 1),
            "prompt_padding_fraction": padding[name],
        }

    eval_tokens = report["policies"]["policy"]["length"] * len(prompts)  # mean new tokens per response
    result = {
        "config": {
            "size": args.size,
            "prompts": len(prompts),
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "precision": args.precision,
            "torch_threads": torch.get_num_threads(),
        },
        "generate": {"by_length": figures("by_length"), "input_order": figures("input_order")},
        "eval": {
            "seconds": round(eval_seconds, 3),
            "new_tokens_per_second": round(eval_tokens / eval_seconds, 1),
        },
    }
    by, plain = result["generate"]["by_length"], result["generate"]["input_order"]
    result["generate"]["speedup_by_length"] = round(plain["seconds"] / by["seconds"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
