"""Peak memory of a PPO update's log-prob and entropy computation (forward + backward), before and after.

    python benchmarks/logprob_memory.py                       # vocabulary 32k, 8 x 256 positions, bf16 logits
    python benchmarks/logprob_memory.py --vocab 151936 --rows 1 --tokens 1024 --dtype fp32

"before" is the computation as the trainer did it until the memory-frugal log-probs: logits divided by
the temperature (a full copy), cast to float32 (another) for gather + logsumexp, whose backward keeps
that float copy, and the logged entropy from a float copy, its softmax and their product. "after" is
`ppo.algorithm.logprobs_from_logits` / `entropy_from_logits` (rlhf/scoring.py): blocks of rows, a
backward that keeps only the logits as they came. Each variant runs in its own process; on CPU the
figure is the peak RSS above the RSS with the logits (and their gradient's share, the same in both)
already allocated, on CUDA the peak allocated bytes above the same point. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _before(logits, tokens, temperature: float):
    """The trainer's computation before: full-vocabulary copies for temperature, float cast and entropy."""
    import torch

    scaled = logits / temperature
    as_float = scaled.float()
    logprobs = torch.gather(as_float, -1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(as_float, dim=-1)
    with torch.no_grad():
        entropy_input = scaled.float()
        probs = torch.softmax(entropy_input, dim=-1)
        entropy = torch.logsumexp(entropy_input, dim=-1) - (probs * entropy_input).sum(-1)
    return logprobs, entropy


def _after(logits, tokens, temperature: float):
    import torch

    from ppo.algorithm import entropy_from_logits, logprobs_from_logits

    logprobs = logprobs_from_logits(logits, tokens, temperature)
    with torch.no_grad():
        entropy = entropy_from_logits(logits, temperature)
    return logprobs, entropy


def measure(variant: str, rows: int, tokens_per_row: int, vocab: int, dtype: str, device: str) -> dict:
    import torch

    torch.manual_seed(0)
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    # [rows, tokens + 1, vocab] sliced to [:, :-1] as the LM head's output is: a strided view, as in training
    logits = torch.randn(rows, tokens_per_row + 1, vocab, device=device, dtype=torch_dtype)[:, :-1].requires_grad_()
    tokens = torch.randint(0, vocab, (rows, tokens_per_row), device=device)
    advantages = torch.randn(rows, tokens_per_row, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:  # the high-water mark so far (model-free set-up) or the RSS now, whichever is higher
        base = max(_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    logprobs, entropy = (_before if variant == "before" else _after)(logits, tokens, 0.7)
    (-(logprobs * advantages).mean()).backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    logits_mb = logits.numel() * logits.element_size() / 2**20
    return {
        "variant": variant,
        "peak_above_logits_mb": round(peak_mb, 1),
        "logits_mb": round(logits_mb, 1),
        "peak_in_logits_copies": round(peak_mb / logits_mb, 2),
        "checksum": round(float(logprobs.sum() + entropy.sum()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rows", type=int, default=8, help="sequences in the micro-batch")
    parser.add_argument("--tokens", type=int, default=256, help="response tokens per sequence")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="the logits' dtype")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variant", choices=["before", "after"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    shape = (args.rows, args.tokens, args.vocab, args.dtype, args.device)
    if args.variant:
        print(json.dumps(measure(args.variant, *shape)))
        return
    results = {}
    for variant in ("before", "after"):
        child = subprocess.run(
            [sys.executable, __file__, "--variant", variant, *sys.argv[1:]], capture_output=True, text=True, check=True
        )
        results[variant] = json.loads(child.stdout.strip().splitlines()[-1])
    before, after = results["before"]["peak_above_logits_mb"], results["after"]["peak_above_logits_mb"]
    report = {
        "config": {
            "vocab": args.vocab,
            "rows": args.rows,
            "tokens": args.tokens,
            "logits_dtype": args.dtype,
            "device": args.device,
        },
        **results,
        "saved_mb": round(before - after, 1),
        "ratio_after_to_before": round(after / before, 3) if before else None,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
