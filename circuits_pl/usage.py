"""The front door: how the user called circuits_pl, the short help, and the answers that need no
Lightning (``--help``, no command, an unknown command).

Plain Python only (no torch, no Lightning): ``python -m circuits_pl --help`` answers about as fast as a
bare ``python -c pass`` instead of after seconds of imports through LightningCLI. The
facts repeated here (built-in tasks, option defaults) are checked against the real registry and
parser by tests/test_front_door.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# One line each, in the order the short help lists them.
COMMAND_HELP = {
    "fit": "train --task NAME, many seeds at once; writes lightning_logs/version_N/",
    "validate": "validation MSE of a trained run: --ckpt_path RUN/checkpoints/last.ckpt",
    "test": "test MSE of a trained run: --ckpt_path CKPT",
    "predict": "predictions.csv (inputs, target, prediction) of a trained run: --ckpt_path CKPT",
    "inspect": "read the circuit a run learned: inspect RUN_DIR_OR_CKPT",
    "report": "the success-rate study: every task, many seeds, Wilson 95% intervals",
}
COMMANDS = tuple(COMMAND_HELP)

# circuits_pl.tasks.BUILTIN_TASKS as (name, target formula, default layer sizes); kept static so the
# help needs no torch (tasks.py imports it). A test checks this copy against the registry.
BUILTIN_TASKS = (
    ("identity", "x", "1-2-1"),
    ("negate", "-x", "1-2-1"),
    ("abs", "|x|", "1-2-1"),
    ("add", "a + b", "2-2-1"),
    ("subtract", "a - b", "2-2-1"),
    ("min", "min(a, b)", "2-3-1"),
    ("max", "max(a, b)", "2-3-1"),
)

# The options a user reaches for first; the defaults are checked against the real parser by a test.
KEY_OPTIONS = (
    ("--task NAME", "the task to learn (with --ckpt_path: the checkpoint's)"),
    ("--model.members K", "seeds trained at once (default 64)"),
    ("--model.lr LR", "SGD learning rate (default 0.1)"),
    ('--model.layer_sizes "[2, 3, 1]"', "layer widths, input to output (default: the task's)"),
    ("--trainer.max_steps N", "SGD step budget (default 20000)"),
    ("--stop.when best|all|never", "stop once one member is solved, all are, or never (default best)"),
    ("--config FILE.yaml", "options from a file: configs/*.yaml, or a run's config.yaml"),
    ("--ckpt_path FILE.ckpt", "resume (fit) or evaluate (validate, test, predict) a checkpoint"),
)


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
