"""The `rlhf` command: a thin dispatcher to each subcommand's `main(argv) -> int`.

    rlhf --help
    rlhf sft --config configs/tiny/sft.yaml train.learning_rate=1e-4
    accelerate launch --config_file configs/accelerate/ddp.yaml -m rlhf ppo --config configs/tiny/ppo.yaml

Subcommands are imported lazily so `rlhf --help` is instant and a stage's heavy imports (torch, trl,
deepspeed) load only when that stage runs. User errors (config, data) print one line and exit 2.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module" with a `main(argv) -> int`, or "module:function"; one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("rlhf.app.stages:sft_main", "stage 1: supervised fine-tuning on demonstrations (trl.SFTTrainer)"),
    "rm": ("rlhf.app.stages:rm_main", "stage 2: train a reward model on rankings or pairs; `rm score` scores rows"),
    "ppo": ("rlhf.app.stages:ppo_main", "stage 3: PPO against the reward model with a KL penalty to the SFT reference"),
    "pipeline": ("rlhf.app.pipeline", "run every stage end to end (make-task, sft, generate, rank, rm, ppo, eval)"),
    "eval": ("rlhf.commands.evaluate", "compare policies: RM and gold scores, KL, win rates with intervals"),
    "generate": ("rlhf.commands.generate", "sample K responses per prompt into a candidates file"),
    "annotate": ("annotation.cli", "the reviewers' web tool: serve, add-reviewer, export, stats"),
    "sweep": ("rlhf.sweep.runner", "grid, random or Optuna sweeps over config keys"),
    "data": ("rlhf.commands.data", "make the built-in task, validate data, convert public datasets, rank"),
    "model": ("rlhf.modeling", "build the tiny preset model (init-tiny)"),
    "config": ("rlhf.app.schema", "print a resolved config (show)"),
    "check": ("rlhf.app.check", "pre-flight report: tokenizers, one example as each stage sees it, data lengths"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [
        "usage: rlhf <command> [options]",
        "",
        "InstructGPT-style RLHF: SFT -> reward model -> PPO.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ["", "Run `rlhf <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    launched_as_program = argv is None  # tests call main(argv) in-process: never end their process
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from rlhf import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        import difflib

        close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"rlhf: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _, function_name = SUBCOMMANDS[name][0].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"rlhf {name}: not implemented yet", file=sys.stderr)
            return 2
        raise
    from rlhf.distributed import exit_skipping_teardown, shut_down_process_group
    from rlhf.errors import UserError
    from rlhf.processes import start_parent_watchdog

    start_parent_watchdog()  # a sweep's or pipeline's child stops when its parent dies (non-Linux; see there)

    succeeded = False
    try:
        code = int(getattr(module, function_name or "main")(rest) or 0)
        succeeded = True
    except UserError as exc:
        print(f"rlhf {name}: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    finally:  # also after an unexpected exception, which then goes on to print its traceback
        ended_a_process_group = shut_down_process_group(synchronize=succeeded)
    if ended_a_process_group and launched_as_program:
        exit_skipping_teardown(code)  # a launched rank: see there for the abort this avoids
    return code


if __name__ == "__main__":
    sys.exit(main())
