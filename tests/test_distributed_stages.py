"""SFT, reward model and PPO on 2 CPU processes (`accelerate launch`, the real CLI) == one process.

Each test runs the stage once in this process with the whole global batch, and once through
`accelerate launch --config_file configs/accelerate/cpu_<ddp|zero2|zero3>.yaml -m rlhf <stage>` with half
of it per process, and compares what the main process logged. Same global batch, same data order
(the samplers share run.seed), so the numbers agree to float round-off: measured differences are below
1e-6 relative (float32 sums in another order); the tolerance is relative 1e-5 (absolute 1e-6 for PPO's
whitened quantities, whose means are ~1e-7). Beyond the first step, the second step's loss checks that
the update itself (DDP / ZeRO gradient reduction, clipping) was the one-process update (absolute 1e-5 on
step-2 values near zero: after one Adam step, round-off moves them by up to 3e-6), and the saved
weights are compared too, to 1e-5 relative per tensor (under ZeRO-3 they are gathered from shards when
saved). Every metrics row is logged once (only the main process writes). PPO decodes greedily so both
layouts draw the same responses; under ZeRO-3 a probe records that the policy's weights were whole (gathered once per
rollout) or sharded (ppo.zero3_gather_for_generation=false) while generating. The last test checkpoints
a sampling PPO run under ZeRO-3 and resumes it: the resumed update equals the uninterrupted one.
(test_ppo_distributed.py covers PPO under DDP.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_distributed_smoke import accelerate_launch

from rlhf.app.schema import load_config
from rlhf.tracking import read_metrics

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[1]
REL = 1e-5


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def launch_stage(config_name: str, stage: str, cfg, config_file: Path) -> None:
    config_file.write_text(OmegaConf.to_yaml(cfg))
    accelerate_launch(config_name, ["-m", "rlhf", stage, "--config", str(config_file)])


def rows_with(metrics: list[dict], key: str) -> dict[int, dict]:
    """{step: row} of the rows that carry `key`; fails if a step was logged twice (two writers)."""
    selected = [row for row in metrics if key in row]
    steps = [row["step"] for row in selected]
    assert len(steps) == len(set(steps)), f"{key} logged twice for a step: {steps}"
    return {row["step"]: row for row in selected}


def assert_rows_match(
    one: dict[int, dict], two: dict[int, dict], keys: tuple[str, ...], rel: float = REL, abs_: float = 0.0
) -> None:
    assert sorted(one) == sorted(two)
    for step in one:
        for key in keys:
            assert two[step][key] == pytest.approx(one[step][key], rel=rel, abs=abs_), (step, key)


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(one_dir: Path, two_dir: Path, rel: float = 1e-5) -> None:
    """Every saved tensor agrees to `rel` in Frobenius norm. Not element by element: Adam's first steps are
    ~lr * sign(g), so a parameter whose gradient is ~0 can turn round-off into a difference of ~1e-5
    (measured: one element of 9600 after two steps at lr 3e-3), while a missed or unsynchronised update
    moves the whole tensor by ~lr per element (relative ~1e-3)."""
    one, two = load_weights(one_dir), load_weights(two_dir)
    assert sorted(one) == sorted(two)
    for name in one:
        assert two[name].shape == one[name].shape, name  # whole tensors, not ZeRO-3 shards
        difference = torch.linalg.norm((two[name] - one[name]).double())
        assert difference <= rel * torch.linalg.norm(one[name].double()) + 1e-7, (name, float(difference))


# --------------------------------------------------------------------------------------------------
# SFT: DDP, ZeRO-2, ZeRO-3
# --------------------------------------------------------------------------------------------------

SFT_TOPICS = ["cats", "the sea", "volcanoes", "dogs", "rain", "trees", "big old mountains", "bees"]
SFT_KEYS = ("loss", "grad_norm", "learning_rate", "entropy", "mean_token_accuracy", "num_tokens")


def sft_config(tiny_model_dir, data_dir: Path, out_dir: Path, per_device_batch: int):
    # Completions of different lengths: a per-process token mean would differ from the global one.
    rows = [
        {
            "prompt": f"User: Tell me about {topic}.\nAssistant:",
            "completion": " Hi!" + " Nice." * (i % 4 + 1) + f" {topic} rock.",
        }
        for i, topic in enumerate(SFT_TOPICS * 2)
    ]
    train = write_jsonl(data_dir / "sft_train.jsonl", rows)
    evaluation = write_jsonl(data_dir / "sft_eval.jsonl", rows[:4])
    return load_config(
        REPO / "configs/tiny/sft.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={train}",
            f"data.eval_file={evaluation}",
            f"run.output_dir={out_dir}",
            "train.learning_rate=3e-3",
            f"train.per_device_train_batch_size={per_device_batch}",
            "train.per_device_eval_batch_size=2",
            "train.max_steps=2",
            "train.logging_steps=1",
            "train.warmup_ratio=0",
            "train.eval_steps=null",
            "train.save_steps=null",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
        ],
    )


@pytest.fixture(scope="module")
def sft_one_process(tiny_model_dir, tmp_path_factory):
    from sft.trainer import train

    root = tmp_path_factory.mktemp("sft_one")
    summary = train(sft_config(tiny_model_dir, root, root / "run", per_device_batch=8))
    return root / "run", summary


@pytest.mark.parametrize("config_name", ["cpu_ddp", "cpu_zero2", "cpu_zero3"])
def test_sft_two_processes_match_one_process(sft_one_process, tiny_model_dir, tmp_path, config_name):
    one_dir, one_summary = sft_one_process
    launch_stage(
        config_name,
        "sft",
        sft_config(tiny_model_dir, tmp_path, tmp_path / "run", per_device_batch=4),
        tmp_path / "sft.yaml",
    )
    two_dir = tmp_path / "run"

    one, two = read_metrics(one_dir / "metrics.jsonl"), read_metrics(two_dir / "metrics.jsonl")
    assert sorted(rows_with(two, "loss")) == [1, 2]
    assert rows_with(two, "loss")[2]["loss"] < rows_with(two, "loss")[1]["loss"]
    assert_rows_match(rows_with(one, "loss"), rows_with(two, "loss"), SFT_KEYS)
    # Eval loss is the Trainer's mean of per-batch means: equal here because the eval batches are equal (2 rows).
    two_summary = json.loads((two_dir / "summary.json").read_text())
    assert two_summary["eval/loss"] == pytest.approx(one_summary["eval/loss"], rel=REL)
    assert two_summary["train/global_step"] == one_summary["train/global_step"] == 2
    assert_same_weights(one_dir / "model", two_dir / "model")


# --------------------------------------------------------------------------------------------------
# Reward model: DDP, pairwise (trl.RewardTrainer) and K-wise (ours)
# --------------------------------------------------------------------------------------------------

RM_PHRASES = [
    " Hope this helps.",
    " Go away.",
    " Cats purr.",
    " I do not care.",
    " The sea is salty.",
    " Ask someone else.",
]


def rm_rankings(count: int = 24) -> list[dict]:
    """K=3 rankings with responses of different lengths; more polite phrases rank higher."""
    rows = []
    for index in range(count):
        texts = [RM_PHRASES[(index + shift) % len(RM_PHRASES)] * (1 + (index + shift) % 3) for shift in range(3)]
        rows.append(
            {
                "id": f"p{index}",
                "prompt": f"User: Tell me about thing {index}.\nAssistant:",
                "responses": [{"id": f"r{k}", "text": text} for k, text in enumerate(texts)],
                "ranking": [["r1"], ["r0"], ["r2"]] if index % 2 else [["r0"], ["r2", "r1"]],  # ties give fewer pairs
            }
        )
    return rows


def rm_config(tiny_model_dir, data_dir: Path, out_dir: Path, loss: str, per_device_batch: int):
    data_dir.mkdir(parents=True, exist_ok=True)
    rankings = write_jsonl(data_dir / "rankings.jsonl", rm_rankings())
    return load_config(
        REPO / "configs/tiny/rm.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={rankings}",
            f"run.output_dir={out_dir}",
            f"rm.loss={loss}",
            "data.eval_fraction=0.25",
            "train.learning_rate=3e-3",
            f"train.per_device_train_batch_size={per_device_batch}",
            "train.per_device_eval_batch_size=4",
            "train.max_steps=2",
            "train.logging_steps=1",
            "train.warmup_ratio=0",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
            "rm.normalize_samples=16",
        ],
    )


@pytest.mark.parametrize("loss, one_batch", [("pairwise", 8), ("kwise", 4)])  # pairs or rankings per step
def test_reward_model_ddp_matches_one_process(tiny_model_dir, tmp_path, loss, one_batch):
    from reward_model.trainer import train

    one_summary = train(rm_config(tiny_model_dir, tmp_path / "one", tmp_path / "one" / "run", loss, one_batch))
    launch_stage(
        "cpu_ddp",
        "rm",
        rm_config(tiny_model_dir, tmp_path / "two", tmp_path / "two" / "run", loss, one_batch // 2),
        tmp_path / "rm.yaml",
    )
    two_summary = json.loads((tmp_path / "two" / "run" / "summary.json").read_text())

    one, two = (
        read_metrics(tmp_path / "one" / "run" / "metrics.jsonl"),
        read_metrics(tmp_path / "two" / "run" / "metrics.jsonl"),
    )
    keys = tuple(key for key in rows_with(one, "loss")[1] if key not in ("step", "time", "epoch"))
    assert {"loss", "grad_norm"} <= set(keys)
    assert_rows_match(
        rows_with(one, "loss"), rows_with(two, "loss"), keys, abs_=1e-5
    )  # step 2's mean reward is ~0.09 (abs diff 3e-6)
    # The Trainer's own eval rows (eval_accuracy, ...) are means of per-step batch means with padding samples
    # repeated to even out the processes, so they shift with the world size; these are measured instead
    # on the saved model by the main process alone: held-out accuracy and the reward statistics for PPO
    for key in ("eval/accuracy", "train/accuracy", "reward_stats/mean", "reward_stats/std"):
        assert two_summary[key] == pytest.approx(one_summary[key], rel=REL), key
    assert_same_weights(tmp_path / "one" / "run" / "model", tmp_path / "two" / "run" / "model")


# --------------------------------------------------------------------------------------------------
# PPO: ZeRO-2, ZeRO-3 (generation from gathered or sharded weights), checkpoint and resume
# --------------------------------------------------------------------------------------------------

GENERATION_PROBE = '''
"""Run `rlhf ...` and record, per generation call, whether the policy's weights were whole."""
import json, os, sys
from pathlib import Path

import ppo.trainer

original = ppo.trainer.generate_responses
calls = []


def recording(policy, prompt_ids, prompt_mask, generation_config, synced_gpus=False, **kwargs):
    # a ZeRO-3 shard leaves p.data empty; gathered, it holds all ds_numel elements
    whole = all(p.data.numel() == getattr(p, "ds_numel", p.numel()) for p in policy.parameters())
    calls.append({"whole": whole, "synced_gpus": synced_gpus})
    return original(policy, prompt_ids, prompt_mask, generation_config, synced_gpus=synced_gpus, **kwargs)


ppo.trainer.generate_responses = recording
from rlhf.app.cli import main

code = main(sys.argv[1:])
Path(os.environ["GENERATION_PROBE_OUT"] + "." + os.environ["RANK"]).write_text(json.dumps(calls))
from rlhf.distributed import exit_skipping_teardown

exit_skipping_teardown(code)  # as `rlhf` ends a launched rank (main(argv) leaves that to its caller)
'''


@pytest.fixture(scope="module")
def ppo_inputs(tiny_model_dir, tiny_reward_model_dir, tmp_path_factory):
    """The tiny LM as policy, the shared tiny reward model, and 16 prompts."""
    root = tmp_path_factory.mktemp("ppo_inputs")
    prompts = write_jsonl(
        root / "prompts.jsonl",
        [{"prompt": f"User: Tell me about thing {i}{'!' * (i % 3)}.\nAssistant:"} for i in range(16)],
    )
    return tiny_model_dir, tiny_reward_model_dir, prompts


def ppo_config(ppo_inputs, out_dir: Path, per_process_batch: int, *overrides: str):
    policy, reward_model, prompts = ppo_inputs
    return load_config(
        None,
        [
            f"model.name_or_path={policy}",
            f"ppo.reward_model_path={reward_model}",
            f"data.train_file={prompts}",
            f"run.output_dir={out_dir}",
            "tracking.plots=false",
            "ppo.sample_every=0",
            "ppo.num_updates=2",
            f"ppo.rollout_batch_size={per_process_batch}",
            "ppo.rollout_forward_batch_size=4",
            "ppo.max_new_tokens=6",
            "ppo.do_sample=false",
            "ppo.num_mini_batches=1",
            "train.learning_rate=1e-3",
            # one process and DeepSpeed agree to 1e-5 in fp32; at bf16 (auto on an AVX512-BF16 / AMX CPU)
            # autocast on one process and DeepSpeed's bf16 weights round differently (0.06% apart)
            "train.precision=fp32",
            *overrides,
        ],
    )


def reproducible_keys(row: dict) -> tuple[str, ...]:
    from ppo.trainer import NONDETERMINISTIC_PREFIXES

    return tuple(key for key in row if key not in ("step", "time") and not key.startswith(NONDETERMINISTIC_PREFIXES))


@pytest.fixture(scope="module")
def ppo_one_process(ppo_inputs, tmp_path_factory):
    from ppo.trainer import train

    out = tmp_path_factory.mktemp("ppo_one") / "run"
    train(ppo_config(ppo_inputs, out, 8))
    return out


@pytest.mark.parametrize(
    "config_name, gather, expect_whole",
    [("cpu_zero2", True, True), ("cpu_zero3", True, True), ("cpu_zero3", False, False)],
)
def test_ppo_deepspeed_matches_one_process(
    ppo_one_process, ppo_inputs, tmp_path, monkeypatch, config_name, gather, expect_whole
):
    probe = tmp_path / "probe.py"
    probe.write_text(GENERATION_PROBE)
    monkeypatch.setenv("GENERATION_PROBE_OUT", str(tmp_path / "generation"))
    config_file = tmp_path / "ppo.yaml"
    config_file.write_text(
        OmegaConf.to_yaml(ppo_config(ppo_inputs, tmp_path / "run", 4, f"ppo.zero3_gather_for_generation={gather}"))
    )
    accelerate_launch(config_name, [str(probe), "ppo", "--config", str(config_file)])

    one, two = (
        rows_with(read_metrics(ppo_one_process / "metrics.jsonl"), "loss/policy_avg"),
        rows_with(read_metrics(tmp_path / "run" / "metrics.jsonl"), "loss/policy_avg"),
    )
    assert sorted(two) == [1, 2]
    assert_rows_match(one, two, reproducible_keys(one[1]), rel=REL, abs_=1e-6)
    for rank in (0, 1):  # one generation per update per process
        calls = json.loads((tmp_path / f"generation.{rank}").read_text())
        assert [call["synced_gpus"] for call in calls] == [not expect_whole] * 2
        if expect_whole:  # gathered once per rollout
            assert all(call["whole"] for call in calls)
        else:  # shards fetched on demand: the first rollout finds them partitioned (later ones may find a tiny
            assert not calls[0]["whole"]  # model still resident in DeepSpeed's parameter cache after training)
    for model in ("policy", "value"):
        assert_same_weights(ppo_one_process / model, tmp_path / "run" / model)


def test_ppo_zero2_bf16_has_zero_kl_at_update_0(ppo_inputs, tmp_path):
    """DeepSpeed bf16 runs the policy in bf16 without autocast: a reference left in fp32 gave KL -5e-4."""
    config_file = tmp_path / "ppo.yaml"
    cfg = ppo_config(ppo_inputs, tmp_path / "run", 4, "ppo.num_updates=1", "train.precision=bf16")
    config_file.write_text(OmegaConf.to_yaml(cfg))
    launch_stage("cpu_zero2", "ppo", cfg, config_file)
    (first,) = rows_with(read_metrics(tmp_path / "run" / "metrics.jsonl"), "loss/policy_avg").values()
    assert first["objective/kl"] == 0.0 and first["objective/non_score_reward"] == 0.0


def run_and_resume_from_update_2(config_name: str, ppo_inputs, tmp_path, *overrides: str) -> tuple[Path, Path]:
    """3 sampled updates under `accelerate launch`, then a copy resumed from update 2's checkpoint; asserts
    that the resumed run redoes update 3 exactly (metrics and policy). Returns (full_dir, resumed_dir)."""
    sampling = ("ppo.do_sample=true", "ppo.num_updates=3", "ppo.save_every=1", "train.save_total_limit=3")
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    launch_stage(config_name, "ppo", ppo_config(ppo_inputs, full_dir, 4, *sampling, *overrides), tmp_path / "full.yaml")
    checkpoint = full_dir / "checkpoints" / "update-000002"
    shutil.copytree(checkpoint, resumed_dir / "checkpoints" / checkpoint.name)
    shutil.copy(full_dir / "metrics.jsonl", resumed_dir / "metrics.jsonl")  # rows after update 2 are dropped on resume
    resumed_config = ppo_config(ppo_inputs, resumed_dir, 4, *sampling, *overrides, "ppo.resume=true")
    launch_stage(config_name, "ppo", resumed_config, tmp_path / "resumed.yaml")

    full, resumed = (
        rows_with(read_metrics(full_dir / "metrics.jsonl"), "loss/policy_avg"),
        rows_with(read_metrics(resumed_dir / "metrics.jsonl"), "loss/policy_avg"),
    )
    assert sorted(resumed) == sorted(full) == [1, 2, 3]
    # the updates differ, so matching update 3 means something
    assert full[3]["objective/kl"] != full[2]["objective/kl"]
    assert_rows_match({3: full[3]}, {3: resumed[3]}, reproducible_keys(full[3]), rel=1e-6, abs_=1e-7)
    assert (resumed_dir / "checkpoints" / "update-000003").is_dir() and (resumed_dir / "summary.json").is_file()
    assert_same_weights(full_dir / "policy", resumed_dir / "policy")
    return full_dir, resumed_dir


def test_ppo_zero3_checkpoint_resumes_to_the_uninterrupted_run(ppo_inputs, tmp_path):
    """Sampling on (each rank its own stream), 3 updates; a run resumed from update 2 redoes update 3 exactly."""
    full_dir, _ = run_and_resume_from_update_2("cpu_zero3", ppo_inputs, tmp_path)
    # DeepSpeed names the shards bf16_zero_pp_rank_* at bf16
    checkpoint = full_dir / "checkpoints" / "update-000002"
    shards = sorted(path.name for path in checkpoint.rglob("*zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2, shards  # each rank saved its own optimiser shard


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_ppo_critic_free_estimators_under_ddp_resume_to_the_uninterrupted_run(ppo_inputs, tmp_path, estimator):
    """RLOO and GRPO on two DDP processes: 2 sampled responses per prompt, each rank its own stream and its
    own groups; a run resumed from update 2 redoes update 3 exactly, and no value model is trained or saved."""
    estimator_settings = (f"ppo.advantage_estimator={estimator}", "ppo.samples_per_prompt=2")
    full_dir, _ = run_and_resume_from_update_2("cpu_ddp", ppo_inputs, tmp_path, *estimator_settings)
    assert not (full_dir / "value").exists()
