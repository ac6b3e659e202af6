"""rlhf/memory.py: parameter counts against real models, and the per-process arithmetic by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.memory import (
    GIB,
    LLAMA2_7B,
    ModelShape,
    Parallelism,
    PPOSettings,
    Precision,
    estimate_from_config,
    estimate_ppo,
    estimate_supervised,
    fits,
    kv_cache_bytes,
    main,
)

REPO = Path(__file__).resolve().parents[1]


def test_parameter_counts_match_the_loaded_models(tiny_model_dir):
    from rlhf.modeling import apply_lora, load_causal_lm, load_scalar_model, load_tokenizer

    shape = ModelShape.from_pretrained(tiny_model_dir)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    causal = load_causal_lm(str(tiny_model_dir), tokenizer)
    assert shape.causal_lm_parameters() == sum(p.numel() for p in causal.parameters())
    scalar = load_scalar_model(str(tiny_model_dir), tokenizer)
    assert shape.scalar_model_parameters() == sum(p.numel() for p in scalar.parameters())
    lora = apply_lora(causal, {"r": 4, "target_modules": ["all-linear"]})
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert shape.lora_parameters(4, ["all-linear"]) == trainable
    assert shape.lora_parameters(4, ["q_proj", "v_proj"]) < trainable


def test_llama2_7b_has_its_published_parameter_count():
    assert LLAMA2_7B.causal_lm_parameters() == 6_738_415_616  # meta-llama/Llama-2-7b-hf
    # LoRA r=8 on all seven projections: 8 x (4 x 8192 + 3 x 15104) x 32 layers
    assert LLAMA2_7B.lora_parameters(8, ["all-linear"]) == 8 * (4 * 8192 + 3 * 15104) * 32


def test_kv_cache_and_zero3_arithmetic_by_hand():
    # 2 (k, v) x 32 layers x 32 heads x 128 dims x 32 rows x 1024 tokens x 2 bytes = 16 GiB
    assert kv_cache_bytes(LLAMA2_7B, 32, 1024, 2) == 16 * GIB
    settings = PPOSettings(rollout_batch_size=64, generation_batch_size=32, prompt_length=512, new_tokens=512)
    bf16 = Precision("bfloat16", "bf16")
    one = estimate_ppo(LLAMA2_7B, settings, Parallelism(), bf16)
    zero3 = estimate_ppo(LLAMA2_7B, settings, Parallelism(8, 3, deepspeed=True), bf16)
    n = LLAMA2_7B.causal_lm_parameters()
    assert one.resident["policy weights"] == n * 2
    assert one.resident["policy optimizer states"] == n * 4  # torch AdamW keeps bf16 moments for bf16 weights
    assert zero3.resident["policy weights"] == n * 2 / 8
    assert zero3.resident["policy optimizer states"] == n * 12 / 8  # fp32 master + 2 moments, partitioned
    assert zero3.phases["generation"]["gathered policy weights"] == n * 2 * 7 / 8
    assert zero3.phases["generation"]["KV cache"] == 16 * GIB
    assert zero3.phases["training"]["ZeRO-3 live gathered weights"] == 10**9 * 2  # stage3_max_live_parameters
    assert "ZeRO-3 live gathered weights" not in one.phases["training"]
    halved = estimate_ppo(
        LLAMA2_7B,
        PPOSettings(rollout_batch_size=64, generation_batch_size=16, prompt_length=512, new_tokens=512),
        Parallelism(),
        bf16,
    )
    assert (
        halved.phases["generation"]["KV cache"] == one.phases["generation"]["KV cache"] / 2
    )  # ppo.generation_batch_size
    offload = estimate_ppo(LLAMA2_7B, settings, Parallelism(8, 3, True, True, True), bf16)
    assert not offload.resident and offload.host["policy optimizer states"] == zero3.resident["policy optimizer states"]


def test_lora_drops_the_optimiser_states_and_the_reference():
    settings = PPOSettings(prompt_length=512, new_tokens=512)
    full = estimate_ppo(LLAMA2_7B, settings)
    lora = estimate_ppo(LLAMA2_7B, PPOSettings(prompt_length=512, new_tokens=512, lora=True))
    assert "reference weights" in full.resident and "reference weights" not in lora.resident
    adapters = LLAMA2_7B.lora_parameters(8, ["all-linear"])
    assert lora.resident["policy optimizer states"] == adapters * 8  # fp32 AdamW: two 4-byte moments
    assert lora.resident["value optimizer states"] == (adapters + LLAMA2_7B.hidden_size) * 8
    full_critic = estimate_ppo(LLAMA2_7B, PPOSettings(prompt_length=512, new_tokens=512, lora=True, value_lora=False))
    assert full_critic.resident["value optimizer states"] == LLAMA2_7B.scalar_model_parameters() * 8
    assert full_critic.peak - lora.peak > 50 * GIB  # the full fp32 critic's AdamW states and gradients


def test_a_critic_free_estimator_drops_the_value_model():
    settings = PPOSettings(prompt_length=512, new_tokens=512)
    critic = estimate_ppo(LLAMA2_7B, settings)
    no_critic = estimate_ppo(LLAMA2_7B, PPOSettings(prompt_length=512, new_tokens=512, critic=False))
    assert "value weights" in critic.resident and not any(key.startswith("value") for key in no_critic.resident)
    assert "value activations" not in no_critic.phases["training"]
    value = LLAMA2_7B.scalar_model_parameters()
    # fp32 weights (4) + gradients (4) + AdamW moments (8) of the critic: 16 bytes a parameter
    assert critic.peak - no_critic.peak >= value * 16


def test_the_config_reader_counts_responses_and_the_critic(tmp_path):
    from rlhf.memory import estimate_from_config

    base = {"model": {"name_or_path": "x"}, "data": {"max_prompt_length": 64}}
    one = estimate_from_config(base, "ppo", shape=LLAMA2_7B)
    grouped = estimate_from_config(
        {**base, "ppo": {"samples_per_prompt": 4, "advantage_estimator": "rloo"}}, "ppo", shape=LLAMA2_7B
    )
    assert grouped.phases["scoring"]["rollout tensors"] == 4 * one.phases["scoring"]["rollout tensors"]
    assert "value weights" in one.resident and "value weights" not in grouped.resident


def test_the_7b_verdicts_on_8_x_80_gb():
    settings = PPOSettings(
        rollout_batch_size=64,
        generation_batch_size=32,
        forward_batch_size=16,
        micro_batch_size=4,
        prompt_length=512,
        new_tokens=512,
    )
    bf16 = Precision("bfloat16", "bf16")
    zero3 = Parallelism(8, 3, deepspeed=True)
    assert not fits(estimate_ppo(LLAMA2_7B, settings, Parallelism(8), bf16), 80)  # DDP: four 7B models + AdamW
    checkpointed = PPOSettings(**{**settings.__dict__, "gradient_checkpointing": True})
    assert fits(estimate_ppo(LLAMA2_7B, checkpointed, zero3, bf16), 80)


def test_accelerate_configs_are_read_for_stage_offload_and_processes():
    configs = REPO / "configs" / "accelerate"
    assert Parallelism.from_accelerate_config(configs / "zero3.yaml") == Parallelism(8, 3, True, False, False)
    assert Parallelism.from_accelerate_config(configs / "zero3_offload.yaml") == Parallelism(8, 3, True, True, True)
    assert Parallelism.from_accelerate_config(configs / "zero2.yaml").zero_stage == 2
    assert Parallelism.from_accelerate_config(configs / "ddp.yaml").zero_stage == 0


def test_supervised_stages_count_one_model():
    sft = estimate_supervised("sft", LLAMA2_7B, 4, 1024)
    rm = estimate_supervised("rm", LLAMA2_7B, 4, 1024)
    assert sft.resident["sft weights"] == LLAMA2_7B.causal_lm_parameters() * 4
    assert "logits" in sft.phases["training"] and "logits" not in rm.phases["training"]
    assert rm.phases["training"]["activations"] == 2 * sft.phases["training"]["activations"]  # chosen + rejected


def test_estimate_from_a_run_config_and_the_command(tiny_model_dir, tiny_reward_model_dir, capsys):
    from rlhf.app.schema import load_config

    cfg = load_config(
        REPO / "configs/tiny/ppo.yaml",
        [f"model.name_or_path={tiny_model_dir}", f"ppo.reward_model_path={tiny_reward_model_dir}"],
    )
    budget = estimate_from_config(cfg, "ppo")
    shape = ModelShape.from_pretrained(tiny_model_dir)
    assert budget.resident["policy weights"] == shape.causal_lm_parameters() * 4
    assert budget.phases["generation"]["KV cache"] == kv_cache_bytes(shape, 32, 64 + 32, 4)  # tiny: 32 rows
    main(
        [
            "--config",
            str(REPO / "configs/tiny/ppo.yaml"),
            "--shape",
            "llama2-7b",
            "--accelerate",
            str(REPO / "configs/accelerate/zero3.yaml"),
            "model.lora.enabled=true",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["stage"] == "ppo" and printed["fits"] is True and "reference weights" not in printed["resident_gib"]


@pytest.mark.parametrize("stage", ["sft", "rm"])
def test_command_picks_the_stage_from_the_config(stage, capsys):
    main(["--config", str(REPO / f"configs/tiny/{stage}.yaml"), "--shape", "llama2-7b"])
    assert json.loads(capsys.readouterr().out)["stage"] == stage


def test_memory_section_reports_the_accelerate_setting(tiny_model_dir, tiny_reward_model_dir):
    from rlhf.app.schema import load_config
    from rlhf.memory import memory_section

    cfg = load_config(
        REPO / "configs/tiny/ppo.yaml",
        [f"model.name_or_path={tiny_model_dir}", f"ppo.reward_model_path={tiny_reward_model_dir}"],
    )
    tiny = memory_section(cfg, "ppo", REPO / "configs/accelerate/zero3.yaml", device_gib=80)
    assert (tiny["processes"], tiny["zero_stage"], tiny["fits"]) == (8, 3, True)
    section = memory_section(cfg, "ppo", REPO / "configs/accelerate/zero3.yaml", device_gib=80, shape=LLAMA2_7B)
    gathered = LLAMA2_7B.causal_lm_parameters() * 4 * 7 / 8  # fp32, the 7 of 8 shards this process lacks
    assert section["phases_gib"]["generation"]["gathered policy weights"] == round(gathered / GIB, 3)
