"""The few private Lightning APIs circuits_pl relies on, in one place.

Each shim says why no public API does the job. ``tests/test_compat.py`` checks every one against
the installed Lightning, so an upgrade that changes them fails there, loudly, not somewhere deep in
a run.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


def record_resolved(obj: pl.LightningModule | pl.LightningDataModule, **values: Any) -> None:
    """Store defaults resolved at init (``None`` -> a value) in the saved hyper-parameters.

    LightningCLI makes ``save_hyperparameters`` record the parsed config as given (``None``), but a
    checkpoint must say which sizes and seeds it holds, and so must hparams.yaml. hparams.yaml is
    written from ``_hparams_initial`` (private: no public setter exists), so both copies are
    updated. LightningCLI's ``_instantiator`` entry (its own bookkeeping, meaningless to a reader of
    hparams.yaml or results.json) is dropped from both: circuits_pl's classes are built directly.
    """
    obj.hparams.update(values)
    obj.hparams.pop("_instantiator", None)
    initial = getattr(obj, "_hparams_initial", None)
    if initial is not None:
        initial.update(values)
        initial.pop("_instantiator", None)
