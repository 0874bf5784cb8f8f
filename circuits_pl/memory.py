"""How much memory a run needs, estimated from its sizes before anything is built (torch only).

A run of K members of layer sizes n_0-n_1-...-n_L, batch B, S SGD steps per block, V validation
points holds, in float32 (4 bytes):

- per member: the weights P = sum(n_l * n_{l+1}) (+ biases), four times over (parameters, gradients,
  the block's snapshot for the divergence check, a checkpoint's copy), plus the per-member buffers;
  the hot path's activations, (K, n_l, B) per layer, kept for the backward pass, plus the backward's
  temporaries (about 3 x the widest layer); validation/test forward passes, (K, n_l, V) per layer,
  and the (V, K) prediction and error matrices torchmetrics builds;
- fixed: one block of inputs (S, B, n_0) with its targets and its batch-last copy, the
  validation/test sets, the predict grid, and the process itself (Python, torch, Lightning).

``benchmarks/memory.py`` prints these estimates beside the measured peak RSS of real fits: the
estimate is meant to lie above the peak, so that it refuses only runs that could not fit and its
"largest that fits" errs on the safe side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

FLOAT = 4  # bytes of a float32
# Peak RSS of a tiny fit (2-2-1, K=1): Python + torch + Lightning + jsonargparse, as benchmarks/memory.py
# measures it, rounded up.
PROCESS_BYTES = 600 * 2**20
WEIGHT_COPIES = 4  # parameters, gradients, the block snapshot, the checkpoint's copy
MEMBER_BUFFER_BYTES = 4 + 8 * 4 + 8 + 8 + 16  # val_mse, val_history (8), solved_at, diverged_at, metric state


@dataclass(frozen=True)
class RunSize:
    """The sizes of a run that decide its memory."""

    layer_sizes: tuple[int, ...]
    members: int
    batch_size: int
    steps_per_batch: int = 100
    val_size: int = 1000
    predict_points: int = 41
    bias: bool = False

    @property
    def arity(self) -> int:
        return self.layer_sizes[0]


def parameters_per_member(layer_sizes: Sequence[int], bias: bool = False) -> int:
    sizes = list(layer_sizes)
    return sum(i * o for i, o in zip(sizes[:-1], sizes[1:])) + (sum(sizes[1:]) if bias else 0)


def estimate(size: RunSize) -> dict[str, int]:
    """Bytes a run needs, by part: ``per_member`` (times K already), ``fixed`` and ``total``."""
    units = list(size.layer_sizes[1:])
    widest = max(units)
    k, b, v = size.members, size.batch_size, size.val_size
    weights = WEIGHT_COPIES * parameters_per_member(size.layer_sizes, size.bias) * FLOAT + MEMBER_BUFFER_BYTES
    train_acts = (sum(units) + 3 * widest) * b * FLOAT  # per member, per SGD step
    eval_acts = (sum(units) + widest + 3) * v * FLOAT  # per member: forward, (V, K) preds, error, square
    per_member = k * (weights + max(train_acts, eval_acts))
    block = size.steps_per_batch * b * (3 * size.arity + 2) * FLOAT  # x, its batch-last copy, cone fold, y
    sets = 4 * v * (size.arity + 1) * FLOAT  # val, test (and held-out) points with targets
    grid = size.predict_points ** size.arity * (size.arity + 2) * FLOAT * 2
    fixed = PROCESS_BYTES + block + sets + grid
    return {"per_member": per_member, "fixed": fixed, "total": per_member + fixed}


def checkpoint_bytes(size: RunSize) -> int:
    """Bytes of one checkpoint: weights, optimizer state (plain SGD: none) and per-member buffers."""
    return size.members * (parameters_per_member(size.layer_sizes, size.bias) * FLOAT + MEMBER_BUFFER_BYTES) + 2**16


def available_bytes() -> int | None:
    """Memory this process can still use: MemAvailable of /proc/meminfo, capped by a cgroup limit."""
    found = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except OSError:
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
            limit = int(text)
        except (OSError, ValueError):  # "max": no limit
            continue
        if limit < 2**60:
            usage = _cgroup_usage(os.path.dirname(path))
            found = limit - usage if found is None else min(found, limit - usage)
    return found


def _cgroup_usage(directory: str) -> int:
    for name in ("memory.current", "memory.usage_in_bytes"):
        try:
            with open(os.path.join(directory, name)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            continue
    return 0


def largest_fitting(size: RunSize, field: str, budget: int) -> int:
    """The largest value of ``field`` (``members``, ``batch_size`` or ``width``: every hidden layer)
    that keeps the estimate within ``budget`` bytes, the other sizes fixed; 0 if none does."""

    def fits(value: int) -> bool:
        if field == "width":
            sizes = (size.layer_sizes[0], *[value] * (len(size.layer_sizes) - 2), size.layer_sizes[-1])
            trial = RunSize(sizes, size.members, size.batch_size, size.steps_per_batch, size.val_size,
                            size.predict_points, size.bias)
        else:
            trial = RunSize(**{**size.__dict__, field: value})
        return estimate(trial)["total"] <= budget

    low, high = 0, 1
    while fits(high):
        low, high = high, high * 2
        if high > 2**62:
            return low
    while high - low > 1:  # fits(low), not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def gib(n: float) -> str:
    """Bytes as a short human figure: ``3.2 GiB``, ``410 MiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
