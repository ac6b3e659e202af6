"""The sweep file: its typed schema, the search-space entries, and validation with errors that name the key.

    rlhf sweep --config configs/sweeps/ppo_kl.yaml --dry-run

A sweep file is loaded by the same machinery as a stage config (`rlhf.config.load_config` with the
`SweepConfig` schema), so it gets `base:` inheritance, `key=value` overrides from the command line and
unknown-key errors with a suggestion for free. Only `parameters` is free-form (its keys are dotted config
keys of the swept stage); it is checked here entry by entry: a list is a grid axis (or a categorical choice
in random/Optuna search), a mapping with `type` is a distribution (uniform, loguniform, int, choice). Paths
in a sweep file (base_config, output_dir, accelerate_config) are relative to the working directory, as in
the pipeline config and in every override.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from rlhf.errors import ConfigError

STAGES = ("sft", "rm", "ppo", "pipeline")
METHODS = ("grid", "random", "optuna")
DIRECTIONS = ("maximize", "minimize")
LAUNCHERS = ("local", "accelerate", "slurm")
DISTRIBUTION_TYPES = ("uniform", "loguniform", "int", "choice")
DISTRIBUTION_FIELDS = ("type", "low", "high", "values", "step", "log")
# Keys the sweep sets itself for every trial: a parameter or fixed override may not set them.
SWEEP_OWNED_KEYS = ("run.output_dir", "run.name")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class SlurmSection:
    partition: Optional[str] = None  # --partition (None: the cluster's default)
    time: str = "04:00:00"  # --time limit of one trial
    gpus_per_task: int = 1  # --gpus-per-task (0: CPU-only trials)
    cpus_per_task: int = 8  # --cpus-per-task
    mem: Optional[str] = None  # --mem, e.g. 64G
    sbatch_options: list[str] = field(default_factory=list)  # more #SBATCH lines, e.g. "--account=myteam"
    setup: list[str] = field(default_factory=list)  # shell lines run before each trial (module load, venv)


@dataclass
class FrontierSection:
    kl: Optional[str] = None  # metric on the x axis of the reward-KL frontier (None: a metric named like *kl*)
    reward: Optional[str] = None  # metric on the y axis (None: the sweep metric when it is maximised)


@dataclass
class SweepConfig:
    name: str = MISSING  # sweep name: the wandb group of its trials and the default directory name
    stage: str = "ppo"  # sft | rm | ppo | pipeline: the `rlhf <stage>` command each trial runs
    base_config: str = MISSING  # the stage's config file every trial starts from
    command: Optional[list[str]] = None  # program to run instead of `python -m rlhf <stage>` (tests, wrappers)
    validate_keys: bool = True  # check every trial's keys against the stage schema before anything runs
    overrides: list[str] = field(default_factory=list)  # fixed `key=value` overrides shared by all trials
    method: str = "grid"  # grid | random | optuna
    parameters: Any = None  # {dotted.key: [values] | {type: uniform|loguniform|int|choice, low, high, values}}
    metric: str = MISSING  # key of the trial's summary.json to optimise, e.g. eval/ppo/gold_score
    direction: str = "maximize"  # maximize | minimize
    budget: Optional[int] = None  # most trials to run (grid: None runs the whole grid)
    seed: int = 0  # seed of random search and of Optuna's sampler
    optuna_startup_trials: int = 5  # random trials before Optuna's TPE sampler starts modelling (TPE's default: 10)
    output_dir: Optional[str] = None  # sweep directory (None: runs/sweeps/<name>)
    launcher: str = "local"  # local | accelerate | slurm
    max_parallel: int = 1  # trials running at once (slurm: the array's % throttle)
    gpus_per_trial: int = 0  # local/accelerate: give each running trial its own CUDA_VISIBLE_DEVICES slice (0: off)
    accelerate_config: Optional[str] = None  # `accelerate launch --config_file` (launcher accelerate, or inside slurm)
    timeout_s: Optional[float] = None  # kill a local trial that runs longer than this and record it as failed
    frontier: FrontierSection = field(default_factory=FrontierSection)
    slurm: SlurmSection = field(default_factory=SlurmSection)


@dataclass(frozen=True)
class ParameterSpec:
    """One swept key. kind "values" is a finite list (grid axis / categorical); the others are ranges."""

    key: str
    kind: str  # values | uniform | loguniform | int
    values: tuple = ()
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file, with its defaults filled in."""

    source: str
    name: str
    stage: str
    base_config: str
    command: Optional[tuple[str, ...]]
    validate_keys: bool
    overrides: tuple[str, ...]
    method: str
    parameters: tuple[ParameterSpec, ...]
    metric: str
    direction: str
    budget: Optional[int]
    seed: int
    optuna_startup_trials: int
    output_dir: Path
    launcher: str
    max_parallel: int
    gpus_per_trial: int
    accelerate_config: Optional[str]
    timeout_s: Optional[float]
    frontier_kl: Optional[str]
    frontier_reward: Optional[str]
    slurm: dict

    def parameter(self, key: str) -> ParameterSpec:
        return next(p for p in self.parameters if p.key == key)

    def fingerprint(self) -> dict:
        """The settings that decide what each trial is: a resumed sweep must match them.

        Budget, parallelism, launcher, output and the metric may change between runs of one sweep
        (they decide how many trials run and how they are read, not what a trial is). Optuna's study
        is created with a direction, so for Optuna the direction is part of it.
        """
        fingerprint = {
            "stage": self.stage,
            "base_config": self.base_config,
            "command": list(self.command) if self.command else None,
            "overrides": list(self.overrides),
            "method": self.method,
            "parameters": [_spec_to_dict(p) for p in self.parameters],
            "seed": self.seed,
        }
        if self.method == "optuna":
            fingerprint["direction"] = self.direction
        return fingerprint


def _spec_to_dict(spec: ParameterSpec) -> dict:
    return {
        "key": spec.key,
        "kind": spec.kind,
        "values": list(spec.values),
        "low": spec.low,
        "high": spec.high,
        "step": spec.step,
        "log": spec.log,
    }


def _suggest(word: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def _choice(value: str, key: str, choices: tuple[str, ...], source: str) -> None:
    if value not in choices:
        raise ConfigError(
            f"bad value for '{key}' in sweep file {source}: {value!r}; expected one of "
            f"{', '.join(choices)}{_suggest(str(value), choices)}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_parameter(key: str, raw: Any, source: str) -> ParameterSpec:
    """A `parameters` entry -> ParameterSpec; every error names `parameters.<key>` and the file."""
    where = f"'parameters.{key}' in sweep file {source}"
    if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
        raise ConfigError(
            f"bad parameter name {key!r} in sweep file {source}: expected a dotted config key like ppo.kl_coef"
        )
    if key in SWEEP_OWNED_KEYS:
        raise ConfigError(f"{where}: {key} is set by the sweep for every trial and cannot be swept")
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{where}: an empty list of values")
        return ParameterSpec(key, "values", tuple(raw))
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: expected a list of values or a distribution {{type: uniform|loguniform|int|choice, ...}}; got "
            f"{raw!r}"
        )
    for field_name in raw:
        if field_name not in DISTRIBUTION_FIELDS:
            raise ConfigError(
                f"unknown field 'parameters.{key}.{field_name}' in sweep file "
                f"{source}{_suggest(str(field_name), DISTRIBUTION_FIELDS)}"
            )
    kind = raw.get("type", "choice" if "values" in raw else None)
    if kind is None:
        raise ConfigError(f"{where}: a distribution needs 'type' (one of {', '.join(DISTRIBUTION_TYPES)})")
    if kind not in DISTRIBUTION_TYPES:
        raise ConfigError(
            f"bad value for 'parameters.{key}.type' in sweep file {source}: {kind!r}; expected one of "
            f"{', '.join(DISTRIBUTION_TYPES)}{_suggest(str(kind), DISTRIBUTION_TYPES)}"
        )
    if kind == "choice":
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: type choice needs a non-empty list 'values'")
        return ParameterSpec(key, "values", tuple(values))
    for bound in ("low", "high"):
        if bound not in raw:
            raise ConfigError(f"{where}: type {kind} needs '{bound}'")
        if not _is_number(raw[bound]):
            raise ConfigError(
                f"bad value for 'parameters.{key}.{bound}' in sweep file {source}: {raw[bound]!r}; expected a number"
            )
    low, high = raw["low"], raw["high"]
    if not low < high:
        raise ConfigError(f"{where}: needs low < high; got low={low}, high={high}")
    step = raw.get("step")
    if step is not None and (not _is_number(step) or step <= 0):
        raise ConfigError(
            f"bad value for 'parameters.{key}.step' in sweep file {source}: {step!r}; expected a positive number"
        )
    log = bool(raw.get("log", kind == "loguniform"))
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0; got low={low}")
    if kind == "int":
        for bound_name, bound in (("low", low), ("high", high), ("step", step)):
            if bound is not None and int(bound) != bound:
                raise ConfigError(
                    f"bad value for 'parameters.{key}.{bound_name}' in sweep file {source}: {bound!r}; type int "
                    "needs whole numbers"
                )
        if log and low <= 0:
            raise ConfigError(f"{where}: an int range with log: true needs low > 0; got low={low}")
        return ParameterSpec(key, "int", low=int(low), high=int(high), step=int(step) if step else 1, log=log)
    if log and step is not None:
        raise ConfigError(f"{where}: 'step' cannot be combined with a log scale")
    return ParameterSpec(
        key,
        "loguniform" if log else "uniform",
        low=float(low),
        high=float(high),
        step=float(step) if step else None,
        log=log,
    )


def _override_key(text: str) -> str:
    return (text[2:] if text.startswith("--") else text).split("=", 1)[0].strip()


def load_sweep(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and check a sweep file (plus `key=value` overrides of its own fields)."""
    from rlhf.config import load_config, parse_override

    source = str(path)
    # `parameters` is free-form: its overrides replace entries instead of merging into them (a list
    # cannot merge into a distribution), so they are applied here rather than by load_config
    parameter_overrides = [
        parse_override(text) for text in overrides if _override_key(text).split(".", 1)[0] == "parameters"
    ]
    cfg = load_config(
        path,
        [text for text in overrides if _override_key(text).split(".", 1)[0] != "parameters"],
        schema_cls=SweepConfig,
    )
    _choice(cfg.stage, "stage", STAGES, source)
    _choice(cfg.method, "method", METHODS, source)
    _choice(cfg.direction, "direction", DIRECTIONS, source)
    _choice(cfg.launcher, "launcher", LAUNCHERS, source)
    if not NAME_PATTERN.match(cfg.name):
        raise ConfigError(
            f"bad value for 'name' in sweep file {source}: {cfg.name!r}; use letters, digits, '_', '-' and '.' (it "
            "names a directory and a wandb group)"
        )
    raw_parameters = OmegaConf.to_container(cfg.parameters) if cfg.parameters is not None else None
    for key, value in parameter_overrides:
        if key == "parameters":
            raw_parameters = value
        else:
            raw_parameters = {**(raw_parameters or {}), key.split(".", 1)[1]: value}
    if not isinstance(raw_parameters, dict) or not raw_parameters:
        raise ConfigError(
            f"sweep file {source} needs 'parameters': a mapping of dotted config keys to value lists or distributions"
        )
    parameters = tuple(parse_parameter(key, raw, source) for key, raw in raw_parameters.items())
    if cfg.method == "grid":
        ranges = [p for p in parameters if p.kind != "values"]
        if ranges:
            raise ConfigError(
                f"'parameters.{ranges[0].key}' in sweep file {source} is a {ranges[0].kind} range: method grid needs "
                "lists of values (use method random or optuna for ranges)"
            )
    if cfg.budget is not None and cfg.budget < 1:
        raise ConfigError(f"bad value for 'budget' in sweep file {source}: {cfg.budget}; expected at least 1")
    if cfg.method != "grid" and cfg.budget is None:
        raise ConfigError(f"sweep file {source}: method {cfg.method} needs a 'budget' (the number of trials)")
    if cfg.max_parallel < 1:
        raise ConfigError(
            f"bad value for 'max_parallel' in sweep file {source}: {cfg.max_parallel}; expected at least 1"
        )
    if cfg.gpus_per_trial < 0:
        raise ConfigError(
            f"bad value for 'gpus_per_trial' in sweep file {source}: {cfg.gpus_per_trial}; expected 0 or more"
        )
    if cfg.method == "optuna" and cfg.launcher == "slurm":
        raise ConfigError(
            f"sweep file {source}: method optuna chooses each trial from the results so far, which a SLURM array "
            "cannot do; "
            "use launcher local or accelerate (e.g. run `rlhf sweep` inside one SLURM allocation)"
        )
    if cfg.command is not None and not list(cfg.command):
        raise ConfigError(f"bad value for 'command' in sweep file {source}: an empty list")
    for text in cfg.overrides:
        key, _ = parse_override(text)
        if key in SWEEP_OWNED_KEYS:
            raise ConfigError(f"'overrides' in sweep file {source} sets {key}: the sweep sets it for every trial")
        if key in {p.key for p in parameters}:
            raise ConfigError(f"'overrides' in sweep file {source} sets {key}, which is also a swept parameter")
    if not Path(cfg.base_config).is_file():
        raise ConfigError(
            f"bad value for 'base_config' in sweep file {source}: {cfg.base_config} is not a file (paths are "
            f"relative to the working directory {os.getcwd()})"
        )
    return Sweep(
        source=source,
        name=cfg.name,
        stage=cfg.stage,
        base_config=cfg.base_config,
        command=tuple(cfg.command) if cfg.command is not None else None,
        validate_keys=cfg.validate_keys,
        overrides=tuple(cfg.overrides),
        method=cfg.method,
        parameters=parameters,
        metric=cfg.metric,
        direction=cfg.direction,
        budget=cfg.budget,
        seed=cfg.seed,
        optuna_startup_trials=cfg.optuna_startup_trials,
        output_dir=Path(cfg.output_dir or Path("runs") / "sweeps" / cfg.name),
        launcher=cfg.launcher,
        max_parallel=cfg.max_parallel,
        gpus_per_trial=cfg.gpus_per_trial,
        accelerate_config=cfg.accelerate_config,
        timeout_s=cfg.timeout_s,
        frontier_kl=cfg.frontier.kl,
        frontier_reward=cfg.frontier.reward,
        slurm=OmegaConf.to_container(cfg.slurm),
    )
