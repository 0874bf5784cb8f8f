"""``python -m circuits_pl inspect PATH``: read the circuit of a trained member, and draw it.

PATH is a checkpoint or a run directory (``lightning_logs/version_N``, whose ``checkpoints/last.ckpt``
is read). Prints the raw weights in the notebook's layout, the canonical form, the formula, which
exact circuit it is, the checks (homogeneity, held-out directions) and the test MSE; writes
``losses.png``, ``function_member{k}.png`` and ``circuit_member{k}.png`` into the run directory.
"""

from __future__ import annotations

import argparse
import inspect as _inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuits_pl.checkpoints import check_checkpoint
from circuits_pl.data import CircuitDataModule
from circuits_pl.errors import CircuitsError
from circuits_pl.module import CircuitModule
from circuits_pl.readout import Readout, read_circuit


@dataclass
class Run:
    """A trained run loaded from disk: module, data module, run directory and checkpoint."""

    module: CircuitModule
    data: CircuitDataModule
    directory: Path
    checkpoint: Path
    step: int


def load_run(path: str | Path, member: int | None = None, task: str | None = None) -> Run:
    """Load a checkpoint (or a run directory's ``checkpoints/last.ckpt``) on the CPU, safely.

    ``task``: the checkpoint's own task (``package.module:function``), needed for a user task: a
    checkpoint never imports the code it names."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise CircuitsError(f"{path} holds no checkpoints/last.ckpt; give a run directory or a .ckpt file")
        directory = path
    else:
        ckpt = path
        directory = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    info = check_checkpoint(ckpt, task=task)
    members = int(info["hyper_parameters"]["members"])
    if member is not None and not 0 <= member < members:
        raise CircuitsError(
            f"--member {member} is out of range: the checkpoint has {members} member(s), 0..{members - 1}")
    override = {} if task is None else {"task": task}
    module = CircuitModule.load_from_checkpoint(ckpt, map_location="cpu", member=member, **override)
    module.eval()
    return Run(module, _datamodule(info, module), directory, ckpt, int(info.get("global_step", 0)))


def check_finite_member(run: Run, member: int) -> None:
    """A member with NaN/inf weights has no circuit to read: say so, and name members that have one."""
    finite = torch.stack([torch.isfinite(w).flatten(1).all(1) for w in run.module.net.weights]).all(0)
    if bool(finite[member]):
        return
    good = finite.nonzero().flatten().tolist()
    others = f"members with finite weights: {_ranges(good)} (pick one with --member)" if good else \
        "no member has finite weights: retrain, e.g. with a smaller --model.lr"
    raise CircuitsError(f"{run.checkpoint}: member {member} has non-finite (NaN/inf) weights, so no circuit "
                        f"to read; {others}")


def _ranges(values: list[int]) -> str:
    text = ", ".join(map(str, values[:10]))
    return text + (f", ... ({len(values)} in all)" if len(values) > 10 else "")


def _datamodule(info: dict[str, Any], module: CircuitModule) -> CircuitDataModule:
    """The run's data module (its validation/test points and cone), from the checkpoint."""
    saved = info.get("datamodule_hyper_parameters") or {}
    accepted = _inspect.signature(CircuitDataModule.__init__).parameters
    kwargs = {k: v for k, v in saved.items() if k in accepted}
    kwargs["task"] = module.task.name
    return CircuitDataModule(**kwargs)


def read_member(module: CircuitModule, data: CircuitDataModule, member: int | None = None) -> Readout:
    """The readout of one member on the run's test set (default: the selected member)."""
    k = module.selected_member if member is None else member
    x = data.holdout_set("test").tensors[0]

    def net(z: torch.Tensor) -> torch.Tensor:  # the member as it runs (biases included), on its device
        with torch.no_grad():
            return module.net(z.to(module.device, torch.float32), member=k).to("cpu", torch.float64)

    weights = [w[k].detach() for w in module.net.weights]
    return read_circuit(weights, module.task, x.to(torch.float64), fn=net, success_mse=module.success_mse)


def classify_members(module: CircuitModule, data: CircuitDataModule) -> list[dict[str, Any]]:
    """Per member: its formula, the exact circuit it matches (or None) and its sparsity error.

    The cheap part of the readout (canonical form and matching, ~2 ms a member), for results.json
    and the end-of-fit summary. Bias nets get None: the circuit readout is for bias-free nets.
    """
    from circuits_pl.readout import canonicalize, formula, match_circuit, sparsity_error

    none = {"formula": None, "rough_formula": None, "circuit": None, "sparsity_error": None}
    if module.hparams.bias:
        return [none] * module.members
    x = data.holdout_set("test").tensors[0].to(torch.float64)
    out = []
    for k in range(module.members):
        weights = [w[k].detach().cpu() for w in module.net.weights]
        if not all(bool(torch.isfinite(w).all()) for w in weights):
            out.append(none)
            continue
        canonical = canonicalize(weights, x)
        match = match_circuit(canonical, module.task)
        out.append({
            "formula": formula(canonical),
            "rough_formula": formula(canonical, decimals=1),  # groups members stuck in the same place
            "circuit": None if match is None else (match.formula if match.index is not None else "equivalent exact"),
            "sparsity_error": sparsity_error(canonical),
        })
    return out


def heldout_mse(run: Run, member: int) -> float | None:
    """MSE on the input directions training never saw (runs trained on a cone), else None."""
    if run.data.cone is None:
        return None
    x, y = run.data.holdout_set("test", heldout=True).tensors
    with torch.no_grad():
        return float((run.module.net(x.to(run.module.device), member=member).cpu() - y).square().mean())


def write_figures(directory: Path, module: CircuitModule, member: int, readout: Readout) -> list[Path]:
    """Loss curves, the learned function and the circuit graph, as PNGs in the run directory."""
    from circuits_pl import plots

    directory = Path(directory)
    written = []
    metrics = directory / "metrics.csv"
    if metrics.is_file():
        written.append(plots.plot_losses(metrics, directory / "losses.png"))
    weights = [w[member].detach().cpu() for w in module.net.weights]
    function = plots.plot_function(weights, module.task, directory / f"function_member{member}.png")
    if function is not None:
        written.append(function)
    written.append(plots.plot_circuit(readout.canonical, module.task, directory / f"circuit_member{member}.png"))
    return written


def report_text(run: Run, member: int, readout: Readout) -> str:
    module = run.module
    k_total = module.members
    header = f"{run.checkpoint}: step {run.step}, member {member}"
    if k_total > 1:
        best = int(module.best_member)
        header += f" of {k_total} ({'the best by validation MSE' if member == best else f'best is {best}'})"
    lines = [header, "", readout.text().rstrip()]
    held = heldout_mse(run, member)
    if held is not None:
        lines.append(f"Held-out directions (u·x < 0 for u = {run.data.cone}): MSE {held:.4g}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    from circuits_pl.cli import program_name

    parser = argparse.ArgumentParser(
        prog=f"{program_name()} inspect",
        description="Read the circuit a trained member computes: raw and canonical weights, formula, "
                    "which exact circuit, checks; writes PNG figures into the run directory.",
    )
    parser.add_argument("path", help="a checkpoint (.ckpt) or a run directory (lightning_logs/version_N)")
    parser.add_argument("--member", type=int, default=None, help="member to read (default: the best)")
    parser.add_argument("--no-figures", action="store_true", help="print only; write no PNG files")
    parser.add_argument("--task", default=None,
                        help="the checkpoint's task, if it is your own (package.module:function): "
                             "a checkpoint never imports code by itself")
    args = parser.parse_args(argv)
    run = load_run(args.path, args.member, args.task)
    member = run.module.selected_member
    check_finite_member(run, member)
    readout = read_member(run.module, run.data, member)
    print(report_text(run, member, readout), end="")
    if not args.no_figures:
        for path in write_figures(run.directory, run.module, member, readout):
            print(f"Figure: {path}")
