"""One typed config for every stage: schema, YAML inheritance, dotted overrides, validation.

    rlhf config show --config configs/tiny/ppo.yaml ppo.kl_coef=0.02 train.learning_rate=1e-5

This module is the machinery and the sections every stage shares; each stage's own section sits next to
the stage (sft/config.py, reward_model/config.py, ppo/config.py) and rlhf/app/schema.py composes them.

The schema is a tree of dataclasses turned into an OmegaConf structured config, so merging, type
coercion and `key=value` overrides come from OmegaConf. What we add: a YAML file may name a `base:`
file (or a list of them) that it extends; every key is checked against the schema *before* merging so
an unknown key fails with the file or override it came from and the closest valid key; type errors
name the key, the value and the expected type. The resolved config is saved as `config.yaml` in every
run directory and loads back to the same config, so a run can be repeated from that file alone.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlhf.errors import ConfigError

# --------------------------------------------------------------------------------------------------
# Schema. One-line docs per field; defaults that differ from a library's say so.
# --------------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    name: str = "run"  # run name shown in logs and wandb
    output_dir: str = "runs/default"  # this stage run's directory (config.yaml, metrics.jsonl, model)
    seed: int = 42  # global seed: python, numpy, torch (per-rank offsets where sampling must differ)
    resume_mismatch_ok: bool = False  # resume from a checkpoint whose config or inputs differ (see rlhf/runs.py)


@dataclass
class LoraConfig:
    enabled: bool = False  # wrap the model in a peft LoRA adapter
    r: int = 8  # adapter rank
    alpha: int = 16  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = 0.0  # dropout on the adapter input (0 for RL: dropout corrupts logprob ratios)
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # module names or "all-linear"
    merge_on_save: bool = True  # merge the adapter into the base weights when saving the final model


@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # hub id or local directory of the starting model
    tokenizer: Optional[str] = None  # tokenizer hub id or directory (default: name_or_path)
    revision: Optional[str] = None  # hub revision (branch, tag or commit)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"dtype": ("float32", "bfloat16", "float16", "auto")}
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto: weight dtype when loading
    trust_remote_code: bool = False  # allow custom modelling code from the hub
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2 (default: transformers')
    disable_dropout: bool = True  # set every dropout probability to 0 (differs from HF: RL needs it off)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    train_file: Optional[str] = None  # training data: .jsonl/.json/.parquet, a save_to_disk dir or a hub name
    eval_file: Optional[str] = None  # held-out data (default: split eval_fraction off train_file)
    eval_fraction: float = 0.05  # fraction held out when no eval_file is given
    max_length: int = 512  # max tokens of prompt + response
    max_prompt_length: int = 256  # max prompt tokens (PPO skips longer prompts with a count, never cuts them)
    skip_bad_rows: bool = False  # skip invalid rows (and report them) instead of stopping
    max_samples: Optional[int] = None  # use only the first N training rows (for quick runs)


@dataclass
class TrainConfig:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"precision": ("auto", "fp32", "bf16", "fp16")}
    optimizer: str = "adamw_torch"  # transformers optimizer name (adamw_torch, adamw_torch_fused, sgd, ...)
    learning_rate: float = 1e-5  # peak learning rate
    weight_decay: float = 0.0  # decoupled weight decay
    adam_beta1: float = 0.9  # Adam beta1
    adam_beta2: float = 0.999  # Adam beta2
    adam_epsilon: float = 1e-8  # Adam epsilon
    lr_scheduler: str = "linear"  # linear | cosine | constant | constant_with_warmup
    warmup_ratio: float = 0.0  # fraction of steps spent warming up
    per_device_train_batch_size: int = 8  # micro-batch size per process
    per_device_eval_batch_size: int = 16  # eval batch size per process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    num_train_epochs: float = 1.0  # epochs over the training data (ignored when max_steps > 0)
    max_steps: int = -1  # total optimizer steps (-1: use num_train_epochs)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (mixed; auto: bf16 where fast, see rlhf/precision.py)
    gradient_checkpointing: bool = False  # recompute activations in backward to save memory
    max_grad_norm: float = 1.0  # gradient clipping norm (0 disables)
    logging_steps: int = 10  # log every N optimizer steps
    eval_steps: Optional[int] = None  # evaluate every N steps (None: at the end of each epoch)
    save_steps: Optional[int] = None  # checkpoint every N steps (None: at the end only)
    save_total_limit: Optional[int] = 2  # keep at most N checkpoints
    resume_from_checkpoint: Optional[str] = None  # a checkpoint dir, or "latest" for the newest in output_dir
    dataloader_num_workers: int = 0  # DataLoader worker processes


@dataclass
class TrackingConfig:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"wandb_mode": ("auto", "online", "offline", "disabled")}
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])  # any of jsonl, wandb, tensorboard
    project: str = "rlhf"  # wandb project
    entity: Optional[str] = None  # wandb entity (team or user)
    group: Optional[str] = None  # wandb group (sweeps and pipelines set it)
    tags: list[str] = field(default_factory=list)  # wandb tags
    wandb_mode: str = "auto"  # auto (offline when no API key) | online | offline | disabled
    plots: bool = True  # write PNG plots of the logged curves at the end of a run


@dataclass
class GenerateSection:
    k: int = 4  # responses per prompt
    max_new_tokens: int = 24  # response length budget
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    batch_size: int = 32  # prompts per generation batch
    precision: str = (
        "auto"  # auto | fp32 | bf16 | fp16: weights of `rlhf generate` and `rlhf eval` (see train.precision)
    )


@dataclass
class CommonConfig:
    """The sections every stage reads. Each stage adds its own section (sft/config.py, reward_model/config.py,
    ppo/config.py); the `rlhf` command's full schema (rlhf/app/schema.py) holds them all."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    generate: GenerateSection = field(default_factory=GenerateSection)


REPORT_TO_CHOICES = ("jsonl", "wandb", "tensorboard")
BASE_KEY = "base"  # a YAML file's list of files it extends (paths relative to that file)

# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def schema(schema_cls: type = CommonConfig) -> DictConfig:
    """The defaults as a struct-mode OmegaConf config (unknown keys are rejected)."""
    cfg = OmegaConf.structured(schema_cls)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            keys.append(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                keys.extend(_flat_keys(child, path + "."))
    return keys


def _closest(key: str, valid: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    matches = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not matches:  # a right leaf under the wrong section: "ppo.learning_rate" -> train.learning_rate
        by_leaf = [v for v in valid if v.rsplit(".", 1)[-1] == leaf]
        matches = by_leaf or difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
    return f" (did you mean {matches[0]}?)" if matches else ""


def _check_keys(layer: Any, reference: DictConfig, source: str, prefix: str = "") -> None:
    """Reject keys of `layer` (a plain dict) that the schema does not have, before any merge."""
    if not isinstance(layer, dict):
        return
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if not isinstance(reference, DictConfig) or key not in reference.keys():
            raise ConfigError(
                f"unknown config key '{path}' in {source}{_closest(path, _flat_keys(schema_of(reference)))}"
            )
        child = reference._get_node(key)
        if isinstance(child, DictConfig) and isinstance(value, dict):
            _check_keys(value, child, source, path + ".")
        elif isinstance(child, DictConfig) and value is not None and not isinstance(value, dict):
            raise ConfigError(f"config key '{path}' in {source} is a section; got the value {value!r}")


def schema_of(node: DictConfig) -> DictConfig:
    root = node
    while root._get_parent() is not None:
        root = root._get_parent()
    return root


def _merge_layer(cfg: DictConfig, layer: dict, source: str) -> DictConfig:
    _check_keys(layer, cfg, source)
    try:
        return OmegaConf.merge(cfg, layer)
    except TypeError as exc:  # e.g. a list merged onto a section
        raise ConfigError(f"bad value in {source}: {exc}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        expected = ""
        try:
            node_type = OmegaConf.get_type(cfg, key) if key != "?" else None
            if node_type is not None:
                expected = f"; expected {getattr(node_type, '__name__', node_type)}"
        except Exception:  # noqa: BLE001 - the type is a hint only
            pass
        value = _lookup(layer, key)
        reason = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise ConfigError(f"bad value for '{key}' in {source}: {value!r}{expected} ({reason})") from None


def _lookup(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return "?"
    return node


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # noqa: BLE001 - any YAML parse problem is the user's file
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def file_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, str]]:
    """The file's layers in merge order: its bases (recursively) first, then the file itself."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config inheritance cycle: {' -> '.join(str(p) for p in seen + (path,))}")
    body = _read_yaml(path)
    bases = body.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    layers: list[tuple[dict, str]] = []
    for base in bases:
        layers.extend(file_layers((path.parent / base), seen + (path,)))
    layers.append((body, str(path)))
    return layers


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` or `--a.b=value` (as wandb agents pass them) -> ("a.b", typed value)."""
    stripped = text[2:] if text.startswith("--") else text
    if "=" not in stripped:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, _ = stripped.split("=", 1)
    parsed = OmegaConf.from_dotlist([stripped])  # YAML typing: 1e-5 -> float, true -> bool, [a,b] -> list
    return key.strip(), _lookup(OmegaConf.to_container(parsed), key.strip())


def load_config(
    config_file: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    schema_cls: type = CommonConfig,
    require_complete: bool = True,
) -> DictConfig:
    """Schema defaults <- config file (with its bases) <- dotted overrides, then validated."""
    cfg = schema(schema_cls)
    if config_file is not None:
        for layer, source in file_layers(Path(config_file)):
            cfg = _merge_layer(cfg, layer, source)
    for text in overrides:
        key, value = parse_override(text)
        nested: dict = {}
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        cfg = _merge_layer(cfg, nested, f"override '{text}'")
    validate(cfg, require_complete=require_complete)
    return cfg


COMMON_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
COMMON_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd")


def check_train_names(cfg: DictConfig) -> None:
    """train.lr_scheduler and train.optimizer name something transformers has (checked here, not as a
    traceback from TrainingArguments once the models are loaded). Common names skip the import."""
    scheduler = OmegaConf.select(cfg, "train.lr_scheduler", default=None)
    optimizer = OmegaConf.select(cfg, "train.optimizer", default=None)
    if (scheduler is None or scheduler in COMMON_SCHEDULERS) and (optimizer is None or optimizer in COMMON_OPTIMIZERS):
        return
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    for key, value, names in (
        ("train.lr_scheduler", scheduler, [member.value for member in SchedulerType]),
        ("train.optimizer", optimizer, [member.value for member in OptimizerNames]),
    ):
        if value is not None and value not in names:
            close = difflib.get_close_matches(str(value), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"bad value for '{key}': {value!r}{hint}; expected one of {', '.join(names)}")


def validate(cfg: DictConfig, require_complete: bool = True) -> None:
    """Choices, cross-field rules and (optionally) missing required values."""
    if require_complete:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(
                f"missing required config value '{missing[0]}' (set it in the config file or as an override "
                f"{missing[0]}=...)"
            )
    for section in cfg.keys():  # a section's allowed values sit on its dataclass, as CHOICES
        section_type = OmegaConf.get_type(cfg, section)
        for name, choices in getattr(section_type, "CHOICES", {}).items():
            value = OmegaConf.select(cfg, f"{section}.{name}", throw_on_missing=False)
            if value is not None and value not in choices:
                raise ConfigError(f"bad value for '{section}.{name}': {value!r}; expected one of {', '.join(choices)}")
    check_train_names(cfg)
    report_to = OmegaConf.select(cfg, "tracking.report_to")
    for backend in report_to or []:
        if backend not in REPORT_TO_CHOICES:
            raise ConfigError(
                f"bad value in 'tracking.report_to': {backend!r}; expected any of {', '.join(REPORT_TO_CHOICES)}"
            )


def _get_dotted(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig):
            node = OmegaConf.select(node, part, throw_on_missing=False)
        else:
            node = getattr(node, part, None)
        if node is None:
            return None
    return node


def require(cfg: Any, *keys: str) -> None:
    """Stage-specific required values: raise a ConfigError naming the first unset key."""
    for key in keys:
        if _get_dotted(cfg, key) in (None, "", MISSING):
            raise ConfigError(
                f"missing required config value '{key}' (set it in the config file or as an override {key}=...)"
            )


StageConfig = TypeVar("StageConfig")


def typed(cfg: Any, stage_cls: type[StageConfig]) -> StageConfig:
    """The stage's own typed view of a config: its dataclass, holding only the sections it declares.

    Accepts the loaded DictConfig (of the full schema or the stage's own) or an instance already typed,
    so tests and the CLI hand a stage the same object. A value still missing stays MISSING for `require`."""
    if isinstance(cfg, stage_cls):
        return cfg
    if is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    picked = {f.name: cfg[f.name] for f in fields(stage_cls) if f.name in cfg}
    view = OmegaConf.merge(OmegaConf.structured(stage_cls), picked)
    missing = sorted(OmegaConf.missing_keys(view))
    if missing:
        raise ConfigError(
            f"missing required config value '{missing[0]}' (set it in the config file or as an override "
            f"{missing[0]}=...)"
        )
    return OmegaConf.to_object(view)  # type: ignore[return-value]


def as_dict(cfg: Any) -> dict:
    """A config (DictConfig or typed dataclass) as plain nested dicts."""
    if is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, run_dir: str | os.PathLike) -> Path:
    """Write the resolved config as run_dir/config.yaml (atomically) and return its path."""
    from rlhf.files import write_text_atomic

    path = Path(run_dir) / "config.yaml"
    write_text_atomic(path, to_yaml(cfg))
    return path


# --------------------------------------------------------------------------------------------------
# CLI helpers: every stage parses `--config FILE [key=value ...]` the same way.
# --------------------------------------------------------------------------------------------------


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", "-c", help="YAML config file (may name a `base:` it extends)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.learning_rate=1e-5")


def split_wandb_style(argv: list[str]) -> list[str]:
    """wandb agents pass `--key=value`; turn those (when key is dotted) into plain overrides."""
    out = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg and "." in arg.split("=", 1)[0]:
            out.append(arg[2:])
        else:
            out.append(arg)
    return out
