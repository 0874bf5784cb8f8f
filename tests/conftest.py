"""Shared test helpers: run the real CLI in-process, and a plain-PyTorch reference loop."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from circuits_pl.cli import main

torch.set_num_threads(1)

# A test run started in the background of a non-interactive shell (`cmd &`, nohup) inherits SIGINT
# ignored, and so would every fit the tests start: circuits_pl keeps SIGINT ignored when its parent
# ignored it, and the tests that send SIGINT expect the usual 130. A Python handler here is reset to the
# default in every child at exec; the test of the ignored case ignores SIGINT in its child itself.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


def assert_drawn(png: Path, size: tuple[float, float] | None = None) -> None:
    """``png`` reads back (matplotlib.image) as an RGBA image of ``size`` (width, height) pixels if given,
    with something drawn on it: several colours, and not almost all of it the background."""
    from matplotlib.image import imread

    image = imread(png)
    assert image.ndim == 3 and image.shape[2] == 4, image.shape
    if size is not None:
        assert image.shape[:2] == (round(size[1]), round(size[0])), image.shape
    rgba = (image * 255).round().astype("uint8").reshape(-1, 4)  # one 32-bit word per pixel
    colours, counts = np.unique(rgba.view("uint32"), return_counts=True)
    assert len(colours) > 10 and int(counts.max()) < 0.99 * len(rgba), (png, len(colours))


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
