"""The built-in tasks: each a package with a generator (`make_task(out_dir, seed)`) and a gold judge.

    rlhf data make-task --task tiny --out data/tiny

A task registers here by name; its judge is registered in `rlhf.plugins.BUILTIN_JUDGES` under the same
name, so `--judge tiny` and `pipeline.judge: tiny` reach it through the same plug-in door as a user's
`package.module:function`. `reviewers.py` holds the simulated reviewers, which rank by any judge. The
tasks' generated files live in the top-level data/ folder as data, never as code.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from rlhf.errors import ConfigError

# name -> "module:function" of the task's generator
TASK_GENERATORS: dict[str, str] = {
    "tiny": "rlhf.tasks.tiny.generator:make_task",
    "lists": "rlhf.tasks.lists.generator:make_task",
}


def task_generator(name: str) -> Callable[..., dict[str, Any]]:
    """The `make_task(out_dir, seed=..., task_file=...)` of a built-in task."""
    if name not in TASK_GENERATORS:
        raise ConfigError(f"unknown task '{name}' (available: {', '.join(sorted(TASK_GENERATORS))})")
    module_name, _, function = TASK_GENERATORS[name].partition(":")
    return getattr(importlib.import_module(module_name), function)
