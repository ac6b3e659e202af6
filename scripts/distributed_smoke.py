"""Check a distributed set-up on a tiny model: one optimiser step and one generation, figures as JSON.

    accelerate launch --config_file configs/accelerate/cpu_zero3.yaml \\
        scripts/distributed_smoke.py --model runs/tiny/base
    python scripts/distributed_smoke.py --model runs/tiny/base          # the one-process reference

Every launch configuration should print the same numbers as the one-process run: the loss of a fixed
global batch of 8 texts, the size of the SGD step it takes, the loss after that step and greedy
completions of 4 prompts. Each process takes its slice of the batch and contributes
`sum of token losses / global token count * world size`; DDP and DeepSpeed average gradients over
processes, so the step is the global token mean whatever the split. SGD (not Adam) keeps the step
proportional to the gradient, so a wrong reduction shows as a wrong step size instead of hiding in
Adam's normalisation. Under ZeRO-3 the completions are generated with every weight gathered once
(`deepspeed.zero.GatheredParameters`), as PPO does for its rollouts, or, with --no-gather, with the
shards fetched layer by layer and `synced_gpus=True` so that no process leaves the collective early.
The main process alone prints and writes the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

TEXTS = [
    "User: Tell me about cats.\nAssistant: Cats purr and nap.",
    "User: What is the sea?\nAssistant: The sea is salty water.",
    "User: Describe volcanoes.\nAssistant: Lava is hot.",
    "User: Name a fruit.\nAssistant: An apple.",
    "User: Why is the sky blue?\nAssistant: Light scatters in the air, blue the most.",
    "User: Say hi.\nAssistant: Hi!",
    "User: Count to three.\nAssistant: One, two, three.",
    "User: What do bees make?\nAssistant: Bees make honey from nectar.",
]  # lengths differ on purpose: padding must not leak into the token mean
PROMPTS = [
    "User: Tell me about cats.\nAssistant:",
    "User: Say hi.\nAssistant:",
    "User: Name a fruit.\nAssistant:",
    "User: What is the sea?\nAssistant:",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="causal LM directory or hub id (e.g. from `rlhf model init-tiny`)"
    )
    parser.add_argument("--out", help="also write the JSON here (main process)")
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument(
        "--no-gather",
        action="store_true",
        help="ZeRO-3: generate from shards (synced_gpus) instead of gathered weights",
    )
    return parser.parse_args(argv)


def slice_for_rank(items: list, rank: int, world: int) -> list:
    if len(items) % world:
        raise SystemExit(f"{len(items)} items do not split evenly over {world} processes")
    per_process = len(items) // world
    return items[rank * per_process : (rank + 1) * per_process]


def token_loss_sum(model, tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    """Sum of next-token losses over the real tokens of `texts` (right-padded: pads are never inputs of a target)."""
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
    targets = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)[:, 1:]
    logits = model(**batch).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )


def num_targets(tokenizer, texts: list[str]) -> int:
    """Next-token targets in `texts`: every token but each text's first."""
    return sum(len(ids) - 1 for ids in tokenizer(texts)["input_ids"])


def zero_stage(accelerator) -> int:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(plugin.zero_stage) if plugin is not None else 0


def gathered_parameters(model, accelerator):
    """Every full weight readable inside (ZeRO-3 gathers the shards; elsewhere they are whole already)."""
    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.distributed import accelerator_kwargs, shut_down_process_group

    accelerator = Accelerator(**accelerator_kwargs())
    world, rank = accelerator.num_processes, accelerator.process_index
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # no DataLoader is prepared, so DeepSpeed's batch keys are filled by hand
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = len(TEXTS) // world
        plugin.deepspeed_config["gradient_accumulation_steps"] = 1
        plugin.deepspeed_config["gradient_clipping"] = 0.0  # the one-process reference does not clip

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    with torch.no_grad(), gathered_parameters(model, accelerator):  # ZeRO-3 may shard at load time already
        initial = {name: p.detach().cpu().clone() for name, p in unwrapped.named_parameters()}

    global_tokens = num_targets(tokenizer, TEXTS)

    def global_loss(local_sum: torch.Tensor) -> float:
        return float(accelerator.reduce(local_sum.detach().double().reshape(1), reduction="sum")) / global_tokens

    model.train()
    local_texts = slice_for_rank(TEXTS, rank, world)
    loss_sum = token_loss_sum(model, tokenizer, local_texts, accelerator.device)
    accelerator.backward(loss_sum / global_tokens * world)
    optimizer.step()
    optimizer.zero_grad()
    loss_before = global_loss(loss_sum)

    model.eval()
    with torch.no_grad():
        loss_after = global_loss(token_loss_sum(model, tokenizer, local_texts, accelerator.device))
        with gathered_parameters(model, accelerator):
            named = dict(unwrapped.named_parameters())
            update_norm = float(torch.sqrt(sum(((named[n].detach().cpu() - initial[n]) ** 2).sum() for n in initial)))

    local_prompts = slice_for_rank(PROMPTS, rank, world)
    tokenizer.padding_side = "left"  # generation continues from the last real token
    prompt_batch = tokenizer(local_prompts, return_tensors="pt", padding=True).to(accelerator.device)
    gather = zero_stage(accelerator) == 3 and not args.no_gather
    with torch.no_grad(), gathered_parameters(model, accelerator) if gather else contextlib.nullcontext():
        output = unwrapped.generate(
            **prompt_batch,
            max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            synced_gpus=zero_stage(accelerator) == 3 and not gather,
        )
    completions = accelerator.gather(output[:, prompt_batch["input_ids"].shape[1] :].contiguous())

    result = {
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "num_processes": world,
        "zero_stage": zero_stage(accelerator),
        "generation": "gathered" if gather else ("sharded" if zero_stage(accelerator) == 3 else "plain"),
        "loss_before": loss_before,
        "loss_after": loss_after,
        "update_norm": update_norm,
        "completions": completions.tolist(),
    }
    if accelerator.is_main_process:
        text = json.dumps(result)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    accelerator.wait_for_everyone()
    shut_down_process_group()
    return 0


if __name__ == "__main__":
    from rlhf.distributed import exit_skipping_teardown

    exit_skipping_teardown(main())  # as the rlhf CLI ends a launched rank: no abort in interpreter teardown
