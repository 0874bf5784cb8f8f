"""Candidate training streams: µs of inputs per SGD step (B = 1000, in = 2, one thread).

    python benchmarks/stream_candidates.py

Every candidate produces one block of S = 100 steps; medians of 30 repetitions, all in one process.
Which of them keep "step t depends only on (seed, rank, t)" is said in circuits_pl/stream.py.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from circuits_pl.stream import STEPS_PER_DRAW, UniformBlocks, mix_seed
from circuits_pl.tasks import get_task

B, IN, S = 1000, 2, 100
_gen = torch.Generator()


def per_step_reseed() -> None:
    """The previous stream: one mt19937 reseed per step."""
    x = torch.empty(S, B, IN)
    for s in range(S):
        _gen.manual_seed(mix_seed(0, 0, s))
        x[s].uniform_(-1, 1, generator=_gen)


def reseed_per_draw(steps: int):
    def draw() -> None:
        x = torch.empty(S, B, IN)
        for d in range(0, S, steps):
            _gen.manual_seed(mix_seed(0, 0, d))
            x[d : d + steps].uniform_(-1, 1, generator=_gen)

    return draw


_M1, _M2, _M0 = -4658895280553007687, -7723592293110705685, -7046029254386353131  # SplitMix64, as int64


def splitmix_counter_hash() -> None:
    """A counter-based SplitMix64 hash of (key + element index) in int64 torch ops, whole block at once."""
    h = (torch.arange(S * B * IN, dtype=torch.int64) + 12345) * _M0
    h ^= (h >> 30) & ((1 << 34) - 1)
    h *= _M1
    h ^= (h >> 27) & ((1 << 37) - 1)
    h *= _M2
    h ^= (h >> 31) & ((1 << 33) - 1)
    ((h >> 40) & ((1 << 24) - 1)).to(torch.float32).mul_(2.0**-23).sub_(1.0)


def numpy_block(bit_generator):
    def draw() -> None:
        rng = np.random.Generator(bit_generator())
        torch.from_numpy(rng.random((S, B, IN), dtype=np.float32)).mul_(2).sub_(1)

    return draw


def project_stream() -> None:
    """circuits_pl.stream.UniformBlocks: inputs of one block (no task, no cone)."""
    _stream.inputs(0, S)


_stream = UniformBlocks(get_task("add"), B, S, seed=0)


def us_per_step(fn, repeats: int = 30) -> tuple[float, float, float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / S * 1e6)
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[0], q[2]


def main() -> None:
    torch.set_num_threads(1)
    try:
        torch.Generator().set_offset(5)
        print("torch CPU Generator.set_offset: works")
    except RuntimeError as err:
        print(f"torch CPU Generator.set_offset: {err}")
    candidates = {
        "one mt19937 reseed per step (previous)": per_step_reseed,
        "SplitMix64 counter hash, int64 torch": splitmix_counter_hash,
        "numpy Philox4x64 per block": numpy_block(lambda: np.random.Philox(key=123, counter=0)),
        "numpy SFC64 per block": numpy_block(lambda: np.random.SFC64(123)),
        **{f"one mt19937 reseed per {c} steps": reseed_per_draw(c) for c in (5, 10, 20, 100)},
        f"circuits_pl.stream (per {STEPS_PER_DRAW} steps)": project_stream,
    }
    print(f"{'candidate':<44}{'µs/step median':>16}{'  quartiles':>16}")
    for name, fn in candidates.items():
        med, lo, hi = us_per_step(fn)
        print(f"{name:<44}{med:>16.2f}   [{lo:.2f}, {hi:.2f}]")


if __name__ == "__main__":
    main()
