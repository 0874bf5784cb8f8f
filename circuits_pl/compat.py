"""The few private Lightning APIs circuits_pl relies on, in one place.

Each shim says why no public API does the job. ``tests/test_compat.py`` checks every one against
the installed Lightning, so an upgrade that changes them fails there, loudly, not somewhere deep in
a run.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl

# Lightning 2.6 calls an API that torch 2.13 deprecates, once per fit, from code a user cannot change
# ("`isinstance(treespec, LeafSpec)` is deprecated"): silenced for this one message only, for the
# CLI and for a plain Trainer alike (importing circuits_pl's LightningModule brings this module in).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# Under MemberParallelStrategy every rank holds every member's values when CircuitModule logs (synced
# before it logs): Lightning's advice to log its keys with sync_dist=True (one line per key and
# run, on every rank) does not apply, and following it would add a collective per key per validation.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('((val|test|train)/\w+|step)', "
                                          r"\.\.\., sync_dist=True\)`")


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


def count_optimizer_steps(lightning_optimizer: Any, steps: int) -> None:
    """Make Lightning count ``steps`` optimizer steps taken outside ``LightningOptimizer.step``.

    The hot path applies its updates itself (``LightningOptimizer.step`` costs ~65 µs per step:
    closure, precision and strategy hooks), but ``global_step``, ``max_steps`` and checkpoint resume
    must count SGD steps. Under manual optimization Lightning's ``_ManualOptimization`` installs
    ``_on_before_step``/``_on_after_step`` on each LightningOptimizer (private: no public API bumps
    ``optim_step_progress``); these are the exact calls ``LightningOptimizer.step`` makes around
    the real step. Calling them after a block of steps is equivalent: nothing reads the counter
    inside the block. The pair runs once (the profiler's "optimizer_step" span); the other steps are
    added to the same counter (``optim_step_progress.increment_by``): 1000 pairs took 1.3 ms a block.
    """
    if steps <= 0:
        return
    before, after = lightning_optimizer._on_before_step, lightning_optimizer._on_after_step
    before()
    after()
    progress = getattr(getattr(before, "__self__", None), "optim_step_progress", None)
    if progress is not None and hasattr(progress, "increment_by"):
        progress.increment_by(steps - 1)
        return
    for _ in range(steps - 1):
        before()
        after()


# --- LightningCLI internals the CLI builds on (no public equivalent in lightning 2.6) -------------

def cli_parser(cli: Any, subcommand: str | None) -> Any:
    """The parser of a subcommand (``LightningCLI._parser``): its callback keys name the callbacks
    given as options (``--checkpoint.*``, ``--stop.*``)."""
    return cli._parser(subcommand)


def cli_get(cli: Any, config: Any, key: str, default: Any = None) -> Any:
    """A value of the running subcommand's config (``LightningCLI._get``)."""
    return cli._get(config, key, default=default)


def cli_instantiate_trainer(cli: Any, config: dict[str, Any], callbacks: list[Any]) -> Any:
    """Build the Trainer with the CLI's own callbacks added (``LightningCLI._instantiate_trainer``):
    ``instantiate_trainer`` is the public override point, and this is what it calls."""
    return cli._instantiate_trainer(config, callbacks)


def restored_batches(trainer: Any) -> int:
    """Lightning batches counted before this fit (restored from a checkpoint): the fit loop's
    progress counter, which has no public accessor. The resumed stream aligns its first block on it."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)


def last_save(callback: Any) -> tuple[str, int]:
    """The file a ``ModelCheckpoint`` last wrote and the global step it wrote it at.

    ``LastCheckpoint`` links last.ckpt to the best checkpoint saved at the same step. Lightning's
    own ``save_last="link"`` reads these private fields; no public accessor exists
    (``last_model_path`` is only set by ``save_last``, ``best_model_path`` names the best, not the
    latest).
    """
    return str(getattr(callback, "_last_checkpoint_saved", "") or ""), int(callback._last_global_step_saved)


def set_last_save(callback: Any, path: str, step: int) -> None:
    """Record a save made without ``ModelCheckpoint._save_checkpoint`` (see :func:`last_save`)."""
    callback._last_checkpoint_saved = path
    callback._last_global_step_saved = step


# --- DDP's popen launcher (no public base class for a launcher that starts the script again) ------

def script_launcher() -> type:
    """Lightning's ``_SubprocessScriptLauncher`` (``--trainer.strategy ddp`` re-runs the command per rank):
    circuits_pl.interrupts.RankLauncher subclasses it to watch the ranks it starts its own way."""
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    return _SubprocessScriptLauncher


def set_num_threads_if_needed(num_processes: int) -> None:
    """What the launcher does after starting the ranks (``_set_num_threads_if_needed``): torch threads
    per process when OMP_NUM_THREADS is unset (the CLI sets it, from --threads)."""
    from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

    _set_num_threads_if_needed(num_processes=num_processes)
