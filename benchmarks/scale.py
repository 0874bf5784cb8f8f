"""Member parallelism: the same K members trained by one process and by two DDP ranks (CPU, gloo).

    python benchmarks/scale.py            # K = 128, 2-2-1, 20000 steps, 3 rounds (~1.5 minutes)
    python benchmarks/scale.py --quick    # 2 rounds

Each run is a real ``python -m circuits_pl fit`` (validation, checkpoints, logging at their
defaults, 20000 steps: the default fit's length); the training time is the one its end-of-fit summary
reports and saves in results.json
(the training loop, validations and checkpoints included; start-up, imports and process launch
excluded). Rounds alternate
single and DDP so machine noise hits both alike; the median counts. Last line:
``ddp2_vs_single=R`` (member-steps/s of 2 ranks over 1 process).
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


def train_seconds(members: int, steps: int, devices: int, root: Path) -> float:
    cmd = [sys.executable, "-m", "circuits_pl", "fit", "--task", "add", "--model.members", str(members),
           "--trainer.max_steps", str(steps), "--stop.when", "never", "--trainer.accelerator", "cpu",
           "--trainer.devices", str(devices), "--trainer.enable_progress_bar", "false", "--figures", "false",
           "--trainer.default_root_dir", str(root)]
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
    args = parser.parse_args()
    rounds = 2 if args.quick else 3
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for devices in (1, 2):
                times[devices].append(train_seconds(args.members, args.steps, devices, Path(tmp) / f"{devices}-{r}"))
            print(f"round {r + 1}/{rounds}: 1 process {times[1][-1]:.2f} s, 2 ranks {times[2][-1]:.2f} s",
                  file=sys.stderr)
    med = {d: statistics.median(v) for d, v in times.items()}
    work = args.members * args.steps
    print(f"K={args.members} 2-2-1, {args.steps} steps: 1 process {work / med[1]:,.0f} member-steps/s, "
          f"2 DDP ranks {work / med[2]:,.0f} member-steps/s (median of {rounds}; "
          f"ranges {min(times[1]):.2f}-{max(times[1]):.2f} s and {min(times[2]):.2f}-{max(times[2]):.2f} s)")
    print(f"ddp2_vs_single={med[1] / med[2]:.2f}")


if __name__ == "__main__":
    main()
