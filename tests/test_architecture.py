"""The import rules of docs/architecture.md, enforced on every module's AST (imports inside functions too).

Layers, lowest first: core (rlhf/*.py) < tasks (rlhf/tasks) < stages (sft, reward_model, ppo) and commands
(rlhf/commands) and the reviewers' tool (annotation) < face (rlhf/app, rlhf/sweep). A module may import
its own layer's folder and the layers its rule lists; nothing imports a package named `data`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("sft", "reward_model", "ppo")
PROJECT_ROOTS = ("rlhf", "sft", "reward_model", "ppo", "annotation", "data")


def layer_of_module(dotted: str) -> str:
    """The layer a module (dotted name) belongs to."""
    parts = dotted.split(".")
    if parts[0] in STAGES:
        return f"stage:{parts[0]}"
    if parts[0] == "annotation":
        return "annotation"
    if parts[0] == "data":
        return "data"
    if parts[0] != "rlhf":
        return "external"
    if len(parts) > 1 and parts[1] in ("app", "sweep"):
        return "face"
    if len(parts) > 1 and parts[1] == "commands":
        return "commands"
    if len(parts) > 1 and parts[1] == "tasks":
        return "tasks"
    if len(parts) > 1 and parts[1] == "__main__":
        return "face"  # `python -m rlhf` is the command's door
    return "core"


# layer -> the layers it may import (besides itself and external packages)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "tasks": {"core"},
    "commands": {"core", "tasks"},
    "annotation": {"core"},
    "face": {"core", "tasks", "commands", "annotation", "stage:sft", "stage:reward_model", "stage:ppo"},
    **{f"stage:{stage}": {"core"} for stage in STAGES},
}


def project_modules() -> list[tuple[str, Path]]:
    modules = []
    for root in ("rlhf", *STAGES, "annotation"):
        for path in sorted((REPO / root).rglob("*.py")):
            relative = path.relative_to(REPO).with_suffix("")
            parts = list(relative.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append((".".join(parts), path))
    return modules


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def violations() -> list[str]:
    found = []
    for module, path in project_modules():
        source_layer = layer_of_module(module)
        for line, name in imported_modules(path, module):
            if name.split(".")[0] not in PROJECT_ROOTS:
                continue
            target_layer = layer_of_module(name)
            where = f"{path.relative_to(REPO)}:{line} imports {name}"
            if target_layer == "data":
                found.append(f"{where}: nothing may import a package named `data`")
            elif target_layer != source_layer and target_layer not in ALLOWED[source_layer]:
                found.append(f"{where}: {source_layer} may not import {target_layer}")
    return found


def test_every_module_follows_the_layer_rules():
    assert violations() == []


def test_the_rules_catch_what_they_forbid(tmp_path, monkeypatch):
    """The checker itself: each forbidden arrow in a scratch tree is reported."""
    for folder, text in {
        "rlhf/bad_core.py": "from ppo.trainer import train\n",
        "rlhf/tasks/bad_task.py": "import rlhf.commands.evaluate\n",
        "sft/bad_stage.py": "from reward_model.kwise import KwiseCollator\n",
        "ppo/bad_ppo.py": "def f():\n    from rlhf.tasks.tiny.judge import gold_score\n",
        "annotation/bad_tool.py": "from data.judge import gold_score\n",
        "rlhf/commands/ok.py": "from rlhf.tasks import task_generator\nfrom rlhf.config import load_config\n",
    }.items():
        path = tmp_path / folder
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in ("rlhf", "rlhf/tasks", "rlhf/commands", "sft", "reward_model", "ppo", "annotation"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = violations()
    assert len(found) == 5, found
    assert any("core may not import stage:ppo" in v for v in found)
    assert any("tasks may not import commands" in v for v in found)
    assert any("stage:sft may not import stage:reward_model" in v for v in found)
    assert any("stage:ppo may not import tasks" in v for v in found)
    assert any("a package named `data`" in v for v in found)


@pytest.mark.parametrize(
    "module, layer",
    [
        ("rlhf.config", "core"),
        ("rlhf.tasks.tiny.judge", "tasks"),
        ("rlhf.commands.evaluate", "commands"),
        ("rlhf.app.pipeline", "face"),
        ("rlhf.sweep.runner", "face"),
        ("ppo.trainer", "stage:ppo"),
        ("annotation.server", "annotation"),
        ("data.judge", "data"),
        ("torch.nn", "external"),
    ],
)
def test_layer_of_module(module, layer):
    assert layer_of_module(module) == layer
