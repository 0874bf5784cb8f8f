"""Endless uniform inputs for training, fixed sets for validation/test, a grid for predict.

Training data is a pure function of (seed, step) (``circuits_pl.stream``). So a run is
reproducible, a resumed run sees exactly the batches it would have seen (the stream restarts at
``trainer.global_step``), every DDP rank draws the same batches (ranks split the members, not the
data: ``circuits_pl.strategy``), and the number of steps packed into one Lightning batch changes
nothing.

One Lightning batch is a *block* of ``steps_per_batch`` SGD steps::

    x: (S, B, in)   uniform in [-1, 1]^in (or a half-space cone of it)
    y: (S, B, 1)    the task's target

The LightningModule runs the S SGD steps of a block inside one ``training_step``: Lightning's
per-batch bookkeeping would otherwise dwarf a step of a tiny network.
Blocks are aligned to multiples of S, so validation and checkpoints fall on the same steps
whether or not a run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from circuits_pl.cadence import MAX_STEPS_PER_BATCH, Cadence
from circuits_pl.compat import record_resolved, restored_batches
from circuits_pl.errors import CircuitsError
from circuits_pl.stream import UniformBlocks, fold_into_cone, mix_seed, uniform_inputs
from circuits_pl.tasks import get_task

# The stream lives in circuits_pl.stream (no Lightning); its names stay importable from here.
__all__ = ["CircuitDataModule", "UniformBlocks", "WholeSet", "fold_into_cone", "mix_seed", "uniform_inputs"]


class WholeSet(IterableDataset):
    """A fixed set served as a single batch. Under DDP every rank evaluates all of it: the MSE is
    the same, and the set is too small to be worth sharding."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        yield self.tensors


class Batches(IterableDataset):
    """Fixed tensors served in consecutive batches of ``batch_size`` rows, in order. An iterable,
    so Lightning gives it no DistributedSampler: under DDP every rank gets every batch (``predict``
    then writes one predictions.csv of every point, as on one process)."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int):
        self.tensors, self.batch_size = tensors, batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, len(self.tensors[0]), self.batch_size):
            yield tuple(t[start : start + self.batch_size] for t in self.tensors)


class CircuitDataModule(pl.LightningDataModule):
    """Training stream, validation/test sets and predict grid for one task.

    Args:
        task: task name (linked from the top-level ``--task``).
        batch_size: inputs per SGD step (the notebook: 1000).
        steps_per_batch: SGD steps per Lightning batch. Default: chosen by the CLI, the largest divisor
            of trainer.val_check_interval up to trainer.log_every_n_steps and a block limit that
            shrinks as members and batch size grow: 500 with the defaults (64 members, batch 1000,
            intervals 1000 and 500), 100 from 513 members, up to 1000 under DDP. From Python
            (a plain ``Trainer``): 100, and the Trainer's options that count *batches*
            (``val_check_interval``, ``log_every_n_steps``) count blocks of this many steps
            (``circuits_pl.cadence``).
        val_size: points in the validation set and in the test set (the notebook's ``test_n``).
        stream_seed: seed of the training stream (default: the run's ``seed_everything``).
        holdout_seed: seed of the validation and test sets (the same for every run, so runs compare).
        cone: train only on inputs x with ``u·x >= 0`` for this direction u (e.g. ``[1, 0]``: x1 >= 0).
            Validation and test use the same region; ``test`` also reports ``test/heldout_mse`` on
            the other half: the honest extrapolation test for bias-free nets.
        predict_points: points per input axis of the grid that ``predict`` evaluates.
    """

    def __init__(
        self,
        task: str = "identity",
        batch_size: int = 1000,
        steps_per_batch: int | None = None,
        val_size: int = 1000,
        stream_seed: int | None = None,
        holdout_seed: int = 20_231_128,
        cone: list[float] | None = None,
        predict_points: int = 41,
    ):
        super().__init__()
        steps_per_batch = MAX_STEPS_PER_BATCH if steps_per_batch is None else steps_per_batch
        for name, value in [("batch_size", batch_size), ("steps_per_batch", steps_per_batch),
                            ("val_size", val_size), ("predict_points", predict_points)]:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CircuitsError(f"data.{name} must be a positive integer, got {value!r}")
        self.task = get_task(task)
        if cone is not None:
            if len(cone) != self.task.arity or not any(float(c) != 0 for c in cone):
                raise CircuitsError(
                    f"data.cone must be a non-zero direction with {self.task.arity} entries "
                    f"(one per input of task {self.task.name!r}), got {cone!r}"
                )
            cone = [float(c) for c in cone]
        stream_seed = int(torch.initial_seed() if stream_seed is None else stream_seed)  # seed_everything's
        self.save_hyperparameters()
        record_resolved(self, stream_seed=stream_seed, cone=cone, steps_per_batch=steps_per_batch)
        self.cone = cone

    # --------------------------------------------------------------------------------------------
    def train_stream(self, start_step: int = 0, rank: int = 0, first_block_end: int | None = None,
                     empty_blocks: int = 0, draws: str = "torch") -> UniformBlocks:
        hp = self.hparams
        return UniformBlocks(self.task, hp.batch_size, hp.steps_per_batch, hp.stream_seed, rank, start_step,
                             self.cone, first_block_end, empty_blocks, draws)

    def fixed_set(self, stage: str, heldout: bool = False) -> TensorDataset:
        """The fixed validation (``val``) or test (``test``) points and targets, the same for every run
        of these settings (``heldout``: from the directions training never saw)."""
        index = {"val": 0, "test": 1}[stage] + (2 if heldout else 0)
        x = uniform_inputs(self.hparams.val_size, self.task.arity, mix_seed(self.hparams.holdout_seed, index))
        x = fold_into_cone(x, self.cone, inside=not heldout)
        return TensorDataset(x, self.task(x))

    def predict_grid(self) -> torch.Tensor:
        axis = torch.linspace(-1.0, 1.0, self.hparams.predict_points)
        grid = torch.cartesian_prod(*[axis] * self.task.arity)
        return grid.reshape(-1, self.task.arity)

    # --------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        # The stream restarts where the trainer stands: global_step is restored from a checkpoint
        # before Lightning asks for this loader, and step t's batch depends only on (seed, t).
        # Every DDP rank draws the same stream (rank 0's): ranks split the members, not the data
        # (circuits_pl.strategy), so member k's trajectory does not depend on the world size.
        trainer = self.trainer
        start, first_end, empty = 0, None, 0
        if trainer is not None:  # after a restore, the first block keeps validations on their step grid
            start = trainer.global_step
            cadence = Cadence.of_trainer(trainer, self.hparams.steps_per_batch)
            first_end, empty = cadence.first_block(start, restored_batches(trainer) if start > 0 else 0)
        # batch_size=None: the dataset yields whole blocks, no per-sample collation.
        # num_workers=0: drawing a block is cheap; a worker's inter-process transfer would cost more.
        # The fused engine's runs draw the same numbers with its faster generator (circuits_pl.stream).
        module = trainer.lightning_module if trainer is not None else None
        draws = "fused" if getattr(module, "hparams", {}).get("engine") == "fused" else "torch"
        stream = self.train_stream(start, first_block_end=first_end, empty_blocks=empty, draws=draws)
        return DataLoader(stream, batch_size=None, num_workers=0)

    def _loader(self, dataset: TensorDataset) -> DataLoader:
        # The whole set as one ready-made batch: per-sample indexing and collation of 1000 points
        # would cost more than the validation itself.
        return DataLoader(WholeSet(*dataset.tensors), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.fixed_set("val"))

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(self.fixed_set("test"))]
        if self.cone is not None:
            loaders.append(self._loader(self.fixed_set("test", heldout=True)))
        return loaders if len(loaders) > 1 else loaders[0]

    def predict_dataloader(self) -> DataLoader:
        x = self.predict_grid()
        return DataLoader(Batches(x, self.task(x), batch_size=4096), batch_size=None)
