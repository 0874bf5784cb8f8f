"""Shared test helpers: run the real CLI in-process, and a plain-PyTorch reference loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from circuits_pl.cli import main

torch.set_num_threads(1)


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Call ``python -m circuits_pl ARGS`` in-process, in ``tmp_path``; return the exit code.

    ``sys.argv`` is patched, or pytest's own arguments would leak into LightningCLI.
    """
    monkeypatch.chdir(tmp_path)

    def run(*args: str, expect: int = 0) -> int:
        argv = [str(a) for a in args]
        monkeypatch.setattr(sys, "argv", ["circuits_pl"])  # the CLI reads args=argv only
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        assert code == expect, f"exit code {code}, expected {expect} for {argv}"
        return code

    return run


def run_dirs(root: Path) -> list[Path]:
    """Run directories under ``root`` (lightning_logs/version_N), oldest first."""
    logs = Path(root) / "lightning_logs"
    return sorted(logs.glob("version_*"), key=lambda p: int(p.name.split("_")[1])) if logs.exists() else []


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def reference_sgd(weights: list[torch.Tensor], batches, lr: float) -> list[torch.Tensor]:
    """The notebook's loop with autograd: nn.Linear layers (bias=False), MSELoss, torch.optim.SGD.

    Args:
        weights: initial (out, in) matrices of one network.
        batches: iterable of (x (B, in), y (B, 1)).
    """
    layers = []
    for i, w in enumerate(weights):
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = torch.nn.MSELoss()
    for x, y in batches:
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [layer.weight.detach().clone() for layer in net if isinstance(layer, torch.nn.Linear)]
