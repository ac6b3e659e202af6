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


# --------------------------------------------------------------------------------------------------
# Chunked generation and trimmed micro-batches
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_and_value(tiny_model_dir, tiny_reward_model_dir, tokenizer):
    from rlhf.modeling import load_causal_lm, load_scalar_model

    policy = load_causal_lm(str(tiny_model_dir), tokenizer).eval()
    value = load_scalar_model(str(tiny_reward_model_dir), tokenizer).eval()
    return policy, value


def _varied_prompts(tokenizer):
    from rlhf.tokens import Encoder, left_pad

    texts = ["User: Hi.\nAssistant:", "User: " + "Tell me about the sea and the cats. " * 4 + "\nAssistant:"]
    texts += [f"User: Tell me about thing {i}.\nAssistant:" for i in range(4)]
    return left_pad([Encoder.of(tokenizer).prompt_ids(text) for text in texts], tokenizer.pad_token_id)


def test_chunked_greedy_generation_equals_one_batch_and_bounds_the_chunk(policy_and_value, tokenizer):
    from ppo.rollout import build_generation_config, generate_responses

    policy, _ = policy_and_value
    prompt_ids, prompt_mask = _varied_prompts(tokenizer)
    config = build_generation_config(
        8, 1.0, top_k=0, top_p=1.0, do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=99
    )
    whole = generate_responses(policy, prompt_ids, prompt_mask, config)
    shapes = []
    original = policy.generate

    def spy(**kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return original(**kwargs)

    policy.generate = spy
    try:
        chunked = generate_responses(policy, prompt_ids, prompt_mask, config, batch_size=4)
    finally:
        del policy.generate
    assert torch.equal(chunked, whole)
    lengths = prompt_mask.sum(1).tolist()
    # Each call holds at most 4 rows at the width of its own longest prompt, not the rollout's.
    assert shapes == [(4, max(lengths[:4])), (2, max(lengths[4:]))] and max(lengths[4:]) < prompt_ids.shape[1]


def test_trimmed_micro_batch_has_its_own_width_and_the_same_logprobs(policy_and_value, tokenizer):
    from ppo.algorithm import logprobs_from_logits
    from ppo.models import PolicyAndValue
    from ppo.rollout import score_responses, trim_micro_batch

    policy, value = policy_and_value
    prompt_ids, prompt_mask = _varied_prompts(tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(0)
    raw = torch.randint(5, 200, (prompt_ids.shape[0], 7))
    raw[2:, 2] = eos  # rows 2.. end after three tokens; rows 0 and 1 run the whole budget
    rollout = score_responses(prompt_ids, prompt_mask, raw, policy, value, value, eos, pad, 1.0, 8, reference=policy)
    micro = rollout.select(torch.tensor([2, 3, 4]))
    advantages = torch.arange(21.0).reshape(3, 7)
    trimmed, (trimmed_advantages,) = trim_micro_batch(micro, advantages)
    assert trimmed.prompt_ids.shape[1] == int(micro.prompt_mask.sum(1).max()) < micro.prompt_ids.shape[1]
    assert trimmed.response_ids.shape[1] == 3 and torch.equal(trimmed_advantages, advantages[:, :3])
    model = PolicyAndValue(policy, value)
    with torch.no_grad():
        full_logits, full_values, _ = model(micro.input_ids, micro.attention_mask, 7)
        logits, values, _ = model(trimmed.input_ids, trimmed.attention_mask, 3)
    mask = trimmed.response_mask
    full = logprobs_from_logits(full_logits, micro.response_ids)[:, :3]
    torch.testing.assert_close(logprobs_from_logits(logits, trimmed.response_ids)[mask], full[mask], atol=1e-6, rtol=0)
    torch.testing.assert_close(values[mask], full_values[:, :3][mask], atol=1e-6, rtol=0)


def test_training_forwards_see_micro_batches_at_their_own_width(tiny_model_dir, tiny_reward_model_dir, tmp_path):
    from ppo.models import PolicyAndValue
    from ppo.trainer import Loop, train
    from rlhf.app.schema import load_config

    prompts = tmp_path / "prompts.jsonl"
    texts = ["User: " + "Tell me about the sea and the cats. " * 4 + "\nAssistant:"]
    texts += [f"User: Hi {i}.\nAssistant:" for i in range(7)]
    prompts.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in texts))
    rollout_widths, forward_widths = [], []
    collect, forward = Loop.collect_rollout, PolicyAndValue.forward

    def collect_spy(self, *args):
        result = collect(self, *args)
        rollout_widths.append(result[0].input_ids.shape[1])
        return result

    def forward_spy(self, input_ids, *args, **kwargs):
        forward_widths.append(input_ids.shape[1])
        return forward(self, input_ids, *args, **kwargs)

    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"ppo.reward_model_path={tiny_reward_model_dir}",
            f"data.train_file={prompts}",
            f"run.output_dir={tmp_path / 'run'}",
            "tracking.plots=false",
            "ppo.sample_every=0",
            "ppo.num_updates=1",
            "ppo.rollout_batch_size=8",
            "ppo.max_new_tokens=6",
            "train.gradient_accumulation_steps=2",  # 2 mini-batches x 2 micro-batches of 2 rows
        ],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Loop, "collect_rollout", collect_spy)
        patch.setattr(PolicyAndValue, "forward", forward_spy)
        history = train(cfg)["history"]
    assert math.isfinite(history[0]["loss/policy_avg"])
    assert len(forward_widths) == 4 and max(forward_widths) <= rollout_widths[0]
    assert min(forward_widths) < rollout_widths[0]  # old code: every forward at the rollout's full width


# --------------------------------------------------------------------------------------------------
# LoRA value model
# --------------------------------------------------------------------------------------------------


def _tiny_ppo_config(tiny_model_dir, tiny_reward_model_dir, tmp_path, *overrides):
    from rlhf.app.schema import load_config

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about {i}.\nAssistant:"}) + "\n" for i in range(8))
    )
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"ppo.reward_model_path={tiny_reward_model_dir}",
            f"data.train_file={prompts}",
            f"run.output_dir={tmp_path / 'run'}",
            "tracking.plots=false",
            "ppo.sample_every=0",
            "ppo.rollout_batch_size=8",
            "ppo.max_new_tokens=6",
            *overrides,
        ],
    )


def test_lora_ppo_trains_only_the_value_adapter_and_head(tiny_model_dir, tiny_reward_model_dir, tmp_path):
    import ppo.trainer as trainer

    captured = {}

    def build_spy(cfg):
        models = build(cfg)
        captured["models"] = models
        captured["initial"] = {n: p.detach().clone() for n, p in models.value_model.named_parameters()}
        return models

    build = trainer.build_models
    cfg = _tiny_ppo_config(
        tiny_model_dir,
        tiny_reward_model_dir,
        tmp_path,
        "ppo.num_updates=2",
        "model.lora.enabled=true",  # ppo.value_lora follows it by default
        "model.lora.r=4",
        "model.lora.merge_on_save=false",
        "train.learning_rate=1e-2",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "build_models", build_spy)
        result = trainer.train(cfg)
    models, initial = captured["models"], captured["initial"]
    trainable = {n for n, p in models.value_model.named_parameters() if p.requires_grad}
    # Only the adapter and peft's trainable copy of the scalar head; old code: every value parameter.
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("modules_to_save" in n and "score" in n for n in trainable)
    total = sum(p.numel() for p in models.value_model.parameters())
    assert sum(p.numel() for n, p in models.value_model.named_parameters() if n in trainable) < total / 4
    after = dict(models.value_model.named_parameters())
    changed = {n for n in initial if not torch.equal(initial[n], after[n].detach())}
    assert changed == trainable  # every adapter and head parameter moved, and nothing else
    # The reference is still the adapter-disabled policy: zero KL before the first step, moving after.
    first, second = result["history"]
    assert models.reference is None and first["objective/kl"] == pytest.approx(0.0, abs=1e-5)
    assert abs(second["objective/kl"]) > 1e-3
    assert (tmp_path / "run" / "value" / "adapter_config.json").is_file()  # merge_on_save=false keeps the adapter


def test_value_lora_false_keeps_a_full_value_model(tiny_model_dir, tiny_reward_model_dir, tmp_path):
    from ppo.config import PPOStageConfig
    from ppo.models import build_models
    from rlhf.config import typed

    cfg = typed(
        _tiny_ppo_config(
            tiny_model_dir, tiny_reward_model_dir, tmp_path, "model.lora.enabled=true", "ppo.value_lora=false"
        ),
        PPOStageConfig,
    )
    models = build_models(cfg)
    assert all(p.requires_grad for p in models.value_model.parameters())


# --------------------------------------------------------------------------------------------------
# ZeRO-3: what generation gathers
# --------------------------------------------------------------------------------------------------


@pytest.mark.distributed
@pytest.mark.slow
def test_zero3_generation_gathers_the_policy_only(tiny_model_dir, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "probe.json"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(repo / "configs" / "accelerate" / "cpu_zero3.yaml"),
        "--main_process_port",
        str(port),
        str(repo / "tests" / "probes" / "zero3_generation_gather.py"),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=repo)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["zero_stage"] == 3
    full_policy, full_value = result["full"]["policy"], result["full"]["value_model"]
    # Outside generation both models are partitioned (a ZeRO-3 shard of a parameter is not held as data).
    assert result["before"]["policy"] < full_policy and result["before"]["value_model"] < full_value
    # Inside, the whole policy and none of the value model: old code gathered both (peak policy + value).
    assert result["during"] == {"policy": full_policy, "value_model": result["before"]["value_model"]}
    assert result["after"] == result["before"]
    assert len(result["tokens"][0]) == 4


# --------------------------------------------------------------------------------------------------
# The estimate at launch and the measured peak
# --------------------------------------------------------------------------------------------------


def test_ppo_prints_the_estimate_and_logs_the_measured_peak(tiny_model_dir, tiny_reward_model_dir, tmp_path, capsys):
    import resource

    from ppo.trainer import train
    from rlhf.memory import estimate_from_config

    cfg = _tiny_ppo_config(tiny_model_dir, tiny_reward_model_dir, tmp_path, "ppo.num_updates=1")
    history = train(cfg)["history"]
    estimate = estimate_from_config(cfg, "ppo")
    assert f"ppo: estimated peak {estimate.peak / 2**30:.2f} GiB per process" in capsys.readouterr().out
    peak = history[0]["perf/peak_memory_gib"]  # on a CPU the process's peak RSS so far
    assert 0 < peak <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def test_scoring_chunks_run_at_their_own_prompt_width(policy_and_value, tokenizer):
    from ppo.rollout import score_responses

    policy, value = policy_and_value
    prompt_ids, prompt_mask = _varied_prompts(tokenizer)  # row 1 is the long prompt
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(0)
    raw = torch.randint(5, 200, (prompt_ids.shape[0], 5))
    widths = []
    hook = policy.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        chunked = score_responses(
            prompt_ids, prompt_mask, raw, policy, value, value, eos, pad, 1.0, 2, reference=policy
        )
        whole = score_responses(prompt_ids, prompt_mask, raw, policy, value, value, eos, pad, 1.0, 6, reference=policy)
    finally:
        hook.remove()
    full_width = prompt_ids.shape[1] + 5
    lengths = prompt_mask.sum(1).tolist()
    # 3 chunks x (policy, reference): the chunk with the long prompt at full width, the others at their own.
    assert widths[:3] == [full_width, max(lengths[2:4]) + 5, max(lengths[4:]) + 5] and widths[1] < full_width
    for name in ("logprobs", "ref_logprobs", "values", "raw_scores"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), atol=1e-6, rtol=0)
