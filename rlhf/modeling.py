"""Model and tokenizer loading: the one place that calls `from_pretrained` or builds LoRA.

    rlhf model init-tiny --out runs/tiny/base --texts data/tiny/sft_train.jsonl

Choices: every tokenizer leaves here with a pad token distinct from EOS (a shared pad/eos makes the
trainers mask the real EOS, so the policy never learns to stop); when one has to be added the model's
embeddings are resized to match. Dropout is off by default because RL compares logprobs of the same
tokens across forward passes, and dropout noise shows up as a fake policy ratio / KL. A scalar-head model
reads its score at the last non-pad token (transformers' sequence classification does this when
`pad_token_id` is set), and a freshly created head is initialised N(0, 1/sqrt(hidden+1)) as in
"Fine-Tuning Language Models from Human Preferences". The tiny preset is a small Llama with a byte-level
BPE tokenizer trained locally, saved as an ordinary HF directory, so tests and the quickstart take the
same `from_pretrained` path as a hub id.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn

PAD_TOKEN = "<pad>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    return DTYPES[dtype]


def _field(cfg: Any, name: str, default: Any = None) -> Any:
    """Read `name` from a ModelConfig / DictConfig / dict, or return the default."""
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


# --------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str, revision: Optional[str] = None, trust_remote_code: bool = False):
    """Load a tokenizer, remember the generation config's EOS ids (when the directory has one) and make
    sure it has a pad token that is none of the ids a response can end with."""
    from transformers import AutoTokenizer

    from rlhf.tokens import GENERATION_EOS_ATTR

    tokenizer = _loaded(
        AutoTokenizer.from_pretrained, name_or_path, "tokenizer", revision=revision, trust_remote_code=trust_remote_code
    )
    setattr(tokenizer, GENERATION_EOS_ATTR, read_generation_eos_ids(name_or_path, revision, trust_remote_code))
    ensure_pad_token(tokenizer)
    return tokenizer


def read_generation_eos_ids(
    name_or_path: str, revision: Optional[str] = None, trust_remote_code: bool = False
) -> list[int]:
    """`generation_config.json`'s eos_token_id as a list (Llama 3 lists two); empty when there is none."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # no generation_config.json (a tokenizer-only directory)
        return []
    eos = config.eos_token_id
    if eos is None:
        return []
    return [int(token) for token in (eos if isinstance(eos, (list, tuple)) else [eos])]


def ensure_pad_token(tokenizer) -> bool:
    """Add a dedicated pad token when there is none or it is an id a response ends with (the EOS, a
    generation-config EOS, the chat turn terminator); returns whether one was added."""
    from rlhf.tokens import conventions

    stop_ids = set(conventions(tokenizer).stop_ids)  # raises when there is no EOS at all
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in stop_ids:
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.rlhf_added_pad = True
    return True


def check_tokenizer_matches(model, tokenizer, where: str = "model") -> None:
    """Fail clearly when a tokenizer has ids the model's embedding table cannot hold."""
    from rlhf.errors import ConfigError

    weight = model.get_input_embeddings().weight
    vocab_rows = getattr(weight, "ds_shape", weight.shape)[0]  # a ZeRO-3 partitioned weight holds 0 rows
    if len(tokenizer) > vocab_rows:
        raise ConfigError(
            f"tokenizer mismatch for {where}: tokenizer has {len(tokenizer)} tokens but the model's embedding has "
            f"{vocab_rows} rows; use the tokenizer saved with this model (model.tokenizer)"
        )


def check_same_tokenizers(paths: dict[str, str], revision: Optional[str] = None, trust_remote_code: bool = False):
    """Load the tokenizer of every model (role -> path) and stop (ConfigError, exit 2) unless all are
    identical: same vocabulary, special tokens and chat template. Call before loading any weights, so no
    embedding has been resized yet. Returns {role: tokenizer}."""
    from rlhf.errors import ConfigError
    from rlhf.tokens import tokenizer_difference

    loaded: dict[str, Any] = {}
    by_path: dict[str, Any] = {}
    first_role, first_path = next(iter(paths.items()))
    for role, path in paths.items():
        if str(path) not in by_path:
            try:
                by_path[str(path)] = load_tokenizer(
                    str(path), revision if role == first_role else None, trust_remote_code
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load the {role} model's tokenizer from {path}: {exc}") from None
        loaded[role] = by_path[str(path)]
        difference = tokenizer_difference(loaded[first_role], loaded[role])
        if difference:
            raise ConfigError(
                f"tokenizer mismatch: the {role} model {path} does not use the {first_role} model's tokenizer "
                f"({first_path}): {difference}; every model must share one tokenizer"
            )
    return loaded


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def disable_dropout(model: nn.Module) -> nn.Module:
    """Zero every dropout probability: in modules and in the config fields attention code reads."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    if config is not None:
        for name in (
            "attention_dropout",
            "hidden_dropout",
            "resid_pdrop",
            "embd_pdrop",
            "attn_pdrop",
            "dropout",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
        ):
            if isinstance(getattr(config, name, None), float):
                setattr(config, name, 0.0)
    return model


def _match_tokenizer(model, tokenizer, where: str = "model") -> None:
    """Grow the embeddings by the pad token `ensure_pad_token` added (and nothing else: a tokenizer with
    more tokens than the model is someone else's); record pad and every stop id in the configs."""
    if tokenizer is None:
        return
    from rlhf.tokens import conventions

    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        if not (getattr(tokenizer, "rlhf_added_pad", False) and len(tokenizer) - 1 <= rows):
            check_tokenizer_matches(model, tokenizer, where)
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        stop_ids = list(conventions(tokenizer).stop_ids)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]


def load_causal_lm(
    model_cfg_or_path: Any,
    tokenizer=None,
    dtype: str | torch.dtype | None = None,
    disable_dropout_: Optional[bool] = None,
):
    """A causal LM from a hub id or directory (`model_cfg_or_path`: a path or a `model` config section)."""
    from transformers import AutoModelForCausalLM

    path = (
        model_cfg_or_path
        if isinstance(model_cfg_or_path, (str, os.PathLike))
        else _field(model_cfg_or_path, "name_or_path")
    )
    dtype = dtype if dtype is not None else _field(model_cfg_or_path, "dtype", "float32")
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype)}
    revision = _field(model_cfg_or_path, "revision")
    if revision:
        kwargs["revision"] = revision
    if _field(model_cfg_or_path, "trust_remote_code"):
        kwargs["trust_remote_code"] = True
    if _field(model_cfg_or_path, "attn_implementation"):
        kwargs["attn_implementation"] = _field(model_cfg_or_path, "attn_implementation")
    reject_scalar_model(str(path), revision)
    model = _loaded(AutoModelForCausalLM.from_pretrained, str(path), "causal LM", **kwargs)
    _match_tokenizer(model, tokenizer, str(path))
    if disable_dropout_ if disable_dropout_ is not None else _field(model_cfg_or_path, "disable_dropout", True):
        disable_dropout(model)
    return model


def _loaded(load, name_or_path: str, what: str, **kwargs: Any):
    """`load(name_or_path, **kwargs)`; a path that is no model (or a hub id that cannot be fetched) is the
    user's error: one line naming it, not transformers' OSError about repo ids."""
    from rlhf.errors import ConfigError

    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_local and not path.exists():
        raise ConfigError(f"{name_or_path}: no such model directory (needed for the {what})")
    try:
        return load(name_or_path, **kwargs)
    except OSError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{name_or_path}: cannot load the {what} from it ({first_line})") from None


def reject_scalar_model(name_or_path: str, revision: Optional[str] = None) -> None:
    """A reward or value model directory is not a policy: its LM head would be random (transformers only warns)."""
    from transformers import AutoConfig

    from rlhf.errors import ConfigError

    config = _loaded(AutoConfig.from_pretrained, name_or_path, "causal LM", revision=revision)
    scalar = [name for name in (config.architectures or []) if name.endswith("ForSequenceClassification")]
    if scalar:
        raise ConfigError(
            f"{name_or_path}: a scalar (reward or value) model ({scalar[0]}), not a causal LM; a policy needs an "
            "SFT or PPO policy directory"
        )


def init_scalar_head(head: nn.Linear, hidden_size: int) -> None:
    """N(0, 1/sqrt(hidden+1)) as in Ziegler et al.; the bias (if any) starts at 0."""
    nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden_size + 1))
    if head.bias is not None:
        nn.init.zeros_(head.bias)


def scalar_head(model) -> nn.Module:
    """The score head of a sequence-classification model (`score` for Llama-likes, `classifier` elsewhere).

    Under a LoRA adapter (peft's SEQ_CLS task) the head is a trainable copy in a `ModulesToSaveWrapper`;
    the wrapper is returned, since calling it applies the active adapter's copy."""
    for name in ("score", "classifier", "v_head"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear) or isinstance(getattr(head, "original_module", None), nn.Linear):
            return head
    raise ValueError(f"cannot find the scalar head of {type(model).__name__}")


def load_scalar_model(
    model_cfg_or_path: Any,
    tokenizer=None,
    dtype: str | torch.dtype | None = None,
    disable_dropout_: Optional[bool] = None,
):
    """A model with a 1-output scalar head (reward or value model); a new head gets the Ziegler init."""
    from transformers import AutoModelForSequenceClassification

    path = (
        model_cfg_or_path
        if isinstance(model_cfg_or_path, (str, os.PathLike))
        else _field(model_cfg_or_path, "name_or_path")
    )
    dtype = dtype if dtype is not None else _field(model_cfg_or_path, "dtype", "float32")
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "num_labels": 1}
    if _field(model_cfg_or_path, "revision"):
        kwargs["revision"] = _field(model_cfg_or_path, "revision")
    if _field(model_cfg_or_path, "trust_remote_code"):
        kwargs["trust_remote_code"] = True
    model, info = _loaded(
        AutoModelForSequenceClassification.from_pretrained,
        str(path),
        "scalar model",
        output_loading_info=True,
        **kwargs,
    )
    head = scalar_head(model)
    if any(
        key.endswith(("score.weight", "classifier.weight", "v_head.weight")) for key in info.get("missing_keys", [])
    ):
        init_scalar_head(head, model.config.hidden_size)
    _match_tokenizer(model, tokenizer, str(path))
    if tokenizer is None and model.config.pad_token_id is None:
        raise ValueError("a scalar model needs pad_token_id to find the last real token; pass the tokenizer")
    if disable_dropout_ if disable_dropout_ is not None else _field(model_cfg_or_path, "disable_dropout", True):
        disable_dropout(model)
    return model


# --------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------


def apply_lora(model, lora_cfg: Any, task_type: str = "CAUSAL_LM"):
    """Wrap `model` in a new LoRA adapter (peft); only adapter (and, for scalar models, head) params train."""
    from peft import LoraConfig, get_peft_model

    targets = list(_field(lora_cfg, "target_modules", ["all-linear"]))
    peft_config = LoraConfig(
        r=int(_field(lora_cfg, "r", 8)),
        lora_alpha=int(_field(lora_cfg, "alpha", 16)),
        lora_dropout=float(_field(lora_cfg, "dropout", 0.0)),
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type=task_type,
    )
    return get_peft_model(model, peft_config)


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def merge_lora(model):
    """Fold a LoRA adapter into the base weights and return the plain model (no-op for plain models)."""
    return model.merge_and_unload() if is_peft_model(model) else model


def save_model(model, tokenizer, out_dir: str | os.PathLike, merge: bool = True) -> Path:
    """Save an HF model directory (adapter merged when `merge`) with its tokenizer, atomically."""
    from rlhf.files import atomic_dir

    with atomic_dir(out_dir) as tmp:
        to_save = merge_lora(model) if merge else model
        to_save.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------------
# The tiny preset
# --------------------------------------------------------------------------------------------------

TINY_DEFAULTS = dict(
    vocab_size=1024, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, max_position_embeddings=256
)
FALLBACK_TEXTS = [
    "User: Tell me about the sea.\nAssistant: Hi! The sea is salty. Waves move. Hope this helps.",
    "User: What do you know about cats?\nAssistant: Hello! Cats purr. Cats like naps. Have a nice day.",
]


def texts_from_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Every string value of every row in JSONL files (prompts, completions, responses) as training text."""
    texts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    collect(json.loads(line))
    return texts


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained locally; special tokens <unk>, <s>, </s>, <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", PAD_TOKEN]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=PAD_TOKEN
    )


def init_tiny(
    out_dir: str | os.PathLike,
    texts: Optional[Iterable[str]] = None,
    vocab_size: int = TINY_DEFAULTS["vocab_size"],
    hidden_size: int = TINY_DEFAULTS["hidden_size"],
    num_layers: int = TINY_DEFAULTS["num_layers"],
    num_heads: int = TINY_DEFAULTS["num_heads"],
    intermediate_size: int = TINY_DEFAULTS["intermediate_size"],
    max_position_embeddings: int = TINY_DEFAULTS["max_position_embeddings"],
    seed: int = 0,
) -> Path:
    """Build a tiny Llama and its tokenizer from scratch and save both as an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(texts if texts is not None else FALLBACK_TEXTS, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return save_model(model, tokenizer, out_dir, merge=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf model", description="Model utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("init-tiny", help="build the tiny Llama preset with a locally trained BPE tokenizer")
    tiny.add_argument("--out", required=True, help="output directory (an HF model directory)")
    tiny.add_argument("--texts", nargs="*", default=[], help="JSONL files whose strings train the tokenizer")
    for name, default in TINY_DEFAULTS.items():
        tiny.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    texts = texts_from_files(args.texts) if args.texts else None
    out = init_tiny(
        args.out,
        texts,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_position_embeddings,
        seed=args.seed,
    )
    from transformers import AutoModelForCausalLM

    n_params = count_parameters(AutoModelForCausalLM.from_pretrained(out))
    print(f"tiny model ({n_params / 1e6:.2f}M parameters) written to {out}")
    return 0
