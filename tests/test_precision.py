"""`train.precision: auto`: bf16 exactly where the hardware runs it natively, fp32 elsewhere."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from rlhf.precision import DeviceDescription, cpu_flags, resolve_precision

REPO = Path(__file__).resolve().parents[1]
ICE_LAKE = "fpu sse2 avx2 avx512f avx512bw avx512_vnni"  # AVX512 without BF16: bf16 matmuls are emulated
SAPPHIRE_RAPIDS = ICE_LAKE + " avx512_bf16 amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize(
    "device, expected",
    [
        (DeviceDescription("cuda", cuda_bf16=True), "bf16"),  # Ampere and later
        (DeviceDescription("cuda", cuda_bf16=False), "fp32"),  # V100, T4
        (DeviceDescription("cpu", cpu_flags=frozenset(SAPPHIRE_RAPIDS.split())), "bf16"),  # AMX
        (DeviceDescription("cpu", cpu_flags=frozenset({"avx2", "avx512_bf16"})), "bf16"),  # Cooper Lake, Zen 4
        (DeviceDescription("cpu", cpu_flags=frozenset(ICE_LAKE.split())), "fp32"),
        (DeviceDescription("cpu"), "fp32"),  # flags unknown (no /proc/cpuinfo)
        (DeviceDescription("mps"), "fp32"),
    ],
)
def test_auto_resolves_by_device(device, expected):
    assert resolve_precision("auto", device) == expected


@pytest.mark.parametrize("explicit", ["fp32", "bf16", "fp16"])
def test_explicit_precision_is_kept_on_any_device(explicit):
    for device in (DeviceDescription("cuda", cuda_bf16=True), DeviceDescription("cpu")):
        assert resolve_precision(explicit, device) == explicit


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Xeon\nflags\t\t: {SAPPHIRE_RAPIDS.upper()}\n\nprocessor\t: 1\n")
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= cpu_flags(cpuinfo)
    assert resolve_precision("auto", DeviceDescription("cpu", cpu_flags=cpu_flags(cpuinfo))) == "bf16"
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_is_the_default_and_the_quickstart_stays_fp32():
    from rlhf.app.schema import load_config

    assert load_config(REPO / "configs/base.yaml", require_complete=False).train.precision == "auto"
    for stage in ("sft", "rm", "ppo"):
        assert load_config(REPO / f"configs/tiny/{stage}.yaml", require_complete=False).train.precision == "fp32"
    from rlhf.app.pipeline import load_pipeline_config

    assert load_pipeline_config(str(REPO / "configs/tiny/pipeline.yaml"), []).generate.precision == "fp32"


def test_auto_is_resolved_before_the_run_config_is_written(monkeypatch):
    """SFT/RM: config.yaml records what ran, and transformers gets use_cpu for bf16 on a CPU-only machine."""
    import rlhf.precision
    from rlhf.app.schema import load_config
    from rlhf.hf_stage import training_arguments_fields

    monkeypatch.setattr(
        rlhf.precision,
        "describe_device",
        lambda device_type=None: DeviceDescription("cpu", cpu_flags=frozenset({"amx_bf16"})),
    )
    monkeypatch.setattr("rlhf.distributed.gpu_available", lambda: False)
    cfg = load_config(REPO / "configs/base.yaml", ["model.name_or_path=x"], require_complete=False)
    fields = training_arguments_fields(cfg)
    assert cfg.train.precision == "bf16" and fields["bf16"] is True and fields["use_cpu"] is True


@pytest.mark.parametrize(
    "device, parameters, expected",
    [
        (DeviceDescription("cpu", cpu_flags=frozenset({"amx_bf16"})), 200_000, "fp32"),  # casts outweigh the matmuls
        (DeviceDescription("cpu", cpu_flags=frozenset({"amx_bf16"})), 4_500_000, "bf16"),
        # 2.5M: bf16 pays on a Zen 4's AVX512-BF16, not yet on an AMX Xeon, whose fp32 is twice as fast too
        (DeviceDescription("cpu", cpu_flags=frozenset({"avx512_bf16"})), 2_500_000, "bf16"),
        (DeviceDescription("cpu", cpu_flags=frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})), 2_500_000, "fp32"),
        (DeviceDescription("cpu", cpu_flags=frozenset({"avx512_bf16", "amx_bf16"})), 3_500_000, "bf16"),
        (DeviceDescription("cpu", cpu_flags=frozenset({"amx_bf16"})), None, "bf16"),  # size unknown: a real model
        (DeviceDescription("cuda", cuda_bf16=True), 200_000, "bf16"),  # a GPU pays no such cast overhead
        (DeviceDescription("cpu", cpu_flags=frozenset(ICE_LAKE.split())), 4_500_000, "fp32"),
    ],
)
def test_auto_keeps_fp32_for_a_model_too_small_for_bf16_on_a_cpu(device, parameters, expected):
    assert resolve_precision("auto", device, parameters) == expected


def test_model_parameters_counts_what_transformers_builds(tiny_model_dir, family_dirs, tmp_path):
    """The count from the config alone equals the loaded model's, across families (GPT-2's own key names,
    tied and untied heads); an unloadable name is unknown rather than a network wait."""
    from transformers import AutoModelForCausalLM

    from rlhf.precision import model_parameters

    for model_dir in [tiny_model_dir, *family_dirs.values()]:
        loaded = AutoModelForCausalLM.from_pretrained(model_dir)
        assert model_parameters(model_dir) == sum(p.numel() for p in loaded.parameters()), model_dir
    assert model_parameters(tmp_path / "no-model") is None
    assert model_parameters("no-such-org/no-such-model") is None


def test_stages_resolve_auto_by_the_size_of_their_model(tiny_model_dir, tmp_path, monkeypatch):
    """On a bf16 CPU a stage of the ~60k tiny model runs fp32 and one of a 4.5M model bf16 (config.yaml)."""
    from transformers import LlamaConfig

    import rlhf.precision
    from rlhf.app.schema import load_config
    from rlhf.precision import resolve_train_precision

    monkeypatch.setattr(
        rlhf.precision,
        "describe_device",
        lambda device_type=None: DeviceDescription("cpu", cpu_flags=frozenset({"avx512_bf16"})),
    )
    larger = tmp_path / "4.5M"
    LlamaConfig(
        vocab_size=1024, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    ).save_pretrained(larger)
    for model_dir, expected in [(tiny_model_dir, "fp32"), (larger, "bf16")]:
        cfg = load_config(REPO / "configs/base.yaml", [f"model.name_or_path={model_dir}"], require_complete=False)
        assert resolve_train_precision(cfg) == expected and cfg.train.precision == expected


def test_the_model_is_only_counted_where_its_size_decides(monkeypatch):
    """A GPU or a CPU without native bf16 resolves `auto` without building the model on the meta device."""
    import rlhf.precision
    from rlhf.precision import precision_for

    counted = []
    monkeypatch.setattr(rlhf.precision, "model_parameters", lambda model: counted.append(model) or 100)
    for device, expected in [
        (DeviceDescription("cuda", cuda_bf16=True), "bf16"),
        (DeviceDescription("cpu", cpu_flags=frozenset(ICE_LAKE.split())), "fp32"),
        (DeviceDescription("cpu", cpu_flags=frozenset({"avx512_bf16"})), "fp32"),  # counted: 100 parameters
    ]:
        monkeypatch.setattr(rlhf.precision, "describe_device", lambda device_type=None, device=device: device)
        assert precision_for("auto", model="m") == expected
    assert counted == ["m"]


def test_training_attention_takes_the_math_kernel_only_for_short_bf16_sequences_on_a_cpu():
    """What SDPA may use inside the context: math alone for a short bf16 sequence on a CPU, torch's own
    choice (flash allowed) for fp32, for long sequences and on a GPU; the flags come back afterwards."""
    from rlhf.precision import CPU_BF16_FLASH_MIN_TOKENS, training_attention

    flash, math_kernel = torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.math_sdp_enabled
    assert flash() and math_kernel()
    with training_attention("cpu", "bf16", CPU_BF16_FLASH_MIN_TOKENS - 1):
        assert not flash() and math_kernel()
    assert flash()
    for args in (("cpu", "fp32", 45), ("cpu", "bf16", CPU_BF16_FLASH_MIN_TOKENS), ("cuda", "bf16", 45)):
        with training_attention(*args):
            assert flash(), args


def test_the_math_kernel_computes_what_flash_does_in_bf16(tiny_model_dir):
    """The kernel swap changes the speed, not the model: a bf16 forward + backward of the tiny Llama gives the
    flash kernel's loss and gradients to bf16 rounding."""
    from transformers import AutoModelForCausalLM

    from rlhf.precision import training_attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    ids = torch.randint(3, model.config.vocab_size, (4, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:2, :5] = 0  # left padding, as PPO's rollouts have

    def loss_and_grads(context):
        model.zero_grad(set_to_none=True)
        with context:
            loss = model(ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        return loss.item(), torch.cat([p.grad.float().flatten() for p in model.parameters()])

    flash_loss, flash_grads = loss_and_grads(contextlib.nullcontext())
    math_loss, math_grads = loss_and_grads(training_attention("cpu", "bf16", ids.shape[1]))
    assert math_loss == pytest.approx(flash_loss, rel=1e-2)
    assert torch.nn.functional.cosine_similarity(math_grads, flash_grads, dim=0) > 0.99
