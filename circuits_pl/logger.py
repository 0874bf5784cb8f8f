"""The run directory: Lightning's CSVLogger, with ``version_N`` claimed atomically."""

from __future__ import annotations

import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only


class RunLogger(CSVLogger):
    """CSVLogger (``<save_dir>/<name>/version_N/metrics.csv``) that claims ``version_N`` with an
    exclusive ``mkdir``.

    Lightning picks N as one more than the largest existing version, so runs started at the same
    moment in one directory pick the same N and the second aborts when it finds the first's
    config.yaml. Creating the directory is atomic: whoever loses takes the next N.
    """

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:  # other DDP ranks write nothing; the trainer broadcasts rank 0's
            return version
        return claim_version(self.root_dir, version)


def run_dir(trainer) -> str:
    """Where a run's files go: the logger's version directory, else the trainer's root directory.
    A collective under DDP (Lightning broadcasts rank 0's): every rank must call it."""
    return trainer.log_dir or trainer.default_root_dir


def claim_version(root: str, start: int = 0) -> int:
    """Create ``root/version_N`` for the first N >= start that does not exist yet, atomically."""
    version = start
    while True:
        try:
            os.makedirs(os.path.join(root, f"version_{version}"))
            return version
        except FileExistsError:
            version += 1


def claim_run_dir(save_dir: str, name: str = "lightning_logs") -> str:
    """A fresh ``save_dir/name/version_N`` for a run without a logger (``--trainer.logger false``,
    ``fast_dev_run``): Lightning would otherwise write config.yaml and checkpoints/ straight into
    ``save_dir``, and the next such run would find them there and abort."""
    root = os.path.join(save_dir, name)
    return os.path.join(root, f"version_{claim_version(root)}")
