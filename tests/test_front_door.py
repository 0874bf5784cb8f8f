"""The front door: ``--help``, no command and an unknown command are short, fast answers that import
neither torch nor Lightning; ``import circuits_pl`` is lazy; ``fit --help`` keeps LightningCLI's full help."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import circuits_pl
from circuits_pl import usage
from circuits_pl.__main__ import main
from circuits_pl.tasks import BUILTIN_TASKS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "lightning_fabric", "jsonargparse", "numpy")
QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]


def run_python(*args: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -X importtime ARGS`` on this tree; return the process and every module it imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)
    imported = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert "circuits_pl" in imported, proc.stderr[-2000:]  # the parsing works: the package itself is listed
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:"))
    return proc, imported


def heavy(imported: set[str]) -> list[str]:
    return sorted(m for m in imported if m.split(".")[0] in HEAVY)


def assert_is_the_short_help(text: str) -> None:
    lines = text.splitlines()
    assert 10 < len(lines) < 60, len(lines)
    assert lines[0].startswith("usage: python -m circuits_pl {fit,validate,test,predict,inspect,report}")
    for command in ("fit", "validate", "test", "predict", "inspect", "report"):
        assert any(re.match(rf"  {command} +\S", ln) for ln in lines), f"command {command} not listed"
    for task in BUILTIN_TASKS:  # the real registry
        assert any(re.match(rf"  {task} +\S", ln) for ln in lines), f"task {task} not listed"
    assert "--model.members" in text and "--trainer.max_steps" in text
    assert "python -m circuits_pl fit --help" in text


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_short_complete_and_imports_neither_torch_nor_lightning(flag):
    proc, imported = run_python("-m", "circuits_pl", flag)
    assert proc.returncode == 0 and proc.stderr == ""
    assert_is_the_short_help(proc.stdout)
    assert heavy(imported) == []


def test_no_command_prints_the_short_help_and_fails_with_one_line():
    proc, imported = run_python("-m", "circuits_pl")
    assert proc.returncode == 2
    assert_is_the_short_help(proc.stdout)
    assert proc.stderr.splitlines() == [
        "error: no command given; give one of fit, validate, test, predict, inspect, report, "
        "e.g. python -m circuits_pl fit --task min"]
    assert heavy(imported) == []


def test_unknown_command_is_one_line_exit_2_and_imports_nothing_heavy(tmp_path):
    proc, imported = run_python("-m", "circuits_pl", "train", "--task", "add", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: unknown command 'train'; valid commands: fit, validate, test, predict, inspect, report"]
    assert heavy(imported) == [] and list(tmp_path.iterdir()) == []


def test_import_circuits_pl_imports_neither_torch_nor_lightning():
    proc, imported = run_python("-c", "import circuits_pl; print(circuits_pl.__version__)")
    assert proc.returncode == 0 and proc.stdout.strip() == circuits_pl.__version__
    assert heavy(imported) == []


def test_lazy_exports_are_the_real_objects():
    homes = {"Circuit": "tasks", "CircuitDataModule": "data", "CircuitModule": "module", "ReLUMLP": "network",
             "Task": "tasks", "get_task": "tasks", "task_names": "tasks"}
    assert sorted(circuits_pl.__all__) == sorted(homes)
    for name, home in homes.items():
        assert getattr(circuits_pl, name) is getattr(importlib.import_module(f"circuits_pl.{home}"), name)
    from circuits_pl import CircuitModule, get_task

    assert CircuitModule.__module__ == "circuits_pl.module" and get_task("add").name == "add"
    assert set(circuits_pl.__all__) <= set(dir(circuits_pl))
    with pytest.raises(AttributeError, match="no attribute 'CircuitModel'"):
        circuits_pl.CircuitModel  # noqa: B018
    with pytest.raises(ImportError):
        from circuits_pl import CircuitModel  # noqa: F401


def test_builtin_tasks_of_the_help_match_the_registry():
    registry = tuple((t.name, t.formula, "-".join(map(str, t.layer_sizes))) for t in BUILTIN_TASKS.values())
    assert usage.BUILTIN_TASKS == registry


@pytest.fixture(scope="module")
def fit_help() -> str:
    """``fit --help`` through the entry, in-process: LightningCLI's full help."""
    out = io.StringIO()
    with mock.patch.object(sys, "argv", ["circuits_pl"]), contextlib.redirect_stdout(out), \
            pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code in (0, None)
    return out.getvalue()


def option_block(full_help: str, flag: str) -> str:
    """The help text of one option of the full help (its line and the indented lines after it)."""
    match = re.search(rf"^  (?:-\w \w+, )?{re.escape(flag)}\b.*?(?=^  -)", full_help, re.M | re.S)
    assert match, f"{flag} not in fit --help"
    return " ".join(match.group(0).split())


def test_fit_help_is_still_lightnings_full_help(fit_help):
    assert len(fit_help.splitlines()) > 300
    assert "--model.members" in fit_help and "--trainer.max_epochs" in fit_help


def test_every_option_of_the_short_help_exists_with_the_default_it_quotes(fit_help):
    for option, text in usage.KEY_OPTIONS:
        flag = option.split()[0]
        block = option_block(fit_help, flag)
        quoted = re.search(r"\(default (\S+)\)", text)
        if quoted:
            assert re.search(rf"default: {re.escape(quoted.group(1))}\)", block), (flag, block)
    when = option_block(fit_help, "--stop.when")
    choices = re.search(r"--stop.when \{(.*?)\}", when).group(1).split(",")
    assert "--stop.when " + "|".join(choices) in [o for o, _ in usage.KEY_OPTIONS]


def test_the_help_of_data_steps_per_batch_quotes_the_blocks_runs_really_use(fit_help, run_cli, tmp_path):
    from conftest import results, run_dirs

    from circuits_pl.cadence import Cadence

    block = option_block(fit_help, "--data.steps_per_batch")
    default = int(re.search(r"(\d+) with the defaults", block).group(1))
    run_cli("fit", "--task", "identity", "--trainer.max_steps", 1000, *QUIET)  # every other option at its default
    (run,) = run_dirs(tmp_path)
    assert results(run)["data"]["steps_per_batch"] == default
    # the other blocks it quotes: from K members on, and under DDP
    few, many = (int(v) for v in re.search(r"(\d+) from (\d+) members", block).groups())
    assert Cadence.choose(1000, 500, many).steps_per_batch == few < Cadence.choose(1000, 500, many - 1).steps_per_batch
    ddp = int(re.search(r"up to (\d+) under DDP", block).group(1))
    assert Cadence.choose(1000, 500, 64, distributed=True).steps_per_batch == ddp


def test_console_script_is_the_same_entry_as_python_m(tmp_path):
    # tomllib is 3.11+ and the project supports 3.10: the one line of [project.scripts]
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    module, function = re.search(r'^circuits-pl = "(.+)"$', scripts, re.M).group(1).split(":")
    assert (module, function) == ("circuits_pl.__main__", "main")
    # the script pip writes for it, under the name the user types
    script = tmp_path / "circuits-pl"
    script.write_text(f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    proc, imported = run_python(str(script), "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: circuits-pl {fit,")
    assert heavy(imported) == []


def test_the_entry_returns_an_exit_status_after_a_real_command(tmp_path, monkeypatch):
    """``sys.exit(main())`` must exit 0 after a run (cli.main returns the LightningCLI object: as an
    exit status that would print it and exit 1)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["circuits-pl"])
    status = main(["fit", "--task", "abs", "--model.members", "2", "--trainer.max_steps", "100", *QUIET])
    assert status == 0
    assert (tmp_path / "lightning_logs" / "version_0" / "results.json").is_file()


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_version_without_lightning(flag):
    from importlib.metadata import version

    proc, imported = run_python("-m", "circuits_pl", flag)
    assert proc.returncode == 0 and proc.stdout == f"circuits_pl {version('circuits_pl')}\n" and proc.stderr == ""
    assert version("circuits_pl") == circuits_pl.__version__  # pyproject.toml and the package agree
    assert heavy(imported) == []
