"""A trained run loaded from disk: its module, data module, directory and checkpoint.

``load_run`` accepts a checkpoint or a run directory (``lightning_logs/version_N``, whose
``checkpoints/last.ckpt`` is read). The checkpoint is read with ``weights_only=True`` and checked
(see :mod:`circuits_pl.checkpoint_checks`) before anything is built from it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits_pl.checkpoint_checks import check_state_dict, load_checked_checkpoint, saved_sweep
from circuits_pl.compat import module_from_checkpoint
from circuits_pl.data import CircuitDataModule
from circuits_pl.errors import CircuitsError
from circuits_pl.module import CircuitModule


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
            runs = sorted(path.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            example = f" such as {runs[-1].parent.parent}" if runs else ""
            raise CircuitsError(f"{path} holds no checkpoints/last.ckpt; give a run directory{example} or a .ckpt file")
        directory = path
    else:
        ckpt = path
        directory = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    info = load_checked_checkpoint(ckpt, task=task)
    members = saved_sweep(ckpt, info["hyper_parameters"]).members
    if member is not None and not 0 <= member < members:
        raise CircuitsError(
            f"--model.member {member} is out of range: the checkpoint has {members} member(s), 0..{members - 1}")
    override = {} if task is None else {"task": task}
    check_state_dict(ckpt, info["state_dict"], _expected_state(info, override))
    datamodule_hparams = dict(info.get("datamodule_hyper_parameters") or {})
    step = int(info.get("global_step", 0))
    module = module_from_checkpoint(CircuitModule, info, member=member, **override)  # the file is read once
    module.eval()
    return Run(module, _datamodule(datamodule_hparams, module), directory, ckpt, step)


def check_finite_member(run: Run, member: int) -> None:
    """A member with NaN/inf weights has no circuit to read: say so, and name members that have one."""
    finite = run.module.net.finite()
    if bool(finite[member]):
        return
    good = finite.nonzero().flatten().tolist()
    listed = ", ".join(map(str, good[:10])) + (f", ... ({len(good)} in all)" if len(good) > 10 else "")
    others = f"members with finite weights: {listed} (pick one with --model.member)" if good else \
        "no member has finite weights: retrain, e.g. with a smaller --model.lr"
    raise CircuitsError(f"{run.checkpoint}: member {member} has non-finite (NaN/inf) weights, so no circuit "
                        f"to read; {others}")


def _expected_state(info: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The state_dict a module built from the checkpoint's hyper-parameters has (names and shapes)."""
    accepted = inspect.signature(CircuitModule.__init__).parameters
    kwargs = {k: v for k, v in {**info["hyper_parameters"], **override}.items() if k in accepted and k != "member"}
    return CircuitModule(**kwargs).state_dict()


def _datamodule(saved: dict[str, Any], module: CircuitModule) -> CircuitDataModule:
    """The run's data module (its validation/test points and cone), from the checkpoint's hyper-parameters."""
    accepted = inspect.signature(CircuitDataModule.__init__).parameters
    kwargs = {k: v for k, v in saved.items() if k in accepted}
    kwargs["task"] = module.task
    return CircuitDataModule(**kwargs)
