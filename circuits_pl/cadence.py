"""The cadence of a run: SGD steps against Lightning batches, in one object.

Lightning counts *batches*; one circuits_pl batch is a block of ``steps_per_batch`` (S) SGD steps. A user
sets the cadence in SGD steps (``--trainer.val_check_interval 1000`` validates at steps 1000, 2000, ...);
Lightning is given ``1000 / S`` batches. :class:`Cadence` holds both sides and answers every question
that turns one into the other:

- the CLI and its checks (``Cadence.choose``, built once from the config): S, chosen to divide the
  validation interval (the largest divisor up to :func:`steps_per_batch_limit`: 500 steps for a few
  members, 100 for many) or checked; the Trainer's batch counts (:meth:`Cadence.trainer_kwargs`); the
  block the memory estimate counts. Train metrics are logged every ``log_every_n_steps`` SGD steps
  rounded to whole blocks (518 = 7 blocks of 74 with validation every 370 and S = 74);
- inside a fit (``Cadence.of_trainer``, read back from the Trainer, which also serves a plain
  ``Trainer`` built in Python): how many steps a block runs before ``max_steps``, whether the
  validation after it is a regular one, whether it logs (the LightningModule); where a resumed
  stream's first block ends so that validations stay on their SGD-step grid (the DataModule).

Python API: ``Trainer(max_steps=..., **trainer_cadence(1000, 500, steps_per_batch=100))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from circuits_pl.errors import CircuitsError

MAX_STEPS_PER_BATCH = 100  # the default of the data module (Python API): blocks of 100 steps
# The CLI chooses S per run (steps_per_batch_limit): Lightning's per-block cost (a batch through the
# fit loop, callbacks, the block's own setup) is amortised over S SGD steps of K members; beyond a few
# hundred steps per block it no longer shows in the time per step (benchmarks/speed.py). Larger blocks
# also mean a later answer to Ctrl-C (honoured between blocks) and more memory for
# the block's inputs, so S shrinks as K grows: about BLOCK_MEMBER_STEPS member-steps per block.
BLOCK_MEMBER_STEPS = 64_000
BLOCK_SAMPLES = 500_000  # 500 steps of batch 1000: a block's inputs and targets, 6 MB for two inputs
LARGEST_STEPS_PER_BATCH = 1000
DDP_STEPS_PER_BATCH = 1000  # under member parallelism: one block per validation interval, up to this


@dataclass(frozen=True)
class Cadence:
    """How a run's SGD steps map onto Lightning batches.

    Attributes:
        steps_per_batch: S, SGD steps per Lightning batch; None when read from a Trainer whose
            training loader is not a :class:`~circuits_pl.data.CircuitDataModule`'s (only the step
            views need it).
        val_batches: validate after every V-th batch (every V·S SGD steps); None: not by step count.
        log_batches: log train metrics after every L-th batch; 0: never; None: Lightning's default.
        max_steps: the SGD-step budget; -1: none.
    """

    steps_per_batch: int | None = MAX_STEPS_PER_BATCH
    val_batches: int | None = None
    log_batches: int | None = None
    max_steps: int = -1

    # --- built from SGD-step counts (the CLI's config, the Python API) or read from a Trainer ---------
    @classmethod
    def from_steps(cls, val_every: int | None, log_every: int | None, steps_per_batch: int,
                   max_steps: int = -1, option: str = "val_check_interval") -> Cadence:
        """The cadence of blocks of ``steps_per_batch`` for intervals in SGD steps (None: not a step
        count; ``log_every`` 0: no train logging). One-line error if S does not divide ``val_every``
        (its validations would fall off the grid); ``option`` names it in the message."""
        check_steps_per_batch(steps_per_batch, **{option: val_every or 0})
        val = val_every // steps_per_batch if val_every else None
        log = log_blocks(log_every, steps_per_batch) if log_every is not None else None
        return cls(steps_per_batch, val, log, max_steps)

    @classmethod
    def choose(cls, val_every: int | None, log_every: int | None, members: int, batch_size: int = 1000,
               distributed: bool = False, steps_per_batch: int | None = None, max_steps: int = -1,
               option: str = "val_check_interval") -> Cadence:
        """The cadence of a run: ``steps_per_batch`` if given (checked), else
        :func:`choose_steps_per_batch` for these intervals, members, batch size and strategy."""
        if steps_per_batch is None:
            steps_per_batch = choose_steps_per_batch(
                val_every if is_step_count(val_every) else None, log_every if is_step_count(log_every) else None,
                members if is_step_count(members) else 1, batch_size if is_step_count(batch_size) else 1000,
                distributed)
        return cls.from_steps(val_every, log_every, steps_per_batch, max_steps, option)

    @classmethod
    def of_trainer(cls, trainer: Any, steps_per_batch: int | None = None) -> Cadence:
        """The cadence a Trainer runs (its counts are batches), for blocks of ``steps_per_batch``.

        Lightning sets ``val_check_batch`` once the training loader exists; before, its own
        argument ``val_check_interval`` (the same for an int, the only kind an endless stream takes).
        """
        val = trainer.val_check_batch if trainer.val_check_batch is not None else trainer.val_check_interval
        val = val if isinstance(val, int) and val > 0 else None
        return cls(steps_per_batch, val, trainer.log_every_n_steps, trainer.max_steps)

    # --- the step views ------------------------------------------------------------------------------
    @property
    def val_every(self) -> int | None:
        """SGD steps between regular validations."""
        return self.val_batches * self.steps_per_batch if self.val_batches and self.steps_per_batch else None

    def batch_counts(self) -> dict[str, int]:
        """The Trainer's ``val_check_interval`` and ``log_every_n_steps`` (in batches), where set."""
        counts = {"val_check_interval": self.val_batches, "log_every_n_steps": self.log_batches}
        return {k: v for k, v in counts.items() if v is not None}

    def trainer_kwargs(self) -> dict[str, int | None]:
        """The Trainer's arguments for this cadence (Lightning counts batches, never epochs here)."""
        return {**self.batch_counts(), "check_val_every_n_epoch": None}

    # --- the LightningModule's questions --------------------------------------------------------------
    def steps_in_block(self, start: int, block: int) -> int:
        """How many of a block's ``block`` steps run when it starts at SGD step ``start``: all,
        unless ``max_steps`` comes first."""
        return min(block, self.max_steps - start) if self.max_steps >= 0 else block

    def reached_max_steps(self, step: int) -> bool:
        return self.max_steps >= 0 and step >= self.max_steps

    def validates_on_schedule(self, batch_idx: int, whole_block: bool) -> bool:
        """Is the validation after batch ``batch_idx`` a regular one? :meth:`first_block` aligns
        blocks so that batch b ends at SGD step (b + 1)·S, resumed or not: regular validations fall
        on multiples of V·S steps, and only after a block that ran whole (not cut by max_steps)."""
        return self.val_batches is not None and (batch_idx + 1) % self.val_batches == 0 and whole_block

    def logs_after(self, batch_idx: int) -> bool:
        """Are train metrics logged after batch ``batch_idx``?"""
        return bool(self.log_batches) and (batch_idx + 1) % self.log_batches == 0

    # --- the DataModule's question ---------------------------------------------------------------------
    def first_block(self, start: int, done: int) -> tuple[int | None, int]:
        """Where a stream resumed at SGD step ``start`` ends its first block, and how many empty
        blocks come before it, after ``done`` Lightning batches counted before this fit; ``(None,
        0)`` from step 0: blocks end at multiples of S.

        Lightning validates after batch b when (b + 1) % V == 0, counting batches. After a restore,
        the first block ends at the first step E > start with E = (b + 1)·S modulo V·S: batch number
        n then ends at a step that is a multiple of V·S exactly when n is a multiple of V, so
        validations stay on their SGD-step grid. That covers a run stopped inside a block (max_steps
        550: E = 700 for S = 100) and a run resumed with another block size (saved under DDP with
        S = 1000, resumed on one process with S = 100: E = 1200). Where that block would run past a
        validation step (stopped at 550 with S = 500: E = 1500, past 1000), it ends at that step
        instead and is preceded by empty blocks (zero steps) that bring the batch count to the grid.
        """
        if start <= 0:
            return None, 0
        steps, every = self.steps_per_batch, self.val_batches or 1
        period = steps * every
        first_end, empty = (done + 1) * steps, 0
        if first_end <= start:
            first_end += -(-(start + 1 - first_end) // period) * period
        next_validation = (start // period + 1) * period
        if first_end > next_validation:
            first_end, empty = next_validation, -(done + 1) % every
        return first_end, empty


def default_steps_per_batch(*intervals: int, limit: int = MAX_STEPS_PER_BATCH) -> int:
    """The largest S <= ``limit`` that divides every interval (in SGD steps; 0 = off, ignored)."""
    g = 0
    for n in intervals:
        g = math.gcd(g, int(n))
    if g == 0:
        return limit
    return max(d for d in range(1, min(g, limit) + 1) if g % d == 0)


def steps_per_batch_limit(members: int, batch_size: int = 1000) -> int:
    """The largest block the CLI picks for K members and batch B: ``BLOCK_MEMBER_STEPS / K`` SGD steps
    and ``BLOCK_SAMPLES / B`` (the block's inputs), kept within [100, 1000] (B = 1000: 500 for
    K <= 128, 250 for 256, 100 from 640 members up)."""
    members, batch_size = max(1, int(members)), max(1, int(batch_size))
    largest = min(LARGEST_STEPS_PER_BATCH, BLOCK_MEMBER_STEPS // members, BLOCK_SAMPLES // batch_size)
    return max(MAX_STEPS_PER_BATCH, largest)


def choose_steps_per_batch(val_every: int | None, log_every: int | None, members: int, batch_size: int = 1000,
                           distributed: bool = False) -> int:
    """The S the CLI picks when ``data.steps_per_batch`` is not given: the largest divisor of the
    validation interval up to :func:`steps_per_batch_limit` and the train-logging interval; under
    member parallelism up to ``DDP_STEPS_PER_BATCH`` whatever K (every block costs collectives)."""
    if distributed:
        # Every block costs collectives (Lightning's SIGTERM broadcast, the interrupt vote): the fewer
        # blocks, the closer two ranks come to twice one (benchmarks/speed.py's ddp2_vs_single).
        # Train metrics are then logged at whole blocks.
        limit = DDP_STEPS_PER_BATCH
    else:
        limit = steps_per_batch_limit(members, batch_size)
        if log_every:
            limit = max(1, min(limit, log_every))
    return default_steps_per_batch(val_every, limit=limit) if val_every else limit


def check_steps_per_batch(steps_per_batch: int, **intervals: int) -> None:
    """One-line error if S does not divide an interval (its validations would fall off the grid)."""
    for name, n in intervals.items():
        if n and n % steps_per_batch:
            good = default_steps_per_batch(n)
            old = (f" (it counts SGD steps now; a config that counted blocks of {steps_per_batch} "
                   f"steps means {n * steps_per_batch})") if n < steps_per_batch else ""
            raise CircuitsError(
                f"data.steps_per_batch {steps_per_batch} does not divide {name} {n} (SGD steps): "
                f"give a divisor of {n} (e.g. {good}) or omit data.steps_per_batch to have it chosen{old}"
            )


def is_step_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def trainer_cadence(val_every_steps: int = 1000, log_every_steps: int = 500,
                    steps_per_batch: int | None = None) -> dict[str, int | None]:
    """Trainer keyword arguments that validate every ``val_every_steps`` and log train metrics every
    ``log_every_steps`` SGD steps (0: no train logging), for blocks of ``steps_per_batch`` steps."""
    s = steps_per_batch or default_steps_per_batch(val_every_steps)
    return Cadence.from_steps(val_every_steps, log_every_steps, s).trainer_kwargs()


def log_blocks(log_every_steps: int, steps_per_batch: int) -> int:
    """Lightning's ``log_every_n_steps`` (in blocks) nearest to ``log_every_steps`` SGD steps (0: off)."""
    return max(1, round(log_every_steps / steps_per_batch)) if log_every_steps else 0
