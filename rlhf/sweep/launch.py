"""Running trials: their command lines, local processes (N at a time), SLURM array scripts, their results.

A trial is an ordinary stage run, launched exactly as a user would type it:

    python -m rlhf <stage> --config <base> tracking.group=<sweep> <fixed overrides> <trial overrides> \
        run.output_dir=<sweep dir>/trials/<id> run.name=<sweep>-<id>

Local trials are child processes with their output in logs/<id>.log; the sweep polls them, so one slow
trial never blocks the others. With launcher accelerate the same command runs under `accelerate launch`,
each concurrent trial on its own rendezvous port (two trials sharing one would hang) and, with
gpus_per_trial, its own slice of CUDA_VISIBLE_DEVICES. The pipeline launches its stages itself, so for
stage pipeline the accelerate config is handed to it (pipeline.accelerate_config) instead of wrapping it.
For SLURM the sweep writes an array script and never calls sbatch: each array task runs one trial and
leaves logs/<id>.exit.json (exit code, wall time) that the next `rlhf sweep ... --collect` reads.
A trial's results are its run directory's summary.json (flat metrics written by every stage), or, when a
run died before writing one, the last value of each metric in its metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from rlhf.errors import ConfigError
from rlhf.files import write_text_atomic
from rlhf.processes import (
    DirectoryLocked,
    child_environment,
    kill_group,
    lock_directory,
    note_lock_holder,
    parent_death_guard,
)
from rlhf.sweep.space import format_override, trial_overrides
from rlhf.sweep.spec import Sweep
from rlhf.sweep.state import SweepState, TrialRecord, now

BASE_PORT = 29500  # accelerate's default main_process_port; concurrent trials take the next ones
SLURM_PORT = "\0SLURM_PORT\0"  # placeholder for the port an array task computes from its task id
LOG_TAIL_LINES = 30
TRIAL_LOCK = ".trial.lock"  # in the trial's directory, held by the trial's process while it lives
# A killed sweep's trial gets SIGTERM from the kernel (parent-death guard) but takes a moment to exit (CI saw
# a resume started at once find it still alive): wait this long for its lock before calling it a live runner.
DYING_RUNNER_GRACE_S = 15.0


# --------------------------------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------------------------------


def trial_config_args(sweep: Sweep, record: TrialRecord) -> list[str]:
    """`--config` and overrides of one trial. The group comes before the user's overrides so they can
    change it; output dir and name come last because the sweep's bookkeeping depends on them."""
    args = [
        "--config",
        sweep.base_config,
        format_override("tracking.group", sweep.name),
        *sweep.overrides,
        *trial_overrides(record.params),
    ]
    if sweep.stage == "pipeline" and sweep.launcher != "local" and sweep.accelerate_config:
        args.append(format_override("pipeline.accelerate_config", sweep.accelerate_config))
    return args + [
        format_override("run.output_dir", record.run_dir),
        format_override("run.name", f"{sweep.name}-{record.trial_id}"),
    ]


def _is_python(program: str) -> bool:
    return Path(program).name.startswith("python") or program == sys.executable


def trial_command(sweep: Sweep, record: TrialRecord, slot: int = 0, port: Any = None) -> list[str]:
    """The full argv of one trial. `slot` is its place among concurrently running trials."""
    program = list(sweep.command) if sweep.command else [sys.executable, "-m", "rlhf", sweep.stage]
    wrap_accelerate = sweep.launcher == "accelerate" or (
        sweep.launcher == "slurm" and sweep.accelerate_config is not None
    )
    if not wrap_accelerate or sweep.stage == "pipeline":
        return program + trial_config_args(sweep, record)
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if sweep.accelerate_config:
        launch += ["--config_file", sweep.accelerate_config]
    elif sweep.gpus_per_trial > 0:
        launch += ["--num_processes", str(sweep.gpus_per_trial)]
    launch += ["--main_process_port", str(BASE_PORT + slot if port is None else port)]
    # accelerate launch takes a script or `-m module`, not an interpreter
    script = program[1:] if _is_python(program[0]) else program
    return launch + script + trial_config_args(sweep, record)


def shell_join(command: list[str]) -> str:
    return " ".join('"$SWEEP_PORT"' if arg == SLURM_PORT else shlex.quote(arg) for arg in command)


def visible_devices(slot: int, gpus_per_trial: int, max_parallel: int, environ: Optional[dict] = None) -> Optional[str]:
    """The CUDA_VISIBLE_DEVICES of the trial in `slot`: its own consecutive block of the visible GPUs."""
    if gpus_per_trial <= 0:
        return None
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    pool = (
        [d.strip() for d in listed.split(",") if d.strip()]
        if listed
        else [str(i) for i in range(gpus_per_trial * max_parallel)]
    )
    if gpus_per_trial * max_parallel > len(pool):
        raise ConfigError(
            f"max_parallel={max_parallel} x gpus_per_trial={gpus_per_trial} needs {gpus_per_trial * max_parallel} "
            f"GPUs; CUDA_VISIBLE_DEVICES lists {len(pool)}"
        )
    return ",".join(pool[slot * gpus_per_trial : (slot + 1) * gpus_per_trial])


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_trial_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """summary.json of the run (flattened with '/'), else the last value of each key in metrics.jsonl."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            loaded = json.loads(summary.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                return _flatten(loaded)
        except json.JSONDecodeError:
            pass  # fall back to the metrics log
    metrics = run_dir / "metrics.jsonl"
    last: dict[str, Any] = {}
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off when the run was killed
            if isinstance(row, dict):
                last.update({k: v for k, v in row.items() if k != "time"})
    return last


def metric_value(metrics: dict, key: str) -> Optional[float]:
    """The metric as a finite float, or None when missing or not a number."""
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def log_tail(path: str | os.PathLike, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def record_result(record: TrialRecord, exit_code: int, wall_time_s: float, note: Optional[str] = None) -> None:
    """Fill in how a trial ended from its exit code, run directory and log."""
    record.exit_code = exit_code
    record.wall_time_s = round(wall_time_s, 2)
    record.finished_at = now()
    record.metrics = read_trial_metrics(record.run_dir)
    if exit_code == 0:
        record.status, record.error = "completed", None
    else:
        record.status = "failed"
        record.error = "\n".join(part for part in (note, log_tail(record.log_file)) if part)


# --------------------------------------------------------------------------------------------------
# Local processes
# --------------------------------------------------------------------------------------------------


class TrialSource(Protocol):
    def next_trial(self) -> Optional[TrialRecord]: ...

    def on_finished(self, record: TrialRecord) -> None: ...


@dataclass
class RunningTrial:
    record: TrialRecord
    process: subprocess.Popen
    log_handle: Any
    started: float
    slot: int
    lock: Any = None  # the trial directory's lock (the child holds an inherited copy)

    def close(self) -> None:
        self.log_handle.close()
        if self.lock is not None:
            self.lock.close()


class LocalRunner:
    """Runs trials from a source as child processes, at most sweep.max_parallel at a time."""

    def __init__(
        self,
        sweep: Sweep,
        state: SweepState,
        poll_s: float = 0.2,
        echo: Callable[[str], None] = print,
        on_trial_end: Optional[Callable[[], None]] = None,
    ):
        self.sweep = sweep
        self.state = state
        self.poll_s = poll_s
        self.echo = echo
        self.on_trial_end = on_trial_end
        self.running: dict[int, RunningTrial] = {}
        # Set by a signal handler (rlhf.sweep.runner); acted on only between steps of the loop, so a stop
        # never lands between starting a child and recording it (it would be left running and 'running').
        self.stop_requested = False

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt("the sweep was asked to stop")

    def run(self, source: TrialSource) -> None:
        try:
            while True:
                self._check_stop()
                free_slots = [slot for slot in range(self.sweep.max_parallel) if slot not in self.running]
                exhausted = False
                for slot in free_slots:
                    while not exhausted and slot not in self.running:
                        record = source.next_trial()
                        if record is None:
                            exhausted = True
                            break
                        job = self._start(record, slot)
                        if job is None:  # its directory is locked by a live process: recorded, nothing started
                            source.on_finished(record)
                            continue
                        self.running[slot] = job
                        self._check_stop()
                if not self.running:
                    return
                time.sleep(self.poll_s)
                self._check_stop()
                for slot, job in list(self.running.items()):
                    if self._poll(job):
                        del self.running[slot]
                        source.on_finished(job.record)
                        if self.on_trial_end:
                            self.on_trial_end()
        except BaseException:  # Ctrl-C, SIGTERM (raised as KeyboardInterrupt by rlhf.sweep.runner) or a bug
            self._stop_all()
            raise

    def _start(self, record: TrialRecord, slot: int) -> Optional[RunningTrial]:
        command = trial_command(self.sweep, record, slot)
        run_dir = Path(record.run_dir)
        try:  # one runner per trial directory: a process left from a killed sweep may still hold it
            lock = lock_directory(run_dir, TRIAL_LOCK, wait_s=DYING_RUNNER_GRACE_S)
        except DirectoryLocked as exc:
            record.status, record.exit_code, record.finished_at = "failed", None, now()
            record.error = f"not started: {exc} (a runner of this trial is still alive); rerun with --retry-failed"
            self.state.save()
            self.echo(f"[sweep] {record.trial_id} NOT started: {exc}")
            return None
        (run_dir / "summary.json").unlink(missing_ok=True)  # a killed attempt's leftovers must not read as results
        Path(record.log_file).parent.mkdir(parents=True, exist_ok=True)
        log_handle = open(record.log_file, "a", encoding="utf-8")
        log_handle.write(f"=== {now()} attempt {record.attempts + 1}: {shell_join(command)}\n")
        log_handle.flush()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "RLHF_SWEEP": self.sweep.name,
            "RLHF_SWEEP_TRIAL": record.trial_id,
        }
        devices = visible_devices(slot, self.sweep.gpus_per_trial, self.sweep.max_parallel)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        try:
            # Its own process group (stopped as a whole, and the terminal's Ctrl-C reaches only the sweep),
            # a parent-death guard (it dies with a killed sweep) and the directory lock passed down.
            process = subprocess.Popen(
                command,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_environment(env),
                start_new_session=True,
                preexec_fn=parent_death_guard(),
                pass_fds=(lock.fileno(),),
            )
        except OSError as exc:  # every trial would fail the same way: stop with one clear message
            log_handle.close()
            lock.close()
            raise ConfigError(
                f"cannot start trial {record.trial_id}: {exc} (command: {shell_join(command)}); check 'command' in "
                f"{self.sweep.source}"
            ) from None
        note_lock_holder(lock, process.pid)
        record.status, record.started_at, record.finished_at = "running", now(), None
        record.attempts += 1
        record.exit_code, record.error, record.metrics, record.wall_time_s = None, None, {}, None
        self.state.save()
        params = " ".join(f"{k}={v}" for k, v in record.params.items())
        self.echo(f"[sweep] {record.trial_id} started: {params}  (log: {record.log_file})")
        return RunningTrial(record, process, log_handle, time.monotonic(), slot, lock)

    def _poll(self, job: RunningTrial) -> bool:
        exit_code = job.process.poll()
        elapsed = time.monotonic() - job.started
        note = None
        if exit_code is None:
            if self.sweep.timeout_s is None or elapsed <= self.sweep.timeout_s:
                return False
            kill_group(job.process.pid, signal.SIGKILL)
            exit_code = job.process.wait()
            note = f"killed after the {self.sweep.timeout_s:g} s timeout"
        kill_group(job.process.pid, signal.SIGKILL)  # anything the trial left behind in its group
        job.close()
        record_result(job.record, exit_code, elapsed, note)
        self.state.save()
        metric = metric_value(job.record.metrics, self.sweep.metric)
        if job.record.status == "completed":
            shown = (
                f"{self.sweep.metric}={metric:.4g}"
                if metric is not None
                else f"no '{self.sweep.metric}' in its results"
            )
            self.echo(f"[sweep] {job.record.trial_id} completed in {elapsed:.1f}s: {shown}")
        else:
            self.echo(
                f"[sweep] {job.record.trial_id} FAILED (exit {exit_code}) after {elapsed:.1f}s; see "
                f"{job.record.log_file}"
            )
        return True

    def _stop_all(self) -> None:
        """Stop the children and put their trials back to pending, so a resumed sweep reruns them."""
        for job in self.running.values():
            kill_group(job.process.pid, signal.SIGTERM)  # the trial and every process it started
        deadline = time.monotonic() + 10
        for job in self.running.values():
            try:
                job.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_group(job.process.pid, signal.SIGKILL)
            job.process.wait()
            job.close()
            job.record.status, job.record.error = "pending", "interrupted (the sweep was stopped)"
            self.echo(f"[sweep] {job.record.trial_id} interrupted; it runs again when the sweep resumes")
        self.running = {}
        self.state.save()


# --------------------------------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------------------------------


def write_slurm_array(sweep: Sweep, records: list[TrialRecord], sweep_dir: Path, sweep_file: str) -> Path:
    """Write slurm/batch_NNN.{sbatch,commands,ids} for these trials; returns the sbatch script's path.

    Each call writes a new batch (never rewriting one that SLURM may still be reading); the trial ids and
    command lines live in files next to the script, line i for array task i.
    """
    slurm_dir = sweep_dir / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    number = 1 + max((int(p.stem.split("_")[1]) for p in slurm_dir.glob("batch_*.sbatch")), default=0)
    stem = slurm_dir / f"batch_{number:03d}"
    commands = [shell_join(trial_command(sweep, record, port=SLURM_PORT)) for record in records]
    for record in records:  # a result left by an earlier batch must not be read as this one's
        exit_file(sweep_dir, record.trial_id).unlink(missing_ok=True)
    write_text_atomic(stem.with_suffix(".commands"), "\n".join(commands) + "\n")
    write_text_atomic(stem.with_suffix(".ids"), "\n".join(record.trial_id for record in records) + "\n")
    slurm = sweep.slurm
    sbatch = [
        f"--job-name={sweep.name}",
        f"--array=0-{len(records) - 1}%{sweep.max_parallel}",
        f"--output={slurm_dir.resolve()}/%A_%a.out",
        f"--time={slurm['time']}",
        f"--cpus-per-task={slurm['cpus_per_task']}",
    ]
    if slurm["gpus_per_task"]:
        sbatch.append(f"--gpus-per-task={slurm['gpus_per_task']}")
    if slurm["partition"]:
        sbatch.append(f"--partition={slurm['partition']}")
    if slurm["mem"]:
        sbatch.append(f"--mem={slurm['mem']}")
    sbatch += list(slurm["sbatch_options"])
    sweep_dir_abs = shlex.quote(str(sweep_dir.resolve()))
    lines = [
        "#!/bin/bash",
        f"# Sweep '{sweep.name}': {len(records)} trials as one SLURM array task each. Submit with:",
        f"#   sbatch {stem.with_suffix('.sbatch')}",
        "# then read the results (summary.csv, summary.json, plots) with:",
        f"#   rlhf sweep --config {sweep_file} --collect",
        *(f"#SBATCH {option}" for option in sbatch),
        "set -u",
        f"cd {shlex.quote(os.getcwd())}",
        *slurm["setup"],
        f"SWEEP_DIR={sweep_dir_abs}",
        "LINE=$((SLURM_ARRAY_TASK_ID + 1))",
        f'TRIAL_ID=$(sed -n "${{LINE}}p" {shlex.quote(str(stem.with_suffix(".ids").resolve()))})',
        f'TRIAL_COMMAND=$(sed -n "${{LINE}}p" {shlex.quote(str(stem.with_suffix(".commands").resolve()))})',
        f"export SWEEP_PORT=$(({BASE_PORT} + SLURM_ARRAY_TASK_ID % 1000))  # array tasks sharing a node need "
        "distinct ports",
        f'export RLHF_SWEEP={shlex.quote(sweep.name)} RLHF_SWEEP_TRIAL="$TRIAL_ID" PYTHONUNBUFFERED=1',
        'mkdir -p "$SWEEP_DIR/logs"',
        'rm -f "$SWEEP_DIR/trials/$TRIAL_ID/summary.json"',
        "START=$(date +%s)",
        'echo "=== $(date +%Y-%m-%dT%H:%M:%S) slurm job $SLURM_ARRAY_JOB_ID task $SLURM_ARRAY_TASK_ID: $TRIAL_COMMAND" >> "$SWEEP_DIR/logs/$TRIAL_ID.log"',  # noqa: E501
        'eval "$TRIAL_COMMAND" >> "$SWEEP_DIR/logs/$TRIAL_ID.log" 2>&1',
        "EXIT_CODE=$?",
        'printf \'{"exit_code": %d, "wall_time_s": %d, "finished_at": "%s"}\\n\' "$EXIT_CODE" "$(( $(date +%s) - START ))" '  # noqa: E501
        '"$(date +%Y-%m-%dT%H:%M:%S)" > "$SWEEP_DIR/logs/$TRIAL_ID.exit.json.tmp"',
        'mv "$SWEEP_DIR/logs/$TRIAL_ID.exit.json.tmp" "$SWEEP_DIR/logs/$TRIAL_ID.exit.json"',
        "exit $EXIT_CODE",
    ]
    script = stem.with_suffix(".sbatch")
    write_text_atomic(script, "\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def exit_file(sweep_dir: Path, trial_id: str) -> Path:
    return sweep_dir / "logs" / f"{trial_id}.exit.json"


def collect_slurm_results(state: SweepState, sweep_dir: Path) -> list[TrialRecord]:
    """Record the trials whose array task has finished (it left logs/<id>.exit.json); returns them."""
    collected = []
    for record in state.trials.values():
        path = exit_file(sweep_dir, record.trial_id)
        if record.status != "queued" or not path.is_file():
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        record_result(record, int(result["exit_code"]), float(result["wall_time_s"]))
        record.finished_at = result.get("finished_at", record.finished_at)
        record.attempts += 1
        collected.append(record)
    if collected:
        state.save()
    return collected
