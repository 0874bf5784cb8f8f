"""The front door: how the user called circuits_pl, the short help, and the answers that need no
Lightning (``--help``, no command, an unknown command).

Plain Python only (no torch, no Lightning): ``python -m circuits_pl --help`` answers about as fast as a
bare ``python -c pass`` instead of after seconds of imports through LightningCLI. Its facts (commands,
built-in tasks, option defaults) come from circuits_pl/short_help.py, which circuits_pl.cli generates
from the real command root and task registry (tests/test_front_door.py checks it is current).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# The commands, tasks and key options (with their defaults) as the real command root and task registry
# have them: generated into short_help.py (circuits_pl.cli.short_help_module; a test checks it is current).
from circuits_pl.short_help import BUILTIN_TASKS, COMMAND_HELP, KEY_OPTIONS  # noqa: E402

COMMANDS = tuple(COMMAND_HELP)


# Old spellings of options whose thing has fit's name (--model.*, --trainer.*, --sweep.*): still accepted,
# with one line on stderr saying the new one.
RENAMED = {
    "inspect": {"--member": "--model.member"},
    "report": {"--members": "--model.members", "--max_steps": "--trainer.max_steps", "--seed": "--seed_everything",
               "--success_mse": "--model.success_mse", "--engine": "--model.engine", "--sizes": "--sweep.sizes",
               "--lrs": "--sweep.lr", "--init_scales": "--sweep.init_scale"},
}


def current_spelling(command: str, args: Sequence[str], say: bool = True) -> list[str]:
    """``args`` of ``command`` with every old spelling of :data:`RENAMED` replaced by its current one
    (``--member 3`` -> ``--model.member 3``, ``--lrs=0.1`` -> ``--sweep.lr=0.1``); ``say``: one line on
    stderr per old spelling used."""
    renamed, said = RENAMED.get(command, {}), set()
    given = {str(a).partition("=")[0] for a in args}
    for old, new in renamed.items():
        if old in given and new in given:  # which would win is the parser's order: refuse, not guess
            from circuits_pl.errors import CircuitsError

            raise CircuitsError(f"{old} and {new} are both given: {old} is the old spelling of {new}; give it once")
    out = []
    for arg in args:
        name, eq, value = str(arg).partition("=")
        if name in renamed:
            if say and name not in said:
                print(f"circuits_pl: {name} is deprecated; use {renamed[name]}", file=sys.stderr)
                said.add(name)
            arg = renamed[name] + eq + value
        out.append(arg)
    return out


def program_name() -> str:
    """``circuits-pl`` when run through the console script, else ``python -m circuits_pl``."""
    return "circuits-pl" if Path(sys.argv[0]).name == "circuits-pl" else "python -m circuits_pl"


def short_help() -> str:
    """What ``--help`` prints: the commands, the tasks, the key options and where the rest is."""
    prog = program_name()
    lines = [
        f"usage: {prog} {{{','.join(COMMANDS)}}} [OPTIONS]",
        "",
        "Train tiny bias-free ReLU MLPs, many seeds (members) at once, and read the exact circuit each learned.",
        "",
        "commands:",
        *(f"  {name:<10} {text}" for name, text in COMMAND_HELP.items()),
        "",
        "tasks (--task NAME, or your own function: --task package.module:function):",
        *(f"  {name:<10} {formula:<11} {sizes} net" for name, formula, sizes in BUILTIN_TASKS),
        "",
        "options of fit (and of validate, test, predict):",
        *(f"  {option:<32} {text}" for option, text in KEY_OPTIONS),
        "",
        "examples:",
        f"  {prog} fit --task min",
        f"  {prog} fit --task abs --model.members 128 --stop.when never",
        f"  {prog} inspect lightning_logs/version_0",
        "",
        f"every option: {prog} fit --help   (and validate, test, predict, inspect, report --help); --version",
    ]
    return "\n".join(lines)


def version() -> str:
    """The installed package's version (its metadata: pyproject.toml's, as pip installed it)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("circuits_pl")
    except PackageNotFoundError:
        return "(not installed: pip install -e . in the repository)"


def unknown_command(name: str) -> str:
    return f"unknown command {name!r}; valid commands: {', '.join(COMMANDS)}"


def front_door(argv: Sequence[str]) -> int | None:
    """Answer what needs no Lightning and return the exit status; ``None``: a command to run.

    No command at all prints the short help and a one-line error and returns 2, as LightningCLI
    and argparse do for a missing subcommand: a script that forgot its command must fail.
    """
    if not argv:
        print(short_help())
        print(f"error: no command given; give one of {', '.join(COMMANDS)}, e.g. {program_name()} fit --task min",
              file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(short_help())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"circuits_pl {version()}")
        return 0
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"error: {unknown_command(argv[0])}", file=sys.stderr)
        return 2
    return None
