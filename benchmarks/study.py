"""Does a member pay for the other cells of a study? µs per network-step of each width alone and inside a study.

    python benchmarks/study.py            # 1-2-1 ... 1-16-1, 64 members per cell, 9 interleaved rounds
    python benchmarks/study.py --quick    # 5 rounds of shorter blocks (a check, ~15 s)
    python benchmarks/study.py --engine torch   # the torch engine's groups (default: auto, as fit: fused here)

A study (``fit --sweep.sizes 1-2-1,1-4-1,1-8-1,1-16-1``) trains its cells side by side in one process:
one group of networks per architecture and lr (``circuits_pl.sweep``), each trained by its own
``train_block`` call per block. This times the training path ``fit`` runs (``TrainedMembers.guarded_steps``
on blocks of S steps, batch 1000, plain SGD, one torch thread), no Lightning, two ways per round:

- **alone**: each width as a run of its own (one cell, K members);
- **in the study**: the four widths in one run, K members each; each group's ``train_block`` call is
  timed inside the study's block, so a width's figure includes whatever the other groups leave in
  the caches.

Figures are µs per network-step (one SGD step of one member) of each width's ``train_block`` calls,
the median of interleaved rounds (machine noise hits both alike; in each round the fastest of 3
blocks) with the spread (min–max); and the
whole study block against its cells' blocks alone one after the other (the study's own overhead:
the per-group loop, the divergence check, the step counters).

The last line is machine-readable: ``study_121_vs_alone=R1 study_vs_cells_alone=R2`` (target R1 <= 1.15).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from circuits_pl import train_block as blocks
from circuits_pl.network import GroupedMLPs
from circuits_pl.optim import OptimizerSettings
from circuits_pl.sweep import Sweep
from circuits_pl.train_block import TrainedMembers

SIZES = [(1, 2, 1), (1, 4, 1), (1, 8, 1), (1, 16, 1)]
BATCH = 1000
LR = 0.1
REPEATS = 3  # blocks per configuration and round; the fastest counts (a busy machine only adds time)


class GroupTimer:
    """Wraps ``train_block`` (as TrainedMembers calls it) to add each call's seconds to its layer sizes."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[int, ...], float] = defaultdict(float)
        self.inner = blocks.train_block

    def __call__(self, optimizer, n_weights, xt, yt, chunk=None, members=None, group=0, engine="torch"):
        params = optimizer.group_params(group)
        sizes = (params[0].shape[2], *(p.shape[1] for p in params[:n_weights]))
        start = time.perf_counter()
        self.inner(optimizer, n_weights, xt, yt, chunk, members, group, engine)
        self.seconds[sizes] += time.perf_counter() - start


def trained(sizes: list[tuple[int, ...]], members: int, engine: str) -> tuple[TrainedMembers, Sweep]:
    sweep = Sweep.product(sizes, [LR], [1.0], members)
    net = GroupedMLPs(sweep, seed=0)
    optimizer = OptimizerSettings(lr=LR).build([list(n.parameters()) for n in net.groups], [LR] * len(net.groups))
    return TrainedMembers(net, optimizer, engine), sweep


def block(run: TrainedMembers, sweep: Sweep, x: torch.Tensor, y: torch.Tensor, timer: GroupTimer) -> float:
    """Seconds of one block of the fit's training path; the timer collects each group's share."""
    start = time.perf_counter()
    run.guarded_steps(x, y, x.shape[0], run.optimizer.steps_done, torch.zeros(sweep.members, dtype=torch.bool))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 50-step blocks")
    parser.add_argument("--members", type=int, default=64, help="members per cell (default 64)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 9; --quick 5)")
    parser.add_argument("--engine", default="auto", choices=["auto", "fused", "torch"],
                        help="--model.engine of the runs (default auto: fused on the CPU, as fit)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = 50 if args.quick else 200
    rounds = args.rounds or (5 if args.quick else 9)
    k = args.members
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(steps, BATCH, 1, generator=gen) * 2 - 1
    y = x.abs()

    timer = GroupTimer()
    blocks.train_block = timer  # TrainedMembers calls the module's train_block: every group's call is timed
    try:
        alone = {s: trained([s], k, args.engine) for s in SIZES}
        study = trained(SIZES, k, args.engine)
        for run in [*alone.values(), study]:  # warm-up: first touch of every tensor
            block(*run, x[:2], y[:2], timer)
        per_alone: dict[tuple[int, ...], list[float]] = defaultdict(list)
        per_study: dict[tuple[int, ...], list[float]] = defaultdict(list)
        whole_alone, whole_study = [], []
        for _ in range(rounds):
            total = 0.0
            for s, run in alone.items():
                best = []
                for _ in range(REPEATS):
                    timer.seconds.clear()
                    best.append((block(*run, x, y, timer), timer.seconds[s]))
                whole, mine = min(best)
                total += whole
                per_alone[s].append(mine / steps / k * 1e6)
            whole_alone.append(total)
            best = []
            for _ in range(REPEATS):
                timer.seconds.clear()
                best.append((block(*study, x, y, timer), dict(timer.seconds)))
            whole, mine = min(best, key=lambda b: b[0])
            whole_study.append(whole)
            for s in SIZES:
                per_study[s].append(mine[s] / steps / k * 1e6)
    finally:
        blocks.train_block = timer.inner

    def fig(values: list[float]) -> str:
        return f"{statistics.median(values):7.2f} ({min(values):.2f}–{max(values):.2f})"

    names = ", ".join("-".join(map(str, s)) for s in SIZES)
    print(f"µs per network-step, engine {args.engine}, {k} members per cell, batch {BATCH}, blocks of {steps} steps, "
          f"plain SGD, one thread; median of {rounds} interleaved rounds (min–max). Study: {names}")
    print(f"{'sizes':>8}  {'alone':>22}  {'in the study':>22}  ratio")
    ratios = {}
    for s in SIZES:
        ratios[s] = statistics.median(per_study[s]) / statistics.median(per_alone[s])
        print(f"{'-'.join(map(str, s)):>8}  {fig(per_alone[s]):>22}  {fig(per_study[s]):>22}  {ratios[s]:.2f}")
    whole = statistics.median(whole_study) / statistics.median(whole_alone)
    print(f"whole study block {statistics.median(whole_study) * 1e3:.1f} ms against its cells alone one after the "
          f"other {statistics.median(whole_alone) * 1e3:.1f} ms: {whole:.2f}")
    print(f"study_121_vs_alone={ratios[SIZES[0]]:.2f} study_vs_cells_alone={whole:.2f}")


if __name__ == "__main__":
    main()
