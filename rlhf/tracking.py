"""Run directories and metric logging: metrics.jsonl always, wandb and tensorboard when configured, plots.

A `Tracker` fans each `log(metrics, step)` out to its backends. Backends that are off are simply not in
the list, so stage code never branches on `if use_wandb:`. wandb goes offline by itself when no API key is
available (its files land in the run directory, ready for `wandb sync`). Only the main process writes;
other ranks get a tracker with no backends. At `finish()` the logged curves are drawn as PNGs under
`plots/` so a person can look at a run without any dashboard.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from rlhf.config import CommonConfig, as_dict

# --------------------------------------------------------------------------------------------------
# Run directory and seeding
# --------------------------------------------------------------------------------------------------


def prepare_run_dir(cfg: CommonConfig, is_main_process: bool = True) -> Path:
    """Create run.output_dir and write the resolved config.yaml into it (main process only)."""
    from rlhf.config import save_config

    run_dir = Path(cfg.run.output_dir)
    if is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir)
    return run_dir


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> str:
    """`auto` -> online with an API key, offline without one (never a login prompt)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_has_key() else "offline"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


class JsonlBackend:
    """One JSON object per logged step in run_dir/metrics.jsonl (appended, so resumed runs continue it)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self.samples_path = run_dir / "samples.jsonl"
        self._handle = None  # opened at the first row: a run that fails before logging leaves no empty file

    def log(self, metrics: dict, step: int) -> None:
        row = {"step": step, "time": round(time.time(), 3), **{k: _jsonable(v) for k, v in metrics.items()}}
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()

    def log_samples(self, rows: list[dict], step: int) -> None:
        with open(self.samples_path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(
                    json.dumps({"step": step, **{k: _jsonable(v) for k, v in row.items()}}, ensure_ascii=False) + "\n"
                )

    def finish(self) -> None:
        if self._handle is not None:
            self._handle.close()


class WandbBackend:
    def __init__(self, cfg: CommonConfig, run_dir: Path):
        import wandb

        self._wandb = wandb
        mode = resolve_wandb_mode(cfg.tracking.wandb_mode)
        self.run = wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity,
            group=cfg.tracking.group,
            tags=list(cfg.tracking.tags) or None,
            name=cfg.run.name,
            dir=str(run_dir),
            mode=mode,
            config=as_dict(cfg),
            reinit="finish_previous",
        )

    def log(self, metrics: dict, step: int) -> None:
        self.run.log({k: _jsonable(v) for k, v in metrics.items()}, step=step)

    def log_samples(self, rows: list[dict], step: int) -> None:
        if not rows:
            return
        columns = list(rows[0].keys())
        table = self._wandb.Table(columns=columns, data=[[_jsonable(row.get(c)) for c in columns] for row in rows])
        self.run.log({"samples": table}, step=step)

    def finish(self) -> None:
        self.run.finish()


class TensorboardBackend:
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict, step: int) -> None:
        for key, value in metrics.items():
            value = _jsonable(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def log_samples(self, rows: list[dict], step: int) -> None:
        text = "\n\n".join(" | ".join(f"**{k}**: {v}" for k, v in row.items()) for row in rows)
        self.writer.add_text("samples", text, step)

    def finish(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------------


class Tracker:
    """Fan-out logger for one stage run. Safe to use on every rank: non-main ranks log nothing."""

    def __init__(self, cfg: CommonConfig, run_dir: str | os.PathLike, is_main_process: bool = True):
        self.run_dir = Path(run_dir)
        self.make_plots = bool(cfg.tracking.plots) and is_main_process
        self.backends: list[Any] = []
        if not is_main_process:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        report_to = set(cfg.tracking.report_to)
        if "jsonl" in report_to or self.make_plots:  # plots are drawn from metrics.jsonl
            self.backends.append(JsonlBackend(self.run_dir))
        if "wandb" in report_to and resolve_wandb_mode(cfg.tracking.wandb_mode) != "disabled":
            self.backends.append(WandbBackend(cfg, self.run_dir))
        if "tensorboard" in report_to:
            self.backends.append(TensorboardBackend(self.run_dir))

    def log(self, metrics: dict, step: int) -> None:
        for backend in self.backends:
            backend.log(metrics, step)

    def log_samples(self, rows: list[dict], step: int) -> None:
        for backend in self.backends:
            backend.log_samples(rows, step)

    def finish(self) -> None:
        for backend in self.backends:
            backend.finish()
        if self.make_plots and (self.run_dir / "metrics.jsonl").exists():
            plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "plots")
        self.backends = []


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of metrics.jsonl (a line torn by a crash is left out)."""
    from rlhf.runs import read_log_rows

    return read_log_rows(path)


def plot_metrics(metrics_path: str | os.PathLike, out_dir: str | os.PathLike, max_plots: int = 48) -> list[Path]:
    """One PNG per group of metrics (the part of the name before '/') over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            series.setdefault(key, []).append((row["step"], value))
    groups: dict[str, list[str]] = {}
    for key in sorted(series):
        groups.setdefault(key.split("/")[0] if "/" in key else "metrics", []).append(key)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group, keys in list(groups.items())[:max_plots]:
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), squeeze=False, sharex=True)
        for axis, key in zip(axes[:, 0], keys):
            steps, values = zip(*series[key])
            axis.plot(steps, values, marker="." if len(steps) < 50 else None)
            axis.set_ylabel(key.split("/", 1)[-1], fontsize=8)
            axis.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.suptitle(group)
        written.append(save_figure(fig, out / f"{group.replace('/', '_')}.png"))
    return written


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as a 90-dpi PNG and close a matplotlib figure (every plot of the project); returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def trainer_callback(tracker: Tracker):
    """A transformers TrainerCallback that forwards the Trainer's logs to our Tracker."""
    from transformers import TrainerCallback

    class TrackerCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                tracker.log(dict(logs), step=int(state.global_step))

    return TrackerCallback()


TrackerCallback = trainer_callback  # the name stage code reads most naturally: TrackerCallback(tracker)
