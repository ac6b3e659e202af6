"""`rlhf sweep`: grid expansion, seeded random search, resume after a kill, failed trials, the summary.

Trials run a fake stage (a small script written here) that records its argv, writes summary.json with a
metric computed from its overrides, and can be told to sleep or fail: the sweep's machinery is exercised
end to end through real child processes in well under a second per trial.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlhf.errors import ConfigError
from rlhf.sweep.report import pareto_front
from rlhf.sweep.runner import main
from rlhf.sweep.space import format_override, random_trials
from rlhf.sweep.spec import load_sweep
from rlhf.sweep.trials import new_record, planned_trials

FAKE_STAGE = """
import json, os, pathlib, sys, time
args = sys.argv[1:]
overrides = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("--"))
run_dir = pathlib.Path(overrides["run.output_dir"])
run_dir.mkdir(parents=True, exist_ok=True)
with open(run_dir.parent.parent / "calls.txt", "a") as handle:
    handle.write(run_dir.name + "\\n")
(run_dir / "argv.json").write_text(json.dumps(args))
(run_dir / "pid").write_text(str(os.getpid()))
time.sleep(float(os.environ.get("FAKE_STAGE_SLEEP", "0")))
kl = float(overrides.get("ppo.kl_coef", 0))
lr = float(overrides.get("train.learning_rate", 0))
if repr(kl) == os.environ.get("FAKE_STAGE_FAIL_KL"):
    print("boom: this kl_coef is rejected", file=sys.stderr)
    sys.exit(3)
# gold peaks at kl 0.1 and grows with lr; KL falls as kl_coef grows
summary = {"eval/gold_score": -(kl - 0.1) ** 2 + 1000 * lr, "ppo/kl": 1.0 / (kl + 0.01)}
(run_dir / "summary.json").write_text(json.dumps(summary))
"""


@pytest.fixture
def sweep_files(tmp_path):
    """(write_sweep(**fields) -> path, sweep dir): a base config and a fake stage under tmp_path."""
    stage = tmp_path / "fake_stage.py"
    stage.write_text(FAKE_STAGE)
    base = tmp_path / "base.yaml"
    base.write_text("run:\n  name: base\nppo:\n  kl_coef: 0.05\n")
    sweep_dir = tmp_path / "sweep"

    def write_sweep(**fields) -> Path:
        spec = {
            "name": "toy",
            "stage": "ppo",
            "base_config": str(base),
            "command": [sys.executable, str(stage)],
            "method": "grid",
            "parameters": {"ppo.kl_coef": [0.01, 0.1, 0.3], "train.learning_rate": [1e-5, 2e-5]},
            "metric": "eval/gold_score",
            "output_dir": str(sweep_dir),
            **fields,
        }
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return write_sweep, sweep_dir


def read_state(sweep_dir: Path) -> dict:
    return {row["trial_id"]: row for row in json.loads((sweep_dir / "sweep_state.json").read_text())["trials"]}


def calls(sweep_dir: Path) -> list[str]:
    path = sweep_dir / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_grid_3x2_runs_six_trials_with_their_overrides(sweep_files, capsys):
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(overrides=["train.max_steps=3"])
    assert main(["--config", str(path)]) == 0
    state = read_state(sweep_dir)
    assert list(state) == ["t000", "t001", "t002", "t003", "t004", "t005"]
    # the last parameter varies fastest, as in nested loops
    expected = [(0.01, 1e-5), (0.01, 2e-5), (0.1, 1e-5), (0.1, 2e-5), (0.3, 1e-5), (0.3, 2e-5)]
    for (tid, row), (kl, lr) in zip(state.items(), expected):
        assert row["status"] == "completed" and row["params"] == {"ppo.kl_coef": kl, "train.learning_rate": lr}
        argv = json.loads((sweep_dir / "trials" / tid / "argv.json").read_text())
        assert argv[:2] == ["--config", str(sweep_dir.parent / "base.yaml")]
        # group first (user overrides may change it), then fixed, then trial overrides, then the sweep's own keys
        assert argv[2:] == [
            "tracking.group=toy",
            "train.max_steps=3",
            f"ppo.kl_coef={kl!r}",
            f"train.learning_rate={lr!r}",
            f"run.output_dir={sweep_dir / 'trials' / tid}",
            f"run.name=toy-{tid}",
        ]
    assert sorted(calls(sweep_dir)) == list(state)


def test_dry_run_prints_trials_and_runs_nothing(sweep_files, capsys):
    write_sweep, sweep_dir = sweep_files
    assert main(["--config", str(write_sweep()), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "t005  [pending]  ppo.kl_coef=0.3 train.learning_rate=2e-05" in out
    assert out.count("[pending]") == 6
    assert not sweep_dir.exists()


def test_random_search_is_reproducible_under_a_seed(sweep_files):
    write_sweep, _ = sweep_files
    parameters = {
        "ppo.kl_coef": {"type": "loguniform", "low": 0.001, "high": 1.0},
        "ppo.ppo_epochs": {"type": "int", "low": 1, "high": 4},
        "model.lora.target_modules": [["all-linear"], ["q_proj", "v_proj"]],
    }
    sweep = load_sweep(write_sweep(method="random", budget=8, seed=7, parameters=parameters))
    first, again = planned_trials(sweep), planned_trials(sweep)
    assert first == again and len(first) == 8
    assert random_trials(sweep.parameters, 3, seed=7) == first[:3]  # a bigger budget extends, never reshuffles
    assert random_trials(sweep.parameters, 8, seed=8) != first
    for trial in first:
        assert 0.001 <= trial["ppo.kl_coef"] <= 1.0
        assert trial["ppo.ppo_epochs"] in (1, 2, 3, 4)
        assert trial["model.lora.target_modules"] in (["all-linear"], ["q_proj", "v_proj"])
    assert len({t["ppo.kl_coef"] for t in first}) == 8  # draws, not a repeated value


def test_sweep_killed_midway_resumes_only_the_missing_trials(sweep_files):
    write_sweep, sweep_dir = sweep_files
    path = write_sweep()
    env = {**os.environ, "FAKE_STAGE_SLEEP": "0.3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "sweep", "--config", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            state_file = sweep_dir / "sweep_state.json"
            if state_file.exists() and sum(r["status"] == "completed" for r in read_state(sweep_dir).values()) >= 2:
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its running trial die without cleaning up
        process.wait()
    before = read_state(sweep_dir)
    done_before = [tid for tid, row in before.items() if row["status"] == "completed"]
    assert 2 <= len(done_before) < 6
    assert main(["--config", str(path)]) == 0
    after = read_state(sweep_dir)
    assert all(row["status"] == "completed" for row in after.values()) and len(after) == 6
    invocations = calls(sweep_dir)
    for tid in done_before:  # finished trials were not repeated
        assert invocations.count(tid) == 1 and after[tid]["attempts"] == 1
    for tid in set(after) - set(done_before):  # the trial cut off by the kill may have started once already
        assert invocations.count(tid) in (1, 2)


def test_sigterm_stops_trials_and_marks_them_pending(sweep_files):
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(parameters={"ppo.kl_coef": [0.01, 0.1]})
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "sweep", "--config", str(path)],
        env={**os.environ, "FAKE_STAGE_SLEEP": "30"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def first_trial_running() -> bool:
        return (sweep_dir / "sweep_state.json").exists() and read_state(sweep_dir)["t000"]["status"] == "running"

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not first_trial_running():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 130
    assert "resume with: rlhf sweep --config" in process.stderr.read()
    state = read_state(sweep_dir)
    assert state["t000"]["status"] == "pending" and "interrupted" in state["t000"]["error"]
    assert (sweep_dir / "summary.csv").exists()


def test_failing_trial_is_recorded_and_the_sweep_goes_on(sweep_files, monkeypatch):
    write_sweep, sweep_dir = sweep_files
    monkeypatch.setenv("FAKE_STAGE_FAIL_KL", "0.1")
    path = write_sweep()
    assert main(["--config", str(path)]) == 0
    state = read_state(sweep_dir)
    failed = {tid for tid, row in state.items() if row["status"] == "failed"}
    assert failed == {"t002", "t003"}  # the two trials with kl_coef 0.1
    assert all(state[tid]["status"] == "completed" for tid in ("t000", "t001", "t004", "t005"))
    assert state["t002"]["exit_code"] == 3 and "boom: this kl_coef is rejected" in state["t002"]["error"]
    assert "boom" in (sweep_dir / "logs" / "t002.log").read_text()
    # a plain resume leaves failed trials alone; --retry-failed reruns exactly those
    monkeypatch.delenv("FAKE_STAGE_FAIL_KL")
    assert main(["--config", str(path)]) == 0
    assert sorted(calls(sweep_dir)) == sorted(state)
    assert main(["--config", str(path), "--retry-failed"]) == 0
    assert sorted(calls(sweep_dir)) == sorted([*state, "t002", "t003"])
    assert all(row["status"] == "completed" for row in read_state(sweep_dir).values())


def test_summary_table_best_trial_and_plots(sweep_files):
    write_sweep, sweep_dir = sweep_files
    path = write_sweep()
    assert main(["--config", str(path)]) == 0
    with open(sweep_dir / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial_id"] for r in rows] == ["t000", "t001", "t002", "t003", "t004", "t005"]
    assert list(rows[0])[:5] == ["trial_id", "status", "ppo.kl_coef", "train.learning_rate", "eval/gold_score"]
    for row in rows:  # the metric column is what the trial reported, recomputed here from its parameters
        kl, lr = float(row["ppo.kl_coef"]), float(row["train.learning_rate"])
        assert float(row["eval/gold_score"]) == pytest.approx(-((kl - 0.1) ** 2) + 1000 * lr)
        assert float(row["ppo/kl"]) == pytest.approx(1 / (kl + 0.01)) and float(row["wall_time_s"]) >= 0
    summary = json.loads((sweep_dir / "summary.json").read_text())
    # gold = -(kl-0.1)^2 + 1000 lr: best at kl 0.1, lr 2e-5 -> 0 + 0.02 = 0.02 (trial t003)
    assert summary["best"]["trial_id"] == "t003" and summary["best"]["value"] == pytest.approx(0.02)
    assert summary["counts"]["completed"] == 6
    plots = sorted(p.name for p in (sweep_dir / "plots").iterdir())
    assert plots == [
        "eval_gold_score_vs_ppo.kl_coef.png",
        "eval_gold_score_vs_train.learning_rate.png",
        "reward_kl_frontier.png",
    ]


def test_trial_over_its_timeout_is_killed_and_recorded_failed(sweep_files, monkeypatch):
    write_sweep, sweep_dir = sweep_files
    monkeypatch.setenv("FAKE_STAGE_SLEEP", "20")
    assert (
        main(["--config", str(write_sweep(parameters={"ppo.kl_coef": [0.1]}, timeout_s=1.0))]) == 1
    )  # every trial failed
    row = read_state(sweep_dir)["t000"]
    assert (
        row["status"] == "failed"
        and row["exit_code"] == -signal.SIGKILL
        and "killed after the 1 s timeout" in row["error"]
    )
    assert row["wall_time_s"] < 15


def test_minimize_picks_the_lowest_metric(sweep_files):
    write_sweep, sweep_dir = sweep_files
    assert main(["--config", str(write_sweep(metric="ppo/kl", direction="minimize"))]) == 0
    best = json.loads((sweep_dir / "summary.json").read_text())["best"]
    # ppo/kl = 1/(kl+0.01): lowest at kl 0.3 -> 1/0.31; the first such trial is t004
    assert best["trial_id"] == "t004" and best["value"] == pytest.approx(1 / 0.31)


def test_pareto_front_keeps_points_no_other_beats_on_both():
    # (kl, reward): b dominates a (same kl, higher reward); d is dominated by c (less kl, more reward)
    points = [(1.0, 0.1), (1.0, 0.3), (2.0, 0.5), (3.0, 0.4), (0.5, 0.0)]
    #          a           b           c           d           e
    assert pareto_front(points) == [4, 1, 2]  # e, b, c sorted by kl


def test_unknown_parameter_key_fails_before_anything_runs(sweep_files):
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(parameters={"ppo.kl_cof": [0.1, 0.2]})
    with pytest.raises(
        ConfigError, match=r"parameters\.ppo\.kl_cof: unknown config key 'ppo\.kl_cof'.*did you mean ppo\.kl_coef\?"
    ):
        main(["--config", str(path)])
    with pytest.raises(ConfigError, match=r"parameters\.train\.max_steps: bad value for 'train\.max_steps'.*'many'"):
        main(["--config", str(write_sweep(parameters={"train.max_steps": [10, "many"]}))])
    assert not sweep_dir.exists()


def test_pipeline_keys_are_checked_in_the_stage_they_reach(sweep_files, tmp_path):
    """stage pipeline: `ppo.kl_coef` is routed to the PPO stage config, and checked there."""
    write_sweep, _ = sweep_files
    stage_base = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"pipeline": {f"{s}_config": str(stage_base) for s in ("sft", "rm", "ppo")}}))
    with pytest.raises(
        ConfigError,
        match=r"parameters\.ppo\.kl_cof: ppo stage: unknown config key 'ppo\.kl_cof'.*did you mean ppo\.kl_coef\?",
    ):
        main(
            [
                "--config",
                str(write_sweep(stage="pipeline", base_config=str(pipeline), parameters={"ppo.kl_cof": [0.1]})),
                "--dry-run",
            ]
        )
    with pytest.raises(
        ConfigError, match=r"parameters\.pipeline\.eval_num_prompt: unknown config key 'pipeline\.eval_num_prompt'"
    ):
        main(
            [
                "--config",
                str(
                    write_sweep(
                        stage="pipeline", base_config=str(pipeline), parameters={"pipeline.eval_num_prompt": [8]}
                    )
                ),
                "--dry-run",
            ]
        )
    assert (
        main(
            [
                "--config",
                str(
                    write_sweep(
                        stage="pipeline",
                        base_config=str(pipeline),
                        parameters={"ppo.kl_coef": [0.1], "sft.train.learning_rate": [1e-4]},
                    )
                ),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {
                "parameters": {"ppo.kl_coef": {"type": "loguniform", "low": 0, "high": 1}},
                "method": "random",
                "budget": 2,
            },
            r"'parameters\.ppo\.kl_coef'.*loguniform needs low > 0",
        ),
        (
            {"parameters": {"ppo.kl_coef": {"type": "uniform", "low": 0, "hgih": 1}}, "method": "random", "budget": 2},
            r"unknown field 'parameters\.ppo\.kl_coef\.hgih'.*did you mean high\?",
        ),
        (
            {"parameters": {"ppo.kl_coef": {"type": "uniform", "low": 0, "high": 1}}},
            r"'parameters\.ppo\.kl_coef'.*uniform range: method grid needs lists",
        ),
        ({"method": "random"}, r"method random needs a 'budget'"),
        ({"method": "bayes"}, r"bad value for 'method'.*expected one of grid, random, optuna"),
        ({"parameters": {"run.output_dir": ["a", "b"]}}, r"run\.output_dir is set by the sweep"),
        ({"metrc": "x"}, r"unknown config key 'metrc'.*did you mean metric\?"),
    ],
)
def test_bad_sweep_files_name_the_key(sweep_files, fields, message):
    write_sweep, _ = sweep_files
    with pytest.raises(ConfigError, match=message):
        load_sweep(write_sweep(**fields))


def test_parameters_can_be_replaced_from_the_command_line(sweep_files):
    write_sweep, _ = sweep_files
    path = write_sweep()
    one = load_sweep(path, ["parameters.train.learning_rate=[3e-5]"])
    assert [(p.key, p.values) for p in one.parameters] == [
        ("ppo.kl_coef", (0.01, 0.1, 0.3)),
        ("train.learning_rate", (3e-5,)),
    ]
    ranged = load_sweep(
        path, ["method=random", "budget=2", "parameters={ppo.kl_coef: {type: loguniform, low: 0.005, high: 0.5}}"]
    )
    assert [(p.key, p.kind, p.low, p.high) for p in ranged.parameters] == [("ppo.kl_coef", "loguniform", 0.005, 0.5)]


def test_missing_program_is_one_clear_error(sweep_files):
    write_sweep, _ = sweep_files
    with pytest.raises(ConfigError, match=r"cannot start trial t000: .*no-such-program.*check 'command'"):
        main(["--config", str(write_sweep(command=["no-such-program"]))])


def test_a_second_sweep_on_the_same_directory_is_refused(sweep_files):
    import fcntl

    from rlhf.errors import UserError

    write_sweep, sweep_dir = sweep_files
    sweep_dir.mkdir()
    with open(sweep_dir / ".sweep.lock", "a+") as held:  # as a running sweep holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another `rlhf sweep` is running in"):
            main(["--config", str(write_sweep())])
    assert calls(sweep_dir) == []


def test_resuming_with_different_parameters_is_refused(sweep_files):
    write_sweep, sweep_dir = sweep_files
    assert main(["--config", str(write_sweep(parameters={"ppo.kl_coef": [0.1]}))]) == 0
    with pytest.raises(ConfigError, match=r"different settings \(parameters changed\)"):
        main(["--config", str(write_sweep(parameters={"ppo.kl_coef": [0.2]}))])
    # budget and parallelism may change between runs of one sweep
    assert main(["--config", str(write_sweep(parameters={"ppo.kl_coef": [0.1]})), "--max-parallel", "2"]) == 0


def test_parallel_trials_overlap(sweep_files):
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(parameters={"ppo.kl_coef": [0.01, 0.1, 0.3, 0.5]}, max_parallel=4)
    os.environ["FAKE_STAGE_SLEEP"] = "0.5"
    try:
        assert main(["--config", str(path)]) == 0
    finally:
        del os.environ["FAKE_STAGE_SLEEP"]
    state = read_state(sweep_dir)
    starts = sorted(row["started_at"] for row in state.values())
    finishes = sorted(row["finished_at"] for row in state.values())
    assert starts[-1] <= finishes[0]  # the 4th trial started before the 1st finished: all 4 ran at once


def test_optuna_search_uses_a_sqlite_study_and_resumes(sweep_files):
    optuna = pytest.importorskip("optuna")
    write_sweep, sweep_dir = sweep_files
    parameters = {"ppo.kl_coef": {"type": "uniform", "low": 0.0, "high": 0.3}, "train.learning_rate": [1e-5, 2e-5]}
    path = write_sweep(method="optuna", budget=5, seed=3, optuna_startup_trials=2, parameters=parameters)
    assert main(["--config", str(path)]) == 0
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    state = read_state(sweep_dir)
    for row in state.values():  # Optuna was told what each trial's run reported
        trial = study.trials[row["optuna_number"]]
        assert trial.value == pytest.approx(row["metrics"]["eval/gold_score"])
        assert trial.params["ppo.kl_coef"] == row["params"]["ppo.kl_coef"]
    assert main(["--config", str(path), "budget=7"]) == 0  # a larger budget adds trials, repeats none
    assert sorted(calls(sweep_dir)) == [f"t{i:03d}" for i in range(7)]


def test_slurm_array_script_runs_each_task_and_collect_reads_results(sweep_files, monkeypatch):
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(
        parameters={"ppo.kl_coef": [0.01, 0.1, 0.3]},
        max_parallel=2,
        slurm={"partition": "gpu", "setup": ["export FAKE_STAGE_FAIL_KL=0.3"]},
    )
    assert main(["--config", str(path), "--launcher", "slurm"]) == 0
    script = sweep_dir / "slurm" / "batch_001.sbatch"
    text = script.read_text()
    assert "#SBATCH --array=0-2%2" in text and "#SBATCH --partition=gpu" in text
    assert {row["status"] for row in read_state(sweep_dir).values()} == {"queued"}
    assert calls(sweep_dir) == []  # nothing ran: the user submits the script
    for task in (0, 2):  # what SLURM would do for two of the array tasks
        result = subprocess.run(
            ["bash", str(script)], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "77"}
        )
        assert result.returncode == (3 if task == 2 else 0)
    assert main(["--config", str(path), "--collect"]) == 0
    state = read_state(sweep_dir)
    assert state["t000"]["status"] == "completed" and state["t000"]["metrics"]["eval/gold_score"] == pytest.approx(
        -((0.01 - 0.1) ** 2)
    )
    assert state["t001"]["status"] == "queued"
    assert state["t002"]["status"] == "failed" and state["t002"]["exit_code"] == 3
    # a second call queues nothing new while t001 is still queued
    assert main(["--config", str(path), "--launcher", "slurm"]) == 0
    assert not (sweep_dir / "slurm" / "batch_002.sbatch").exists()


def test_accelerate_launcher_gives_concurrent_trials_their_own_port(sweep_files, capsys):
    from rlhf.sweep.launch import trial_command

    write_sweep, _ = sweep_files
    sweep = load_sweep(
        write_sweep(
            command=None, launcher="accelerate", accelerate_config="configs/accelerate/ddp.yaml", max_parallel=2
        )
    )
    record = new_record(sweep, 0, {"ppo.kl_coef": 0.1, "train.learning_rate": 1e-5})
    slot0, slot1 = trial_command(sweep, record, slot=0), trial_command(sweep, record, slot=1)
    assert slot0[:6] == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "configs/accelerate/ddp.yaml",
        "--main_process_port",
    ]
    assert (slot0[6], slot1[6]) == ("29500", "29501")
    assert slot0[7:10] == ["-m", "rlhf", "ppo"]
    # the pipeline launches its own stages: it gets the accelerate config instead of being wrapped
    pipeline_sweep = load_sweep(
        write_sweep(command=None, stage="pipeline", launcher="accelerate", accelerate_config="acc.yaml")
    )
    command = trial_command(
        pipeline_sweep, new_record(pipeline_sweep, 0, {"ppo.kl_coef": 0.1, "train.learning_rate": 1e-5})
    )
    assert (
        command[:4] == [sys.executable, "-m", "rlhf", "pipeline"] and "pipeline.accelerate_config=acc.yaml" in command
    )


@pytest.mark.slow
def test_accelerate_launcher_runs_a_trial_under_accelerate_launch(sweep_files):
    write_sweep, sweep_dir = sweep_files
    assert main(["--config", str(write_sweep(parameters={"ppo.kl_coef": [0.1]}, launcher="accelerate"))]) == 0
    assert read_state(sweep_dir)["t000"]["metrics"]["eval/gold_score"] == pytest.approx(0.0)  # -(0.1 - 0.1)^2 + 0
    assert "accelerate.commands.launch --main_process_port 29500" in (sweep_dir / "logs" / "t000.log").read_text()


def test_trials_through_the_real_cli(sweep_files):
    """`rlhf config show` as the trial command: the real CLI parses every override the sweep passes."""
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(
        command=[sys.executable, "-m", "rlhf", "config", "show"], parameters={"ppo.kl_coef": [0.125, 0.5]}
    )
    assert main(["--config", str(path)]) == 0
    state = read_state(sweep_dir)
    assert [row["status"] for row in state.values()] == ["completed", "completed"]
    shown = yaml.safe_load((sweep_dir / "logs" / "t001.log").read_text().split("\n", 1)[1])
    assert shown["ppo"]["kl_coef"] == 0.5 and shown["tracking"]["group"] == "toy"
    assert shown["run"] == {
        "name": "toy-t001",
        "output_dir": str(sweep_dir / "trials" / "t001"),
        "seed": 42,
        "resume_mismatch_ok": False,
    }


def test_wandb_agent_command_reaches_the_config(sweep_files, tmp_path):
    """The exported wandb sweep, expanded the way `wandb agent` expands it, yields the trial's config."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    write_sweep, _ = sweep_files
    out = tmp_path / "wandb_sweep.yaml"
    assert main(["--config", str(write_sweep(command=None)), "--wandb-sweep", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    assert config["method"] == "grid" and config["metric"] == {"name": "eval/gold_score", "goal": "maximize"}
    assert config["parameters"]["ppo.kl_coef"] == {"values": [0.01, 0.1, 0.3]}
    agent_args = create_sweep_command_args(
        {"args": {"ppo.kl_coef": {"value": 0.3}, "train.learning_rate": {"value": 2e-5}}}
    )
    command = []
    for token in config["command"]:  # the agent's macro expansion (wandb_agent.Agent._command_run)
        command += {"${env}": [], "${interpreter}": [sys.executable], "${args}": agent_args["args"]}.get(token, [token])
    assert "--ppo.kl_coef=0.3" in command
    stage_at = command.index("ppo", 3)
    command[stage_at : stage_at + 1] = ["config", "show"]  # print the config the PPO stage would load
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "WANDB_RUN_ID": "abc123"})
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["ppo"]["kl_coef"] == 0.3 and shown["train"]["learning_rate"] == 2e-5
    assert shown["run"]["output_dir"].endswith("sweep/wandb/abc123") and shown["run"]["name"] == "toy-abc123"
    assert shown["tracking"]["group"] == "toy" and "wandb" in shown["tracking"]["report_to"]


def test_override_text_round_trips_through_the_config_parser():
    from rlhf.config import parse_override

    for value in [0.05, 1e-5, 3, True, None, "true", "1e-3", "a: b", "runs/x y", ["q_proj", "v_proj"], ""]:
        assert parse_override(format_override("k.v", value)) == ("k.v", value)


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_sweep_files_validate(path, capsys, monkeypatch):
    monkeypatch.chdir(path.parents[2])  # paths in sweep files are relative to the repository root
    assert main(["--config", str(path.relative_to(path.parents[2])), "--dry-run"]) == 0
    assert "[pending]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "stage, config",
    [
        ("sft", "configs/base.yaml"),
        ("rm", "configs/base.yaml"),
        ("ppo", "configs/base.yaml"),
        ("pipeline", "configs/tiny/pipeline.yaml"),
    ],
)
def test_stages_take_wandb_agent_style_overrides(stage, config, capsys, monkeypatch):
    """`wandb agent` passes `--key=value`: every stage reads it as the override key=value."""
    from rlhf.app.cli import main as rlhf_main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert rlhf_main([stage, "--config", config, "--run.seed=abc"]) == 2  # a bad value, so nothing runs
    assert "bad value for 'run.seed' in override 'run.seed=abc'" in capsys.readouterr().err


def alive(pid_file: Path) -> bool:
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid_file.read_text()}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_a_stop_signal_while_a_trial_starts_never_leaves_it_running(sweep_files, monkeypatch):
    """The flake of test_sigterm_stops_trials_and_marks_them_pending, made certain: SIGTERM lands right after
    the state file says 'running' and before the runner has the trial in its table. The old handler raised
    there, so the trial stayed 'running' on disk and its process lived on; now the signal is a request the
    runner acts on at its next step."""
    from rlhf.sweep.state import SweepState

    write_sweep, sweep_dir = sweep_files
    monkeypatch.setenv("FAKE_STAGE_SLEEP", "30")
    path = write_sweep(parameters={"ppo.kl_coef": [0.01, 0.1]})
    save = SweepState.save
    signalled = []

    def save_then_signal(self):
        save(self)
        if not signalled and any(record.status == "running" for record in self.trials.values()):
            signalled.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(SweepState, "save", save_then_signal)
    assert main(["--config", str(path)]) == 130
    state = read_state(sweep_dir)
    assert state["t000"]["status"] == "pending" and "interrupted" in state["t000"]["error"]
    time.sleep(0.5)
    assert not alive(sweep_dir / "trials" / "t000" / "pid")


def test_a_trial_whose_directory_is_locked_is_never_started_twice(sweep_files, monkeypatch):
    """A trial left running by a killed sweep holds its directory's lock: the resumed sweep does not start a
    second runner there; once the holder is gone, --retry-failed runs it."""
    import rlhf.sweep.launch as launch
    from rlhf.processes import lock_directory
    from rlhf.sweep.launch import TRIAL_LOCK

    monkeypatch.setattr(launch, "DYING_RUNNER_GRACE_S", 0.3)  # a holder that lives on past the grace
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(parameters={"ppo.kl_coef": [0.01, 0.1]})
    holder = lock_directory(sweep_dir / "trials" / "t000", TRIAL_LOCK)  # as the orphan would
    assert main(["--config", str(path)]) == 0
    state = read_state(sweep_dir)
    assert state["t000"]["status"] == "failed" and f"process {os.getpid()}" in state["t000"]["error"]
    assert calls(sweep_dir) == ["t001"]
    holder.close()
    assert main(["--config", str(path), "--retry-failed"]) == 0
    assert read_state(sweep_dir)["t000"]["status"] == "completed" and calls(sweep_dir) == ["t001", "t000"]


def test_a_runner_that_is_dying_is_waited_for_then_the_trial_runs(sweep_files):
    """A killed sweep's trial exits a moment after its SIGTERM: a resume started at once waits for its lock
    (rlhf.sweep.launch.DYING_RUNNER_GRACE_S) and runs the trial, rather than marking it failed."""
    import threading

    from rlhf.processes import lock_directory
    from rlhf.sweep.launch import TRIAL_LOCK

    write_sweep, sweep_dir = sweep_files
    path = write_sweep(parameters={"ppo.kl_coef": [0.01]})
    holder = lock_directory(sweep_dir / "trials" / "t000", TRIAL_LOCK)  # the dying orphan
    threading.Timer(1.0, holder.close).start()  # it exits a second later
    assert main(["--config", str(path)]) == 0
    assert read_state(sweep_dir)["t000"]["status"] == "completed" and calls(sweep_dir) == ["t000"]


def test_trials_run_in_their_own_process_group_with_a_parent_death_guard(sweep_files, monkeypatch):
    """kill -9 of the sweep: the trial gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and exits."""
    write_sweep, sweep_dir = sweep_files
    path = write_sweep(parameters={"ppo.kl_coef": [0.01]})
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "sweep", "--config", str(path)],
        env={**os.environ, "FAKE_STAGE_SLEEP": "60"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid_file = sweep_dir / "trials" / "t000" / "pid"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not pid_file.exists():
        time.sleep(0.05)
    trial_pid = int(pid_file.read_text())
    assert os.getpgid(trial_pid) == trial_pid != os.getpgid(process.pid)  # its own group
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(pid_file):
        time.sleep(0.05)
    assert not alive(pid_file), "the trial outlived its sweep"
