"""Saved hyper-parameters that say what a run really used."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


def record_resolved(obj: pl.LightningModule | pl.LightningDataModule, **values: Any) -> None:
    """Store defaults resolved at init (``None`` -> a value) in the saved hyper-parameters.

    LightningCLI makes ``save_hyperparameters`` record the parsed config as given (``None``), but a
    checkpoint must say which sizes and seeds it holds, and so must hparams.yaml (which is written
    from the initial copy).
    """
    obj.hparams.update(values)
    if hasattr(obj, "_hparams_initial"):
        obj._hparams_initial.update(values)
