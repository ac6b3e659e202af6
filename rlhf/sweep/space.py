"""Trials from a search space: grid expansion, seeded random draws, Optuna distributions, override text.

Grid search is the Cartesian product of the value lists, in the order the parameters are written with
the last one varying fastest (as nested loops would). Random search and guided search both draw through
Optuna: random search asks an in-memory study with a seeded `RandomSampler`, so trial k's values depend
only on the seed and k (a bigger budget extends the list, it does not reshuffle it); guided search asks a
persistent study (see rlhf/sweep.py). Optuna's categorical distributions hold scalars only, so a choice
among lists (e.g. LoRA target modules) is asked as the index of the choice and mapped back.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from rlhf.sweep.spec import ParameterSpec

_SCALAR_TYPES = (type(None), bool, int, float, str)


def format_override(key: str, value: Any) -> str:
    """`key=value` text that `rlhf.config.parse_override` reads back to exactly `value`."""
    from rlhf.config import parse_override

    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else {"inf": ".inf", "-inf": "-.inf"}.get(repr(value), ".nan")
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value)  # JSON is YAML flow style
    else:
        text = str(value)
    candidate = f"{key}={text}"
    try:
        if parse_override(candidate)[1] == value:
            return candidate
    except Exception:  # noqa: BLE001 - any parse problem means the text needs quoting
        pass
    return f"{key}={json.dumps(str(value))}"  # a double-quoted YAML string keeps "true", "1e-3", "a: b" as text


def trial_overrides(params: dict[str, Any]) -> list[str]:
    return [format_override(key, value) for key, value in params.items()]


def grid_trials(parameters: tuple[ParameterSpec, ...] | list[ParameterSpec]) -> list[dict[str, Any]]:
    """Every combination of the parameters' values; the last parameter varies fastest."""
    keys = [spec.key for spec in parameters]
    return [dict(zip(keys, combination)) for combination in itertools.product(*(spec.values for spec in parameters))]


def grid_size(parameters: tuple[ParameterSpec, ...] | list[ParameterSpec]) -> int:
    return math.prod(len(spec.values) for spec in parameters)


def _needs_index(spec: ParameterSpec) -> bool:
    return not all(isinstance(value, _SCALAR_TYPES) for value in spec.values)


def optuna_distributions(parameters: tuple[ParameterSpec, ...] | list[ParameterSpec]) -> dict[str, Any]:
    """ParameterSpec -> optuna distribution, keyed by the dotted config key."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions: dict[str, Any] = {}
    for spec in parameters:
        if spec.kind == "values":
            choices = tuple(range(len(spec.values))) if _needs_index(spec) else tuple(spec.values)
            distributions[spec.key] = CategoricalDistribution(choices)
        elif spec.kind == "int":
            distributions[spec.key] = IntDistribution(
                int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1)
            )
        else:
            distributions[spec.key] = FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return distributions


def decode_optuna_params(
    parameters: tuple[ParameterSpec, ...] | list[ParameterSpec], optuna_params: dict[str, Any]
) -> dict[str, Any]:
    """Optuna's values -> config values, in the sweep file's parameter order."""
    decoded = {}
    for spec in parameters:
        value = optuna_params[spec.key]
        decoded[spec.key] = spec.values[value] if spec.kind == "values" and _needs_index(spec) else value
    return decoded


def encode_optuna_params(
    parameters: tuple[ParameterSpec, ...] | list[ParameterSpec], params: dict[str, Any]
) -> dict[str, Any]:
    """Config values -> Optuna's values (the inverse of decode_optuna_params), to re-queue a trial."""
    encoded = {}
    for spec in parameters:
        value = params[spec.key]
        encoded[spec.key] = spec.values.index(value) if spec.kind == "values" and _needs_index(spec) else value
    return encoded


def random_trials(
    parameters: tuple[ParameterSpec, ...] | list[ParameterSpec], count: int, seed: int
) -> list[dict[str, Any]]:
    """`count` independent draws from the space; the same seed gives the same list (and its prefixes)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    distributions = optuna_distributions(parameters)
    return [decode_optuna_params(parameters, study.ask(distributions).params) for _ in range(count)]
