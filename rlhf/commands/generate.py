"""Sample K responses per prompt from a causal LM into a candidates file.

    rlhf generate --policy runs/tiny/sft --prompts data/tiny/prompts_train.jsonl --k 4 --out runs/tiny/candidates.jsonl

Batched `model.generate` with left padding (so every prompt's last token sits at the end of the row and
the new tokens follow it directly; Llama-style models derive position ids from the attention mask) and
K samples per prompt through `num_return_sequences`. A response is the decoded new tokens up to, not
including, the first stop id (the tokenizer's EOS, the generation config's EOS ids, the chat turn
terminator); a response that never produced one is kept as generated and marked unfinished in
`meta.finished`. Prompts are tokenised by `rlhf.tokens.Encoder`, as SFT, the reward model, PPO and eval
tokenise them (BOS as the tokenizer adds it; message lists through the chat template with the
generation prompt). One seed is set before the first batch, so a run is reproducible for a fixed
batch size and device. `sample_responses` is the reusable core (evaluation calls it with K=1).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import torch


@dataclass
class Sample:
    """One generated response: its text, whether it ended with EOS, and its new-token count (EOS included).

    The ids are kept because scoring and KL need the sampled tokens themselves (re-tokenising the text
    need not give the same ids).
    """

    text: str
    finished: bool
    num_tokens: int
    response_ids: list[int] = field(default_factory=list)  # new tokens up to and including the first EOS
    prompt_ids: list[int] = field(default_factory=list)  # the prompt's tokens without padding


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a response: the tokenizer's EOS, the generation config's (the model's and the
    one `load_tokenizer` read) and the chat template's turn terminator."""
    from rlhf.tokens import Encoder

    ids = set(Encoder.of(tokenizer).stop_ids)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, (list, tuple)):
        ids.update(configured)
    ids.discard(None)
    return ids


def decode_response(tokenizer, new_token_ids: Sequence[int], eos_ids: set[int], pad_id: Optional[int]) -> Sample:
    """Decode new tokens up to (excluding) the first EOS; trailing pads of a finished batch row are dropped."""
    ids = [int(token) for token in new_token_ids]
    finished = False
    for position, token in enumerate(ids):
        if token in eos_ids:
            ids, finished = ids[:position], True
            num_tokens = position + 1
            break
    else:
        while ids and pad_id is not None and ids[-1] == pad_id:
            ids.pop()
        num_tokens = len(ids)
    # clean_up_tokenization_spaces would rewrite " ." and similar; we want the tokens' exact text.
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    response_ids = [int(token) for token in new_token_ids][:num_tokens]
    return Sample(text=text, finished=finished, num_tokens=num_tokens, response_ids=response_ids)


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: Sequence[Any],
    num_samples: int = 1,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 32,
    seed: Optional[int] = None,
    progress: bool = False,
    sort_by_length: bool = True,
    max_prompt_length: Optional[int] = None,
) -> list[Sample]:
    """`num_samples` responses per prompt, prompt-major: result[i * num_samples + j] is sample j of prompt i.

    temperature 0 means greedy decoding. `batch_size` counts prompts per `generate` call. Every sampling knob
    is pinned (rlhf.sampling): the model's own generation_config.json cannot change the distribution.
    With `sort_by_length` the prompts are batched by token length (longest first, so a batch too big for
    memory fails at once) and the results put back in the input order: a batch pads to its own longest
    prompt, so similar lengths waste less compute on padding. Prompts keep their last `max_prompt_length`
    tokens (default: the model's positions less max_new_tokens), counted and reported, so one unbounded row
    cannot take the memory of a whole batch.
    """
    from tqdm.auto import tqdm

    from rlhf.sampling import generate_pinned, sampling_config
    from rlhf.tokens import Encoder, left_pad

    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos_ids = eos_token_ids(model, tokenizer)
    encoder = Encoder.of(tokenizer)
    generation_config = sampling_config(
        max_new_tokens,
        temperature,
        sorted(eos_ids),
        tokenizer.pad_token_id,
        top_k=top_k,
        top_p=top_p,
        num_return_sequences=num_samples,
    )
    limit = max_prompt_length or prompt_budget(model, max_new_tokens)
    all_prompt_ids = [bounded_prompt_ids(encoder, prompt, limit) for prompt in prompts]
    order = list(range(len(all_prompt_ids)))
    if sort_by_length:  # stable: equal lengths keep their input order
        order.sort(key=lambda index: -len(all_prompt_ids[index]))
    by_prompt: list[list[Sample]] = [[] for _ in all_prompt_ids]
    try:
        batches = list(_batches(order, batch_size))
        for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
            prompt_ids = [all_prompt_ids[index] for index in batch]
            input_ids, attention_mask = left_pad(prompt_ids, tokenizer.pad_token_id, device)
            output = generate_pinned(model, input_ids, attention_mask, generation_config)
            new_tokens = output[:, input_ids.shape[1] :].tolist()
            for row, tokens in enumerate(new_tokens):
                decoded = decode_response(tokenizer, tokens, eos_ids, tokenizer.pad_token_id)
                decoded.prompt_ids = prompt_ids[row // num_samples]  # generate repeats each prompt num_samples times
                by_prompt[batch[row // num_samples]].append(decoded)
    finally:
        model.train(was_training)
    cut = sum(getattr(ids, "truncated", False) for ids in all_prompt_ids)
    if cut:
        print(f"generate: {cut} prompt(s) longer than {limit} tokens kept their last {limit} tokens")
    return [item for samples in by_prompt for item in samples]


class _PromptIds(list):
    truncated = False


CHARS_PER_TOKEN_BOUND = 32  # a prompt's text is cut to limit * this many characters before tokenising


def prompt_budget(model, max_new_tokens: int) -> Optional[int]:
    """Prompt tokens that fit the model's positions with the response (None when the config has no limit)."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return max(1, int(positions) - max_new_tokens) if isinstance(positions, int) else None


def bounded_prompt_ids(encoder, prompt: Any, limit: Optional[int]) -> list[int]:
    """The prompt's token ids, keeping the last `limit`; an unbounded text is cut before it is tokenised."""
    if limit is None:
        return encoder.prompt_ids(prompt)
    max_chars = limit * CHARS_PER_TOKEN_BOUND
    texts = [prompt] if isinstance(prompt, str) else [m.get("content") for m in prompt if isinstance(m, dict)]
    text_cut = any(isinstance(text, str) and len(text) > max_chars for text in texts)
    if isinstance(prompt, str):
        prompt = prompt[-max_chars:]
    elif isinstance(prompt, list):
        prompt = [
            {**m, "content": m["content"][-max_chars:]}
            if isinstance(m, dict) and isinstance(m.get("content"), str)
            else m
            for m in prompt
        ]
    ids = encoder.prompt_ids(prompt)
    bounded = _PromptIds(ids[-limit:])
    bounded.truncated = text_cut or len(ids) > limit
    return bounded


def sample_responses(model, tokenizer, prompts: Sequence[Any], **kwargs: Any) -> list[str]:
    """One response text per prompt (EOS excluded); keyword arguments as `sample`."""
    return [item.text for item in sample(model, tokenizer, prompts, num_samples=1, **kwargs)]


def generate_candidates(
    model,
    tokenizer,
    prompts: Sequence[dict | str],
    k: int = 4,
    ids: Optional[Sequence[str]] = None,
    **kwargs: Any,
) -> list[dict]:
    """Candidates rows {"id", "prompt", "responses": [{"id", "text"}] * k, "meta"} for prompt rows or strings.

    Row ids come from `ids`, else a prompt row's "id", else "p<index>"; response ids are "<row id>-r<j>".
    `meta` keeps the prompt row's meta and adds per-response `finished` and `num_tokens`.
    """
    rows = [prompt if isinstance(prompt, dict) else {"prompt": prompt} for prompt in prompts]
    samples = sample(model, tokenizer, [row["prompt"] for row in rows], num_samples=k, **kwargs)
    candidates = []
    for index, row in enumerate(rows):
        row_id = str(ids[index]) if ids is not None else str(row.get("id", f"p{index:06d}"))
        mine = samples[index * k : (index + 1) * k]
        meta = dict(row.get("meta") or {})
        meta.update(finished=[item.finished for item in mine], num_tokens=[item.num_tokens for item in mine])
        candidates.append(
            {
                "id": row_id,
                "prompt": row["prompt"],
                "responses": [{"id": f"{row_id}-r{j}", "text": item.text} for j, item in enumerate(mine)],
                "meta": meta,
            }
        )
    return candidates


def build_parser() -> argparse.ArgumentParser:
    from rlhf.config import GenerateSection

    defaults = GenerateSection()
    parser = argparse.ArgumentParser(
        prog="rlhf generate", description="Sample K responses per prompt into a candidates file."
    )
    parser.add_argument(
        "--policy", required=True, help="causal LM directory or hub id (its tokenizer is loaded from the same place)"
    )
    parser.add_argument(
        "--prompts", required=True, help="prompts file ({'prompt'} rows; .jsonl/.json/.parquet/dataset dir)"
    )
    parser.add_argument("--out", required=True, help="candidates .jsonl to write")
    parser.add_argument("--k", type=int, default=defaults.k, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="prompts per generate call")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    parser.add_argument(
        "--precision",
        default=defaults.precision,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="weights' dtype; auto: bf16 on a bf16 GPU or an AMX / AVX512-BF16 CPU (2M+ params; AMX 3.5M+), else fp32",
    )
    parser.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="overrides --precision"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:1 ...")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    from rlhf.data import load_rows
    from rlhf.errors import UserError
    from rlhf.files import write_jsonl_atomic
    from rlhf.modeling import load_causal_lm, load_tokenizer
    from rlhf.precision import DTYPE_NAMES, precision_for

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    rows, _ = load_rows(args.prompts, "prompts")
    if args.limit is not None:
        rows = rows[: args.limit]
    try:
        tokenizer = load_tokenizer(args.policy)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        dtype = args.dtype or DTYPE_NAMES[precision_for(args.precision, device, model=args.policy)]
        model = load_causal_lm(args.policy, tokenizer=tokenizer, dtype=dtype)
    except OSError as exc:
        raise UserError(f"cannot load the policy {args.policy!r}: {exc}") from None
    model.to(device)
    start = time.perf_counter()
    candidates = generate_candidates(
        model,
        tokenizer,
        rows,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    elapsed = time.perf_counter() - start
    write_jsonl_atomic(args.out, candidates)
    finished = [flag for row in candidates for flag in row["meta"]["finished"]]
    tokens = [count for row in candidates for count in row["meta"]["num_tokens"]]
    print(
        json.dumps(
            {
                "out": args.out,
                "prompts": len(candidates),
                "responses": len(finished),
                "finished_fraction": round(sum(finished) / len(finished), 4),
                "mean_new_tokens": round(sum(tokens) / len(tokens), 2),
                "seconds": round(elapsed, 2),
                "new_tokens_per_second": round(sum(tokens) / max(elapsed, 1e-9), 1),
                "device": device,
                "dtype": dtype,
            }
        )
    )
    return 0
