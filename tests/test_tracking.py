"""Tracking: metrics.jsonl parses, plots appear, wandb goes offline without a key, non-main ranks write nothing."""

from __future__ import annotations

import json

from rlhf.app.schema import load_config
from rlhf.tracking import Tracker, prepare_run_dir, resolve_wandb_mode


def make_cfg(tmp_path, report_to="[jsonl]"):
    return load_config(
        None, ["model.name_or_path=m", f"run.output_dir={tmp_path / 'run'}", f"tracking.report_to={report_to}"]
    )


def test_metrics_jsonl_and_plots(tmp_path):
    cfg = make_cfg(tmp_path)
    run_dir = prepare_run_dir(cfg)
    tracker = Tracker(cfg, run_dir)
    for step in range(3):
        tracker.log({"train/loss": 1.0 / (step + 1), "objective/kl": 0.1 * step}, step=step)
    tracker.log_samples([{"prompt": "p", "response": "r", "score": 0.5}], step=2)
    tracker.finish()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[2]["train/loss"] == 1.0 / 3
    assert json.loads((run_dir / "samples.jsonl").read_text())["score"] == 0.5
    assert (run_dir / "plots" / "train.png").stat().st_size > 1000
    assert (run_dir / "config.yaml").exists()


def test_wandb_offline_without_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    cfg = make_cfg(tmp_path, "[jsonl,wandb]")
    tracker = Tracker(cfg, prepare_run_dir(cfg))
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].glob("*.wandb"))


def test_non_main_process_writes_nothing(tmp_path):
    cfg = make_cfg(tmp_path)
    tracker = Tracker(cfg, tmp_path / "rank1", is_main_process=False)
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    assert not (tmp_path / "rank1").exists()
