"""Validation and logging cadence in SGD steps, turned into Lightning's batch counts.

Lightning counts *batches*; one circuits_pl batch is a block of ``steps_per_batch`` (S) SGD steps.
A user sets the cadence in SGD steps (``--trainer.val_check_interval 1000`` validates at steps 1000,
2000, ...); S is chosen to divide it (the largest divisor <= 100), and Lightning gets ``1000 / S``
batches. Train metrics are logged every ``log_every_n_steps`` SGD steps rounded to whole blocks
(500 with S = 100; 518 = 7 blocks of 74 with validation every 370). The data module keeps every
block aligned so that batch b ends at SGD step (b + 1)·S, resumed or not.

Python API: ``Trainer(max_steps=..., **trainer_cadence(1000, 500, steps_per_batch=100))``.
"""

from __future__ import annotations

import math

from circuits_pl.errors import CircuitsError

MAX_STEPS_PER_BATCH = 100  # Lightning's per-batch cost (~1.6 ms) is amortised well by 100 steps


def default_steps_per_batch(*intervals: int, limit: int = MAX_STEPS_PER_BATCH) -> int:
    """The largest S <= ``limit`` that divides every interval (in SGD steps; 0 = off, ignored)."""
    g = 0
    for n in intervals:
        g = math.gcd(g, int(n))
    if g == 0:
        return limit
    return max(d for d in range(1, min(g, limit) + 1) if g % d == 0)


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
