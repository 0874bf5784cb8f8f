"""What the certified readout costs per member (issue 23: at most 5 ms).

For K random members of each architecture (one torch thread): the distance of every member to the target at
once (``certify.to_target``, what results.json and a timeline would call), of every member to its printed
formula at once (``certify.between_each``, as results.json does), the same one member at a time
(``certify.between``, as inspect does), and the exact cones of one stuck member (``certify.error_cones``,
inspect only). Median of 3 rounds, in ms per member; the last line is the one to quote.

    python benchmarks/certify_speed.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from circuits_pl.readout import canonicalize, certify
from circuits_pl.readout.formula import formula_weights
from circuits_pl.tasks import BUILTIN_TASKS

SETTINGS = [("min", (2, 3, 1), 1024), ("min", (2, 8, 1), 1024), ("min", (2, 16, 1), 1024),
            ("min", (2, 3, 2, 1), 1024), ("min", (2, 8, 8, 1), 256), ("abs", (1, 8, 1), 1024)]
PER_MEMBER = 32  # members timed one by one (formula distance, cones)


def median_ms(fn, *args, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def each_between(members, formulas) -> None:
    for m, f in zip(members, formulas, strict=True):
        certify.between(m, f)


def each_cones(members, task) -> None:
    for m in members:
        certify.error_cones(m, task)


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    worst = 0.0
    print(f"{'task':<5} {'sizes':<9} {'K':>5} {'target, all':>11} {'formula, all':>12} {'formula, one':>12} "
          f"{'cones':>8}   (ms per member)")
    for task_name, sizes, k in SETTINGS:
        task = BUILTIN_TASKS[task_name]
        nets = [rng.normal(size=(k, o, i)) * 0.7 for i, o in zip(sizes[:-1], sizes[1:])]
        certify.to_target(task, [w[:2] for w in nets])  # the task's circuit checked and cached once
        all_k = median_ms(certify.to_target, task, nets) / k
        members = [[torch.as_tensor(w[m]) for w in nets] for m in range(PER_MEMBER)]
        formulas = [formula_weights(canonicalize(m)) for m in members]
        all_formulas = [formula_weights(canonicalize([torch.as_tensor(w[m]) for w in nets])) for m in range(k)]
        to_formulas = median_ms(certify.between_each, [[w[m] for w in nets] for m in range(k)], all_formulas) / k
        formula = median_ms(each_between, members, formulas) / PER_MEMBER
        cones = median_ms(each_cones, members, task) / PER_MEMBER
        worst = max(worst, all_k + to_formulas)
        print(f"{task_name:<5} {'-'.join(map(str, sizes)):<9} {k:>5} {all_k:>11.4f} {to_formulas:>12.4f} "
              f"{formula:>12.3f} {cones:>8.3f}")
    print(f"certify_ms_per_member={worst:.3f} (to target + to formula, all K at once, the worst architecture; "
          "budget 5)")


if __name__ == "__main__":
    main()
