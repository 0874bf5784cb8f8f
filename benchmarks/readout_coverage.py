"""How many trained members below MSE 1e-6 the structural readout names with a correct formula.

Trains the settings of issue 13's table through the real CLI (``python -m circuits_pl fit``,
``--stop.when never``, lr 0.1), reads every member whose MSE (float64, 20k points uniform in
[-1, 1]^arity, from its weights) is below 1e-6 with :func:`circuits_pl.readout.describe_member`,
and prints per setting: members below 1e-6, how many are named with a correct formula (exact, and
the named structural form rebuilt as a function equals the target on a dense grid), the readout's
cost per member (one torch thread), the unnamed ones with the reason, and the 3 commonest labels.
Goal: all of them.

    python benchmarks/readout_coverage.py                     # trains into a temporary directory
    python benchmarks/readout_coverage.py --root runs/cov     # keeps the runs; reuses finished ones
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from circuits_pl.inspection import load_run
from circuits_pl.readout import describe_member, random_inputs
from circuits_pl.tasks import BUILTIN_TASKS

# (task, layer sizes, steps, members): issue 13's table
SETTINGS = [
    ("abs", (1, 4, 1), 5000, 64),
    ("add", (2, 4, 1), 20000, 64),
    ("add", (2, 8, 1), 60000, 64),
    ("min", (2, 6, 1), 60000, 64),
    ("min", (2, 3, 2, 1), 20000, 512),
]
BELOW = 1e-6


def train(root: Path, task: str, sizes: tuple[int, ...], steps: int, members: int) -> Path:
    name = f"{task}_{'-'.join(map(str, sizes))}_{steps}_{members}"
    run = root / name / "lightning_logs" / "version_0"
    if (run / "checkpoints" / "last.ckpt").is_file():
        return run
    cmd = [sys.executable, "-m", "circuits_pl", "fit", "--task", task,
           "--model.layer_sizes", "[" + ",".join(map(str, sizes)) + "]", "--model.members", str(members),
           "--model.lr", "0.1", "--trainer.max_steps", str(steps), "--stop.when", "never",
           "--trainer.default_root_dir", str(root / name)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def coverage(run: Path, task_name: str) -> tuple[int, int, Counter, float, Counter]:
    task = BUILTIN_TASKS[task_name]
    module = load_run(run).module
    grid = random_inputs(20000, task.arity, seed=7)
    x = random_inputs(1000, task.arity, seed=0)
    below = named = 0
    reasons: Counter = Counter()
    labels: Counter = Counter()
    seconds = 0.0
    for k in range(module.members):
        weights = [w.detach().to(torch.float64) for w in module.net.weights_of(k)]
        out = grid
        for layer, w in enumerate(weights):
            out = out @ w.T
            if layer < len(weights) - 1:
                out = out.relu()
        if not float((out - task(grid)).square().mean()) < BELOW:
            continue
        below += 1
        t0 = time.perf_counter()
        member = describe_member(weights, task, x)
        seconds += time.perf_counter() - t0
        form_ok = member.exact and member.structure is not None and member.structure.max_error(task, grid) < 1e-9
        if form_ok and member.label:
            named += 1
            labels[member.label] += 1
        else:
            reasons[member.reason or "named, but the named form is not the target on the grid"] += 1
    return below, named, reasons, seconds / max(below, 1), labels


def main() -> None:
    # one torch thread: on this shared 2-core machine two threads made describe_member ~10x slower
    # (measured: 2.3 ms vs ~20-30 ms a member of min 2-6-1 under load)
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="where runs go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        rows = []
        for task, sizes, steps, members in SETTINGS:
            run = train(root, task, sizes, steps, members)
            rows.append((f"{task} {'-'.join(map(str, sizes))}, {steps // 1000}k, {members} members",
                         *coverage(run, task)))
        print(f"\n{'setting':<36} {'below 1e-6':>10} {'named, correct':>15} {'ms/member':>10}")
        for label, below, named, reasons, sec, labels in rows:
            print(f"{label:<36} {below:>10} {named:>15} {1000 * sec:>10.2f}")
            for reason, n in reasons.most_common():
                print(f"    unnamed {n}x: {reason}")
            for name, n in labels.most_common(3):
                print(f"    {n}x {name}")


if __name__ == "__main__":
    main()
