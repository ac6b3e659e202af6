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


PROBE_STAGE = """
import atexit, logging, sys
import torch.distributed as dist

def main(argv):
    dist.init_process_group("gloo", init_method="file://{store}", rank=0, world_size=1)
    atexit.register(lambda: print("interpreter teardown ran", flush=True))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    logging.getLogger("probe").info("logged line")
    sys.stdout.write("last words without a newline")  # block-buffered into a pipe: lost unless flushed
    return int(argv[0])
"""


def run_probe_stage(tmp_path, call: str, code: int) -> subprocess.CompletedProcess:
    """`rlhf probe <code>` in a fresh interpreter, where stage `probe` starts a one-rank gloo process group."""
    (tmp_path / "probe_stage.py").write_text(PROBE_STAGE.format(store=tmp_path / "store"))
    program = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from rlhf.app import cli; "
        f"cli.SUBCOMMANDS['probe'] = ('probe_stage', 'a stage that starts a process group'); {call}"
    )
    return subprocess.run([sys.executable, "-c", program, "probe", str(code)], capture_output=True, text=True)


def test_a_launched_rank_exits_with_its_code_before_interpreter_teardown(tmp_path):
    """A rank that ended a process group leaves through os._exit (teardown could abort it), losing no output."""
    done = run_probe_stage(tmp_path, "sys.exit(cli.main())", code=3)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "last words without a newline"  # flushed, and the atexit handler never printed
    assert "logged line" in done.stderr


def test_main_called_in_process_returns_instead_of_exiting(tmp_path):
    done = run_probe_stage(tmp_path, "code = cli.main(sys.argv[1:]); print(); print('returned', code)", code=3)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["returned 3", "interpreter teardown ran"]
