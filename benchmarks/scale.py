"""Member parallelism: the same K members trained by one process, by two DDP ranks (CPU, gloo), and by
one process with two threads (``--threads 2``: the fused engine splits the members over threads).

    python benchmarks/scale.py                  # K = 128, 2-2-1, 20000 steps, 3 rounds (~2 minutes)
    python benchmarks/scale.py --quick          # 2 rounds
    python benchmarks/scale.py --engine torch   # the torch engine (its --threads 2 is torch's intra-op threads)
    python benchmarks/scale.py --quick --members 1024 --steps 5000   # more members per rank (~1 minute)

With the fused engine, K = 128 trains in about as long as its 20 validations, timeline, checkpoints and
logs take, and every rank pays those whole: two ranks gain little there (docs/speed.md has the parts).

Each run is a real ``python -m circuits_pl fit`` (validation, checkpoints, logging at their
defaults, 20000 steps: the default fit's length); the training time is the one its end-of-fit summary
reports and saves in results.json
(the training loop, validations and checkpoints included; start-up, imports and process launch
excluded). Rounds alternate
the three so machine noise hits them alike; the median counts. Last line:
``ddp2_vs_single=R threads2_vs_single=T`` (member-steps/s of 2 ranks, and of 2 threads, over 1 process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The default fit's length (configs/defaults.yaml). Shorter runs weigh DDP's one-off costs (gloo's
# first collectives, the first block) more.
DEFAULT_STEPS = 20_000


def train_seconds(members: int, steps: int, devices: int, root: Path, threads: int = 1, engine: str = "auto") -> float:
    cmd = [sys.executable, "-m", "circuits_pl", "fit", "--task", "add", "--model.members", str(members),
           "--trainer.max_steps", str(steps), "--stop.when", "never", "--trainer.accelerator", "cpu",
           "--trainer.devices", str(devices), "--trainer.enable_progress_bar", "false", "--figures", "false",
           "--trainer.default_root_dir", str(root), "--threads", str(threads), "--model.engine", engine]
    if devices > 1:
        cmd += ["--trainer.strategy", "ddp"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (results,) = root.glob("lightning_logs/version_*/results.json")
    return float(json.loads(results.read_text())["train_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 3")
    parser.add_argument("--members", type=int, default=128, help="K, the members trained (default 128)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"SGD steps per fit (default {DEFAULT_STEPS:,}: the default fit's length)")
    parser.add_argument("--engine", default="auto", choices=["auto", "fused", "torch"], help="--model.engine")
    args = parser.parse_args()
    rounds = 2 if args.quick else 3
    setups = {"1 process": (1, 1), "2 DDP ranks": (2, 1), "2 threads": (1, 2)}  # (devices, threads)
    times: dict[str, list[float]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, (devices, threads) in setups.items():
                root = Path(tmp) / f"{devices}-{threads}-{r}"
                times[name].append(train_seconds(args.members, args.steps, devices, root, threads, args.engine))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()),
                  file=sys.stderr)
    med = {name: statistics.median(v) for name, v in times.items()}
    work = args.members * args.steps
    print(f"K={args.members} 2-2-1, {args.steps} steps, engine {args.engine}, member-steps/s (median of {rounds}; "
          "range of the training seconds): " + "; ".join(
              f"{name} {work / med[name]:,.0f} ({min(t):.2f}-{max(t):.2f} s)" for name, t in times.items()))
    print(f"ddp2_vs_single={med['1 process'] / med['2 DDP ranks']:.2f} "
          f"threads2_vs_single={med['1 process'] / med['2 threads']:.2f}")


if __name__ == "__main__":
    main()
