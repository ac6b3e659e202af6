"""Accelerate configs load, the CPU set-up helpers pick the right mode, and 2 CPU processes (DDP, ZeRO-2,
ZeRO-3) take the same optimiser step and generate the same tokens as one process.

The launches run `scripts/distributed_smoke.py` (one SGD step on a fixed global batch of 8 texts, then
greedy completions of 4 prompts) through `accelerate launch` with the CPU configs, exactly as a user
would. One process is the reference. Tolerance: relative 1e-6 on the loss before and after the step
and on the step's size (measured: differences of a few 1e-8, float32 sums in a different order);
completions must be identical. Under ZeRO-3 the completions come once from gathered weights (PPO's
rollout path) and once from shards fetched layer by layer with synced processes.
No GPU here: the GPU configs are checked by loading them the way `accelerate launch` does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"
SMOKE_SCRIPT = REPO / "scripts" / "distributed_smoke.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_env() -> dict[str, str]:
    """One thread per process (2 cores), no GPU, DeepSpeed's CPU accelerator, no wandb."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "DS_ACCELERATOR": "cpu",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }


def accelerate_launch(config_name: str, program: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/<config_name>.yaml <program...>`; fails the test on error."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / f"{config_name}.yaml"),
        "--main_process_port",
        str(free_port()),
        *program,
    ]
    done = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


# --------------------------------------------------------------------------------------------------
# Configs: every shipped YAML loads the way `accelerate launch` reads it (no GPU needed)
# --------------------------------------------------------------------------------------------------

EXPECTED = {  # file -> (distributed type, ZeRO stage, optimiser offload, parameter offload)
    "single": ("NO", None, None, None),
    "ddp": ("MULTI_GPU", None, None, None),
    "zero2": ("DEEPSPEED", 2, "none", "none"),
    "zero3": ("DEEPSPEED", 3, "none", "none"),
    "zero3_offload": ("DEEPSPEED", 3, "cpu", "cpu"),
    "fsdp": ("FSDP", None, None, None),
    "cpu_ddp": ("MULTI_GPU", None, None, None),
    "cpu_zero2": ("DEEPSPEED", 2, "none", "none"),
    "cpu_zero3": ("DEEPSPEED", 3, "none", "none"),
}


def launcher_env(config_file: Path) -> tuple[object, dict[str, str]]:
    """(parsed launch args, the environment `accelerate launch` would give each process)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import launch as launch_utils

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command sets it
        _, env = launch_utils.prepare_deepspeed_cmd_env(args)
    elif args.use_fsdp or args.multi_gpu:
        env = launch_utils.prepare_multi_gpu_env(args)
    else:
        _, env = launch_utils.prepare_simple_launcher_cmd_env(args)
    return defaults, env


def test_every_shipped_accelerate_config_is_covered_and_has_a_launch_command():
    shipped = {path.stem for path in ACCELERATE_CONFIGS.glob("*.yaml")}
    assert shipped == set(EXPECTED)
    for name in shipped:
        header = (ACCELERATE_CONFIGS / f"{name}.yaml").read_text().split("\ncompute_environment")[0]
        assert f"accelerate launch --config_file configs/accelerate/{name}.yaml" in header, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads_into_the_intended_plugin(name):
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    distributed_type, stage, optimizer_offload, param_offload = EXPECTED[name]
    defaults, env = launcher_env(ACCELERATE_CONFIGS / f"{name}.yaml")
    assert str(defaults.distributed_type).split(".")[-1] == distributed_type
    assert env.get("ACCELERATE_MIXED_PRECISION") == "no"  # precision comes from train.precision
    with mock.patch.dict(os.environ, env, clear=True):
        if stage is not None:
            plugin = DeepSpeedPlugin()
            zero = plugin.deepspeed_config["zero_optimization"]
            assert (plugin.zero_stage, zero["offload_optimizer"]["device"], zero["offload_param"]["device"]) == (
                stage,
                optimizer_offload,
                param_offload,
            )
            # stage 3 must gather whole weights when a stage saves its model
            assert zero["stage3_gather_16bit_weights_on_model_save"] == (stage == 3)
        if distributed_type == "FSDP":
            plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
            assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT")


# --------------------------------------------------------------------------------------------------
# rlhf.distributed: which CPU mode a launch gets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, expected_trainer, expected_cpu_flag",
    [
        ({}, {}, None),  # one process: accelerate decides
        ({"WORLD_SIZE": "2"}, {"use_cpu": True}, True),  # torchrun / cpu_ddp.yaml without GPUs
        ({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"}, {"ddp_backend": "gloo"}, None),  # DeepSpeed on CPU
        ({"WORLD_SIZE": "1", "ACCELERATE_USE_DEEPSPEED": "true"}, {}, None),
    ],
)
def test_cpu_launch_settings(env, expected_trainer, expected_cpu_flag):
    from rlhf import distributed

    with mock.patch.dict(os.environ, env), mock.patch.object(distributed, "gpu_available", return_value=False):
        for key in ("WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED"):  # patch.dict restores them afterwards
            if key not in env:
                os.environ.pop(key, None)
        assert distributed.training_arguments_kwargs() == expected_trainer
        kwargs = distributed.accelerator_kwargs()
        assert kwargs.get("cpu") == expected_cpu_flag
        backends = [handler.backend for handler in kwargs.get("kwargs_handlers", [])]
        assert backends == (["gloo"] if "ddp_backend" in expected_trainer else [])


def test_with_a_gpu_accelerate_decides():
    from rlhf import distributed

    with (
        mock.patch.dict(os.environ, {"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true"}),
        mock.patch.object(distributed, "gpu_available", return_value=True),
    ):
        assert distributed.training_arguments_kwargs() == {} and distributed.accelerator_kwargs() == {}


@pytest.mark.parametrize("raises", [False, True])
def test_the_cli_destroys_the_process_group_a_command_started(tmp_path, monkeypatch, raises):
    """A command that started a process group leaves none behind, whether it finished or failed."""
    import types

    import torch.distributed as dist

    from rlhf.app import cli
    from rlhf.errors import UserError

    def command_main(argv):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        assert dist.is_initialized()
        if raises:
            raise UserError("bad input")
        return 0

    monkeypatch.setitem(sys.modules, "fake_stage", types.SimpleNamespace(main=command_main))
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("fake_stage", "a stage that starts a process group"))
    assert cli.main(["fake"]) == (2 if raises else 0)
    assert not dist.is_initialized()


def test_seed_for_rank_keeps_rank_zero_and_differs_per_rank():
    from rlhf.distributed import seed_for_rank

    assert seed_for_rank(42, 0) == 42  # a one-process run samples what rank 0 samples
    assert len({seed_for_rank(42, rank) for rank in range(8)}) == 8


# --------------------------------------------------------------------------------------------------
# 2 CPU processes == 1 process: one SGD step and greedy generation
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process_smoke(tiny_model_dir):
    done = subprocess.run(
        [sys.executable, str(SMOKE_SCRIPT), "--model", str(tiny_model_dir)],
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    "config_name, extra, distributed_type, generation",
    [
        ("cpu_ddp", [], "MULTI_CPU", "plain"),
        ("cpu_zero2", [], "DEEPSPEED", "plain"),
        ("cpu_zero3", [], "DEEPSPEED", "gathered"),
        ("cpu_zero3", ["--no-gather"], "DEEPSPEED", "sharded"),
    ],
)
def test_two_processes_take_the_one_process_step(
    one_process_smoke, tiny_model_dir, tmp_path, config_name, extra, distributed_type, generation
):
    out = tmp_path / "smoke.json"
    accelerate_launch(config_name, [str(SMOKE_SCRIPT), "--model", str(tiny_model_dir), "--out", str(out), *extra])
    two = json.loads(out.read_text())
    one = one_process_smoke
    assert (two["distributed_type"], two["num_processes"], two["generation"]) == (distributed_type, 2, generation)
    assert one["num_processes"] == 1
    assert two["loss_after"] < two["loss_before"]  # the step was taken...
    for key in ("loss_before", "loss_after", "update_norm"):  # ...and it is the one-process step
        assert two[key] == pytest.approx(one[key], rel=1e-6), key
    assert two["completions"] == one["completions"]


# --------------------------------------------------------------------------------------------------
# scripts/slurm_launch.sh: the multi-node command from SLURM's environment
# --------------------------------------------------------------------------------------------------

SLURM_SCRIPT = REPO / "scripts" / "slurm_launch.sh"


def slurm_task_env(node: int, **extra: str) -> dict[str, str]:
    """What srun gives the task on node `node` of a 2-node job (the script's own per-node re-entry marked)."""
    return {
        **launch_env(),
        "RLHF_SLURM_TASK": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": str(node),
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        **extra,
    }


def test_slurm_launch_fills_the_multi_node_arguments_from_slurm(tmp_path):
    fake_scontrol = tmp_path / "scontrol"  # `scontrol show hostnames gpu[07-08]` on a real cluster
    fake_scontrol.write_text("#!/bin/sh\nprintf 'gpu07\\ngpu08\\n'\n")
    fake_scontrol.chmod(0o755)
    env = slurm_task_env(
        1, SLURM_GPUS_PER_NODE="a100:8", RLHF_SLURM_DRY_RUN="1", PATH=f"{tmp_path}:{os.environ['PATH']}"
    )
    done = subprocess.run(
        ["bash", str(SLURM_SCRIPT), "configs/accelerate/zero3.yaml", "-m", "rlhf", "ppo", "--config", "c.yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    value = lambda flag: words[words.index(flag) + 1]  # noqa: E731
    assert words[:2] == ["accelerate", "launch"] and words[-5:] == ["-m", "rlhf", "ppo", "--config", "c.yaml"]
    assert (value("--num_machines"), value("--num_processes"), value("--machine_rank")) == ("2", "16", "1")
    assert (value("--main_process_ip"), value("--main_process_port")) == ("gpu07", str(29500 + 4242 % 1000))
    assert value("--deepspeed_multinode_launcher") == "standard"  # srun, not DeepSpeed's pdsh, reaches the nodes

    ddp = subprocess.run(
        ["bash", str(SLURM_SCRIPT), "configs/accelerate/ddp.yaml", "train.py"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert "--deepspeed_multinode_launcher" not in ddp.stdout
    outside = subprocess.run(
        ["bash", str(SLURM_SCRIPT), "configs/accelerate/ddp.yaml", "train.py"],
        env=launch_env() | {"SLURM_JOB_ID": ""},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert outside.returncode == 2 and "not inside a SLURM allocation" in outside.stderr


@pytest.mark.distributed
@pytest.mark.slow
def test_slurm_launch_two_simulated_nodes_under_zero3(one_process_smoke, tiny_model_dir, tmp_path):
    """Two "nodes" on this machine (one process each, rendezvous on 127.0.0.1) take the one-process step."""
    out = tmp_path / "smoke.json"
    port = str(free_port())
    program = [
        "bash",
        str(SLURM_SCRIPT),
        "configs/accelerate/cpu_zero3.yaml",
        str(SMOKE_SCRIPT),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
    ]
    nodes = [
        subprocess.Popen(
            program,
            env=slurm_task_env(node, PROCESSES_PER_NODE="1", MAIN_PROCESS_IP="127.0.0.1", MAIN_PROCESS_PORT=port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=240) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    two = json.loads(out.read_text())
    assert (two["distributed_type"], two["num_processes"], two["zero_stage"]) == ("DEEPSPEED", 2, 3)
    for key in ("loss_before", "loss_after", "update_norm"):
        assert two[key] == pytest.approx(one_process_smoke[key], rel=1e-6), key
    assert two["completions"] == one_process_smoke["completions"]
