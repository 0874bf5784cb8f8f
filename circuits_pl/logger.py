"""The run directory: Lightning's CSVLogger, with ``version_N`` claimed atomically and every file
(metrics.csv, hparams.yaml) written atomically."""

from __future__ import annotations

import csv
import io
import os
import time
from typing import Any

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from circuits_pl.compat import HookedCSVLogger, record_new_keys
from circuits_pl.files import atomic_path, atomic_write_text, sweep_run_tree


class AtomicExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, writing the whole of metrics.csv (and hparams.yaml) atomically
    (:mod:`circuits_pl.files`): Lightning's appends to the file in place and rewrites it in place when
    a column appears, so a signal or a full disk in the middle left a truncated metrics.csv.

    Lightning asks for a save after every logging call; the file is rewritten when a validation or
    test row is waiting (train rows go with it), at the end (``force``), or when the last write is
    ``FLUSH_SECONDS`` old: one write per validation, like the checkpoints."""

    FLUSH_SECONDS = 30.0

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir=log_dir)
        self.rows: list[dict[str, Any]] = []
        self._written = time.monotonic()

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        with atomic_path(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)) as tmp:
            save_hparams_to_yaml(tmp, self.hparams)

    def save(self, force: bool = True) -> None:
        if not self.metrics:
            return
        evaluated = any(key.startswith(("val/", "test/")) for row in self.metrics for key in row)
        if not (force or evaluated or time.monotonic() - self._written >= self.FLUSH_SECONDS):
            return
        record_new_keys(self)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(self.rows + self.metrics)
        # not fsynced (files.atomic_path): rewritten often, and its rows are in the checkpoints too
        atomic_write_text(self.metrics_file_path, text.getvalue(), durable=False)
        self.rows += self.metrics  # only once written: a failed save is retried with every row
        self.metrics = []
        self._written = time.monotonic()


class RunLogger(HookedCSVLogger):
    """CSVLogger (``<save_dir>/<name>/version_N/metrics.csv``) that claims ``version_N`` with an
    exclusive ``mkdir`` and writes its files atomically (:class:`AtomicExperimentWriter`).

    Lightning picks N as one more than the largest existing version, so runs started at the same
    moment in one directory pick the same N and the second aborts when it finds the first's
    config.yaml. Creating the directory is atomic: whoever loses takes the next N. Before claiming,
    the temporary files that killed runs left in ``<save_dir>/<name>`` are removed
    (:func:`circuits_pl.files.sweep_run_tree`).
    """

    writer_class = AtomicExperimentWriter

    def next_version(self, version: int) -> int:
        if rank_zero_only.rank != 0:  # other DDP ranks write nothing; the trainer broadcasts rank 0's
            return version
        sweep_run_tree(self.root_dir)
        return claim_version(self.root_dir, version)

    @rank_zero_only
    def save(self) -> None:
        """After every logging call (Lightning's): metrics.csv when a row is due (AtomicExperimentWriter)."""
        self.experiment.save(force=False)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if (writer := self.started_writer()) is not None:
            writer.save(force=True)


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
    sweep_run_tree(root)
    return os.path.join(root, f"version_{claim_version(root)}")
