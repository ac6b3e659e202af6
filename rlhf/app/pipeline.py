"""The whole InstructGPT loop on one command, resumable stage by stage.

    rlhf pipeline --config configs/tiny/pipeline.yaml
    rlhf pipeline --config configs/tiny/pipeline.yaml ppo.kl_coef=0.02 --from ppo

Stages, each writing under run.output_dir (the pipeline directory):
  task      build the built-in task into pipeline.task_dir when it has no task.json
  base      the starting model: pipeline.base_model, or the tiny preset built into base/
  sft       rlhf sft  -> sft/model
  generate  rlhf generate: K responses per prompt from the SFT policy -> candidates.jsonl
  rank      simulated reviewers (or pipeline.rankings_file from the reviewers' tool) -> rankings.jsonl
  rm        rlhf rm   -> rm/model (+ reward_stats.json)
  ppo       rlhf ppo  -> ppo/policy
  eval      rlhf eval: SFT vs PPO on held-out prompts -> report.json, report.md, plots/

Each training stage runs as its own process (`python -m rlhf <stage>`, or `accelerate launch` with
pipeline.accelerate_config), exactly as a user would launch it, so one stage's memory and global state
never leak into the next. A stage counts as done when its completion marker exists (summary.json for
training stages, the output file for the others; all written atomically), so re-running the same command
resumes at the first unfinished stage. `--from S` reruns S and everything after it; `--until S` stops
after S. Overrides addressed to a stage are passed through to it: `ppo.kl_coef=0.02` reaches the PPO
stage as is, and `ppo.train.learning_rate=1e-5` reaches it as `train.learning_rate=1e-5`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from rlhf import config as core
from rlhf.app.schema import Config, load_config
from rlhf.config import GenerateSection, RunConfig, TrackingConfig, save_config, split_wandb_style
from rlhf.errors import ConfigError, UserError
from rlhf.processes import child_environment, parent_death_guard

STAGES = ("task", "base", "sft", "generate", "rank", "rm", "ppo", "eval")
TASK_FILES = ("sft_train.jsonl", "sft_eval.jsonl", "prompts_train.jsonl", "prompts_eval.jsonl")  # what stages read
TRAINING_STAGES = ("sft", "rm", "ppo")
STAGE_SECTIONS = set(Config.__dataclass_fields__)  # run, model, data, train, ...


@dataclass
class ReviewersSection:
    num_reviewers: int = 1  # simulated reviewers per prompt
    temperature: float = 0.5  # Plackett-Luce temperature over gold scores (higher: noisier orders)
    noise: float = 0.1  # probability that a reviewer's ranking is replaced by a random one
    seed: int = 0  # reviewers' random seed


@dataclass
class PipelineSection:
    task: str = "tiny"  # the built-in task (tiny | lists, see rlhf/tasks/): its files, its judge
    task_dir: Optional[str] = (
        None  # the task's files (default data/<task>; made by make-task when task.json is missing)
    )
    make_task: bool = (
        True  # build the built-in task into task_dir when it is missing (false: task_dir holds your task's files)
    )
    task_seed: int = 0  # seed for make-task
    base_model: Optional[str] = None  # starting model (hub id or dir); None: build the tiny preset
    sft_config: str = "configs/tiny/sft.yaml"  # stage config files (paths relative to the working directory)
    rm_config: str = "configs/tiny/rm.yaml"
    ppo_config: str = "configs/tiny/ppo.yaml"
    sft_overrides: list[str] = field(default_factory=list)  # overrides passed to the SFT stage
    rm_overrides: list[str] = field(default_factory=list)  # overrides passed to the RM stage
    ppo_overrides: list[str] = field(default_factory=list)  # overrides passed to the PPO stage
    candidate_prompts: int = 1000  # training prompts sampled K times for the reviewers
    rankings_file: Optional[str] = None  # rankings exported from the reviewers' tool (skips simulation)
    reviewers: ReviewersSection = field(default_factory=ReviewersSection)
    eval_num_prompts: int = 256  # held-out prompts in the final evaluation
    judge: Optional[str] = (
        "task"  # reviewers' and eval's judge: task (the task's own), module:function, file.py:fn, none
    )
    accelerate_config: Optional[str] = None  # launch training stages with `accelerate launch --config_file`
    reuse_from: Optional[str] = (
        None  # another pipeline directory whose finished sft/generate/rank/rm stages to link (sweeps over PPO keys)
    )


@dataclass
class PipelineConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/tiny"))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    generate: GenerateSection = field(default_factory=GenerateSection)


# --------------------------------------------------------------------------------------------------
# Config: pipeline keys vs. keys addressed to a stage
# --------------------------------------------------------------------------------------------------


def stage_override(text: str) -> Optional[tuple[str, str]]:
    """`ppo.kl_coef=0.1` -> ("ppo", "ppo.kl_coef=0.1"); `ppo.train.lr=1` -> ("ppo", "train.lr=1"); else None."""
    stripped = text[2:] if text.startswith("--") else text
    key = stripped.split("=", 1)[0]
    parts = key.split(".")
    if parts[0] not in TRAINING_STAGES or len(parts) < 2:
        return None
    if parts[1] in STAGE_SECTIONS:
        return parts[0], stripped[len(parts[0]) + 1 :]
    return parts[0], stripped


def load_pipeline_config(config_file: Optional[str], overrides: list[str]) -> DictConfig:
    own, forwarded = [], {stage: [] for stage in TRAINING_STAGES}
    for text in overrides:
        routed = stage_override(text)
        if routed:
            forwarded[routed[0]].append(routed[1])
        else:
            own.append(text)
    cfg = core.load_config(config_file, own, schema_cls=PipelineConfig)
    for stage, extra in forwarded.items():
        cfg.pipeline[f"{stage}_overrides"] = list(cfg.pipeline[f"{stage}_overrides"]) + extra
    return cfg


# --------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------


def resolve_judge(p) -> Optional[str]:
    """pipeline.judge as a spec: "task" is the built-in task's own judge (its name); a user's task
    (make_task false) must name its judge, or `none` to run without one."""
    if p.judge != "task":
        return None if p.judge in (None, "", "none", "null") else p.judge
    if not p.make_task:
        raise ConfigError(
            "pipeline.judge: 'task' means the built-in task's judge, but pipeline.make_task is false (your own "
            "task): set pipeline.judge to package.module:function, path/to/file.py:function, or none"
        )
    return p.task


class Pipeline:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.out = Path(cfg.run.output_dir)
        self.task_dir = Path(cfg.pipeline.task_dir or f"data/{cfg.pipeline.task}")
        self.judge = resolve_judge(cfg.pipeline)
        self.state_path = self.out / "pipeline_state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"stages": {}}

    # paths -----------------------------------------------------------------------------------------
    @property
    def base_model(self) -> str:
        return self.cfg.pipeline.base_model or str(self.out / "base")

    def marker(self, stage: str) -> Path:
        return {
            "task": self.task_dir / "task.json",
            "base": Path(self.base_model) / "config.json",
            "sft": self.out / "sft" / "summary.json",
            "generate": self.out / "candidates.jsonl",
            "rank": self.out / "rankings.jsonl",
            "rm": self.out / "rm" / "summary.json",
            "ppo": self.out / "ppo" / "summary.json",
            "eval": self.out / "report.json",
        }[stage]

    def is_complete(self, stage: str) -> bool:
        if stage == "base" and self.cfg.pipeline.base_model:
            return True  # a user-given model (hub id or directory) needs no building
        if stage == "task" and not self.cfg.pipeline.make_task:
            # a user's task: its files in the public formats, no task.json needed
            missing = [name for name in TASK_FILES if not (self.task_dir / name).exists()]
            if missing:
                raise UserError(
                    f"{self.task_dir}: missing {', '.join(missing)} (pipeline.make_task is false, so "
                    "pipeline.task_dir must hold the task's SFT rows and prompts)"
                )
            return True
        return self.marker(stage).exists()

    # running ---------------------------------------------------------------------------------------
    def stage_config_overrides(self, stage: str) -> list[str]:
        p = self.cfg.pipeline
        seed = [
            f"run.seed={self.cfg.run.seed}",
            f"run.name={self.cfg.run.name}-{stage}",
            f"tracking.group={self.cfg.tracking.group or self.cfg.run.name}",
        ]
        tracking = [
            f"tracking.report_to=[{','.join(self.cfg.tracking.report_to)}]",
            f"tracking.wandb_mode={self.cfg.tracking.wandb_mode}",
            f"tracking.project={self.cfg.tracking.project}",
        ]
        if stage == "sft":
            own = [
                f"model.name_or_path={self.base_model}",
                f"data.train_file={self.task_dir / 'sft_train.jsonl'}",
                f"data.eval_file={self.task_dir / 'sft_eval.jsonl'}",
            ]
        elif stage == "rm":
            own = [f"model.name_or_path={self.out / 'sft' / 'model'}", f"data.train_file={self.out / 'rankings.jsonl'}"]
        else:
            own = [
                f"model.name_or_path={self.out / 'sft' / 'model'}",
                f"ppo.reward_model_path={self.out / 'rm' / 'model'}",
                f"data.train_file={self.task_dir / 'prompts_train.jsonl'}",
                f"data.eval_file={self.task_dir / 'prompts_eval.jsonl'}",
            ]
            if self.judge:
                own.append(f"ppo.gold_judge={self.judge}")
        return seed + tracking + own + [f"run.output_dir={self.out / stage}"] + list(p[f"{stage}_overrides"])

    def run_command(self, stage: str, args: list[str]) -> None:
        if stage in TRAINING_STAGES and self.cfg.pipeline.accelerate_config:
            command = [
                "accelerate",
                "launch",
                "--config_file",
                self.cfg.pipeline.accelerate_config,
                "-m",
                "rlhf",
                *args,
            ]
        else:
            command = [sys.executable, "-m", "rlhf", *args]
        print(f"[pipeline] {stage}: {' '.join(command)}", flush=True)
        # The stage dies with the pipeline (parent-death guard): a killed pipeline leaves no stage running on.
        process = subprocess.Popen(
            command, env=child_environment({**os.environ, "PYTHONUNBUFFERED": "1"}), preexec_fn=parent_death_guard()
        )
        try:
            returncode = process.wait()
        except BaseException:  # Ctrl-C or SIGTERM: stop the stage too, then stop
            process.terminate()
            process.wait()
            raise
        if returncode != 0:
            raise UserError(
                f"stage '{stage}' failed with exit code {returncode} (command: {' '.join(command)}); fix it "
                "and re-run: completed stages are skipped"
            )

    def run_stage(self, stage: str) -> None:
        p = self.cfg.pipeline
        if stage == "task":
            if not p.make_task:
                raise UserError(f"{self.task_dir}: no task.json and pipeline.make_task is false")
            self.run_command(
                stage, ["data", "make-task", "--task", p.task, "--out", str(self.task_dir), "--seed", str(p.task_seed)]
            )
        elif stage == "base":
            texts = [
                str(self.task_dir / name)
                for name in ("sft_train.jsonl", "prompts_train.jsonl")
                if (self.task_dir / name).exists()
            ]
            self.run_command(
                stage,
                ["model", "init-tiny", "--out", self.base_model, "--seed", str(self.cfg.run.seed), "--texts", *texts],
            )
        elif stage in TRAINING_STAGES:
            self.run_command(stage, [stage, "--config", p[f"{stage}_config"], *self.stage_config_overrides(stage)])
        elif stage == "generate":
            g = self.cfg.generate
            self.run_command(
                stage,
                [
                    "generate",
                    "--policy",
                    str(self.out / "sft" / "model"),
                    "--prompts",
                    str(self.task_dir / "prompts_train.jsonl"),
                    "--k",
                    str(g.k),
                    "--limit",
                    str(p.candidate_prompts),
                    "--max-new-tokens",
                    str(g.max_new_tokens),
                    "--temperature",
                    str(g.temperature),
                    "--top-p",
                    str(g.top_p),
                    "--batch-size",
                    str(g.batch_size),
                    "--precision",
                    str(g.precision),
                    "--seed",
                    str(self.cfg.run.seed),
                    "--out",
                    str(self.marker("generate")),
                ],
            )
        elif stage == "rank":
            if p.rankings_file:
                self.run_command(stage, ["data", "validate", "--format", "rankings", p.rankings_file])
                from rlhf.files import atomic_path

                with atomic_path(self.marker("rank")) as tmp:
                    shutil.copyfile(p.rankings_file, tmp)
            else:
                r = p.reviewers
                self.run_command(
                    stage,
                    [
                        "data",
                        "rank",
                        "--candidates",
                        str(self.marker("generate")),
                        "--out",
                        str(self.marker("rank")),
                        "--reviewers",
                        str(r.num_reviewers),
                        "--temperature",
                        str(r.temperature),
                        "--noise",
                        str(r.noise),
                        "--seed",
                        str(r.seed),
                        "--judge",
                        str(self.judge or "none"),
                    ],
                )
        elif stage == "eval":
            ppo_cfg = load_config(p.ppo_config, self.stage_config_overrides("ppo"), require_complete=False)
            args = [
                "eval",
                "--policies",
                f"sft={self.out / 'sft' / 'model'}",
                f"ppo={self.out / 'ppo' / 'policy'}",
                "--prompts",
                str(self.final_report_prompts()),
                "--num-prompts",
                str(p.eval_num_prompts),
                "--reward-model",
                str(self.out / "rm" / "model"),
                "--reference",
                str(self.out / "sft" / "model"),
                "--ppo-runs",
                str(self.out / "ppo"),
                "--max-new-tokens",
                str(ppo_cfg.ppo.max_new_tokens),
                "--temperature",
                str(ppo_cfg.ppo.temperature),
                "--seed",
                str(self.cfg.run.seed),
                "--precision",
                str(self.cfg.generate.precision),
                "--out",
                str(self.out),
            ]
            if self.judge:
                args += ["--judge", self.judge]
            self.run_command(stage, args)

    def link_reused_stages(self) -> None:
        """Symlink finished early stages from pipeline.reuse_from, so a PPO sweep trains SFT and the RM once."""
        source = Path(self.cfg.pipeline.reuse_from)
        for stage, name in (("sft", "sft"), ("generate", "candidates.jsonl"), ("rank", "rankings.jsonl"), ("rm", "rm")):
            target, origin = self.out / name, source / name
            if self.is_complete(stage) or not (source / self.marker(stage).relative_to(self.out)).exists():
                continue
            if target.is_symlink() or target.exists():
                raise UserError(f"{target} exists but is incomplete; remove it or drop pipeline.reuse_from")
            target.symlink_to(origin.resolve(), target_is_directory=origin.is_dir())
            print(f"[pipeline] {stage}: reused from {origin}", flush=True)

    def validate_stage_configs(self) -> None:
        """Load each stage config with its overrides now, so a typo fails before hours of training."""
        from rlhf.plugins import load_judge

        load_judge(self.judge, "pipeline.judge")  # a bad spec stops before any stage runs
        for stage in TRAINING_STAGES:
            try:
                load_config(
                    self.cfg.pipeline[f"{stage}_config"], self.stage_config_overrides(stage), require_complete=False
                )
            except ConfigError as exc:
                raise ConfigError(f"{stage} stage: {exc}") from None

    def final_report_prompts(self) -> Path:
        """The task's test split (prompts_test.jsonl), kept apart from prompts_eval.jsonl, on which PPO's
        in-training evaluation and the sweeps' metric (ppo/eval/*) choose; a task without one falls back
        to its eval prompts, and the report says which file it used."""
        test = self.task_dir / "prompts_test.jsonl"
        return test if test.exists() else self.task_dir / "prompts_eval.jsonl"

    def reject_fsdp_for_ppo(self) -> None:
        """PPO runs under DDP or DeepSpeed only: an FSDP accelerate config stops the pipeline before any stage."""
        path = self.cfg.pipeline.accelerate_config
        if not path or not Path(path).is_file():
            return
        from omegaconf import OmegaConf

        try:
            launch = OmegaConf.to_container(OmegaConf.load(path))
        except Exception:  # noqa: BLE001 - accelerate itself reports a broken file, naming it
            return
        if isinstance(launch, dict) and str(launch.get("distributed_type", "")).upper() == "FSDP":
            raise ConfigError(
                f"pipeline.accelerate_config={path} sets distributed_type: FSDP, which PPO does not support; use a "
                "DDP or DeepSpeed ZeRO config (configs/accelerate/ddp.yaml, zero2.yaml, zero3.yaml), or stop "
                "this pipeline before PPO (--until rm)"
            )

    def preflight(self) -> None:
        """`rlhf check` of the whole pipeline before its first training stage (the task and base model exist
        by then): tokenizers, one example, data lengths, memory under pipeline.accelerate_config; a hard
        mismatch stops here, not hours later."""
        from rlhf.app.check import build_report, pipeline_plans, render_text
        from rlhf.files import write_json_atomic

        report = build_report(pipeline_plans(self.cfg), "pipeline", self.cfg.pipeline.accelerate_config)
        write_json_atomic(self.out / "check.json", report)
        print(f"[pipeline] check: {self.out / 'check.json'}", flush=True)
        if report["problems"]:
            print(render_text(report), flush=True)
            raise ConfigError("pre-flight check failed: " + "; ".join(report["problems"]))

    def save_state(self) -> None:
        from rlhf.files import write_json_atomic

        write_json_atomic(self.state_path, self.state)

    def run(self, start: Optional[str] = None, until: Optional[str] = None) -> dict:
        self.validate_stage_configs()  # before anything in the pipeline directory changes
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out)
        if self.cfg.pipeline.reuse_from:
            self.link_reused_stages()
        first = STAGES.index(start) if start else 0
        last = STAGES.index(until) if until else len(STAGES) - 1
        ppo_index = STAGES.index("ppo")
        if last >= ppo_index and (not self.is_complete("ppo") or (start is not None and first <= ppo_index)):
            self.reject_fsdp_for_ppo()
        checked = False
        for index, stage in enumerate(STAGES[: last + 1]):
            forced = index >= first and start is not None
            if self.is_complete(stage) and not forced:
                print(f"[pipeline] {stage}: complete, skipped ({self.marker(stage)})", flush=True)
                self.state["stages"].setdefault(stage, {})["skipped_last_run"] = True
                continue
            if index < first:
                raise UserError(
                    f"--from {start}: earlier stage '{stage}' has not completed ({self.marker(stage)} is missing)"
                )
            if stage in TRAINING_STAGES and not checked:
                self.preflight()
                checked = True
            began = time.time()
            self.run_stage(stage)
            self.state["stages"][stage] = {
                "seconds": round(time.time() - began, 1),
                "skipped_last_run": False,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            self.save_state()
        summary = self.write_summary()
        self.save_state()
        return summary

    def write_summary(self) -> dict:
        """Headline numbers of every completed stage in one flat dict (what sweeps read)."""
        from rlhf.files import write_json_atomic

        summary: dict = {}
        for stage in TRAINING_STAGES:
            path = self.out / stage / "summary.json"
            if path.exists():
                summary.update({f"{stage}/{k}": v for k, v in json.loads(path.read_text()).items()})
        if self.marker("eval").exists():
            from rlhf.commands.evaluate import summary_metrics

            summary.update(summary_metrics(json.loads(self.marker("eval").read_text())))
        summary.update(
            {
                f"time/{stage}_seconds": info["seconds"]
                for stage, info in self.state["stages"].items()
                if "seconds" in info
            }
        )
        write_json_atomic(self.out / "summary.json", summary)
        return summary


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhf pipeline", description="Run the whole RLHF loop; completed stages are skipped."
    )
    parser.add_argument("--config", "-c", help="pipeline YAML (see configs/tiny/pipeline.yaml)")
    parser.add_argument("--from", dest="start", choices=STAGES, help="rerun this stage and every later one")
    parser.add_argument("--until", choices=STAGES, help="stop after this stage")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="pipeline keys (run.output_dir=...) or stage keys (ppo.kl_coef=0.02, sft.train.max_steps=10)",
    )
    args = parser.parse_args(split_wandb_style(list(argv or [])))
    cfg = load_pipeline_config(args.config, args.overrides)
    began = time.time()
    summary = Pipeline(cfg).run(args.start, args.until)
    print(f"[pipeline] done in {time.time() - began:.0f}s; summary: {Path(cfg.run.output_dir) / 'summary.json'}")
    headline = {k: v for k, v in summary.items() if "win_rate" in k or k.endswith(("gold_score", "kl_to_reference"))}
    print(json.dumps(headline, indent=2))
    return 0
