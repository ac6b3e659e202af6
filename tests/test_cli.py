"""The `rlhf` entry point: help lists every subcommand; unknown commands are suggested."""

from __future__ import annotations

import subprocess
import sys

from rlhf.app.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ["sft", "rm", "ppo", "pipeline", "eval", "generate", "annotate", "sweep", "data", "model", "config"]:
        assert f"  {name} " in out
    assert set(SUBCOMMANDS) >= {
        "sft",
        "rm",
        "ppo",
        "pipeline",
        "eval",
        "generate",
        "annotate",
        "sweep",
        "data",
        "model",
        "config",
    }


def test_unknown_command_suggests(capsys):
    assert main(["swep"]) == 2
    assert "did you mean sweep?" in capsys.readouterr().err


def test_console_script_installed():
    result = subprocess.run([sys.executable, "-m", "rlhf", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "pipeline" in result.stdout
