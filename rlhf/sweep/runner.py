"""Config-driven sweeps: grid, random or Optuna search over any config key, resumable, with a summary.

    rlhf sweep --config configs/sweeps/ppo_kl.yaml [--dry-run] [--max-parallel N] [--launcher local|accelerate|slurm]
    rlhf sweep --config configs/sweeps/ppo_kl.yaml budget=8 seed=1     # sweep-file keys can be overridden too

A sweep file (rlhf/sweep_spec.py) names the stage to run, its base config, fixed overrides, the swept
keys, the metric and its direction, a budget and an output directory. Every trial is an ordinary
`rlhf <stage>` run in <sweep dir>/trials/<id> (its config.yaml, metrics.jsonl and summary.json are the
stage's own), grouped in wandb under the sweep's name (tracking.group). Before anything runs, every swept
key and value is loaded against the stage's config schema, so a typo fails in a second, not after the
first trial. Grid and random trials are fixed by the file (and the seed); Optuna picks each trial from the
finished ones (TPE, SQLite storage in the sweep dir; we write no search algorithm). The trials table
(sweep_state.json) is rewritten atomically after every change, so a killed sweep resumes where it stopped:
finished trials are kept, interrupted ones run again (`--retry-failed` reruns failed ones too). A failing
trial is recorded with its exit code and log tail, and the sweep goes on. Results: summary.csv and
summary.json (a row per trial, the best trial) and plots/ (metric vs each parameter, reward-KL frontier).
The parts: sweep_spec (the file), sweep_space (trials from the space), sweep_trials (which runs next),
sweep_launch (commands, processes, SLURM, results), sweep_state (the table), sweep_report, sweep_wandb.

Launchers: `local` runs trials as child processes, max_parallel at a time; `accelerate` runs each under
`accelerate launch` (config accelerate_config); `slurm` writes slurm/batch_NNN.sbatch, an array job with one
task per pending trial, and runs nothing: submit it with sbatch, then `rlhf sweep --config FILE --collect`
reads what finished and rebuilds the summary.

wandb sweep agents. Every `rlhf` stage also takes `--key=value` overrides, the form `wandb agent` passes,
so a wandb sweep can drive the stages directly. `rlhf sweep --config FILE --wandb-sweep wandb.yaml` writes
the same search as a wandb sweep config, whose command is
    ${env} ${interpreter} -m rlhf ppo --config configs/tiny/ppo.yaml tracking.group=<name>
        tracking.report_to=[jsonl,wandb]
        run.output_dir=runs/sweeps/<name>/wandb/${oc.env:WANDB_RUN_ID} run.name=<name>-${oc.env:WANDB_RUN_ID} ${args}
(the agent expands ${args} to `--ppo.kl_coef=0.05 ...` and sets WANDB_RUN_ID, which the config resolves
through OmegaConf's oc.env, so each agent run gets its own directory). Then:
    wandb sweep wandb.yaml            # prints the sweep id
    wandb agent <entity>/<project>/<sweep id>
The metric must be one the stage logs to wandb. Agents run one process per run, so this mode is for single
stages (sft, rm, ppo); sweep the pipeline with `rlhf sweep`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Optional

from rlhf.errors import ConfigError, UserError
from rlhf.sweep.launch import (
    LocalRunner,
    collect_slurm_results,
    metric_value,
    shell_join,
    trial_command,
    write_slurm_array,
)
from rlhf.sweep.report import best_trial, format_table, frontier_keys, write_plots, write_summary
from rlhf.sweep.space import format_override, grid_size, trial_overrides
from rlhf.sweep.spec import Sweep, load_sweep
from rlhf.sweep.state import FINISHED, SweepState
from rlhf.sweep.trials import FixedTrials, OptunaTrials, new_record, planned_trials, trial_id
from rlhf.sweep.wandb_export import export_wandb_sweep

# --------------------------------------------------------------------------------------------------
# Validation of trial keys against the stage's schema
# --------------------------------------------------------------------------------------------------


def load_stage_config(stage: str, base_config: str, overrides: list[str]) -> None:
    """Load the stage's config with these overrides exactly as the stage will (raises ConfigError)."""
    if stage == "pipeline":
        from rlhf.app.pipeline import Pipeline, load_pipeline_config

        # the pipeline routes `ppo.kl_coef=...` to its PPO stage: check the stage configs it will build too
        Pipeline(load_pipeline_config(base_config, overrides)).validate_stage_configs()
    else:
        from rlhf.app.schema import load_config

        load_config(base_config, overrides, require_complete=False)


def probe_values(sweep: Sweep) -> dict[str, list[Any]]:
    """Values that show each parameter's keys and types are valid: every listed value, or a range's ends."""
    probes: dict[str, list[Any]] = {}
    for spec in sweep.parameters:
        probes[spec.key] = list(spec.values) if spec.kind == "values" else [spec.low, spec.high]
    return probes


def validate_trial_keys(sweep: Sweep) -> None:
    """Each swept key with each probe value on top of the fixed overrides; errors name the sweep file.

    One parameter at a time keeps this linear in the number of values, not their product; a value's
    validity does not depend on the other parameters (the schema checks keys, types and choices)."""
    fixed = [format_override("tracking.group", sweep.name), *sweep.overrides]
    where = f"sweep file {sweep.source} (stage {sweep.stage}, base_config {sweep.base_config})"
    try:
        load_stage_config(sweep.stage, sweep.base_config, fixed)
    except ConfigError as exc:
        raise ConfigError(f"{where}: fixed overrides: {exc}") from None
    for key, values in probe_values(sweep).items():
        for value in values:
            try:
                load_stage_config(sweep.stage, sweep.base_config, fixed + trial_overrides({key: value}))
            except ConfigError as exc:
                raise ConfigError(f"{where}: parameters.{key}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def print_plan(sweep: Sweep, state: SweepState, plan_ids: list[str]) -> None:
    print(
        f"sweep '{sweep.name}': method {sweep.method}, stage {sweep.stage}, launcher {sweep.launcher}, "
        f"max_parallel {sweep.max_parallel}, dir {sweep.output_dir}"
    )
    print(f"metric: {sweep.metric} ({sweep.direction})")
    if sweep.method == "optuna":
        for spec in sweep.parameters:
            space = (
                list(spec.values)
                if spec.kind == "values"
                else f"{spec.kind} [{spec.low}, {spec.high}]" + (f" step {spec.step}" if spec.step else "")
            )
            print(f"  {spec.key}: {space}")
        print(
            f"Optuna (TPE, seed {sweep.seed}) chooses {sweep.budget} trials as results arrive; {len(state.trials)} "
            "recorded so far."
        )
    shown = plan_ids or list(state.trials)
    for tid in shown:
        record = state.trials[tid]
        print(f"{tid}  [{record.status}]  {' '.join(trial_overrides(record.params))}")
    if shown:
        print(f"command of {shown[0]}: {shell_join(trial_command(sweep, state.trials[shown[0]]))}")


def lock_sweep_dir(sweep: Sweep):
    """An exclusive lock on <sweep dir>/.sweep.lock: two sweeps writing one trials table would lose trials."""
    import fcntl

    handle = open(sweep.output_dir / ".sweep.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"another `rlhf sweep` is running in {sweep.output_dir}; wait for it or stop it (its trials resume later)"
        ) from None
    return handle


def finish_report(sweep: Sweep, state: SweepState, plots: bool = True) -> None:
    write_summary(sweep, state, sweep.output_dir)
    if plots:
        write_plots(sweep, state, sweep.output_dir)
    kl_key, reward_key = frontier_keys(sweep, list(state.trials.values()))
    print(format_table(sweep, state, tuple(key for key in (reward_key, kl_key) if key)))
    best = best_trial(list(state.trials.values()), sweep.metric, sweep.direction)
    counts = ", ".join(f"{n} {status}" for status, n in state.counts().items() if n)
    print(f"[sweep] {counts}; summary: {sweep.output_dir / 'summary.csv'}")
    if best is not None:
        print(
            f"[sweep] best: {best.trial_id} {sweep.metric}={metric_value(best.metrics, sweep.metric):.4g} "
            f"({' '.join(trial_overrides(best.params))}) in {best.run_dir}"
        )


def open_state(sweep: Sweep) -> tuple[SweepState, list[str]]:
    """The trials table (read from the sweep dir when resuming) and, for grid/random, the planned trial ids."""
    state = SweepState.open(sweep.output_dir, sweep.name, sweep.fingerprint())
    plan_ids: list[str] = []
    if sweep.method != "optuna":
        for index, params in enumerate(planned_trials(sweep)):
            plan_ids.append(trial_id(index))
            if plan_ids[-1] not in state.trials:  # a resumed sweep keeps its recorded trials as they are
                state.add(new_record(sweep, index, params))
    return state, plan_ids


def queue_on_slurm(sweep: Sweep, state: SweepState, plan_ids: list[str], sweep_file: str) -> int:
    pending = [state.trials[tid] for tid in plan_ids if state.trials[tid].status == "pending"]
    if not pending:
        print("[sweep] no pending trials to queue")
    else:
        script = write_slurm_array(sweep, pending, sweep.output_dir, sweep_file)
        for record in pending:
            record.status = "queued"
        state.save()
        print(
            f"[sweep] wrote {script} ({len(pending)} trials). Submit it with:\n  sbatch {script}\n"
            f"then collect the results with:\n  rlhf sweep --config {sweep_file} --collect"
        )
    finish_report(sweep, state, plots=False)
    return 0


def run_locally(sweep: Sweep, state: SweepState, plan_ids: list[str], sweep_file: str) -> int:
    source = OptunaTrials(sweep, state) if sweep.method == "optuna" else FixedTrials(state, plan_ids)
    runner = LocalRunner(sweep, state, on_trial_end=lambda: write_summary(sweep, state, sweep.output_dir))

    def request_stop(signum, frame):  # noqa: ARG001 - SIGTERM (SLURM's time limit) or Ctrl-C
        runner.stop_requested = True  # the runner stops its trials and saves the state at its next step

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        runner.run(source)
    except KeyboardInterrupt:
        write_summary(sweep, state, sweep.output_dir)
        print(f"[sweep] stopped; resume with: rlhf sweep --config {sweep_file}", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    finish_report(sweep, state)
    finished = [r for r in state.trials.values() if r.status in FINISHED]
    return 1 if finished and all(r.status == "failed" for r in finished) else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhf sweep", description="Grid, random or Optuna sweeps over config keys (resumable)."
    )
    parser.add_argument("--config", "-c", required=True, help="sweep YAML (see configs/sweeps/ppo_kl.yaml)")
    parser.add_argument("overrides", nargs="*", help="overrides of the sweep file's own keys, e.g. budget=8 seed=1")
    parser.add_argument("--dry-run", action="store_true", help="print the trials and their overrides; run nothing")
    parser.add_argument("--max-parallel", type=int, help="trials at once (overrides max_parallel)")
    parser.add_argument("--launcher", choices=("local", "accelerate", "slurm"), help="overrides launcher")
    parser.add_argument(
        "--retry-failed", action="store_true", help="run failed trials again (and re-queue SLURM trials with no result)"
    )
    parser.add_argument(
        "--collect", action="store_true", help="read finished SLURM trials, rebuild the summary; run nothing"
    )
    parser.add_argument(
        "--wandb-sweep", metavar="OUT_YAML", help="write the search as a wandb sweep config for `wandb agent`, and exit"
    )
    args = parser.parse_args(list(argv or []))
    overrides = list(args.overrides)
    if args.max_parallel is not None:
        overrides.append(f"max_parallel={args.max_parallel}")
    if args.launcher:
        overrides.append(f"launcher={args.launcher}")
    sweep = load_sweep(args.config, overrides)
    if args.wandb_sweep:
        export_wandb_sweep(sweep, args.wandb_sweep)
        return 0
    if sweep.validate_keys:
        validate_trial_keys(sweep)
    if sweep.method == "grid" and sweep.budget and sweep.budget < grid_size(sweep.parameters):
        print(
            f"[sweep] budget {sweep.budget} < grid size {grid_size(sweep.parameters)}: running the first "
            f"{sweep.budget} trials"
        )
    if args.dry_run:
        print_plan(sweep, *open_state(sweep))
        return 0

    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_sweep_dir(sweep)
    try:
        state, plan_ids = open_state(sweep)  # read under the lock: another sweep may just have finished
        collect_slurm_results(state, sweep.output_dir)
        if args.collect:
            state.save()
            finish_report(sweep, state)
            return 0
        retry_statuses = ("failed", "queued") if args.retry_failed else ()
        for record in state.trials.values():
            if record.status == "running" or record.status in retry_statuses:
                record.status = "pending"  # `running` on disk: the sweep that started it was killed
        state.save()
        if sweep.launcher == "slurm":
            return queue_on_slurm(sweep, state, plan_ids, args.config)
        return run_locally(sweep, state, plan_ids, args.config)
    finally:
        lock.close()
