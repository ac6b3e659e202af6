"""Judges and reward functions as plug-ins: a spec string -> a checked callable.

    rlhf eval ... --judge tiny                          # a built-in task's judge, by name
    rlhf eval ... --judge my_project.judges:helpfulness  # package.module:function
    rlhf eval ... --judge path/to/judge.py:score         # a file and a function in it

A judge is `fn(prompt: str, response: str) -> float`. The built-in tasks register their judges here by
name, as spec strings, so the core never imports a task: it imports whatever a spec names only when a
command asks for it. Every way a spec can be wrong (no colon, a missing module or file, a missing or
non-callable attribute, a non-number returned) is a ConfigError naming the spec, so the CLI exits 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from rlhf.errors import ConfigError

# name -> spec of the built-in tasks' gold judges (the tasks themselves live in rlhf/tasks/)
BUILTIN_JUDGES: dict[str, str] = {
    "tiny": "rlhf.tasks.tiny.judge:gold_score",
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
    spec = BUILTIN_JUDGES.get(spec, spec) if field.endswith("judge") else spec
    if not isinstance(spec, str) or ":" not in spec:
        known = ", ".join(sorted(BUILTIN_JUDGES))
        raise ConfigError(
            f"bad {field} {spec!r}: expected a built-in name ({known}), package.module:function or "
            "path/to/file.py:function"
        )
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


def checked_score(function: Callable[..., Any], spec: str, field: str) -> Judge:
    """Wrap `function` so a non-number (or NaN) result stops with a message naming the spec."""

    def score(prompt: str, response: str) -> float:
        value = function(prompt, response)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value)):
            raise ConfigError(f"bad {field} '{spec}': returned {value!r} ({type(value).__name__}); expected a float")
        return float(value)

    score.__name__ = getattr(function, "__name__", "score")
    return score


def load_judge(spec: Optional[str], field: str = "judge") -> Optional[Judge]:
    """A gold judge from its spec (None, '' or 'none': no judge)."""
    if spec in NO_JUDGE:
        return None
    return checked_score(load_callable(spec, field), spec, field)
