"""A study in one process: the phase diagram's wall time against one fit per cell, and whether a member
pays for the other cells (µs per network-step of each width alone and inside a study).

    python benchmarks/study.py            # docs/study.md's phase diagram (36 cells x 64 seeds) both ways, then
                                          # 1-2-1 ... 1-16-1, 64 members per cell, 9 interleaved rounds
    python benchmarks/study.py --quick    # a smaller diagram (18 cells x 16 seeds, 2000 steps), 5 shorter rounds
    python benchmarks/study.py --engine torch   # the torch engine's groups (default: auto, as fit: fused here)

**Phase diagram.** ``report --tasks add,abs,min --sweep.sizes 2-2-1,2-4-1,2-8-1,2-16-1 --sweep.lr 0.03,0.1,0.3
--model.members 64`` run as it runs now (one fit per task holding the task's whole diagram, ``--jobs`` = CPU
cores: the wall time of the whole command, report.md and figures included) against one ``fit`` process
per cell (report's old way: the same seeds, budget and flags, run by the same local launcher with as many
at once, each ``python -m circuits_pl fit`` paying its own imports, fits only: nothing written after them),
and against one fit per cell forked from the launcher's forkserver as report's local fits are now (which
leaves the study in one fit per task only the per-fit costs after the imports to save). Every cell's
found count is checked equal every way.

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

The last line is machine-readable: ``phase_one_process_vs_per_cell=R0 study_121_vs_alone=R1
study_vs_cells_alone=R2`` (targets R0 <= 0.4, R1 <= 1.15).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

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


PHASE = ["--tasks", "add,abs,min", "--sweep.sizes", "2-2-1,2-4-1,2-8-1,2-16-1", "--sweep.lr", "0.03,0.1,0.3",
         "--model.members", "64"]
PHASE_QUICK = ["--tasks", "abs,add", "--sweep.sizes", "2-2-1,2-4-1,2-8-1", "--sweep.lr", "0.03,0.1,0.3",
               "--model.members", "16",
               "--trainer.max_steps", "2000"]


def phase_diagram(study: list[str], jobs: int) -> tuple[float, float, float, int]:
    """Wall seconds of ``report STUDY``, of one fit per cell of it as report ran them before a study was
    one fit per task (each ``python -m circuits_pl fit``: CIRCUITS_PL_FORK=0), and of one fit per cell
    forked as report's local fits are now; the number of cells."""
    from circuits_pl.launch import LocalLauncher
    from circuits_pl.report import fit_spec, make_study, parse_args
    from circuits_pl.study import FitPlan

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "circuits_pl", "report", *study, "--jobs", str(jobs),
                        "--out", f"{tmp}/one"], check=True, capture_output=True)
        one = time.perf_counter() - start
        rows = list(csv.DictReader(open(f"{tmp}/one/version_0/report.csv")))

        args = parse_args(study)
        bases, cells = make_study(args)
        plans = [FitPlan(f"{b.name}_{i}", b, (c,), 0, args.members) for b in bases for i, c in enumerate(cells[b.name])]
        found = {}
        by_name = {p.name: p for p in plans}

        def done(spec, res, run_dir) -> None:
            (cell,) = by_name[spec.name].cells
            found[(by_name[spec.name].base.name, "-".join(map(str, cell.layer_sizes)), cell.lr)] = res["found"]

        times = {}
        for fork in ("0", "1"):
            os.environ["CIRCUITS_PL_FORK"] = fork
            found.clear()
            start = time.perf_counter()
            LocalLauncher(jobs).run([fit_spec(p, args, Path(tmp) / f"per_cell{fork}", []) for p in plans], done)
            times[fork] = time.perf_counter() - start
            same = {(r["task"], r["layer_sizes"], float(r["lr"])): int(r["found"]) for r in rows}
            if same != found:
                raise SystemExit(f"the two ways disagree: {json.dumps(sorted(same.items()))} "
                                 f"vs {sorted(found.items())}")
        del os.environ["CIRCUITS_PL_FORK"]
    return one, times["0"], times["1"], len(plans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 50-step blocks")
    parser.add_argument("--members", type=int, default=64, help="members per cell (default 64)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 9; --quick 5)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="fits at once (default: CPU cores)")
    parser.add_argument("--phase_only", action="store_true", help="only the phase diagram, both ways")
    parser.add_argument("--engine", default="auto", choices=["auto", "fused", "torch"],
                        help="--model.engine of the runs (default auto: fused on the CPU, as fit)")
    args = parser.parse_args()
    study = PHASE_QUICK if args.quick else PHASE
    one, per_cell, per_cell_forked, n_cells = phase_diagram(study, args.jobs)
    phase = one / per_cell
    print(f"phase diagram ({n_cells} cells, report {' '.join(study)}, {args.jobs} at once): one fit per task "
          f"{one:.1f} s (the whole report) against one fit per cell {per_cell:.1f} s as processes of their own "
          f"(fits only): {phase:.2f}; against one fit per cell forked as report's fits are "
          f"{per_cell_forked:.1f} s: {one / per_cell_forked:.2f}; found counts equal in every cell")
    if args.phase_only:
        print(f"phase_one_process_vs_per_cell={phase:.2f} "
              f"phase_one_process_vs_per_cell_forked={one / per_cell_forked:.2f}")
        return
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
    print(f"phase_one_process_vs_per_cell={phase:.2f} study_121_vs_alone={ratios[SIZES[0]]:.2f} "
          f"study_vs_cells_alone={whole:.2f}")


if __name__ == "__main__":
    main()
