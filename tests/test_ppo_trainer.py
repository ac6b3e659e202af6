"""The PPO trainer on tiny models: learning, KL, masks, clipping, resume, LoRA, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from ppo.trainer import NONDETERMINISTIC_PREFIXES, train
from rlhf.app.schema import load_config
from rlhf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ppo_models(tiny_model_dir, tiny_reward_model_dir, tmp_path_factory):
    """The session's tiny Llama as policy and, with a fresh random scalar head, as reward model."""
    root = tmp_path_factory.mktemp("ppo_models")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about thing {i}.\nAssistant:"}) + "\n" for i in range(32))
    )
    return {"policy": str(tiny_model_dir), "rm": str(tiny_reward_model_dir), "prompts": str(prompts)}


def ppo_config(ppo_models, out_dir, *overrides):
    return load_config(
        None,
        [
            f"model.name_or_path={ppo_models['policy']}",
            f"ppo.reward_model_path={ppo_models['rm']}",
            f"data.train_file={ppo_models['prompts']}",
            f"run.output_dir={out_dir}",
            "tracking.plots=false",
            "ppo.sample_every=0",
            "ppo.rollout_batch_size=8",
            "ppo.rollout_forward_batch_size=8",
            "ppo.max_new_tokens=6",
            "train.logging_steps=1000",
            *overrides,
        ],
    )


def reproducible(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith(NONDETERMINISTIC_PREFIXES)}


def load_weights(model_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_first_update_has_zero_kl_and_logs_every_metric(ppo_models, tmp_path):
    result = train(
        ppo_config(
            ppo_models, tmp_path / "run", "ppo.num_updates=1", "ppo.sample_every=1", "ppo.rollout_logprobs=forward"
        )
    )
    metrics = result["history"][0]
    # The policy equals the reference before its first step, so every per-token KL is exactly 0 when both
    # log-probs come from the same forward (from generation they agree to ~1e-7: see the test below).
    assert metrics["objective/kl"] == 0.0 and metrics["objective/non_score_reward"] == 0.0
    assert metrics["objective/rlhf_reward"] == pytest.approx(metrics["objective/scores"])
    for key in (
        "objective/kl_coef",
        "objective/raw_scores",
        "objective/normalized_scores",
        "objective/entropy",
        "policy/entropy_avg",
        "policy/approxkl_avg",
        "policy/clipfrac_avg",
        "val/clipfrac_avg",
        "val/ratio",
        "val/ratio_var",
        "loss/policy_avg",
        "loss/value_avg",
        "val/response_length",
        "val/eos_rate",
        "lr/policy",
        "lr/value",
        "perf/tokens_per_second",
        "time/generation",
        "time/scoring",
        "time/training",
        "policy/grad_norm",
        "val/explained_variance",
    ):
        assert math.isfinite(metrics[key]), key
    assert metrics["val/explained_variance"] <= 1.0
    # On the first mini-batch the new policy is the rollout policy: ratio exactly 1 there.
    run_dir = Path(result["run_dir"])
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 1 and logged[0]["objective/kl"] == 0.0
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and {"prompt", "response", "raw_score", "score", "kl"} <= set(samples[0])
    assert (run_dir / "policy" / "config.json").is_file() and (run_dir / "value" / "config.json").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["updates"] == 1


def test_old_logprobs_from_generation_give_the_forward_runs_first_update(ppo_models, tmp_path, monkeypatch):
    """ppo.rollout_logprobs: `auto` in fp32 records the policy's log-probs while sampling and skips its
    scoring forward; the first update (ratio 1 on the first mini-batch, approx KL 0, the KL to the
    reference that the policy still is) matches the run that scores with a forward."""
    import ppo.trainer as trainer

    passed = []
    original = trainer.score_responses

    def spy(*args, **kwargs):
        passed.append(kwargs.get("policy_logprobs") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "score_responses", spy)
    runs = {}
    for mode in ("auto", "forward"):
        overrides = ("ppo.num_updates=1", "train.precision=fp32", f"ppo.rollout_logprobs={mode}")
        runs[mode] = train(ppo_config(ppo_models, tmp_path / mode, *overrides))["history"][0]
    assert passed == [True, False]  # auto took the log-probs from generation; forward ran the pass
    recorded, forward = runs["auto"], runs["forward"]
    assert forward["objective/kl"] == 0.0 and forward["policy/approxkl_avg"] < 1e-6
    assert recorded["objective/kl"] == pytest.approx(0.0, abs=1e-5)
    for key, value in reproducible(forward).items():  # the same rollout, the same update
        assert recorded[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_every_trainable_parameter_changes(ppo_models, tmp_path):
    result = train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=1", "train.learning_rate=1e-3"))
    before_policy = load_weights(ppo_models["policy"])
    after_policy = load_weights(result["policy_dir"])
    unchanged = [name for name, tensor in before_policy.items() if torch.equal(tensor, after_policy[name])]
    assert unchanged == []
    before_value, after_value = load_weights(ppo_models["rm"]), load_weights(result["value_dir"])
    assert [name for name, tensor in before_value.items() if torch.equal(tensor, after_value[name])] == []


def test_critic_warmup_trains_the_value_model_and_leaves_the_policy(ppo_models, tmp_path):
    """Update 1 is critic-only: update 2's rollout comes from the unchanged policy (KL to the reference 0)."""
    common = ("ppo.num_updates=2", "train.learning_rate=1e-3")
    warm = train(ppo_config(ppo_models, tmp_path / "warm", *common, "ppo.critic_warmup_updates=1"))
    cold = train(ppo_config(ppo_models, tmp_path / "cold", *common))
    assert [row["policy/critic_warmup"] for row in warm["history"]] == [1.0, 0.0]
    assert abs(warm["history"][1]["objective/kl"]) < 1e-5  # sampled from the policy update 1 left alone
    assert abs(cold["history"][1]["objective/kl"]) > 1e-3  # without warm-up update 1 moved the policy
    before_value, warm_value = load_weights(ppo_models["rm"]), load_weights(warm["value_dir"])
    assert [name for name, tensor in before_value.items() if torch.equal(tensor, warm_value[name])] == []
    with pytest.raises(ConfigError, match="'ppo.critic_warmup_updates': 2; expected 0 <= N < ppo.num_updates"):
        train(ppo_config(ppo_models, tmp_path / "bad", *common, "ppo.critic_warmup_updates=2"))


def test_tiny_ppo_raises_reward_with_bounded_kl(ppo_models, tmp_path):
    cfg = ppo_config(
        ppo_models,
        tmp_path / "run",
        "ppo.num_updates=30",
        "ppo.rollout_batch_size=16",
        "ppo.rollout_forward_batch_size=16",
        "ppo.max_new_tokens=8",
        # Sampling from the full softmax of a random 300-token model (not the top 50 that leaked in before the
        # sampling knobs were pinned) is noisier: at 3e-3 the score rose by only 0.25 in 30 updates.
        "train.learning_rate=1e-2",
        "ppo.value_learning_rate=1e-2",
        "ppo.missing_eos_penalty=null",
        "ppo.ppo_epochs=2",
        "train.lr_scheduler=constant",
        "ppo.temperature=1.0",
    )
    history = train(cfg)["history"]
    first = sum(m["objective/raw_scores"] for m in history[:5]) / 5
    last = sum(m["objective/raw_scores"] for m in history[-5:]) / 5
    assert last > first + 0.4, (first, last)  # a random RM head's score rises by ~0.9 in this run
    assert max(m["objective/kl"] for m in history) < 20.0  # nats per 8-token response, with kl_coef 0.05


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_critic_free_estimators_raise_reward_without_a_value_model(ppo_models, tmp_path, estimator):
    """rloo/grpo: 4 prompts x 4 samples a rollout, each response against its prompt's other samples."""
    cfg = ppo_config(
        ppo_models,
        tmp_path / "run",
        "ppo.num_updates=30",
        "ppo.rollout_batch_size=4",
        f"ppo.advantage_estimator={estimator}",
        "ppo.samples_per_prompt=4",
        "ppo.max_new_tokens=8",
        "train.learning_rate=1e-2",
        "ppo.missing_eos_penalty=null",
        "ppo.ppo_epochs=2",
        "train.lr_scheduler=constant",
        "ppo.temperature=1.0",
    )
    result = train(cfg)
    history = result["history"]
    first = sum(m["objective/raw_scores"] for m in history[:5]) / 5
    last = sum(m["objective/raw_scores"] for m in history[-5:]) / 5
    assert last > first + 0.4, (first, last)
    assert history[1]["episodes"] == 2 * 16  # responses, not prompts
    assert "loss/value_avg" not in history[0] and "val/explained_variance" not in history[0]
    assert "value_dir" not in result and not (tmp_path / "run" / "value").exists()  # no critic was built
    before_policy, after_policy = load_weights(ppo_models["policy"]), load_weights(result["policy_dir"])
    assert [name for name, tensor in before_policy.items() if torch.equal(tensor, after_policy[name])] == []


def test_samples_per_prompt_repeats_each_prompt_in_consecutive_rows(ppo_models, tmp_path):
    cfg = ppo_config(
        ppo_models,
        tmp_path / "run",
        "ppo.num_updates=1",
        "ppo.rollout_batch_size=2",
        "ppo.samples_per_prompt=3",
        "ppo.num_mini_batches=3",
        "ppo.sample_every=1",
    )
    train(cfg)
    rows = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    prompts = [json.loads(row)["prompt"] for row in rows]
    assert len(prompts) == 6 and prompts[0] == prompts[1] == prompts[2] != prompts[3] == prompts[4] == prompts[5]


def test_critic_free_estimator_config_errors_name_the_key(ppo_models, tmp_path):
    with pytest.raises(ConfigError, match="'ppo.advantage_estimator': 'ppo'; expected one of gae, rloo, grpo"):
        ppo_config(ppo_models, tmp_path / "z", "ppo.advantage_estimator=ppo")
    with pytest.raises(ConfigError, match="ppo.samples_per_prompt >= 2"):
        train(ppo_config(ppo_models, tmp_path / "a", "ppo.advantage_estimator=rloo"))
    with pytest.raises(ConfigError, match="ppo.critic_warmup_updates needs a critic"):
        train(
            ppo_config(
                ppo_models,
                tmp_path / "b",
                "ppo.advantage_estimator=grpo",
                "ppo.samples_per_prompt=2",
                "ppo.critic_warmup_updates=1",
            )
        )
    with pytest.raises(ConfigError, match=r"the 24 responses of a rollout .* multiple of ppo.num_mini_batches \(5\)"):
        train(ppo_config(ppo_models, tmp_path / "c", "ppo.samples_per_prompt=3", "ppo.num_mini_batches=5"))


def test_gradient_clipping_is_applied(ppo_models, tmp_path):
    """With plain SGD (lr 1) and one optimiser step, the parameters move by exactly the clip norm."""
    max_norm = 1e-3
    result = train(
        ppo_config(
            ppo_models,
            tmp_path / "run",
            "ppo.num_updates=1",
            "ppo.num_mini_batches=1",
            "train.optimizer=sgd",
            "train.learning_rate=1.0",
            "train.lr_scheduler=constant",
            f"train.max_grad_norm={max_norm}",
        )
    )
    assert result["history"][0]["policy/grad_norm"] > 10 * max_norm  # the clip is active
    squared = 0.0
    for before_dir, after_dir in (
        (ppo_models["policy"], result["policy_dir"]),
        (ppo_models["rm"], result["value_dir"]),
    ):
        before, after = load_weights(before_dir), load_weights(after_dir)
        squared += sum(float((after[name] - before[name]).double().square().sum()) for name in before)
    assert math.sqrt(squared) == pytest.approx(max_norm, rel=1e-3)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_gradients_matches_torch_bit_for_bit(max_norm):
    """The CPU clip that skips its scaling pass under the threshold leaves the same gradients as torch's."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ppo.trainer import clip_gradients

    AcceleratorState._reset_state(reset_partial_state=True)  # on a GPU machine an earlier test's state is CUDA
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    theirs.load_state_dict(ours.state_dict())
    inputs = torch.randn(4, 16)
    for model in (ours, theirs):
        model(inputs).square().sum().backward()
    expected_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    norm = clip_gradients(Accelerator(cpu=True), ours, max_norm)
    assert float(norm) == float(expected_norm) and 0.5 < float(norm) < 1e6  # one case clips, one does not
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(mine.grad, reference.grad)


def test_adaptive_kl_coefficient_falls_while_kl_is_below_target(ppo_models, tmp_path):
    history = train(
        ppo_config(
            ppo_models,
            tmp_path / "run",
            "ppo.num_updates=3",
            "ppo.adaptive_kl=true",
            "ppo.kl_target=6.0",
            "ppo.kl_horizon=100",
        )
    )["history"]
    coefs = [m["objective/kl_coef"] for m in history]
    assert coefs[0] == 0.05
    # KL ~0 << target: the error clips at -0.2, so each update multiplies by 1 - 0.2 * 8 / 100 = 0.984.
    assert coefs[1] == pytest.approx(0.05 * 0.984) and coefs[2] == pytest.approx(0.05 * 0.984**2)


@pytest.mark.parametrize(
    "estimator", [(), ("ppo.advantage_estimator=rloo", "ppo.samples_per_prompt=2", "ppo.rollout_batch_size=4")]
)
def test_resumed_run_reproduces_uninterrupted_run_bitwise(ppo_models, tmp_path, estimator):
    common = (
        "ppo.num_updates=4",
        "ppo.save_every=2",
        "ppo.adaptive_kl=true",
        "ppo.kl_horizon=100",
        "ppo.sample_every=0",
        *estimator,  # gae (the critic in the checkpoint), or rloo (a checkpoint without one)
    )
    straight = train(ppo_config(ppo_models, tmp_path / "straight", *common))
    first_job = train(ppo_config(ppo_models, tmp_path / "resumed", *common, "ppo.updates_per_job=2"))
    assert first_job["updates_done"] == 2 and not first_job["finished"]
    assert not (tmp_path / "resumed" / "summary.json").exists()
    second_job = train(ppo_config(ppo_models, tmp_path / "resumed", *common, "ppo.resume=true"))
    assert second_job["updates_done"] == 4 and second_job["finished"]
    resumed_history = first_job["history"] + second_job["history"]
    assert [reproducible(m) for m in resumed_history] == [reproducible(m) for m in straight["history"]]
    straight_weights, resumed_weights = load_weights(straight["policy_dir"]), load_weights(second_job["policy_dir"])
    assert all(torch.equal(straight_weights[name], resumed_weights[name]) for name in straight_weights)
    kept = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert kept == ["update-000002", "update-000004"]
    logged = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]


def test_kl_budget_ends_the_run_and_a_rerun_keeps_it_ended(ppo_models, tmp_path):
    """ppo.stop_at_kl: the run ends after the first update whose rollout KL is over the budget, saves the
    policy and a summary that says why; the same command again does no update; a larger budget goes on."""
    common = ("ppo.num_updates=8", "train.learning_rate=1e-3", "ppo.stop_at_kl=0.05")
    result = train(ppo_config(ppo_models, tmp_path / "run", *common))
    kls = [row["objective/kl"] for row in result["history"]]
    assert result["finished"] and 1 < len(kls) < 8, kls  # update 1's KL is ~0: it cannot stop there
    assert kls[-1] > 0.05 and all(kl <= 0.05 for kl in kls[:-1])
    assert "ppo.stop_at_kl=0.05" in result["stopped_early"] and Path(result["policy_dir"]).is_dir()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["updates"] == len(kls) and "ppo.stop_at_kl" in summary["stopped_early"]
    assert summary["objective/kl"] == kls[-1]

    again = train(ppo_config(ppo_models, tmp_path / "run", *common))
    assert again["history"] == [] and again["finished"] and again["updates_done"] == len(kls)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary  # kept, not rewritten empty

    larger = train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=8", "train.learning_rate=1e-3"))
    assert larger["updates_done"] == 8 and larger["stopped_early"] is None
    assert [row["step"] for row in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())] == [
        *range(1, 9)
    ]


def test_time_budget_ends_the_run_and_bad_budgets_name_the_key(ppo_models, tmp_path):
    result = train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=5", "ppo.max_minutes=1e-6"))
    assert result["updates_done"] == 1 and result["finished"] and "ppo.max_minutes=1e-06" in result["stopped_early"]
    for key in ("ppo.stop_at_kl", "ppo.max_minutes"):
        with pytest.raises(ConfigError, match=f"'{key}': -1.0; expected a positive number or null"):
            train(ppo_config(ppo_models, tmp_path / "bad", f"{key}=-1"))


def test_resume_forgets_rows_logged_after_the_checkpoint(ppo_models, tmp_path):
    """A job killed after logging update 3 but before its next checkpoint logs update 3 again on resume."""
    common = ("ppo.num_updates=3", "ppo.save_every=2", "ppo.sample_every=1")
    train(ppo_config(ppo_models, tmp_path / "run", *common))
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "update-000003")  # as if killed before the final save
    train(ppo_config(ppo_models, tmp_path / "run", *common, "ppo.resume=true"))
    for name in ("metrics.jsonl", "samples.jsonl"):
        steps = [json.loads(line)["step"] for line in (tmp_path / "run" / name).read_text().splitlines()]
        assert steps == sorted(steps) and steps.count(3) == steps.count(1), (name, steps)


def test_resume_rejects_changed_prompt_file(ppo_models, tmp_path):
    train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=2", "ppo.updates_per_job=1"))
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5)))
    with pytest.raises(ConfigError, match="data.train_file .file content changed"):
        train(
            ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=2", "ppo.resume=true", f"data.train_file={fewer}")
        )


def test_micro_batch_split_gives_the_same_trajectory(ppo_models, tmp_path):
    """mini-batch 8 x accumulation 1 == mini-batch 8 as 4 micro-batches of 2 (token means over the mini-batch)."""
    # fp32: the identity holds to rounding, which bf16 autocast (auto on an AVX512-BF16 CPU) makes 1e-5 wide
    common = ("ppo.num_updates=2", "ppo.num_mini_batches=1", "ppo.entropy_coef=0.01", "train.precision=fp32")
    whole = train(ppo_config(ppo_models, tmp_path / "whole", *common))["history"]
    split = train(ppo_config(ppo_models, tmp_path / "split", *common, "train.gradient_accumulation_steps=4"))["history"]
    for a, b in zip(whole, split):
        for key, value in reproducible(a).items():
            assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_prompt_stream_reshuffles_each_epoch_and_resumes_from_its_position():
    from ppo.checkpoint import PromptStream

    stream = PromptStream(5, seed=3)
    torch.manual_seed(0)
    first_epoch, second_epoch = stream.take(5), stream.take(5)
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(5)) and first_epoch != second_epoch
    torch.manual_seed(123)  # the global RNG plays no part
    resumed = PromptStream(5, seed=3)
    resumed.position = 3
    assert resumed.take(4) == first_epoch[3:] + second_epoch[:2]


def test_ratio_threshold_skips_every_micro_batch_it_exceeds(ppo_models, tmp_path):
    result = train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=1", "ppo.ratio_threshold=0.5"))
    assert result["history"][0]["policy/skipped_fraction"] == 1.0  # mean ratio ~1 > 0.5 everywhere
    before, after = load_weights(ppo_models["policy"]), load_weights(result["policy_dir"])
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_k3_estimator_with_reward_whitening(ppo_models, tmp_path):
    history = train(
        ppo_config(
            ppo_models,
            tmp_path / "run",
            "ppo.num_updates=3",
            "ppo.kl_estimator=k3",
            "ppo.whiten_rewards=true",
            "train.learning_rate=1e-2",
        )
    )["history"]
    assert history[0]["objective/kl_k3"] == pytest.approx(0.0, abs=1e-6)  # old log-probs from generation: ~1e-8
    assert all(m["objective/kl_k3"] >= 0.0 for m in history) and history[-1]["objective/kl_k3"] > 0.0


def test_ppo_ptx_adds_a_language_modelling_loss(ppo_models, tmp_path):
    sft = tmp_path / "sft.jsonl"
    sft.write_text(
        "".join(
            json.dumps({"prompt": f"User: Tell me about cats {i}.\nAssistant:", "completion": " Cats purr."}) + "\n"
            for i in range(6)
        )
    )
    common = ("ppo.num_updates=2", "ppo.ptx_coef=0.5", f"ppo.ptx_file={sft}", "ppo.save_every=1")
    history = train(ppo_config(ppo_models, tmp_path / "run", *common))["history"]
    assert all(math.isfinite(m["loss/ptx_avg"]) and m["loss/ptx_avg"] > 0 for m in history)
    state = torch.load(
        tmp_path / "run" / "checkpoints" / "update-000002" / "custom_checkpoint_2.pkl", weights_only=False
    )
    assert state["ptx_position"] == 2 * 2 * 4  # 2 updates x 2 micro-batches x 4 rows drawn from the ptx stream


def test_lora_reference_is_the_adapter_disabled_policy(ppo_models, tmp_path):
    result = train(
        ppo_config(
            ppo_models,
            tmp_path / "run",
            "ppo.num_updates=2",
            "model.lora.enabled=true",
            "model.lora.r=4",
            "train.learning_rate=1e-2",
        )
    )
    first, second = result["history"]
    # A new adapter starts at zero: policy == adapter-disabled policy (to rounding: the policy's log-probs
    # are recorded while generating, the reference's come from a forward) ...and moves away once trained.
    assert first["objective/kl"] == pytest.approx(0.0, abs=1e-5) and abs(second["objective/kl"]) > 1e-3
    saved = Path(result["policy_dir"])
    assert not (saved / "adapter_config.json").exists()  # merged on save (model.lora.merge_on_save)
    before, after = load_weights(ppo_models["policy"]), load_weights(saved)
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_eval_hook_logs_rm_score_kl_and_gold_score(ppo_models, tmp_path):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about cats {i}.\nAssistant:"}) + "\n" for i in range(6))
    )
    result = train(
        ppo_config(
            ppo_models,
            tmp_path / "run",
            "ppo.num_updates=2",
            "ppo.eval_every=2",
            f"data.eval_file={eval_file}",
            "ppo.gold_judge=tiny",
        )
    )
    first, second = result["history"]
    assert not any(key.startswith("eval/") for key in first)
    start = result["eval_at_start"]
    for key in (
        "eval/rm_score",
        "eval/raw_score",
        "eval/kl",
        "eval/gold_score",
        "eval/eos_rate",
        "eval/response_length",
    ):
        assert math.isfinite(second[key]) and math.isfinite(start[key]), key
    assert start["eval/kl"] == pytest.approx(0.0, abs=1e-5)  # before any update the policy is the reference
    logged = [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [0, 1, 2]
    summary = json.loads((Path(result["run_dir"]) / "summary.json").read_text())
    assert summary["eval/gold_score"] == second["eval/gold_score"]


def test_config_errors_name_the_key(ppo_models, tmp_path):
    with pytest.raises(ConfigError, match="ppo.rollout_batch_size .* ppo.num_mini_batches"):
        train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_mini_batches=3"))
    with pytest.raises(ConfigError, match="train.gradient_accumulation_steps"):
        train(ppo_config(ppo_models, tmp_path / "run", "train.gradient_accumulation_steps=3"))
    with pytest.raises(ConfigError, match="ppo.reward_model_path"):
        train(ppo_config(ppo_models, tmp_path / "run", "ppo.reward_model_path=null"))
    with pytest.raises(ConfigError, match="ppo.ptx_file"):
        train(ppo_config(ppo_models, tmp_path / "run", "ppo.ptx_coef=0.5"))
    with pytest.raises(
        ConfigError, match="'ppo.rollout_logprobs': 'generate'; expected one of auto, generation, forward"
    ):
        train(ppo_config(ppo_models, tmp_path / "run", "ppo.rollout_logprobs=generate"))


def test_temperature_zero_is_rejected(ppo_models, tmp_path):
    with pytest.raises(ConfigError, match="ppo.temperature"):  # the KL divides logits by it
        train(ppo_config(ppo_models, tmp_path / "run", "ppo.temperature=0"))


def test_fsdp_launch_is_rejected_naming_the_accelerate_config(ppo_models, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    with pytest.raises(ConfigError, match="PPO does not run under FSDP: the accelerate config"):
        train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=1"))
    assert not (tmp_path / "run").exists()


def test_kl_loss_term_is_logged_and_moves_the_policy(ppo_models, tmp_path):
    common = ("ppo.num_updates=2", "ppo.kl_coef=0.0", "train.learning_rate=1e-3")
    with_loss = train(ppo_config(ppo_models, tmp_path / "a", *common, "ppo.kl_loss_coef=5.0"))
    without = train(ppo_config(ppo_models, tmp_path / "b", *common))
    first, second = with_loss["history"]
    assert first["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout comes from the reference itself
    assert second["loss/kl_avg"] > 0.0  # k3 >= 0, and > 0 once the policy moved
    assert "loss/kl_avg" not in without["history"][0]
    # same seed, same first rollout: the runs differ only by the KL term's gradient
    assert first["loss/policy_avg"] == pytest.approx(without["history"][0]["loss/policy_avg"])
    moved = load_weights(with_loss["policy_dir"])
    plain = load_weights(without["policy_dir"])
    assert any(not torch.equal(moved[name], plain[name]) for name in moved)


def test_cli_reports_user_errors_without_traceback(ppo_models, tmp_path, capsys):
    from rlhf.app.cli import main

    code = main(["ppo", "--config", str(REPO / "configs" / "tiny" / "ppo.yaml"), "ppo.num_mini_batches=5"])
    assert code == 2
    assert "ppo.num_mini_batches" in capsys.readouterr().err


def test_shipped_tiny_config_validates():
    from ppo.trainer import check_config

    cfg = load_config(REPO / "configs" / "tiny" / "ppo.yaml")
    check_config(cfg)
    assert cfg.ppo.reward_model_path == "runs/tiny/rm/model" and cfg.model.name_or_path == "runs/tiny/sft/model"


def test_frozen_models_are_stored_in_the_dtype_they_compute_in():
    from ppo.models import frozen_model_dtypes

    fp32, bf16 = torch.float32, torch.bfloat16
    assert frozen_model_dtypes(fp32, None) == (fp32, fp32)  # fp32 run
    # autocast over fp32 master weights: the reference runs the policy's autocast ops on the same fp32
    # weights (KL 0 at update 0); the reward model is stored in bf16 once instead of cast every forward
    assert frozen_model_dtypes(fp32, bf16) == (fp32, bf16)
    assert frozen_model_dtypes(bf16, None) == (bf16, bf16)  # DeepSpeed bf16: the policy itself is bf16


def test_bf16_ppo_run_on_cpu_has_zero_kl_at_update_0(ppo_models, tmp_path, monkeypatch):
    """Mixed precision on CPU (autocast bf16): the reference computes exactly what the policy does."""
    import ppo.trainer as trainer

    dtypes = []  # of the frozen models, in the order the trainer prepares them (reward model, reference)
    real_prepare = trainer._prepare_frozen

    def recording_prepare(model, accelerator):
        dtypes.append(next(model.parameters()).dtype)
        return real_prepare(model, accelerator)

    monkeypatch.setattr(trainer, "_prepare_frozen", recording_prepare)
    fp32_first = train(ppo_config(ppo_models, tmp_path / "fp32", "ppo.num_updates=1", "train.precision=fp32"))
    dtypes.clear()
    # accelerate keeps one mixed precision per process: each stage lets go of the last one's
    result = train(ppo_config(ppo_models, tmp_path / "run", "ppo.num_updates=2", "train.precision=bf16"))
    bf16_dtypes = list(dtypes)
    fp32_after = train(ppo_config(ppo_models, tmp_path / "fp32-again", "ppo.num_updates=1", "train.precision=fp32"))
    assert fp32_after["history"][0]["loss/policy_avg"] == fp32_first["history"][0]["loss/policy_avg"]
    first, second = result["history"]
    assert first["objective/kl"] == 0.0 and first["objective/non_score_reward"] == 0.0
    assert second["objective/kl"] != 0.0  # the policy moved after one update
    assert all(math.isfinite(row[key]) for row in result["history"] for key in ("loss/policy_avg", "loss/value_avg"))
    assert bf16_dtypes == [torch.bfloat16, torch.float32]  # reward model in bf16, reference with the policy


def test_adamw_is_the_fused_kernel_with_the_same_update(ppo_models, tmp_path):
    """One fused pass per tensor (4x faster than torch's CPU per-tensor loop at 26M) with the loop's numbers."""
    from ppo.models import build_optimizer

    cfg = ppo_config(
        ppo_models, tmp_path, "train.learning_rate=1e-2", "ppo.value_learning_rate=3e-2", "train.weight_decay=0.1"
    )
    torch.manual_seed(0)
    policy, value = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)
    reference = [p.detach().clone().requires_grad_() for p in (*policy.parameters(), *value.parameters())]
    optimizer = build_optimizer(cfg, policy, value)
    assert optimizer.defaults["fused"] is True
    loop = torch.optim.AdamW(
        [{"params": reference[:2], "lr": 1e-2}, {"params": reference[2:], "lr": cfg.ppo.value_learning_rate}],
        weight_decay=0.1,
        foreach=False,
    )
    for _ in range(3):
        for param, copy in zip((*policy.parameters(), *value.parameters()), reference):
            param.grad = torch.randn_like(param)
            copy.grad = param.grad.clone()
        optimizer.step()
        loop.step()
    for param, copy in zip((*policy.parameters(), *value.parameters()), reference):
        torch.testing.assert_close(param, copy, rtol=1e-6, atol=1e-7)


def test_resume_refuses_a_checkpoint_of_another_run_naming_the_keys(ppo_models, tmp_path):
    """Issue 18 case 1: a finished kl_coef 0.2 run, then the command with kl_coef 0.0 must not 'resume' it."""
    run = tmp_path / "run"
    train(ppo_config(ppo_models, run, "ppo.num_updates=2", "ppo.kl_coef=0.2"))
    before = {name: (run / name).read_text() for name in ("metrics.jsonl", "summary.json")}
    with pytest.raises(ConfigError, match=r"ppo.kl_coef: 0.2 -> 0.0.*run.resume_mismatch_ok=true"):
        train(ppo_config(ppo_models, run, "ppo.num_updates=2", "ppo.kl_coef=0.0", "ppo.resume=true"))
    assert {name: (run / name).read_text() for name in before} == before  # nothing in the run changed
    accepted = train(ppo_config(ppo_models, run, "ppo.num_updates=2", "ppo.kl_coef=0.0", "run.resume_mismatch_ok=true"))
    assert accepted["finished"] and accepted["updates_done"] == 2


def test_rerun_without_a_flag_resumes_and_survives_a_torn_last_line(ppo_models, tmp_path):
    """Issue 18 cases 3 and 9: the same command again continues (no second history), even when the crash
    cut the last metrics line in half; ppo.resume=false starts over with the earlier history moved aside."""
    run = tmp_path / "run"
    common = ("ppo.num_updates=3", "ppo.save_every=1")
    train(ppo_config(ppo_models, run, *common, "ppo.updates_per_job=2"))
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "objective/kl": 0.1')  # killed mid-write
    result = train(ppo_config(ppo_models, run, *common))
    assert result["finished"] and [m["objective/kl"] is not None for m in result["history"]] == [True]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    train(ppo_config(ppo_models, run, *common, "ppo.resume=false"))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    (previous,) = (run / "previous").iterdir()
    assert [json.loads(line)["step"] for line in (previous / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_repeated_clause_penalty_and_unlikelihood_act_on_the_flagged_tokens(ppo_models, tmp_path, monkeypatch):
    # A random 6-token reply seldom repeats a clause, so every token is made a flagged one: the penalty then
    # lowers every token's reward and the unlikelihood term pushes every sampled token down.
    monkeypatch.setattr("ppo.trainer.repeated_clause_tokens", lambda ids, breaks: [True] * len(ids))
    common = ("ppo.num_updates=1", "train.learning_rate=1e-3")
    flagged = train(
        ppo_config(
            ppo_models, tmp_path / "a", *common, "ppo.repeated_clause_penalty=0.5", "ppo.repeat_unlikelihood_coef=1.0"
        )
    )
    plain = train(ppo_config(ppo_models, tmp_path / "b", *common))
    with_terms, without = flagged["history"][0], plain["history"][0]
    # the same seed gives the same rollout; every response token is flagged
    assert with_terms["val/response_length"] == without["val/response_length"]
    assert with_terms["objective/repeated_clause_tokens"] == pytest.approx(with_terms["val/response_length"])
    # GAE returns hold the summed future rewards: 0.5 less for each flagged token still to come
    assert with_terms["val/returns"] < without["val/returns"] - 0.5
    assert with_terms["loss/unlikelihood_avg"] > 0.0 and "loss/unlikelihood_avg" not in without
    assert "objective/repeated_clause_tokens" not in without
    moved, unmoved = load_weights(flagged["policy_dir"]), load_weights(plain["policy_dir"])
    assert any(not torch.equal(moved[name], unmoved[name]) for name in moved)


def test_bf16_ppo_scores_and_trains_short_sequences_with_one_attention_kernel(ppo_models, tmp_path, monkeypatch):
    """bf16 on a CPU: SDPA is called with the math kernel alone in the policy, reference and value scoring
    passes and the PPO forwards of a short rollout (rlhf.precision.training_attention), with torch's own choice
    while sampling and in the RM, so the first ratio of a one-mini-batch update is exactly 1 (old log-probs and
    the training forward agree; with the scoring passes left on flash it is 0.99999)."""
    import torch.nn.functional as functional

    calls = []  # (grad enabled, flash allowed) at each attention call
    real_attention = functional.scaled_dot_product_attention

    def recording_attention(*args, **kwargs):
        calls.append((torch.is_grad_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return real_attention(*args, **kwargs)

    monkeypatch.setattr(functional, "scaled_dot_product_attention", recording_attention)
    overrides = ("ppo.num_updates=1", "ppo.num_mini_batches=1", "ppo.ppo_epochs=1", "ppo.eval_every=1000")
    (bf16,) = train(ppo_config(ppo_models, tmp_path / "bf16", *overrides, "train.precision=bf16"))["history"]
    layers = AutoConfig.from_pretrained(ppo_models["policy"]).num_hidden_layers
    training = [flash for grad, flash in calls if grad]
    assert len(training) == 2 * layers and not any(training)  # policy and value forwards, math kernel only
    assert bf16["val/ratio"] == 1.0 and bf16["policy/approxkl_avg"] == 0.0 and bf16["objective/kl"] == 0.0
    no_grad = [flash for grad, flash in calls if not grad]
    # policy, reference and value passes (the RM keeps flash), of the update's rollout and the evaluation at 0
    assert sum(not flash for flash in no_grad) == 2 * 3 * layers
    assert sum(flash for flash in no_grad) >= layers * (6 + 1)  # sampling (6 new tokens) and the RM: torch's choice
    calls.clear()
    train(ppo_config(ppo_models, tmp_path / "fp32", *overrides, "train.precision=fp32"))
    assert calls and all(flash for _, flash in calls)  # fp32: flash wins at every length, nothing is forced
