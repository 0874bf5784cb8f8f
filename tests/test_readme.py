"""The README's commands and code, run as written."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_DISTRIBUTED = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
                "LOCAL_WORLD_SIZE"}


def _python_block(section: str) -> str:
    text = README.read_text()
    body = text[text.index(f"## {section}\n"):]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


@pytest.mark.parametrize("before", [None, "min"], ids=["empty-directory", "after-fit-min"])
def test_the_from_python_example_runs_as_written(run_cli, tmp_path, before):
    # in a fresh directory, and where the README's own `fit --task min` already made version_0
    if before:
        run_cli("fit", "--task", before, "--model.members", 4, "--trainer.max_steps", 1000, "--figures", "false",
                "--trainer.enable_progress_bar", "false")
    code = _python_block("From Python")
    # a user's shell: no seed or process-group variables left by earlier in-process tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("PL_") and k not in _DISTRIBUTED}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    found, circuits = lines[-2].split(" ", 1)
    assert 0 < int(found) <= 16
    assert set(ast.literal_eval(circuits)) <= {"r(a + b) − r(−a − b)", None}  # members 0-2: found or not
    assert lines[-1] == "tensor([[-0.2000]])"  # the best member of a solved add run: 0.3 + (-0.5)
    assert "Traceback" not in out.stderr and "DeprecationWarning" not in out.stderr
