"""The sweep's results: summary.csv and summary.json (one row per trial), the best trial, and plots.

Rows carry the trial's parameters under their dotted keys, then status, wall time and every metric its
run reported, so the CSV opens straight into a spreadsheet or pandas. The best trial is the completed one
with the best finite value of the sweep metric (ties: the earlier trial). Plots (matplotlib, Agg) show the
metric against each parameter, and, when trials report a KL and a reward, the reward-KL frontier: the
trials no other trial beats on both (higher reward at no more KL), which is how RLHF runs are compared.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Optional

from rlhf.files import atomic_path, write_json_atomic
from rlhf.sweep.launch import metric_value
from rlhf.sweep.spec import Sweep
from rlhf.sweep.state import SweepState, TrialRecord

FIXED_COLUMNS = ("trial_id", "status")
TAIL_COLUMNS = ("wall_time_s", "exit_code", "attempts", "run_dir")
KL_PREFERENCE = ("eval/ppo/kl_to_reference", "eval/kl", "ppo/kl", "objective/kl")


def summary_rows(sweep: Sweep, state: SweepState) -> list[dict[str, Any]]:
    rows = []
    for record in state.trials.values():
        row: dict[str, Any] = {"trial_id": record.trial_id, "status": record.status}
        row.update({spec.key: record.params.get(spec.key) for spec in sweep.parameters})
        row.update(
            {
                "wall_time_s": record.wall_time_s,
                "exit_code": record.exit_code,
                "attempts": record.attempts,
                "run_dir": record.run_dir,
            }
        )
        row.update({key: value for key, value in record.metrics.items() if key not in row})
        rows.append(row)
    return rows


def best_trial(records: list[TrialRecord], metric: str, direction: str) -> Optional[TrialRecord]:
    """The completed trial with the best finite metric value; the first one on ties; None if none has it."""
    best, best_value = None, None
    for record in records:
        value = metric_value(record.metrics, metric) if record.status == "completed" else None
        if value is None:
            continue
        if best_value is None or (value > best_value if direction == "maximize" else value < best_value):
            best, best_value = record, value
    return best


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (kl, reward) points no other point dominates (kl <= and reward >=, one strictly),
    sorted by kl. Lower KL and higher reward are better."""
    front = []
    for i, (kl_i, reward_i) in enumerate(points):
        dominated = any(
            kl_j <= kl_i and reward_j >= reward_i and (kl_j < kl_i or reward_j > reward_i) for kl_j, reward_j in points
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def write_summary(sweep: Sweep, state: SweepState, sweep_dir: Path) -> dict[str, Any]:
    """Write summary.csv and summary.json; returns the summary.json content."""
    rows = summary_rows(sweep, state)
    best = best_trial(list(state.trials.values()), sweep.metric, sweep.direction)
    param_columns = [spec.key for spec in sweep.parameters]
    metric_columns = sorted(
        {key for row in rows for key in row}
        - set(FIXED_COLUMNS)
        - set(param_columns)
        - set(TAIL_COLUMNS)
        - {sweep.metric}
    )
    columns = [*FIXED_COLUMNS, *param_columns, sweep.metric, *TAIL_COLUMNS, *metric_columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _csv_cell(row.get(column)) for column in columns})
    with atomic_path(sweep_dir / "summary.csv") as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    summary = {
        "sweep": sweep.name,
        "stage": sweep.stage,
        "method": sweep.method,
        "metric": sweep.metric,
        "direction": sweep.direction,
        "counts": state.counts(),
        "best": None
        if best is None
        else {
            "trial_id": best.trial_id,
            "params": best.params,
            "value": metric_value(best.metrics, sweep.metric),
            "run_dir": best.run_dir,
        },
        "trials": rows,
    }
    write_json_atomic(sweep_dir / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def frontier_keys(sweep: Sweep, records: list[TrialRecord]) -> tuple[Optional[str], Optional[str]]:
    """(kl metric, reward metric) for the frontier plot: the sweep file's choice, else found by name."""
    available = sorted(
        {key for record in records for key in record.metrics if metric_value(record.metrics, key) is not None}
    )
    kl = sweep.frontier_kl
    if kl is None:
        named = [key for key in available if "kl" in key.rsplit("/", 1)[-1] and "coef" not in key]
        kl = (
            next((key for key in KL_PREFERENCE if key in available), None)
            or next((key for key in named if "kl_to_reference" in key), None)
            or (named[0] if named else None)
        )
    reward = sweep.frontier_reward or (sweep.metric if sweep.direction == "maximize" else None)
    return kl, reward


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_plots(sweep: Sweep, state: SweepState, sweep_dir: Path) -> list[Path]:
    """plots/<metric>_vs_<param>.png per parameter and plots/reward_kl_frontier.png; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [
        r
        for r in state.trials.values()
        if r.status == "completed" and metric_value(r.metrics, sweep.metric) is not None
    ]
    out = sweep_dir / "plots"
    written: list[Path] = []
    if done:
        out.mkdir(parents=True, exist_ok=True)
    for spec in sweep.parameters if done else ():
        xs = [r.params.get(spec.key) for r in done]
        ys = [metric_value(r.metrics, sweep.metric) for r in done]
        fig, axis = plt.subplots(figsize=(6, 4))
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if numeric:
            axis.scatter(xs, ys)
            positive = all(x > 0 for x in xs)
            if spec.log or (positive and max(xs) / min(xs) >= 100):
                axis.set_xscale("log")
        else:  # categorical values at evenly spaced positions
            labels = sorted({_short(x) for x in xs})
            axis.scatter([labels.index(_short(x)) for x in xs], ys)
            axis.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        best = best_trial(done, sweep.metric, sweep.direction)
        if best is not None and numeric:
            axis.scatter(
                [best.params.get(spec.key)],
                [metric_value(best.metrics, sweep.metric)],
                marker="*",
                s=200,
                color="tab:red",
                label=f"best ({best.trial_id})",
            )
            axis.legend(fontsize=8)
        axis.set_xlabel(spec.key)
        axis.set_ylabel(sweep.metric)
        axis.set_title(f"{sweep.name}: {sweep.metric} ({sweep.direction}) vs {spec.key}", fontsize=9)
        axis.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"{_slug(sweep.metric)}_vs_{_slug(spec.key)}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    kl_key, reward_key = frontier_keys(sweep, list(state.trials.values()))
    if kl_key and reward_key:
        points_records = [
            r
            for r in state.trials.values()
            if r.status == "completed"
            and metric_value(r.metrics, kl_key) is not None
            and metric_value(r.metrics, reward_key) is not None
        ]
        if points_records:
            out.mkdir(parents=True, exist_ok=True)
            points = [(metric_value(r.metrics, kl_key), metric_value(r.metrics, reward_key)) for r in points_records]
            front = pareto_front(points)
            fig, axis = plt.subplots(figsize=(6, 4.5))
            axis.scatter(*zip(*points), color="tab:blue", label="trials")
            axis.plot(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                color="tab:orange",
                marker="o",
                label="frontier",
            )
            for record, (kl, reward) in zip(points_records, points):
                label = ", ".join(_short(record.params.get(spec.key)) for spec in sweep.parameters)
                axis.annotate(label, (kl, reward), fontsize=7, xytext=(3, 3), textcoords="offset points")
            axis.set_xlabel(kl_key)
            axis.set_ylabel(reward_key)
            axis.set_title(
                f"{sweep.name}: reward-KL frontier (labels: {', '.join(s.key for s in sweep.parameters)})", fontsize=9
            )
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
            fig.tight_layout()
            path = out / "reward_kl_frontier.png"
            _save(fig, path)
            plt.close(fig)
            written.append(path)
    return written


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


# --------------------------------------------------------------------------------------------------
# Console table
# --------------------------------------------------------------------------------------------------


def format_table(sweep: Sweep, state: SweepState, extra_metrics: tuple[str, ...] = ()) -> str:
    """A fixed-width table of the trials: id, status, parameters, the metric (and extras), wall time."""
    metric_columns = [sweep.metric, *[m for m in extra_metrics if m != sweep.metric]]
    header = ["trial", "status", *[spec.key for spec in sweep.parameters], *metric_columns, "wall_s"]
    body = []
    for record in state.trials.values():
        values = [metric_value(record.metrics, key) for key in metric_columns]
        body.append(
            [
                record.trial_id,
                record.status,
                *[_short(record.params.get(spec.key)) for spec in sweep.parameters],
                *["-" if v is None else f"{v:.4g}" for v in values],
                "-" if record.wall_time_s is None else f"{record.wall_time_s:.1f}",
            ]
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
