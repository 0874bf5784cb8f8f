"""Can a run write where it is told to? Checked before anything is created (no Lightning).

Failures found here are one line naming the path and the cause; found later (while training)
they are an OSError traceback and a half-made run directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from circuits_pl.errors import CircuitsError
from circuits_pl.memory import gib


def existing_ancestor(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (what ``makedirs`` writes into)."""
    probe = Path(os.path.abspath(path))
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable_dir(path: str | os.PathLike, option: str, needed: int = 0) -> Path:
    """Raise CircuitsError unless directory ``path`` exists or can be made, is writable and (if
    ``needed`` > 0) its file system has ``needed`` bytes free. Creates nothing; returns the nearest
    existing directory."""
    probe = existing_ancestor(path)
    if not probe.is_dir():
        where = "" if probe == Path(os.path.abspath(path)) else f" (its parent {probe} is)"
        raise CircuitsError(f"{option} {path} is a file, not a directory{where}; give a directory (made if missing)")
    if not os.access(probe, os.W_OK | os.X_OK):
        cause = "read-only file system" if os.statvfs(probe).f_flag & os.ST_RDONLY else "permission denied"
        raise CircuitsError(
            f"cannot write to {probe} ({cause}), where {option} {path} would be; give a writable "
            f"directory, e.g. {option} /tmp/circuits_runs"
        )
    if needed > 0:
        free = shutil.disk_usage(probe).free
        if free < needed:
            raise CircuitsError(
                f"{probe} has {gib(free)} free, and {option} {path} needs about {gib(needed)} "
                f"(checkpoints, metrics, figures); free some space or give another directory"
            )
    return probe
