"""The sweep's table of trials on disk (sweep_state.json), rewritten atomically after every change.

The state file is the sweep's memory: which trials exist, their parameters, and how each one ended. A
trial is `pending` (not started, or interrupted), `running` (a process was started; if the sweep itself
was killed, it stays `running` on disk and is run again on resume), `queued` (written into a SLURM array
script), `completed` or `failed`. Resuming skips completed and failed trials (`--retry-failed` reruns the
failed ones). The file also keeps the sweep's fingerprint, so a resumed sweep whose file now describes
different trials stops with an error instead of mixing two experiments in one table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from rlhf.errors import ConfigError
from rlhf.files import write_json_atomic

STATE_FILE = "sweep_state.json"
STATUSES = ("pending", "running", "queued", "completed", "failed")
FINISHED = ("completed", "failed")


@dataclass
class TrialRecord:
    trial_id: str
    params: dict[str, Any]
    status: str = "pending"
    run_dir: str = ""
    log_file: str = ""
    exit_code: Optional[int] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_time_s: Optional[float] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    error: Optional[str] = None  # the tail of the trial's log when it failed
    attempts: int = 0  # processes started for this trial (a resumed or retried trial has more than one)
    optuna_number: Optional[int] = None  # the trial's number in the Optuna study (method optuna)


def now() -> str:
    return datetime.now().isoformat(timespec="milliseconds")


class SweepState:
    def __init__(self, path: Path, name: str, fingerprint: dict, trials: Optional[dict[str, TrialRecord]] = None):
        self.path = path
        self.name = name
        self.fingerprint = fingerprint
        self.trials: dict[str, TrialRecord] = trials or {}

    @classmethod
    def open(cls, sweep_dir: Path, name: str, fingerprint: dict) -> "SweepState":
        """The sweep's state, read from sweep_dir when it exists (and checked to be the same sweep)."""
        path = sweep_dir / STATE_FILE
        if not path.exists():
            return cls(path, name, fingerprint)
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("fingerprint") != fingerprint:
            changed = sorted(
                key
                for key in set(fingerprint) | set(stored.get("fingerprint", {}))
                if fingerprint.get(key) != stored.get("fingerprint", {}).get(key)
            )
            raise ConfigError(
                f"{path} belongs to a sweep with different settings ({', '.join(changed)} changed); "
                f"set another output_dir for the new sweep, or delete {sweep_dir} to start over"
            )
        trials = {row["trial_id"]: TrialRecord(**row) for row in stored.get("trials", [])}
        return cls(path, name, fingerprint, trials)

    def save(self) -> None:
        write_json_atomic(
            self.path,
            {
                "sweep": self.name,
                "fingerprint": self.fingerprint,
                "updated_at": now(),
                "trials": [asdict(record) for record in self.trials.values()],
            },
        )

    def add(self, record: TrialRecord) -> TrialRecord:
        self.trials[record.trial_id] = record
        return record

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for record in self.trials.values():
            counts[record.status] += 1
        return counts
