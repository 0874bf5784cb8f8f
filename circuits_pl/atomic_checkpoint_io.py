"""Atomic checkpoint saves: a ``CheckpointIO`` plugin for the Trainer.

Lightning's ``TorchCheckpointIO`` writes through a temporary file in the *system* temp directory
and then moves it: when the run directory is on another filesystem the move is a copy over the old
file, and a kill or a full disk in the middle leaves a truncated ``last.ckpt`` (issue 9). This
plugin writes the checkpoint to a temporary file in the target's own directory, fsyncs it and
renames it over the target (:func:`circuits_pl.files.atomic_open`), so ``last.ckpt`` is always a
complete checkpoint, the previous one or the new one. Loads check every record's CRC-32 first
(:func:`circuits_pl.checkpoint_checks.load_verified`).

Usage: ``Trainer(plugins=[AtomicCheckpointIO()])``; the CLI adds it to every Trainer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from circuits_pl.checkpoint_checks import load_verified
from circuits_pl.files import atomic_open, remove_stray_temps, save_failed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on local filesystems (loads are Lightning's).

    ``loaded``: a checkpoint the CLI already read and checked (``(path, checkpoint)``), so that a command
    reads its ``--ckpt_path`` once: the first load of that path returns it instead of reading the file again.
    """

    def __init__(self, loaded: tuple[str | os.PathLike, dict[str, Any]] | None = None):
        super().__init__()
        self._loaded = loaded

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        if "://" in str(path):  # remote (fsspec) paths: Lightning's own transaction-based save
            return super().save_checkpoint(checkpoint, path)
        try:
            with atomic_open(path, "wb") as f:
                self.write(checkpoint, f)
        except RuntimeError as err:  # torch.save reports a failed write of its zip stream this way
            cause = _os_error(err)  # a full disk: ENOSPC inside, then "unexpected pos" from the zip's end
            if cause is None and not any(s in str(err).lower() for s in ("write", "unexpected pos")):
                raise
            raise save_failed(path, cause or err) from err

    def write(self, checkpoint: dict[str, Any], f: Any) -> None:
        """Serialise into the open temporary file (a test subclass slows or breaks this)."""
        torch.save(checkpoint, f)

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's load, with every record's CRC-32 checked first (circuits_pl.checkpoint_checks.load_verified:
        torch's reader does not check them); a damaged file is one CircuitsError."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        remove_stray_temps(Path(path).parent)  # leftovers of a save that was killed
        if self._loaded is not None and os.path.abspath(self._loaded[0]) == os.path.abspath(path):
            checkpoint, self._loaded = self._loaded[1], None  # handed over once: Lightning updates it as it restores
            return checkpoint
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        with open(path, "rb") as f:
            return load_verified(f, path, map_location=map_location, weights_only=weights_only)


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind an exception (its cause or context chain), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
