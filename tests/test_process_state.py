"""Importing circuits_pl changes no process state, and cli.main() called from Python gives back what it changed.

Both run in a fresh interpreter: the state checked (warning filters, signal handlers, umask, environment)
is the whole process's, and pytest's own would blur it.
"""

import subprocess
import sys
import textwrap

LIBRARY_MODULES = """
import importlib, pkgutil, circuits_pl
names = [m.name for m in pkgutil.walk_packages(circuits_pl.__path__, "circuits_pl.")
         if m.name != "circuits_pl.__main__"]
"""

SNAPSHOT = """
import logging, os, signal, warnings
from pathlib import Path
import torch

def umask():
    for line in open("/proc/self/status"):
        if line.startswith("Umask:"):
            return line.split()[1]

def snapshot():
    return {"warning filters": list(warnings.filters),
            "signal handlers": {int(s): signal.getsignal(s) for s in signal.valid_signals()
                                if s not in (signal.SIGKILL, signal.SIGSTOP)},
            "umask": umask(), "environment": dict(os.environ), "torch threads": torch.get_num_threads(),
            "logging filters": {name: list(getattr(logger, "filters", []))
                                for name, logger in logging.root.manager.loggerDict.items()}}

def changed(before, after):
    after["logging filters"] = {name: after["logging filters"][name] for name in before["logging filters"]}
    return sorted(f"{key}: {before[key]} -> {after[key]}" for key in before if before[key] != after[key])
"""


def _run(code: str, tmp_path) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_importing_circuits_pl_changes_no_process_state(tmp_path):
    out = _run(SNAPSHOT + LIBRARY_MODULES + """
import ast
# first every other module circuits_pl imports (anywhere in its source): their own import-time state is theirs
for path in Path(circuits_pl.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
        imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        for name in imported:
            if not name.startswith("circuits_pl"):
                try:
                    importlib.import_module(name)
                except ImportError:  # optional (numba, submitit)
                    pass
before = snapshot()
for name in names:
    importlib.import_module(name)
print(len(names), changed(before, snapshot()))
""", tmp_path)
    count, _, changes = out.strip().partition(" ")
    assert int(count) > 40  # every module of the package, readout included
    assert changes == "[]", changes


def test_main_called_from_python_restores_what_it_changed_after_an_interrupt(tmp_path):
    """An interrupted fit run by ``cli.main(args)`` inside a Python process: the caller gets back its own SIGINT
    handler (not SIG_IGN), warning filters, Lightning's logger filters and torch thread count."""
    out = _run(SNAPSHOT + """
import os, signal, threading, time
from pathlib import Path

def mine(signum, frame):
    print("caller's handler ran")

signal.signal(signal.SIGINT, mine)
torch.set_num_threads(2)
import circuits_pl.cli

def interrupt_once_training():
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not Path("lightning_logs/version_0/metrics.csv").exists():
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)

before = snapshot()
threading.Thread(target=interrupt_once_training, daemon=True).start()
try:
    circuits_pl.cli.main(["fit", "--task", "add", "--model.members", "4", "--trainer.max_steps", "100000000",
                          "--stop.when", "never", "--figures", "false", "--trainer.val_check_interval", "50"])
except SystemExit as stop:
    print("exit", stop.code)
print("changed", changed(before, snapshot()))
print("handler is the caller's", signal.getsignal(signal.SIGINT) is mine)
""", tmp_path)
    assert "exit 130" in out, out
    assert "changed []" in out and "handler is the caller's True" in out, out
