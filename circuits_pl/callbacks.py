"""Lightning callbacks: stop when solved, a step-based progress bar, last.ckpt at every validation,
predictions to CSV, a frozen heap during fit. (Interrupts: ``circuits_pl.interrupts``.)"""

from __future__ import annotations

import csv
import gc
import os
import sys
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from tqdm import tqdm

from circuits_pl.compat import HookedModelCheckpoint, last_save, set_last_save
from circuits_pl.files import atomic_link, atomic_open
from circuits_pl.logger import run_dir


class StopWhenSolved(EarlyStopping):
    """Lightning's EarlyStopping on the number of solved members.

    Args:
        when: ``best`` stops once any member is solved (the answer "can it be done?", the default;
            in a run of several cells, ``circuits_pl.sweep``: once every cell has a solved member);
            ``all`` once every live member is solved; ``never`` trains every member for the whole
            ``max_steps`` (a study: success rates and solved-at steps over a fixed budget).
    """

    def __init__(self, when: Literal["best", "all", "never"] = "best"):
        if when not in ("best", "all", "never"):
            from circuits_pl.errors import CircuitsError

            raise CircuitsError(f"stop.when must be one of best, all, never; got {when!r}")
        self.when = when
        # "val/solved" > 0.5 means at least one member; "val/unsolved" < 0.5 means none left.
        monitor, mode = ("val/unsolved", "min") if when == "all" else ("val/solved", "max")
        super().__init__(monitor=monitor, mode=mode, stopping_threshold=0.5, patience=2**31 - 1,
                         check_finite=False, verbose=False)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        population = getattr(pl_module, "population", None)
        if self.when == "best" and getattr(population, "cells", 1) > 1:
            # "can it be done?" asked of every cell: stop once no cell is left without a solved member
            self.monitor, self.mode = "val/unsolved_cells", "min"
            self.best_score = torch.tensor(torch.inf)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.when != "never":
            super().on_validation_end(trainer, pl_module)

    @property
    def state_key(self) -> str:
        return "StopWhenSolved"  # one instance per run, whatever ``when``: a resume may change it


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole fit, in SGD steps (``step/max_steps``), redrawn at most twice a second.

    No validation bars: validation of a few thousand points takes milliseconds. No bar at all when
    stdout is not a terminal (a log file or a pipe would get the bar's redraws mixed into the lines).
    """

    def __init__(self, mininterval: float = 0.5):
        super().__init__(refresh_rate=1)
        self.mininterval = mininterval

    def init_train_tqdm(self) -> tqdm:
        return tqdm(desc=f"fit {pl_task_name(self.trainer)}", unit="step", position=2 * self.process_position,
                    disable=self.is_disabled or not sys.stdout.isatty(),
                    leave=True, dynamic_ncols=True, file=sys.stdout, smoothing=0, mininterval=self.mininterval,
                    delay=self.mininterval)

    def init_sanity_tqdm(self) -> tqdm:
        return tqdm(disable=True)

    def init_validation_tqdm(self) -> tqdm:
        return tqdm(disable=True)

    def init_test_tqdm(self) -> tqdm:
        return tqdm(disable=True)

    def init_predict_tqdm(self) -> tqdm:
        return tqdm(disable=True)

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Print above the bar (``tqdm.write`` moves an active bar out of the way; without one it
        simply prints). Lightning's own drops text when no bar is active, e.g. before training."""
        tqdm.write(sep.join(map(str, args)), file=sys.stdout)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # creates the bar (this hook runs on resume too)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.initial = bar.n = trainer.global_step  # a resumed run starts where it stopped

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # Lightning would reset the bar to the epoch's batches: an endless stream has no total

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.update(trainer.global_step - bar.n)  # tqdm redraws only every `mininterval` seconds
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            self.train_progress_bar.refresh()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def pl_task_name(trainer: pl.Trainer) -> str:
    module = trainer.lightning_module
    return getattr(getattr(module, "task", None), "name", "")


class LastCheckpoint(HookedModelCheckpoint):
    """``last.ckpt``, rewritten at every validation (so also where a run stops: at ``max_steps``, when
    solved, on an interrupt), whatever the monitored metric does.

    Lightning's ``ModelCheckpoint(save_last=True)`` rewrites last.ckpt only when it saves another
    checkpoint, i.e. when ``val/mse`` improves: a run on a plateau kept a stale last.ckpt (issue 9).
    This is Lightning's ModelCheckpoint with no monitor and one file named ``last``; the CLI adds it
    beside the best-by-``val/mse`` callback of ``--checkpoint.*`` (whose own ``save_last`` it takes over).
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, save_last=False,
                         enable_version_counter=False)

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    def write_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Where the best-by-``val/mse`` callback has just saved at this very step, last.ckpt is a hard
        link to its file (made atomically) instead of a second serialisation of the same state, as
        Lightning's ``save_last="link"`` (a hard link, not a symlink: last.ckpt keeps its content when
        the best file is removed or replaced by a new file, as every save does): one serialisation
        per validation instead of two."""
        source = self._same_step_checkpoint(trainer)
        if source is None:
            return super().write_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            try:
                atomic_link(source, filepath)
            except OSError:  # no hard links on this filesystem: a real save
                return super().write_checkpoint(trainer, filepath)
        set_last_save(self, filepath, trainer.global_step)  # no barrier: no other rank reads the file

    def _same_step_checkpoint(self, trainer: pl.Trainer) -> str | None:
        """A local checkpoint file another ModelCheckpoint saved at the current step, if any."""
        if self.save_weights_only:
            return None
        for cb in trainer.checkpoint_callbacks:
            if cb is self or not isinstance(cb, ModelCheckpoint) or cb.save_weights_only:
                continue
            path, step = last_save(cb)
            if path and "://" not in path and step == trainer.global_step and os.path.isfile(path):
                return path
        return None


class PredictionWriter(BasePredictionWriter):
    """Write ``predict`` results to ``predictions.csv`` in the run directory (x1..xn, target, prediction).

    LightningCLI's ``predict`` discards what ``predict_step`` returns unless a writer keeps it.
    """

    def __init__(self, filename: str = "predictions.csv"):
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.path: str | None = None

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        root = run_dir(trainer)  # a collective under DDP: every rank asks
        if not predictions or not trainer.is_global_zero:  # under DDP every rank predicts every point
            return
        x = torch.cat([p["x"] for p in predictions]).cpu()
        target = torch.cat([p["target"] for p in predictions]).cpu().flatten()
        pred = torch.cat([p["prediction"] for p in predictions]).cpu().flatten()
        self.path = os.path.join(root, self.filename)
        with atomic_open(self.path, "w") as f:  # whole or absent, whatever stops the write
            writer = csv.writer(f)
            writer.writerow([f"x{i + 1}" for i in range(x.shape[1])] + ["target", "prediction"])
            for xi, ti, pi in zip(x.tolist(), target.tolist(), pred.tolist()):
                writer.writerow([f"{v:.6g}" for v in xi] + [f"{ti:.9g}", f"{pi:.9g}"])
        pl_module.print(f"Predictions ({len(pred)} points, member {pl_module.selected_member}) written to {self.path}")


class FrozenHeap(pl.Callback):
    """``gc.freeze()`` from the start of ``fit`` to its end (teardown, or an exception).

    The imports (torch, Lightning, jsonargparse) leave ~400k objects that Python's cyclic collector
    walks again at every full collection, a long pause each time. One fell inside a block of a
    K = 128 run on 2 DDP ranks and stalled both ranks. Frozen, they are out of the collector's
    sight for the run; the run's own objects are collected as usual, and the end of fit unfreezes
    what it froze (an in-process caller gets its collector back; a caller's own freeze is left
    alone). The CLI adds it to every Trainer it builds.
    """

    def __init__(self) -> None:
        self._froze = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and gc.get_freeze_count() == 0:  # a caller's own gc.freeze() stays theirs
            gc.freeze()
            self._froze = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._unfreeze()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._unfreeze()  # Lightning skips the teardown hooks when fit raises

    def _unfreeze(self) -> None:
        if self._froze:
            gc.unfreeze()
            self._froze = False
