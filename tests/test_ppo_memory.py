"""Real-model memory in PPO: the PPO-ptx stream per process and its truncation, chunked generation,
micro-batches trimmed to their own width, the LoRA value model, and what ZeRO-3 gathers for generation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ppo.data import IGNORE_INDEX, PtxBatches, fit_to_length

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# PPO-ptx
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from rlhf.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def _sft_file(tmp_path, rows: list[dict]):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_ptx_processes_draw_different_rows_of_one_stream(tokenizer, tmp_path):
    rows = [{"prompt": f"User: Tell me about cats {i}.\nAssistant:", "completion": f" Cats {i}."} for i in range(8)]
    path = _sft_file(tmp_path, rows)
    # Each process builds its own PtxBatches with the run's seed (as train() does) and keeps its own slice.
    per_rank = [PtxBatches(path, tokenizer, 64, seed=0) for _ in range(2)]
    batches = [per_rank[rank].next_batch(2, torch.device("cpu"), rank=rank, world=2) for rank in range(2)]
    texts = [
        {tokenizer.decode(row[mask.bool()]) for row, mask in zip(b["ptx_input_ids"], b["ptx_attention_mask"])}
        for b in batches
    ]
    assert len(texts[0]) == len(texts[1]) == 2 and not texts[0] & texts[1]  # old code: the same two rows
    assert [ranked.stream.position for ranked in per_rank] == [4, 4]  # both advanced by the global batch


def test_fit_to_length_keeps_the_completion_and_its_eos():
    eos = 99
    prompt, completion = list(range(10)), [50, 51, eos]
    ids, labels = fit_to_length(prompt, completion, 6)
    assert ids == [7, 8, 9, 50, 51, eos]  # the prompt is cut from the left
    assert labels == [IGNORE_INDEX] * 3 + [50, 51, eos]
    ids, labels = fit_to_length(prompt, list(range(50, 60)) + [eos], 5)
    assert ids == [9, 50, 51, 52, eos] and labels[-1] == eos  # a too-long completion keeps its EOS
    assert fit_to_length([1, 2], [3, eos], 8) == ([1, 2, 3, eos], [IGNORE_INDEX] * 2 + [3, eos])


def test_ptx_rows_longer_than_max_length_keep_labels_and_give_a_finite_loss(tokenizer, tiny_model_dir, tmp_path):
    from rlhf.modeling import load_causal_lm

    long_prompt = "User: " + "Tell me about the sea and the cats and the volcanoes. " * 6 + "\nAssistant:"
    rows = [{"prompt": long_prompt + f" {i}", "completion": " Cats purr."} for i in range(4)]
    max_length = 16
    ptx = PtxBatches(_sft_file(tmp_path, rows), tokenizer, max_length, seed=0)
    batch = ptx.next_batch(4, torch.device("cpu"))
    assert batch["ptx_input_ids"].shape == (4, max_length)
    labelled = batch["ptx_labels"] != IGNORE_INDEX
    completion = tokenizer(" Cats purr.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert labelled.sum(1).tolist() == [len(completion)] * 4  # old code: 0 labels (prompt tokens only)
    assert (batch["ptx_input_ids"][:, -1] == tokenizer.eos_token_id).all()  # the EOS survives truncation
    model = load_causal_lm(str(tiny_model_dir), tokenizer)
    loss = model(
        input_ids=batch["ptx_input_ids"], attention_mask=batch["ptx_attention_mask"], labels=batch["ptx_labels"]
    ).loss
    assert math.isfinite(loss.item())  # old code: NaN (a mean over zero labels)
