"""ZeRO-3 probe (launched by tests/test_ppo_memory.py): which weights PPO's rollout gathers for generation.

    DS_ACCELERATOR=cpu accelerate launch --config_file configs/accelerate/cpu_zero3.yaml \\
        tests/probes/zero3_generation_gather.py --model <tiny model dir> --out probe.json

Prepares a PolicyAndValue (policy and value model from the same tiny model) with AdamW under ZeRO-3, enters
`unwrapped_for_generation` as the trainer does, and counts the parameter elements materialised on this
process inside it (a partitioned ZeRO-3 parameter holds an empty tensor; a gathered one its full weight),
then generates a few greedy tokens from the gathered policy. The main process writes the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from accelerate import Accelerator

    from ppo.models import PolicyAndValue
    from ppo.rollout import build_generation_config, generate_responses, unwrapped_for_generation
    from rlhf.distributed import accelerator_kwargs, shut_down_process_group
    from rlhf.modeling import load_causal_lm, load_scalar_model, load_tokenizer

    accelerator = Accelerator(**accelerator_kwargs())
    plugin = accelerator.state.deepspeed_plugin
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
    plugin.deepspeed_config["gradient_accumulation_steps"] = 1
    tokenizer = load_tokenizer(args.model)
    torch.manual_seed(0)
    model = PolicyAndValue(load_causal_lm(args.model, tokenizer), load_scalar_model(args.model, tokenizer))
    full = {
        part: sum(getattr(p, "ds_numel", p.numel()) for p in getattr(model, part).parameters())
        for part in ("policy", "value_model")
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    def materialised() -> dict[str, int]:
        return {
            part: sum(p.data.numel() for p in getattr(unwrapped, part).parameters())
            for part in ("policy", "value_model")
        }

    before = materialised()
    prompt = torch.tensor([tokenizer("User: Tell me about cats.\nAssistant:")["input_ids"]])
    config = build_generation_config(4, 1.0, 0, 1.0, False, tokenizer.eos_token_id, tokenizer.pad_token_id)
    with torch.no_grad(), unwrapped_for_generation(model, accelerator, True, unwrapped, generating="policy") as bare:
        during = materialised()
        tokens = generate_responses(bare.policy, prompt, torch.ones_like(prompt), config)
    result = {
        "zero_stage": plugin.zero_stage,
        "full": full,
        "before": before,
        "during": during,
        "after": materialised(),
        "tokens": tokens.tolist(),
    }
    if accelerator.is_main_process:
        Path(args.out).write_text(json.dumps(result) + "\n")
    accelerator.wait_for_everyone()
    shut_down_process_group()


if __name__ == "__main__":
    from rlhf.distributed import exit_skipping_teardown

    main()
    exit_skipping_teardown(0)  # as the rlhf CLI ends a launched rank: no abort in interpreter teardown
