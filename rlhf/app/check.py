"""`rlhf check`: a pre-flight report before hours of training.

    rlhf check --config configs/tiny/ppo.yaml
    rlhf check --config configs/tiny/pipeline.yaml run.output_dir=runs/tiny --json

For a stage config (sft, rm or ppo: named by `--stage` or guessed from the file) or a pipeline config
(every stage's resolved config, with models that do not exist yet replaced by the one they will be trained
from), it reports:
- `tokenizers`: each model's tokenizer conventions (BOS, EOS, turn terminator, every stop id, pad, chat
  template), measured by `rlhf.tokens` exactly as the stages will use them;
- `identity`: whether the policy, reference, reward and value tokenizers are identical (vocabulary, special
  tokens, template) -- a difference is a hard error;
- `example`: one prompt rendered and tokenised as SFT, `rlhf generate`, the reward model, PPO and eval see
  it, with the token a response ends on (where its score is read);
- `lengths`: the data's token lengths against `data.max_length` / `data.max_prompt_length` and how many
  rows would be truncated or skipped;
- `dtypes`: each model's checkpoint dtype, the dtype it is loaded in and the mixed-precision setting;
- `memory`: each stage's estimated peak per process by component and phase (`rlhf.memory`: weights,
  gradients, optimiser states, KV cache, activations) under `--accelerate` (processes, ZeRO stage,
  offload; default one process), and whether it fits a `--device-gib` accelerator (a warning if not).
`build_report` returns these sections as a dict; `render_text` prints it. Exit status 2 when `problems`
is not empty (a hard mismatch).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig

from rlhf.errors import ConfigError, UserError

STAGE_NAMES = ("sft", "rm", "ppo")
ROLES = ("policy", "reference", "reward", "value")
STAGE_VIEWS = {  # which stages see a prompt, per kind of config checked
    "sft": ["sft", "generate"],
    "rm": ["generate", "rm training", "reward statistics"],
    "ppo": ["ppo rollout", "rm score in ppo", "eval"],
}


# --------------------------------------------------------------------------------------------------
# What to check: models and data of a stage or pipeline config
# --------------------------------------------------------------------------------------------------


def _exists(path: Optional[str]) -> bool:
    return bool(path) and Path(path).exists()


def stage_plan(stage: str, cfg: DictConfig) -> dict[str, Any]:
    """{"models": {role: path}, "data": [(kind, path)], "cfg": cfg} of one stage config."""
    policy = cfg.model.tokenizer or cfg.model.name_or_path
    if stage == "ppo":
        from ppo.models import model_paths

        models = model_paths(cfg)
        data = [("prompts", cfg.data.train_file), ("prompts", cfg.data.eval_file)]
    elif stage == "rm":
        models = {"reward": policy}
        data = [("preferences", cfg.data.train_file), ("preferences", cfg.data.eval_file)]
    else:
        models = {"policy": policy}
        data = [("sft", cfg.data.train_file), ("sft", cfg.data.eval_file)]
    return {"models": models, "data": [(kind, path) for kind, path in data if path], "cfg": cfg}


def guess_stage(config_file: Optional[str], cfg: DictConfig) -> str:
    name = Path(config_file or "").stem
    for stage in STAGE_NAMES:
        if name == stage or name.endswith(("_" + stage, "-" + stage)):
            return stage
    if cfg.ppo.get("reward_model_path"):
        return "ppo"
    raise ConfigError(f"cannot tell which stage {config_file} configures; pass --stage sft|rm|ppo")


def pipeline_plans(pipeline_cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Each training stage's plan under a pipeline config. A model a stage has not trained yet is replaced
    by the model it will be trained from (the RM and value model from the SFT policy, that from the base),
    so the check runs before the first stage."""
    from rlhf.app.pipeline import Pipeline
    from rlhf.app.schema import load_config

    pipeline = Pipeline(pipeline_cfg)
    out = pipeline.out
    sft_model = out / "sft" / "model"
    standing = {  # a model path -> what stands in for it until it exists
        str(out / "rm" / "model"): str(sft_model),
        str(sft_model): pipeline.base_model,
    }

    def resolve(path: str) -> str:
        while path in standing and not _exists(path):
            path = standing[path]
        return path

    plans = {}
    for stage in STAGE_NAMES:
        cfg = load_config(
            pipeline_cfg.pipeline[f"{stage}_config"], pipeline.stage_config_overrides(stage), require_complete=False
        )
        plan = stage_plan(stage, cfg)
        plan["models"] = {role: resolve(str(path)) for role, path in plan["models"].items()}
        if stage == "rm":
            plan["data"] = [(kind, path) for kind, path in plan["data"] if _exists(path)]  # rankings come later
        plans[stage] = plan
    return plans


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _load_tokenizers(models: dict[str, str], problems: list[str]) -> dict[str, Any]:
    from rlhf.modeling import load_tokenizer

    tokenizers: dict[str, Any] = {}
    for role, path in models.items():
        try:
            tokenizers[role] = load_tokenizer(str(path))
        except (OSError, ValueError) as exc:
            problems.append(f"{role}: cannot load a tokenizer from {path} ({str(exc).splitlines()[0]})")
    return tokenizers


def _by_path(models: dict[str, str], roles) -> dict[str, list[str]]:
    """path -> the roles loaded from it (the reference is usually the policy, the value model the RM)."""
    grouped: dict[str, list[str]] = {}
    for role in roles:
        grouped.setdefault(str(models[role]), []).append(role)
    return grouped


def tokenizer_section(models: dict[str, str], tokenizers: dict[str, Any]) -> dict[str, Any]:
    from rlhf.tokens import Encoder

    section = {}
    for path, roles in _by_path(models, tokenizers).items():
        tokenizer = tokenizers[roles[0]]
        conv = Encoder.of(tokenizer).conventions
        section[", ".join(roles)] = {
            "path": path,
            "vocabulary": len(tokenizer),
            "bos_added": conv.tokens["prefix"],
            "eos": conv.tokens["eos"],
            "turn_end": conv.tokens["turn_end"],
            "stop_tokens": conv.tokens["stop"],
            "pad": conv.tokens["pad"],
            "chat_template": conv.has_chat_template,
        }
    return section


def identity_section(models: dict[str, str], tokenizers: dict[str, Any], problems: list[str]) -> dict[str, str]:
    from rlhf.tokens import tokenizer_difference

    if not tokenizers:
        return {}
    first_role = next(iter(tokenizers))
    section = {}
    for role, tokenizer in tokenizers.items():
        difference = tokenizer_difference(tokenizers[first_role], tokenizer)
        section[role] = "identical" if difference is None else f"DIFFERS from {first_role}: {difference}"
        if difference:
            problems.append(
                f"tokenizer mismatch: the {role} model {models[role]} does not use the {first_role} model's "
                f"tokenizer ({models[first_role]}): {difference}"
            )
    return section


def _rows(kind: str, path: str) -> list[dict]:
    if kind == "preferences":
        from reward_model.preference_data import load_preference_pairs

        return load_preference_pairs(path)
    from rlhf.data import load_rows

    return load_rows(path, kind)[0]


def _prompt_and_response(kind: str, row: dict) -> tuple[Any, Any]:
    if kind == "sft":
        if row.get("messages"):
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            return messages[:-1], messages[-1:]
        return row["prompt"], row["completion"]
    if kind == "preferences":
        return row["prompt"], row["chosen"]
    return row["prompt"], None


def example_section(encoder, kind: str, row: dict, stages: list[str]) -> dict[str, Any]:
    prompt, response = _prompt_and_response(kind, row)
    prompt_ids = encoder.prompt_ids(prompt)
    section: dict[str, Any] = {
        "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False),
        "rendered": encoder.render_prompt(prompt),
        "prompt_ids": prompt_ids,
        "prompt_tokens": encoder.tokenizer.convert_ids_to_tokens(prompt_ids),
        "seen_identically_by": stages,
    }
    if response is not None:
        response_ids = encoder.response_ids(prompt, response, prompt_ids)
        section["response_ids"] = response_ids
        section["score_read_at"] = encoder.tokenizer.convert_ids_to_tokens(response_ids[-1:])[0]
    else:
        section["response_ends_at"] = encoder.tokenizer.convert_ids_to_tokens([encoder.terminator(prompt)])[0]
    return section


def _distribution(lengths: list[int]) -> dict[str, float]:
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def length_section(encoder, kind: str, path: str, rows: list[dict], cfg: DictConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": str(path), "rows": len(rows)}
    if not rows:
        return entry
    prompts = [_prompt_and_response(kind, row)[0] for row in rows]
    prompt_lengths = [len(encoder.prompt_ids(prompt)) for prompt in prompts]
    entry["prompt_tokens"] = _distribution(prompt_lengths)
    if kind == "prompts":
        limit = cfg.data.max_prompt_length
        entry["max_prompt_length"] = limit
        entry["skipped_over_max_prompt_length"] = sum(length > limit for length in prompt_lengths)
        entry["max_new_tokens"] = cfg.ppo.max_new_tokens
        return entry
    if kind == "sft":
        lengths = [len(encoder.sequence(*_prompt_and_response(kind, row))) for row in rows]
        entry["sequence_tokens"] = _distribution(lengths)
        entry["max_length"] = cfg.data.max_length
        entry["truncated_over_max_length"] = sum(length > cfg.data.max_length for length in lengths)
    else:  # preference pairs: a pair with either side over max_length is left out
        lengths = [
            max(len(encoder.sequence(row["prompt"], row[side])) for side in ("chosen", "rejected")) for row in rows
        ]
        entry["pair_tokens"] = _distribution(lengths)
        entry["max_length"] = cfg.data.max_length
        entry["pairs_left_out_over_max_length"] = sum(length > cfg.data.max_length for length in lengths)
    return entry


def template_warnings(plans: dict[str, dict[str, Any]], tokenizers: dict[str, Any]) -> list[str]:
    """SFT settings under which SFT renders a prompt unlike the other stages (which use the template for
    message lists only): allowed, but the policy is then trained on prompts unlike those PPO gives it."""
    if "sft" not in plans or not tokenizers:
        return []
    mode = plans["sft"]["cfg"].sft.use_chat_template
    has_template = bool(getattr(next(iter(tokenizers.values())), "chat_template", None))
    if mode == "never" and has_template:
        return [
            "sft.use_chat_template=never renders conversations as plain text, while the reward model, PPO and eval "
            "render message prompts with the tokenizer's chat template; use auto, or give every stage plain prompts"
        ]
    if mode == "always" and has_template:
        return [
            "sft.use_chat_template=always wraps plain prompt/completion rows in the chat template, while plain-"
            "string prompts of the reward model, PPO and eval are encoded as plain text; give those as messages"
        ]
    return []


def dtype_section(models: dict[str, str], cfg: DictConfig) -> dict[str, Any]:
    section = {}
    for path, roles in _by_path(models, models).items():
        checkpoint = None
        config_file = Path(path) / "config.json"
        if config_file.is_file():
            saved = json.loads(config_file.read_text(encoding="utf-8"))
            checkpoint = saved.get("dtype") or saved.get("torch_dtype")
        section[", ".join(roles)] = {
            "checkpoint": checkpoint,
            "loaded_as": cfg.model.dtype,
            "mixed_precision": cfg.train.precision,
        }
    return section


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


def memory_report(
    plans: dict[str, dict[str, Any]], accelerate_config: Optional[str], device_gib: float, warnings: list[str]
) -> dict[str, Any]:
    """Each stage's memory estimate, from the shapes of the models the plan will load (a pipeline's stand-ins
    included); a stage that does not fit, or whose shape cannot be read, adds a warning."""
    from rlhf.memory import ModelShape, memory_section

    section: dict[str, Any] = {}
    for stage, plan in plans.items():
        models = plan["models"]
        try:
            shape = ModelShape.from_pretrained(models.get("policy") or models["reward"])
            reward = ModelShape.from_pretrained(models["reward"]) if stage == "ppo" else None
            section[stage] = memory_section(plan["cfg"], stage, accelerate_config, device_gib, shape, reward)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.append(f"{stage}: no memory estimate ({str(exc).splitlines()[0] if str(exc) else exc!r})")
            continue
        if not section[stage]["fits"]:
            warnings.append(
                f"{stage}: estimated peak {section[stage]['peak_gib']} GiB per process "
                f"({section[stage]['peak_phase']}) does not fit a {device_gib:g} GiB accelerator with 2 GiB spare"
            )
    return section


def build_report(
    plans: dict[str, dict[str, Any]],
    source: str,
    accelerate_config: Optional[str] = None,
    device_gib: float = 80.0,
) -> dict[str, Any]:
    """The pre-flight report of one or more stage plans: {section: content}; `problems` lists hard errors."""
    from rlhf.tokens import Encoder

    problems: list[str] = []
    models: dict[str, str] = {}
    for plan in plans.values():  # a later stage's path wins: PPO's reward model is the one that must match
        models.update({role: str(path) for role, path in plan["models"].items()})
    models = {role: models[role] for role in sorted(models, key=ROLES.index)}
    tokenizers = _load_tokenizers(models, problems)
    report: dict[str, Any] = {
        "config": {"source": source, "stages": list(plans)},
        "tokenizers": tokenizer_section(models, tokenizers),
        "identity": identity_section(models, tokenizers, problems),
        "example": {},
        "lengths": [],
        "dtypes": {},
    }
    if tokenizers:
        encoder = Encoder.of(next(iter(tokenizers.values())))
        stages_seeing = list(dict.fromkeys(view for stage in plans for view in STAGE_VIEWS[stage]))
        for stage, plan in plans.items():
            for kind, path in plan["data"]:
                try:
                    rows = _rows(kind, path)
                except UserError as exc:  # a bad data file is reported with the rest, not raised
                    problems.append(str(exc))
                    continue
                if rows and not report["example"]:
                    report["example"] = example_section(encoder, kind, rows[0], stages_seeing)
                entry = length_section(encoder, kind, path, rows, plan["cfg"])
                report["lengths"].append({"stage": stage, **entry})
                if rows and entry.get("skipped_over_max_prompt_length") == len(rows):
                    problems.append(
                        f"{path}: every prompt is longer than data.max_prompt_length={entry['max_prompt_length']} "
                        "tokens: PPO would stop"
                    )
    for stage, plan in plans.items():
        report["dtypes"][stage] = dtype_section(plan["models"], plan["cfg"])
    warnings = template_warnings(plans, tokenizers)
    report["memory"] = memory_report(plans, accelerate_config, device_gib, warnings)
    report["warnings"] = warnings
    report["problems"] = problems
    return report


def check_config(
    config_file: Optional[str],
    overrides: list[str],
    stage: Optional[str] = None,
    accelerate_config: Optional[str] = None,
    device_gib: float = 80.0,
) -> dict[str, Any]:
    """The report for a stage config (sft, rm, ppo) or a pipeline config."""
    from rlhf.app.schema import is_pipeline_config, load_config

    if is_pipeline_config(config_file):
        from rlhf.app.pipeline import load_pipeline_config

        plans = pipeline_plans(load_pipeline_config(config_file, overrides))
        return build_report(plans, str(config_file), accelerate_config, device_gib)
    cfg = load_config(config_file, overrides, require_complete=False)
    stage = stage or guess_stage(config_file, cfg)
    return build_report({stage: stage_plan(stage, cfg)}, str(config_file), accelerate_config, device_gib)


def _lines(value: Any, indent: int, out: list[str], key: str = "") -> None:
    pad = "  " * indent
    label = f"{key}: " if key else ""
    if isinstance(value, dict):
        if key:
            out.append(f"{pad}{key}:")
            indent += 1
        for name, item in value.items():
            _lines(item, indent, out, str(name))
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        if key:
            out.append(f"{pad}{key}:")
        for item in value:
            lines: list[str] = []
            _lines(item, indent + 2, lines)
            out.extend([f"{pad}  - {lines[0].lstrip()}"] + lines[1:])
    else:
        text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append(f"{pad}{label}{text}")


def render_text(report: dict[str, Any]) -> str:
    out: list[str] = []
    for section, content in report.items():
        out.append(f"== {section} ==")
        if section in ("problems", "warnings"):
            label = "ERROR" if section == "problems" else "WARNING"
            out.extend([f"  {label} {item}" for item in content] or ["  none"])
        else:
            _lines(content, 1, out)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: Optional[list[str]] = None, print_fn: Callable[[str], None] = print) -> int:
    from rlhf.config import add_config_arguments, split_wandb_style

    parser = argparse.ArgumentParser(
        prog="rlhf check",
        description="Pre-flight report: tokenizers, one example as each stage sees it, lengths, memory.",
    )
    add_config_arguments(parser)
    parser.add_argument("--stage", choices=STAGE_NAMES, help="which stage a stage config is for (default: guessed)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--accelerate", help="the accelerate config the run will be launched with (memory estimate; default: 1 process)"
    )
    parser.add_argument("--device-gib", type=float, default=80.0, help="memory of one accelerator, GiB (default 80)")
    args = parser.parse_args(split_wandb_style(list(argv or [])))
    report = check_config(args.config, args.overrides, args.stage, args.accelerate, args.device_gib)
    print_fn(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render_text(report))
    return 2 if report["problems"] else 0
