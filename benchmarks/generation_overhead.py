"""Our pinned generate() with the log-prob recorder against TRL 1.12's way of sampling (output_scores), at 0.2M.

    python benchmarks/generation_overhead.py                 # ~20 s; prints one JSON object
    python benchmarks/generation_overhead.py --threads 2 --repeats 30

The work is ppo_scaling.py's rollout at its smallest size (a random-init h64 L2 Llama, 16 prompts, 24 new
tokens, temperature 0.7), where an update is mostly per-step overhead: it tells whether generation is where
TRL gains at small sizes. Three ways, medians of `--repeats` after one warm-up: `generate_pinned` (every
sampling knob pinned, rlhf.sampling), `generate_with_logprobs` (the same plus the recorder PPO uses for its
old log-probs), and `generate(output_scores=True, return_dict_in_generate=True)` with TRL's config
(temperature + 1e-7, top_k 0, top_p 1), which keeps every step's logits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import torch
    from ppo_update import _texts
    from transformers import GenerationConfig

    from rlhf.modeling import init_tiny, load_causal_lm, load_tokenizer
    from rlhf.sampling import generate_pinned, generate_with_logprobs, sampling_config
    from rlhf.tokens import left_pad

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model_dir = init_tiny(
            Path(tmp) / "policy", _texts(), hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256
        )
        tokenizer = load_tokenizer(str(model_dir))
        model = load_causal_lm({"name_or_path": str(model_dir)}, tokenizer).eval()
    prompts = [tokenizer(f"User: Tell me about thing {i}.\nAssistant:")["input_ids"] for i in range(16)]
    ids, mask = left_pad(prompts, tokenizer.pad_token_id, torch.device("cpu"))
    ours = sampling_config(24, 0.7, tokenizer.eos_token_id, tokenizer.pad_token_id)
    trl = GenerationConfig(
        max_new_tokens=24,
        temperature=0.7 + 1e-7,
        top_k=0,
        top_p=1.0,
        do_sample=True,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.no_grad():
        seconds = {
            "pinned": median_seconds(lambda: generate_pinned(model, ids, mask, ours), args.repeats),
            "pinned_with_logprob_recorder": median_seconds(
                lambda: generate_with_logprobs(model, ids, mask, ours, 0.7), args.repeats
            ),
            "trl_output_scores": median_seconds(
                lambda: model.generate(input_ids=ids, attention_mask=mask, generation_config=trl), args.repeats
            ),
        }
    print(
        json.dumps(
            {"threads": args.threads, "repeats": args.repeats, "ms": {k: round(v * 1e3, 1) for k, v in seconds.items()}}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
