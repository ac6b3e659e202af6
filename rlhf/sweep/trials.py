"""Which trial runs next: the fixed list of a grid or random search, or an Optuna study's next question.

Grid and random trials are all known up front (rlhf.sweep.space), so they are written into the trials
table at once and run in order; a resumed sweep keeps the recorded ones as they are. Guided search asks an
Optuna study (TPE, stored in <sweep dir>/optuna.db so it survives restarts) for one trial at a time and
tells it each result; concurrent trials use TPE's constant liar so they don't get the same point.
"""

from __future__ import annotations

from typing import Any, Optional

from rlhf.sweep.launch import metric_value
from rlhf.sweep.space import (
    decode_optuna_params,
    encode_optuna_params,
    grid_trials,
    optuna_distributions,
    random_trials,
)
from rlhf.sweep.spec import Sweep
from rlhf.sweep.state import FINISHED, SweepState, TrialRecord

OPTUNA_DB = "optuna.db"


def trial_id(index: int) -> str:
    return f"t{index:03d}"


def new_record(sweep: Sweep, index: int, params: dict[str, Any]) -> TrialRecord:
    tid = trial_id(index)
    return TrialRecord(
        trial_id=tid,
        params=params,
        run_dir=str(sweep.output_dir / "trials" / tid),
        log_file=str(sweep.output_dir / "logs" / f"{tid}.log"),
    )


# --------------------------------------------------------------------------------------------------
# Trial sources: which trial runs next
# --------------------------------------------------------------------------------------------------


def planned_trials(sweep: Sweep) -> list[dict[str, Any]]:
    """Grid and random search: the whole list of trials (parameters) the file and seed define."""
    if sweep.method == "grid":
        grid = grid_trials(sweep.parameters)
        return grid[: sweep.budget] if sweep.budget else grid
    return random_trials(sweep.parameters, int(sweep.budget), sweep.seed)


class FixedTrials:
    """Grid and random search: the pending trials of the table, in order."""

    def __init__(self, state: SweepState, trial_ids: list[str]):
        self.state = state
        self.queue = [tid for tid in trial_ids if state.trials[tid].status == "pending"]

    def next_trial(self) -> Optional[TrialRecord]:
        return self.state.trials[self.queue.pop(0)] if self.queue else None

    def on_finished(self, record: TrialRecord) -> None:
        pass


class OptunaTrials:
    """Guided search: an Optuna study (TPE) stored in <sweep dir>/optuna.db, told each trial's result.

    A trial asked but never told (the sweep was killed) is told FAIL on resume, and its parameters are
    queued again (`enqueue_trial`) so the rerun tries the same point under a new Optuna number."""

    def __init__(self, sweep: Sweep, state: SweepState):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.sweep, self.state = sweep, state
        self.distributions = optuna_distributions(sweep.parameters)
        sampler = optuna.samplers.TPESampler(
            seed=sweep.seed, n_startup_trials=sweep.optuna_startup_trials, constant_liar=sweep.max_parallel > 1
        )  # don't propose the same point to concurrent trials
        sweep.output_dir.mkdir(parents=True, exist_ok=True)
        self.study = optuna.create_study(
            study_name=sweep.name,
            storage=f"sqlite:///{(sweep.output_dir / OPTUNA_DB).resolve()}",
            sampler=sampler,
            direction=sweep.direction,
            load_if_exists=True,
        )
        self._reconcile()

    def _reconcile(self) -> None:
        by_number = {r.optuna_number: r for r in self.state.trials.values() if r.optuna_number is not None}
        for trial in self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
            record = by_number.get(trial.number)
            if record is not None and record.status in FINISHED:
                self._tell(record)  # finished, but the sweep stopped before telling Optuna
            else:
                self.study.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)

    def next_trial(self) -> Optional[TrialRecord]:
        record = next((r for r in self.state.trials.values() if r.status == "pending"), None)
        if record is not None:  # a rerun: same parameters, new Optuna trial
            self.study.enqueue_trial(encode_optuna_params(self.sweep.parameters, record.params))
        elif len(self.state.trials) >= int(self.sweep.budget):
            return None
        trial = self.study.ask(self.distributions)
        params = decode_optuna_params(self.sweep.parameters, trial.params)
        if record is None:
            record = self.state.add(new_record(self.sweep, len(self.state.trials), params))
        record.optuna_number = trial.number
        self.state.save()
        return record

    def on_finished(self, record: TrialRecord) -> None:
        self._tell(record)

    def _tell(self, record: TrialRecord) -> None:
        value = metric_value(record.metrics, self.sweep.metric) if record.status == "completed" else None
        if value is None:
            self.study.tell(record.optuna_number, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(record.optuna_number, value)
