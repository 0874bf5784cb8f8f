"""Check circuits_pl.memory's estimate against the measured peak memory of real fits.

Each fit runs in its own process (``python -m circuits_pl fit``, 200 SGD steps, no figures, in a
temporary directory), which reports its peak resident set (``resource.getrusage`` max RSS). Printed
per member count K: measured peak, estimate, and the per-member bytes of both (the slope from the
previous K: the process's own ~0.4-0.5 GB varies by ~0.1 GB between runs, so slopes from K=1 are
noisy), so the per-member term of the estimate can be compared directly.

    python benchmarks/memory.py                      # 2-2-1, batch 1000, K = 1, 2000, 8000
    python benchmarks/memory.py --sizes 2,32,1 --members 1 500 2000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from circuits_pl.memory import RunSize, estimate, gib  # noqa: E402

CHILD = """
import resource, sys
from circuits_pl.cli import main
try:
    main(sys.argv[1:])
finally:
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def measure(sizes: list[int], members: int, batch: int, steps: int) -> int:
    task = {1: "abs", 2: "add"}[sizes[0]]
    args = ["fit", "--task", task, "--model.layer_sizes", str(sizes), "--model.members", str(members),
            "--data.batch_size", str(batch), "--trainer.max_steps", str(steps), "--stop.when", "never",
            "--trainer.enable_progress_bar", "false", "--figures", "false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=tmp, env=env, capture_output=True, text=True)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("MAXRSS_KB")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"fit failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return int(lines[-1].split()[1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,2,1", help="layer sizes, e.g. 2,2,1")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2000, 8000])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"layer sizes {sizes}, batch {args.batch}, {args.steps} steps")
    print(f"{'K':>8} {'measured':>10} {'estimate':>10} {'meas/member':>12} {'est/member':>11} {'est/meas':>9}")
    prev = None
    for k in args.members:
        peak = measure(sizes, k, args.batch, args.steps)
        est = estimate(RunSize(tuple(sizes), k, args.batch))
        slope_m = slope_e = float("nan")
        if prev is not None:
            slope_m = (peak - prev[1]) / (k - prev[0])
            slope_e = (est["total"] - prev[2]) / (k - prev[0])
        prev = (k, peak, est["total"])
        print(f"{k:>8} {gib(peak):>10} {gib(est['total']):>10} {slope_m:>12.0f} {slope_e:>11.0f} "
              f"{est['total'] / peak:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
