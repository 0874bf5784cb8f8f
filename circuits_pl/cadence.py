"""Validation and logging cadence in SGD steps, turned into Lightning's batch counts.

Lightning counts *batches*; one circuits_pl batch is a block of ``steps_per_batch`` (S) SGD steps.
A user sets the cadence in SGD steps (``--trainer.val_check_interval 1000`` validates at steps 1000,
2000, ...); the CLI chooses S to divide it and the train-logging interval (the largest divisor up to
:func:`steps_per_batch_limit`: 500 steps for a few members, 100 for many), and Lightning gets
``1000 / S`` batches. Train metrics are logged every ``log_every_n_steps`` SGD steps rounded to whole
blocks (518 = 7 blocks of 74 with validation every 370 and S = 74). The data module keeps every
block aligned so that batch b ends at SGD step (b + 1)·S, resumed or not.

Python API: ``Trainer(max_steps=..., **trainer_cadence(1000, 500, steps_per_batch=100))``.
"""

from __future__ import annotations

import math

from circuits_pl.errors import CircuitsError

MAX_STEPS_PER_BATCH = 100  # the default of the data module (Python API): blocks of 100 steps
# The CLI chooses S per run (steps_per_batch_limit): Lightning's per-block cost (a batch through the
# fit loop, callbacks, the block's own setup: ~0.3 ms) is amortised over S SGD steps of K members.
# Measured, `fit`, 2-2-1, one thread, µs per network-step by S (benchmarks/speed.py's loop):
#   K = 1:    S 100: 41.9  250: 39.9  500: 39.7  1000: 40.3
#   K = 128:  S 100: 1.97  250: 1.92  500: 1.90
# Larger blocks also mean a later answer to Ctrl-C (honoured between blocks) and more memory for
# the block's inputs, so S shrinks as K grows: about BLOCK_MEMBER_STEPS member-steps per block.
BLOCK_MEMBER_STEPS = 64_000
BLOCK_SAMPLES = 500_000  # 500 steps of batch 1000: a block's inputs and targets, 6 MB for two inputs
LARGEST_STEPS_PER_BATCH = 1000
DDP_STEPS_PER_BATCH = 1000  # under member parallelism: one block per validation interval, up to this


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
        # Lightning's SIGTERM broadcast and the interrupt vote cost ~5 ms per block. Measured, K = 128
        # 2-2-1, 10k steps on 2 ranks: 1.61 s with blocks of 1000, 1.66 s with 500, 1.83 s with 250
        # (1 process: 2.5 s). Train metrics are then logged at whole blocks.
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
    check_steps_per_batch(s, val_check_interval=val_every_steps)
    return {"val_check_interval": val_every_steps // s, "log_every_n_steps": log_blocks(log_every_steps, s),
            "check_val_every_n_epoch": None}


def log_blocks(log_every_steps: int, steps_per_batch: int) -> int:
    """Lightning's ``log_every_n_steps`` (in blocks) nearest to ``log_every_steps`` SGD steps (0: off)."""
    return max(1, round(log_every_steps / steps_per_batch)) if log_every_steps else 0
