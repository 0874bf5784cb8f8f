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
        while True:
            try:
                os.makedirs(os.path.join(self.root_dir, f"version_{version}"))
                return version
            except FileExistsError:
                version += 1
