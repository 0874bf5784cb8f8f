"""Reading checkpoints safely: ``weights_only=True`` (no pickled code runs) and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from circuits_pl.errors import CircuitsError


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a circuits_pl checkpoint on the CPU with ``weights_only=True``, or raise CircuitsError.

    Checks that the file exists, is a readable checkpoint, holds circuits_pl hyper-parameters and
    that its weights have the shapes those hyper-parameters promise.
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
    return ckpt
