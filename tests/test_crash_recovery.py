"""Fault injection, crashes: kill -9 of each training stage, of the pipeline and of a sweep at seeded random
points, then the same command again.

Each case asserts: no process of the killed run is left alive (a sweep's trial and a pipeline's stage die
with their parent), the rerun finishes, every step is logged once in metrics.jsonl, and the artefacts equal
an uninterrupted run's (PPO resumes from its checkpoint bit for bit on CPU; SFT and the RM start over with
the earlier history moved to previous/, which gives the same model). Tiny models and a few steps keep it
cheap; the kill points come from a seeded RNG, so a failure reproduces.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("RLHF_CRASH_SEED", "18"))
pytestmark = pytest.mark.slow

PPO_OVERRIDES = [
    "ppo.num_updates=5",
    "ppo.save_every=1",
    "ppo.rollout_batch_size=8",
    "ppo.rollout_forward_batch_size=8",
    "ppo.max_new_tokens=6",
    "ppo.eval_every=0",
    "ppo.sample_every=0",
    "data.eval_file=null",
    "train.logging_steps=1",
    "tracking.report_to=[jsonl]",
    "tracking.plots=false",
]


def rlhf(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhf", *args]


def env() -> dict:
    # the repo first, then whatever the caller had (a machine that runs the repo uninstalled, packages on a path)
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}


def logged_steps(path: Path, key: str | None = None) -> list[int]:
    from rlhf.runs import read_log_rows

    return [row["step"] for row in read_log_rows(path) if key is None or key in row]


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """Live processes whose command line mentions `marker` (a run's unique directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if marker in cmdline and "zombie" not in state:
            found.append((int(entry.name), cmdline[:200]))
    return found


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_when(command: list[str], ready, marker: str, rng: random.Random, log: Path, timeout: float = 300) -> None:
    """Start `command`, wait until `ready()`, sleep a random moment, kill -9 it; then assert that no process
    of the run outlives it (children get SIGTERM from their parent-death guard, given a few seconds)."""
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, env=env(), stdout=handle, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: ready() or process.poll() is not None, timeout, f"the kill point of {command[3]}")
            assert process.poll() is None, f"finished before the kill point: {log.read_text()[-2000:]}"
            time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
    try:
        wait_until(lambda: not processes_mentioning(marker), 15, "the killed run's processes to exit")
    except AssertionError:
        left = processes_mentioning(marker)
        for pid, _ in left:
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"orphan processes of the killed run: {left}") from None


def finish(command: list[str], log: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[name], wb[name]) for name in wa), f"{a} and {b} differ"


@pytest.fixture(scope="module")
def inputs(tiny_model_dir, tiny_reward_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash_inputs")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"User: Tell me about thing {i}.\nAssistant:"}) + "\n" for i in range(24))
    )
    sft = root / "sft.jsonl"
    sft.write_text(
        "".join(
            json.dumps({"prompt": f"User: Tell me about {t}.\nAssistant:", "completion": f" {t} are nice."}) + "\n"
            for t in ["cats", "dogs", "rain", "trees"] * 4
        )
    )
    rankings = root / "rankings.jsonl"
    rankings.write_text(
        "".join(
            json.dumps(
                {
                    "id": str(i),
                    "prompt": f"User: thing {i}?\nAssistant:",
                    "responses": [{"id": "a", "text": " good answer."}, {"id": "b", "text": f" bad {i}"}],
                    "ranking": [["a"], ["b"]],
                }
            )
            + "\n"
            for i in range(16)
        )
    )
    return {
        "policy": str(tiny_model_dir),
        "rm": str(tiny_reward_model_dir),
        "prompts": prompts,
        "sft": sft,
        "rankings": rankings,
    }


def ppo_args(inputs, out: Path, *extra: str) -> list[str]:
    return [
        "--config", "configs/tiny/ppo.yaml", f"model.name_or_path={inputs['policy']}",
        f"ppo.reward_model_path={inputs['rm']}", f"data.train_file={inputs['prompts']}", f"run.output_dir={out}",
        *PPO_OVERRIDES, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ppo_reference(inputs, tmp_path_factory):
    """An uninterrupted PPO run: the artefacts every killed-and-rerun PPO must reproduce."""
    out = tmp_path_factory.mktemp("ppo_reference") / "run"
    finish(rlhf("ppo", *ppo_args(inputs, out)), out.parent / "log.txt")
    return out


def assert_ppo_like_reference(out: Path, reference: Path) -> None:
    assert logged_steps(out / "metrics.jsonl") == [1, 2, 3, 4, 5]  # each update once, in order
    assert_same_weights(out / "policy", reference / "policy")
    assert_same_weights(out / "value", reference / "value")
    from ppo.trainer import NONDETERMINISTIC_PREFIXES
    from rlhf.runs import read_log_rows

    def reproducible(path: Path) -> list[dict]:
        return [
            {k: v for k, v in row.items() if k != "time" and not k.startswith(NONDETERMINISTIC_PREFIXES)}
            for row in read_log_rows(path)
        ]

    assert reproducible(out / "metrics.jsonl") == reproducible(reference / "metrics.jsonl")


def test_kill_9_of_ppo_then_the_same_command_resumes_to_the_uninterrupted_run(inputs, ppo_reference, tmp_path):
    rng = random.Random(SEED)
    out = tmp_path / "ppo"
    kill_after = rng.randint(1, 4)  # updates logged before the kill
    command = rlhf("ppo", *ppo_args(inputs, out))
    kill_when(
        command, lambda: len(logged_steps(out / "metrics.jsonl")) >= kill_after, str(out), rng, tmp_path / "1.log"
    )
    rerun = finish(command, tmp_path / "2.log")
    assert "resumed from" in rerun.stdout + rerun.stderr
    assert_ppo_like_reference(out, ppo_reference)


@pytest.mark.parametrize("stage", ["sft", "rm"])
def test_kill_9_of_sft_and_rm_then_the_same_command_gives_the_uninterrupted_model(stage, inputs, tmp_path):
    rng = random.Random(f"{SEED}-{stage}")
    data = inputs["sft"] if stage == "sft" else inputs["rankings"]

    def command(out: Path) -> list[str]:
        return rlhf(
            stage, "--config", f"configs/tiny/{stage}.yaml", f"model.name_or_path={inputs['policy']}",
            f"data.train_file={data}", "data.eval_file=null", "data.eval_fraction=0", f"run.output_dir={out}",
            "train.max_steps=40", "train.logging_steps=1", "train.per_device_train_batch_size=4",
            "tracking.report_to=[jsonl]", "tracking.plots=false",
            *(["rm.normalize_samples=8"] if stage == "rm" else []),
        )  # fmt: skip

    reference = tmp_path / "reference"
    finish(command(reference), tmp_path / "ref.log")
    out = tmp_path / "run"
    # at least 35 of the 40 steps remain after the kill point, so an idle machine cannot finish the run
    # in kill_when's random delay (it did with 6 and with 12 steps: a tiny SFT step takes ~40 ms)
    kill_after = rng.randint(1, 5)
    kill_when(
        command(out), lambda: len(logged_steps(out / "metrics.jsonl", "loss")) >= kill_after, str(out), rng,
        tmp_path / "1.log",
    )  # fmt: skip
    assert not (out / "summary.json").exists()
    finish(command(out), tmp_path / "2.log")
    assert logged_steps(out / "metrics.jsonl", "loss") == list(range(1, 41))  # one history: each step once
    assert [p.name for p in (out / "previous").iterdir()]  # the killed run's history, moved aside
    assert_same_weights(out / "model", reference / "model")
    if stage == "rm":
        stats, expected = (json.loads((d / "model" / "reward_stats.json").read_text()) for d in (out, reference))
        assert stats["mean"] == expected["mean"] and stats["std"] == expected["std"]


def test_kill_9_of_a_sweep_kills_its_trial_and_the_resumed_sweep_resumes_the_trial(inputs, ppo_reference, tmp_path):
    rng = random.Random(f"{SEED}-sweep")
    sweep_dir = tmp_path / "sweep"
    spec = {
        "name": "crash",
        "stage": "ppo",
        "base_config": "configs/tiny/ppo.yaml",
        "method": "grid",
        "parameters": {"run.seed": [42]},  # one trial, the reference run's seed
        "overrides": [
            f"model.name_or_path={inputs['policy']}",
            f"ppo.reward_model_path={inputs['rm']}",
            f"data.train_file={inputs['prompts']}",
            *PPO_OVERRIDES,
        ],  # fmt: skip
        "metric": "objective/scores",
        "output_dir": str(sweep_dir),
        "validate_keys": False,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    trial = sweep_dir / "trials" / "t000"
    kill_after = rng.randint(1, 4)
    command = rlhf("sweep", "--config", str(path))
    kill_when(command, lambda: len(logged_steps(trial / "metrics.jsonl")) >= kill_after, str(sweep_dir), rng,
              tmp_path / "1.log")  # fmt: skip
    finish(command, tmp_path / "2.log")
    state = json.loads((sweep_dir / "sweep_state.json").read_text())["trials"]
    assert [row["status"] for row in state] == ["completed"] and state[0]["attempts"] == 2
    assert "resumed from" in (sweep_dir / "logs" / "t000.log").read_text()
    assert_ppo_like_reference(trial, ppo_reference)


def test_kill_9_of_the_pipeline_kills_its_stage_and_the_rerun_finishes_it(inputs, tmp_path):
    rng = random.Random(f"{SEED}-pipeline")
    out = tmp_path / "pipe"
    command = rlhf(
        "pipeline", "--config", "configs/tiny/pipeline.yaml", f"run.output_dir={out}",
        f"pipeline.task_dir={tmp_path / 'task'}", f"pipeline.base_model={inputs['policy']}",
        "pipeline.candidate_prompts=16", "pipeline.eval_num_prompts=8", "generate.k=2", "generate.max_new_tokens=6",
        "tracking.report_to=[jsonl]", "sft.train.max_steps=3", "rm.train.max_steps=3", "rm.normalize_samples=8",
        *(o if o.startswith("ppo.") else f"ppo.{o}" for o in PPO_OVERRIDES if not o.startswith("tracking.")),
    )  # fmt: skip
    kill_after = rng.randint(1, 4)
    kill_when(command, lambda: len(logged_steps(out / "ppo" / "metrics.jsonl")) >= kill_after, str(out), rng,
              tmp_path / "1.log", timeout=600)  # fmt: skip
    assert not (out / "ppo" / "summary.json").exists() and (out / "rm" / "summary.json").exists()
    rerun = finish(command, tmp_path / "2.log")
    text = rerun.stdout + rerun.stderr
    assert "sft: complete, skipped" in text and "rm: complete, skipped" in text and "resumed from" in text
    assert logged_steps(out / "ppo" / "metrics.jsonl") == [1, 2, 3, 4, 5]
    assert (out / "report.json").is_file()
    # the uninterrupted PPO stage from the same SFT and RM, in a fresh directory, gives the same policy
    reference = tmp_path / "reference"
    finish(rlhf("ppo", "--config", str(out / "ppo" / "config.yaml"), f"run.output_dir={reference}"), tmp_path / "3.log")
    assert_same_weights(out / "ppo" / "policy", reference / "policy")
