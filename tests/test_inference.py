"""Device and dtype of `rlhf generate`, `rlhf eval` and `rlhf rm score` (rlhf/inference.py): the accelerator
when there is one, the configured precision (bf16 on CPU too), every model moved to the device."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.errors import ConfigError
from rlhf.inference import inference_device, inference_dtype, load_for_inference

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_device_is_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device("auto") == torch.device("cuda") and inference_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
        inference_device("cuda")


def test_dtype_is_the_explicit_one_or_the_precision_resolved_for_the_device(monkeypatch):
    import rlhf.precision

    cpu = torch.device("cpu")
    assert inference_dtype("fp32", "bfloat16", cpu) == "bfloat16"  # --dtype overrides --precision
    assert inference_dtype("bf16", None, cpu) == "bfloat16"  # bf16 on CPU is allowed
    seen = []
    monkeypatch.setattr(
        rlhf.precision, "precision_for", lambda precision, device, model=None: seen.append((device, model)) or "bf16"
    )
    assert inference_dtype("auto", None, torch.device("cuda", 0), "m") == "bfloat16" and seen == [("cuda", "m")]


def test_models_are_moved_to_the_device_in_eval_mode(tmp_path):
    calls = {}

    class Recorder(torch.nn.Linear):
        def to(self, *args, **kwargs):
            calls["to"] = args
            return self

    def loader(path, tokenizer, dtype=None):
        calls["dtype"] = dtype
        return Recorder(2, 2)

    model = load_for_inference(loader, str(tmp_path), None, torch.device("cuda", 1), "bfloat16")
    assert calls == {"dtype": "bfloat16", "to": (torch.device("cuda", 1),)} and not model.training


def write_prompts(path, n=4):
    path.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about cats {i}.\nAssistant:"}) + "\n" for i in range(n))
    )
    return path


def test_eval_runs_every_model_in_the_requested_precision(tiny_model_dir, tiny_reward_model_dir, tmp_path):
    from rlhf.commands.evaluate import main

    prompts = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "eval"
    argv = ["--policies", f"a={tiny_model_dir}", f"b={tiny_model_dir}", "--prompts", str(prompts)]
    argv += ["--reward-model", str(tiny_reward_model_dir), "--max-new-tokens", "4", "--out", str(out)]
    assert main([*argv, "--precision", "bf16", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["device"] == "cpu" and report["settings"]["dtype"] == "bfloat16"
    assert "; bfloat16 on cpu." in (out / "report.md").read_text()
    a = report["policies"]["a"]
    assert a["kl_to_reference"] == pytest.approx(0.0, abs=1e-6) and a["rm_score"] == a["rm_score"]  # finite


def test_rm_score_in_bf16_is_close_to_fp32(tiny_reward_model_dir, tmp_path):
    from rlhf.app.cli import main

    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"User: Tell me about cats {i}.\nAssistant:", "response": " Cats purr."}) + "\n"
            for i in range(3)
        )
    )
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.jsonl"
        base = ["rm", "score", "--model", str(tiny_reward_model_dir), "--data", str(data), "--out", str(out)]
        assert main([*base, "--precision", precision, "--device", "auto"]) == 0
    fp32 = [json.loads(line)["reward"] for line in (tmp_path / "fp32.jsonl").read_text().splitlines()]
    bf16 = [json.loads(line)["reward"] for line in (tmp_path / "bf16.jsonl").read_text().splitlines()]
    assert bf16 == pytest.approx(fp32, abs=0.1) and bf16 != fp32  # bf16 really ran (not a silent fp32)
