"""Initialising K = 100,000 members: the per-member loop against circuits_pl.init_weights, in one process.

    python benchmarks/init_speed.py

Median (min-max) of 3 interleaved rounds, one thread; each round also checks the two bit for bit.
"""

from __future__ import annotations

import statistics
import time

import torch

from circuits_pl.network import ReLUMLP

MEMBERS = 100_000


class MemberLoop(ReLUMLP):
    """ReLUMLP with the previous reset_parameters: one Generator and nn.init call per member and layer."""

    def reset_parameters(self, seed: int) -> None:
        self.reset_parameters_member_by_member(seed)


def main() -> None:
    torch.set_num_threads(1)
    print(f"init of {MEMBERS:,} members, seconds, median (min-max) of 3 rounds")
    for sizes in [(2, 2, 1), (2, 3, 1), (2, 16, 16, 1)]:
        times: dict[str, list[float]] = {"loop": [], "vectorised": []}
        for _ in range(3):
            nets = {}
            for name, cls in (("loop", MemberLoop), ("vectorised", ReLUMLP)):
                start = time.perf_counter()
                nets[name] = cls(sizes, members=MEMBERS, seed=3)
                times[name].append(time.perf_counter() - start)
            pairs = zip(nets["loop"].parameters(), nets["vectorised"].parameters())
            assert all(torch.equal(a, b) for a, b in pairs), "vectorised init differs from the loop"
        med = {k: statistics.median(v) for k, v in times.items()}
        cells = "  ".join(f"{k} {med[k]:.2f} ({min(v):.2f}-{max(v):.2f})" for k, v in times.items())
        print(f"{'-'.join(map(str, sizes)):<10} {cells}  ratio {med['loop'] / med['vectorised']:.1f}x  bit-identical")


if __name__ == "__main__":
    main()
