"""Score every prompt/response row of a file with a trained reward model.

    rlhf rm score --model runs/tiny/rm/model --data runs/tiny/candidates.jsonl --out runs/tiny/scored.jsonl

Rows keep all their fields and gain rewards where their responses are: `reward` next to a `response` (or
an SFT row's `completion`), `reward` inside each of `responses` (candidates, rankings), and
`reward_chosen` / `reward_rejected` for pairs. The raw score is written, and `reward_normalized`
(minus the mean in the model's reward_stats.json) when that file exists, which is what PPO optimises.
The output is written atomically; a row without a response stops the run naming its row and field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from rlhf.errors import DataError

REWARD_STATS_FILE = "reward_stats.json"


def _text_or_messages(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value)
    )


def responses_of(row: dict, source: str, row_number: int) -> list[Any]:
    """The responses a row carries, in a fixed order that `with_rewards` follows; each one (and the prompt)
    must be text or a list of chat messages."""
    responses = _responses_of(row, source, row_number)
    names = (
        ["response" if "response" in row else "completion"]
        if "response" in row or "completion" in row
        else [f"responses[{i}].text" for i in range(len(responses))]
        if isinstance(row.get("responses"), list)
        else ["chosen", "rejected"]
    )
    for name, value in [("prompt", row["prompt"]), *zip(names, responses)]:
        if not _text_or_messages(value):
            raise DataError(
                f"{source}: row {row_number}: field '{name}': expected text or a list of chat messages, got "
                f"{type(value).__name__}"
            )
    return responses


def _responses_of(row: dict, source: str, row_number: int) -> list[Any]:
    if "prompt" not in row:
        raise DataError(f"{source}: row {row_number}: field 'prompt': missing field")
    if "response" in row:
        return [row["response"]]
    if "completion" in row:
        return [row["completion"]]
    if isinstance(row.get("responses"), list):
        try:
            return [response["text"] for response in row["responses"]]
        except (TypeError, KeyError):
            raise DataError(
                f"{source}: row {row_number}: field 'responses': expected a list of {{id, text}} objects"
            ) from None
    if "chosen" in row and "rejected" in row:
        return [row["chosen"], row["rejected"]]
    raise DataError(
        f"{source}: row {row_number}: field 'response': missing field (a row needs response, completion, responses, "
        "or chosen and rejected)"
    )


def with_rewards(row: dict, rewards: list[float], mean: Optional[float]) -> dict:
    """A copy of `row` with its rewards placed next to its responses (see module docstring)."""

    def fields(reward: float, suffix: str = "") -> dict[str, float]:
        out = {f"reward{suffix}": reward}
        if mean is not None:
            out[f"reward{suffix}_normalized"] = reward - mean
        return out

    scored = dict(row)
    if "response" in row or "completion" in row:
        scored.update(fields(rewards[0]))
    elif isinstance(row.get("responses"), list):
        scored["responses"] = [{**response, **fields(reward)} for response, reward in zip(row["responses"], rewards)]
    else:
        scored.update(fields(rewards[0], "_chosen"))
        scored.update(fields(rewards[1], "_rejected"))
    return scored


def read_prompt_responses(path: str) -> list[tuple[int, dict, list[Any]]]:
    """(row number, row, its responses) for every row of a JSONL/JSON/Parquet file or dataset."""
    from rlhf.data import read_rows

    return [(number, row, responses_of(row, str(path), number)) for number, row in read_rows(path)]


def load_reward_stats(model_dir: str | Path) -> Optional[dict]:
    path = Path(model_dir) / REWARD_STATS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def score_file(
    model_dir: str,
    data_path: str,
    out_path: str,
    batch_size: int = 32,
    device: Optional[str] = "auto",
    precision: str = "fp32",
    dtype: Optional[str] = None,
    max_length: Optional[int] = None,
) -> int:
    """Score every response of `data_path` with the reward model in `model_dir`; returns rows written.
    The model runs on `device` (auto: cuda when available) in `dtype`, else `precision` resolved for that
    device (rlhf/inference.py). Each input keeps its last `max_length` tokens (default: the model's
    positions), so one unbounded row cannot take the memory of a batch."""
    from reward_model.scoring import score_texts
    from rlhf.files import write_jsonl_atomic
    from rlhf.inference import inference_device, inference_dtype, load_for_inference
    from rlhf.modeling import load_scalar_model, load_tokenizer

    if not Path(model_dir).is_dir():
        raise DataError(f"--model {model_dir}: no such model directory")
    rows = read_prompt_responses(data_path)
    if not rows:
        raise DataError(f"{data_path}: no rows to score")
    tokenizer = load_tokenizer(model_dir)
    run_on = inference_device(device)
    model = load_for_inference(
        load_scalar_model, model_dir, tokenizer, run_on, inference_dtype(precision, dtype, run_on, model_dir)
    )
    prompts = [row["prompt"] for _, row, responses in rows for _ in responses]
    responses = [response for _, _, row_responses in rows for response in row_responses]
    if max_length is None:
        max_length = getattr(model.config, "max_position_embeddings", None)
    scores = score_texts(model, tokenizer, prompts, responses, batch_size, max_length=max_length).tolist()
    stats = load_reward_stats(model_dir)
    mean = stats["mean"] if stats else None
    scored_rows = []
    position = 0
    for _, row, row_responses in rows:
        scored_rows.append(with_rewards(row, scores[position : position + len(row_responses)], mean))
        position += len(row_responses)
    return write_jsonl_atomic(out_path, scored_rows)
