"""Judges and reward functions as plug-ins: a spec string -> a checked callable.

    rlhf eval ... --judge tiny                          # a built-in task's judge, by name
    rlhf eval ... --judge my_project.judges:helpfulness  # package.module:function
    rlhf eval ... --judge path/to/judge.py:score         # a file and a function in it

A judge is `fn(prompt: str, response: str) -> float`, or its batched form `fn(prompts: list[str],
responses: list[str]) -> list[float]` (declared with `@rlhf.plugins.batched` or detected from the first
parameter's list annotation; a plain function may also carry its batched twin as `fn.batch`). A judge
may expose `fn.breakdown(prompt, response) -> dict[str, float]`: its score split into named rules, which
the evaluation report compares across policies. A reward function (`ppo.reward_functions`) has the same
shape. The built-in tasks register their judges here by name, as spec strings, so the core never imports
a task: it imports whatever a spec names only when a command asks for it. Every way a spec can be wrong
(no colon, a missing module or file, a missing or non-callable attribute, a non-number or a wrong-length
list returned) is a ConfigError naming the spec, so the CLI exits 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from rlhf.errors import ConfigError

# name -> spec of the built-in tasks' gold judges (the tasks themselves live in rlhf/tasks/)
BUILTIN_JUDGES: dict[str, str] = {
    "tiny": "rlhf.tasks.tiny.judge:gold_score",
    "lists": "rlhf.tasks.lists.judge:gold_score",
}
NO_JUDGE = (None, "", "none", "null")

Judge = Callable[[str, str], float]


def _import_file(path: Path, spec: str, field: str) -> Any:
    module_name = f"rlhf_plugin_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"bad {field} '{spec}': cannot load {path} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file failed to import; say which
        del sys.modules[module_name]
        raise ConfigError(f"bad {field} '{spec}': importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def load_callable(spec: str, field: str = "judge") -> Callable[..., Any]:
    """`package.module:function` or `path/to/file.py:function` -> the callable; ConfigError otherwise."""
    takes_builtin_names = field.endswith("judge")  # a judge field; reward functions resolve them themselves
    spec = BUILTIN_JUDGES.get(spec, spec) if takes_builtin_names else spec
    if not isinstance(spec, str) or ":" not in spec:
        known = f"a built-in name ({', '.join(sorted(BUILTIN_JUDGES))}), " if takes_builtin_names else ""
        raise ConfigError(f"bad {field} {spec!r}: expected {known}package.module:function or path/to/file.py:function")
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        raise ConfigError(f"bad {field} '{spec}': expected package.module:function or path/to/file.py:function")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"bad {field} '{spec}': file not found: {path}")
        module = _import_file(path, spec, field)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"bad {field} '{spec}': no module named '{exc.name}'") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise ConfigError(f"bad {field} '{spec}': {target} has no attribute '{attribute}'")
    if not callable(function):
        raise ConfigError(f"bad {field} '{spec}': {target}.{attribute} is not callable")
    return function


def _bad_value(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value))


def _annotation_is_sequence(annotation: Any) -> bool:
    """`list[str]`, `Sequence[str]`, `List[str]` (also as strings, under `from __future__ import annotations`)."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    text = text.replace("typing.", "").replace("collections.abc.", "").strip()
    return text.startswith(("list", "List", "Sequence", "tuple", "Tuple", "Iterable", "<class 'list'>"))


def is_batched(function: Callable[..., Any]) -> bool:
    """Whether `function` takes lists (`fn(prompts, responses) -> list[float]`): declared with `@batched`,
    or detected from its first parameter's annotation (`prompts: list[str]`)."""
    declared = getattr(function, "batched", None)
    if declared is not None:
        return bool(declared)
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: plain form
        return False
    return bool(parameters) and _annotation_is_sequence(parameters[0].annotation)


def batched(function: Callable[..., Any]) -> Callable[..., Any]:
    """Declare a judge or reward function batched: `fn(prompts: list[str], responses: list[str]) -> list[float]`."""
    function.batched = True  # type: ignore[attr-defined]
    return function


class Scorer:
    """A checked judge or reward function: one (`scorer(prompt, response)`) or many (`scorer.scores(...)`).

    The spec may name either form; the other is derived. A function may carry a batched twin as its
    `batch` attribute, and a `breakdown(prompt, response) -> dict[str, float]` attribute that splits its
    score into named rules (the evaluation report shows where the reward model and the judge part ways
    by rule). Every result is checked, so a wrong return type stops with a message naming the spec.
    """

    def __init__(self, function: Callable[..., Any], spec: str, field: str):
        self.spec, self.field = spec, field
        self.name = getattr(function, "__name__", None) or spec.rpartition(":")[2]
        self._batch: Optional[Callable[..., Any]] = None
        self._one: Optional[Callable[..., Any]] = None
        if is_batched(function):
            self._batch = function
        else:
            self._one = function
            twin = getattr(function, "batch", None)
            self._batch = twin if callable(twin) else None
        breakdown = getattr(function, "breakdown", None)
        self._breakdown = breakdown if callable(breakdown) else None

    @property
    def is_batched(self) -> bool:
        return self._batch is not None

    @property
    def has_breakdown(self) -> bool:
        return self._breakdown is not None

    def _error(self, message: str) -> ConfigError:
        return ConfigError(f"bad {self.field} '{self.spec}': {message}")

    def _checked(self, value: Any) -> float:
        if _bad_value(value):
            raise self._error(f"returned {value!r} ({type(value).__name__}); expected a float")
        return float(value)

    def __call__(self, prompt: str, response: str) -> float:
        if self._one is not None:
            return self._checked(self._one(prompt, response))
        return self.scores([prompt], [response])[0]

    def scores(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Scores of aligned lists: one call of the batched form when there is one."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if self._batch is None:
            return [self(prompt, response) for prompt, response in zip(prompts, responses)]
        values = self._batch(list(prompts), list(responses))
        if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):  # a tensor or an array
            values = values.tolist()
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise self._error(
                f"the batched form returned {type(values).__name__}; expected a list of {len(prompts)} floats"
            )
        values = list(values)
        if len(values) != len(prompts):
            raise self._error(f"the batched form returned {len(values)} scores for {len(prompts)} responses")
        return [self._checked(value) for value in values]

    def breakdown(self, prompt: str, response: str) -> Optional[dict[str, float]]:
        """Named parts of the score (None when the function exposes no `breakdown`)."""
        if self._breakdown is None:
            return None
        parts = self._breakdown(prompt, response)
        if not isinstance(parts, dict):
            raise self._error(f"breakdown returned {type(parts).__name__}; expected a dict of rule -> float")
        for rule, value in parts.items():
            if _bad_value(value):
                raise self._error(f"breakdown['{rule}'] is {value!r}; expected a float")
        return {str(rule): float(value) for rule, value in parts.items()}


def checked_score(function: Callable[..., Any], spec: str, field: str) -> Scorer:
    """Wrap `function` so a non-number (or NaN) result stops with a message naming the spec."""
    return Scorer(function, spec, field)


def load_judge(spec: Optional[str], field: str = "judge") -> Optional[Scorer]:
    """A gold judge from its spec (None, '' or 'none': no judge)."""
    if spec in NO_JUDGE:
        return None
    return Scorer(load_callable(spec, field), spec, field)


def load_reward_function(spec: str, field: str = "ppo.reward_functions") -> Scorer:
    """A rule-based reward term `fn(prompt, response) -> float` (or its batched form) from its spec.

    Built-in judge names are accepted too (a task's gold judge as a reward term is how one measures an
    oracle upper bound)."""
    if spec in NO_JUDGE:
        raise ConfigError(f"bad {field} {spec!r}: expected package.module:function or path/to/file.py:function")
    return Scorer(load_callable(BUILTIN_JUDGES.get(spec, spec), field), spec, field)
