"""The reward-model stage's end: measured with the trained model (optimiser released), inputs cut to
data.max_length. Memory is measured as the bytes of every tensor alive while the measurements score."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

from rlhf.app.schema import load_config

REPO = Path(__file__).resolve().parents[1]
MAX_LENGTH = 40

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def live_tensor_bytes() -> int:
    """Bytes of the distinct storages of every tensor the interpreter can reach (parameters, optimiser states)."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _pairs(count: int, long_every: int = 0) -> list[dict]:
    rows = []
    for i in range(count):
        rejected = " Go away." + (" Cats purr and nap a lot." * 8 if long_every and i % long_every == 0 else "")
        rows.append(
            {
                "prompt": f"User: Tell me about cats {i}.\nAssistant:",
                "chosen": " Hope this helps.",
                "rejected": rejected,
            }
        )
    return rows


def test_rm_end_measures_the_trained_model_without_optimiser_and_truncates(tiny_model_dir, tmp_path):
    import reward_model.scoring as scoring
    import rlhf.modeling as modeling
    from reward_model.trainer import train

    train_file, eval_file = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in _pairs(16)))
    eval_file.write_text("".join(json.dumps(row) + "\n" for row in _pairs(8, long_every=2)))
    cfg = load_config(
        REPO / "configs/tiny/rm.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={train_file}",
            f"data.eval_file={eval_file}",
            f"data.max_length={MAX_LENGTH}",
            f"run.output_dir={tmp_path / 'run'}",
            "train.num_train_epochs=1",
            "train.per_device_train_batch_size=8",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
            "rm.normalize_samples=16",
        ],
    )
    peak, widths, loads = [0], [], []
    score_sequences, load_scalar_model = scoring.score_sequences, modeling.load_scalar_model

    def scoring_spy(model, sequences, *args, **kwargs):
        peak[0] = max(peak[0], live_tensor_bytes())
        widths.append(max(len(sequence) for sequence in sequences))
        return score_sequences(model, sequences, *args, **kwargs)

    def load_spy(*args, **kwargs):
        model = load_scalar_model(*args, **kwargs)
        loads.append(sum(p.numel() * p.element_size() for p in model.parameters()))
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "score_sequences", scoring_spy)
        patch.setattr(modeling, "load_scalar_model", load_spy)
        summary = train(cfg)
    model_bytes = loads[0]
    assert len(loads) == 1  # old code: a second (fp32) copy loaded for the measurements
    # While scoring, live tensors are about one model (plus the tokenised batch); old code held the trained
    # model, its two AdamW moments and the reloaded copy: ~4x.
    assert peak[0] < 1.5 * model_bytes, (peak[0], model_bytes)
    assert max(widths) <= MAX_LENGTH  # old code: the long eval responses went in whole
    assert summary["eval/num_pairs"] == 8 and summary["reward_stats/num_samples"] > 0
