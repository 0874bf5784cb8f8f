"""Uniform inputs: the training stream and the project's one uniform-[-1, 1) sampler. Plain torch.

Training data is a pure function of (seed, rank, step). Steps are grouped in fixed *draws* of
``STEPS_PER_DRAW`` consecutive steps, aligned to multiples of it; the draw holding steps
``[d*C, (d+1)*C)`` is one ``uniform_`` call of a CPU generator (mt19937) seeded with
``mix_seed(seed, rank, d)``. So step t's inputs depend only on (seed, rank, t) (and the batch shape),
not on how many steps a Lightning batch packs nor on where a run was resumed; a block that starts or
ends inside a draw takes its part of that draw. (``circuits_pl.data`` always passes rank 0: DDP
ranks split the members, not the data, so every rank draws the same stream.)

Why draws (``benchmarks/stream_candidates.py`` prints the candidates side by side): a reseed per step
costs more than the values it draws; a counter hash in torch ops takes several memory passes; numpy's
Philox/SFC64 per block are hardly faster than one mt19937 reseed per draw and would bring numpy into this
floor; torch's CPU generator has no offset ("CPU Generator does not use offset"). C = 10 keeps most of
the gain of longer draws, divides the usual block sizes (10, 50, 100, 1000) and bounds the scratch draw
of a misaligned block to 10 steps.

A run of the fused engine draws the same numbers through ``circuits_pl.fused.fill_uniform`` (torch's
mt19937 and float32 transform reproduced in numba, bit for bit, tested), in one compiled loop instead
of torch's one-value-at-a-time generator, which is by then most of a single network's step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from circuits_pl.tasks import Task

STEPS_PER_DRAW = 10

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A 64-bit seed from integers (SplitMix64 finaliser over a running hash): distinct inputs
    give unrelated streams, unlike ``seed + step``, where run 0's step 1 is run 1's step 0."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 29
    return h


def fill_uniform(out: torch.Tensor, seed: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``out`` in place with U[-1, 1) drawn from a CPU generator seeded with ``seed``.

    float32 takes 24 random bits per value, float64 53; the largest value is 1 - 2^-23 (2^-52).
    Pass ``generator`` to reuse one (a new Generator costs more than reseeding one).
    """
    gen = torch.Generator() if generator is None else generator
    gen.manual_seed(seed)
    return out.uniform_(-1.0, 1.0, generator=gen)


def uniform_inputs(n: int, arity: int, seed: int, cone: Sequence[float] | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` points uniform in [-1, 1)^arity (restricted to ``cone`` if given) from one seed."""
    return fold_into_cone(fill_uniform(torch.empty(n, arity, dtype=dtype), seed), cone)


def fold_into_cone(x: torch.Tensor, cone: Sequence[float] | None, inside: bool = True) -> torch.Tensor:
    """Map points into the half-space ``u·x >= 0`` (or ``< 0`` if not ``inside``) by x -> -x.

    The box [-1, 1]^n is symmetric under x -> -x, so this turns the uniform distribution on the
    box into the uniform distribution on its part in the half-space, for any direction u.
    """
    if cone is None:
        return x
    u = torch.as_tensor(cone, dtype=x.dtype)
    side = x @ u
    flip = side < 0 if inside else side >= 0
    return torch.where(flip.unsqueeze(-1), -x, x)


class UniformBlocks(IterableDataset):
    """Endless stream of training blocks ``(x, y)`` of shape ``(S, B, in)``, ``(S, B, 1)``.

    Args:
        task: the task (gives arity and targets).
        batch_size: B, inputs per SGD step.
        steps_per_batch: S, SGD steps per block.
        seed: stream seed.
        rank: DDP rank (each rank draws its own inputs).
        start_step: first SGD step to generate (the trainer's global_step on resume).
        cone: optional direction u: draw only inputs with ``u·x >= 0``.
        first_block_end: the first block covers steps ``start_step .. first_block_end - 1``; by default
            it ends at the next multiple of S (a resumed stream first completes its block). Later
            blocks are aligned to multiples of S.
        empty_blocks: blocks of zero steps yielded before the first one. A resumed run uses them to
            bring Lightning's batch count in line with its validation grid (``CircuitDataModule``).
        draws: ``torch`` (torch's CPU generator) or ``fused`` (the same numbers from
            ``circuits_pl.fused.fill_uniform``, faster; needs numba).
    """

    def __init__(self, task: Task, batch_size: int, steps_per_batch: int, seed: int, rank: int = 0,
                 start_step: int = 0, cone: Sequence[float] | None = None, first_block_end: int | None = None,
                 empty_blocks: int = 0, draws: str = "torch"):
        if first_block_end is not None and first_block_end <= start_step:
            raise ValueError(f"first_block_end must be after start_step {start_step}, got {first_block_end}")
        self.empty_blocks = int(empty_blocks)
        self.task, self.batch_size, self.steps_per_batch = task, batch_size, steps_per_batch
        self.seed, self.rank, self.start_step, self.cone = seed, rank, start_step, cone
        self.first_block_end = first_block_end
        self._gen = torch.Generator()
        if draws not in ("torch", "fused"):
            raise ValueError(f"draws must be torch or fused, got {draws!r}")
        self.draws = draws
        self._cached: tuple[int, torch.Tensor] | None = None  # the last draw read in part

    def _draw(self, index: int, out: torch.Tensor) -> torch.Tensor:
        seed = mix_seed(self.seed, self.rank, index)
        if self.draws == "fused":
            from circuits_pl.fused import fill_uniform as fused_fill_uniform

            return fused_fill_uniform(out, seed)
        return fill_uniform(out, seed, self._gen)

    def _partial_draw(self, index: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != index:
            out = torch.empty(STEPS_PER_DRAW, self.batch_size, self.task.arity)
            self._cached = (index, self._draw(index, out))
        return self._cached[1]

    def inputs(self, step: int, n: int) -> torch.Tensor:
        """The inputs of SGD steps ``step .. step + n - 1``: ``(n, B, in)``, before cone folding."""
        x = torch.empty(n, self.batch_size, self.task.arity)
        s, stop = step, step + n
        while s < stop:
            index = s // STEPS_PER_DRAW
            lo = index * STEPS_PER_DRAW
            end = min(lo + STEPS_PER_DRAW, stop)
            if s == lo and end == lo + STEPS_PER_DRAW:
                self._draw(index, x[s - step : end - step])  # a whole draw, straight into the block
            else:
                x[s - step : end - step] = self._partial_draw(index)[s - lo : end - lo]
            s = end
        return x

    def block(self, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = fold_into_cone(self.inputs(step, n), self.cone)
        return x, self.task(x)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step, size = self.start_step, self.steps_per_batch
        n = size - step % size if self.first_block_end is None else self.first_block_end - step
        for _ in range(self.empty_blocks):
            yield torch.empty(0, self.batch_size, self.task.arity), torch.empty(0, self.batch_size, 1)
        while True:
            yield self.block(step, n)
            step += n
            n = size - step % size
