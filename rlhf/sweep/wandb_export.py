"""Export a sweep file as a wandb sweep config, for `wandb agent` (see rlhf/sweep.py for the workflow)."""

from __future__ import annotations

from typing import Any

from rlhf.errors import UserError
from rlhf.sweep.spec import Sweep


def export_wandb_sweep(sweep: Sweep, path: str) -> None:
    """Write the sweep as a wandb sweep config (see the module docstring)."""
    from omegaconf import OmegaConf

    from rlhf.config import parse_override
    from rlhf.files import write_text_atomic

    if sweep.stage == "pipeline":
        raise UserError(
            "--wandb-sweep: a wandb agent runs one process per run, but the pipeline starts one per stage; "
            "sweep the pipeline with `rlhf sweep`, or set stage to sft, rm or ppo"
        )
    parameters: dict[str, Any] = {}
    for spec in sweep.parameters:
        if spec.kind == "values":
            parameters[spec.key] = {"values": list(spec.values)}
        elif spec.kind == "int":
            parameters[spec.key] = (
                {"values": list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))}
                if (spec.step or 1) > 1
                else {
                    "distribution": "q_log_uniform_values" if spec.log else "int_uniform",
                    "min": spec.low,
                    "max": spec.high,
                    **({"q": 1} if spec.log else {}),
                }
            )
        elif spec.kind == "loguniform":
            parameters[spec.key] = {"distribution": "log_uniform_values", "min": spec.low, "max": spec.high}
        else:
            parameters[spec.key] = (
                {"distribution": "q_uniform", "min": spec.low, "max": spec.high, "q": spec.step}
                if spec.step
                else {"distribution": "uniform", "min": spec.low, "max": spec.high}
            )
    fixed = list(sweep.overrides)
    if not any(parse_override(text)[0] == "tracking.report_to" for text in fixed):
        fixed.append("tracking.report_to=[jsonl,wandb]")  # an agent's runs must report to wandb
    run_dir = (sweep.output_dir / "wandb").as_posix()
    config = {
        "name": sweep.name,
        "method": {"grid": "grid", "random": "random", "optuna": "bayes"}[sweep.method],
        "metric": {"name": sweep.metric, "goal": sweep.direction},
        "parameters": parameters,
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "rlhf",
            sweep.stage,
            "--config",
            sweep.base_config,
            f"tracking.group={sweep.name}",
            *fixed,
            f"run.output_dir={run_dir}/${{oc.env:WANDB_RUN_ID}}",
            f"run.name={sweep.name}-${{oc.env:WANDB_RUN_ID}}",
            "${args}",
        ],
    }
    if sweep.budget and sweep.method != "grid":
        config["run_cap"] = int(sweep.budget)
    header = (
        f"# wandb sweep config written by `rlhf sweep --config {sweep.source} --wandb-sweep {path}`.\n"
        f"#   wandb sweep {path} && wandb agent <entity>/<project>/<sweep id>\n"
    )
    write_text_atomic(path, header + OmegaConf.to_yaml(OmegaConf.create(config)))
    print(f"wrote {path}; start it with: wandb sweep {path}  then  wandb agent <entity>/<project>/<sweep id>")
