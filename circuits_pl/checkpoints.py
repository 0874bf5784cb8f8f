"""Reading checkpoints safely: ``weights_only=True`` (no pickled code runs) and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.tasks import Task, is_builtin


def load_checked_checkpoint(path: str | Path, task: str | Task | None = None, option: str = "--task") -> dict[str, Any]:
    """Load a circuits_pl checkpoint on the CPU with ``weights_only=True``, or raise CircuitsError.

    Checks that the file exists, is a readable checkpoint, holds circuits_pl hyper-parameters and
    that its weights have the shapes those hyper-parameters promise; then :func:`check_task`.
    """
    p = Path(path)
    if not p.exists():
        raise CircuitsError(f"checkpoint {path} does not exist; give a .ckpt file, e.g. <run>/checkpoints/last.ckpt")
    if p.is_dir():
        raise CircuitsError(f"{path} is a directory; give a checkpoint file, e.g. {p / 'checkpoints' / 'last.ckpt'}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, text file, pickle with code in it, ...
        reason = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:120]
        reason = f": {reason}" if len(reason) > 8 else ""
        raise CircuitsError(f"{path} is not a readable checkpoint (truncated, or not a .ckpt file{reason})") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not {"task", "layer_sizes", "members"} <= hp.keys() or "state_dict" not in ckpt:
        raise CircuitsError(f"{path} is a checkpoint, but not of circuits_pl (no task/layer_sizes/members in it)")
    sizes, members = list(hp["layer_sizes"]), int(hp["members"])
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = ckpt["state_dict"].get(f"net.weights.{layer}")
        if w is None or tuple(w.shape) != (members, n_out, n_in):
            raise CircuitsError(f"{path} is damaged: layer {layer} weights do not match layer sizes {sizes}")
    check_task(path, hp["task"], task, option)
    hp.setdefault("engine", "torch")  # saved before --model.engine existed: the torch engine trained it
    return ckpt


def check_task(path: str | Path, saved: str, given: str | Task | None, option: str = "--task") -> None:
    """Refuse to import code a checkpoint names: its task loads only if built in or named by the
    user (``given``), and a named task must be the checkpoint's.

    ``weights_only=True`` keeps pickled code out; without this check the saved task string
    ``package.module:function`` would still be imported, so reading a checkpoint would run any module it
    names (``this:s`` prints the Zen of Python). Raises CircuitsError saying which option to pass.
    """
    fix = f"task={saved!r}" if option == "task=" else f"{option} {saved}"
    if given is None:
        if not isinstance(saved, str) or not is_builtin(saved):
            raise CircuitsError(
                f"checkpoint {path} is of your own task {saved!r}; a checkpoint never imports code by itself: "
                f"give {fix} if you trust that module"
            )
        return
    if not isinstance(given, Task) and given != saved:  # a Task object passed from Python is the user's choice
        raise CircuitsError(f"checkpoint {path} is of task {saved!r}, not {given!r}: give {fix}")
