"""Speed of circuits_pl against the notebook's own training loop, measured in one process.

    python benchmarks/speed.py            # ~3 minutes
    python benchmarks/speed.py --quick    # under a minute

Three loops on the notebook's 2-2-1 ``add`` network (batch 1000, lr 1e-4, one torch thread), run
interleaved for several rounds so machine noise hits them alike; the median round counts:

- ``notebook``: the notebook's loop (draw a batch, forward, MSE, zero_grad, backward, SGD step);
- ``single``: circuits_pl training the same network through the Trainer exactly as ``fit`` builds it
  (validation, checkpoints, CSV logging and progress bar at their default cadence), timed over the
  training loop (from the first training batch to the end of training);
- ``ensemble``: the same with 128 members, counted as networks x steps per second.

Then the wall time of ``python -m circuits_pl fit --task min`` with defaults, in a fresh process,
and how much of it is ``import circuits_pl.cli`` (torch + Lightning) alone.

The last line is machine-readable:
``single_vs_notebook=R1 ensemble128_vs_notebook=R2 min_fit_seconds=S``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

THREADS = 1


def notebook_loop(steps: int) -> float:
    """Seconds per step of the notebook's own loop (In [2] ``train``), 2-2-1, batch 1000, lr 1e-4."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False))
    loss_fn = torch.nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        model.train()
        x = torch.rand((1000, 2)) * 2 - 1
        y = x.sum(dim=1, keepdims=True)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


class _TrainTimer:
    """Times the training loop: first training batch to the end of training (no start-up, no test)."""

    def __init__(self) -> None:
        import lightning.pytorch as pl

        timer = self

        class Timer(pl.Callback):
            def on_train_batch_start(self, trainer, *args):
                if timer.start is None:
                    timer.start, timer.step0 = time.perf_counter(), trainer.global_step

            def on_train_end(self, trainer, *args):
                timer.seconds = time.perf_counter() - timer.start
                timer.steps = trainer.global_step - timer.step0

        self.callback = Timer()
        self.start = None
        self.step0 = 0
        self.seconds = 0.0
        self.steps = 0


def circuits_pl_loop(steps: int, members: int, root: str) -> float:
    """Seconds per step of ``fit`` as the CLI builds it (defaults; the notebook's lr, no early stop)."""
    from circuits_pl.cli import CircuitsCLI

    args = ["--task", "add", "--model.members", str(members), "--model.lr", "1e-4",
            "--trainer.max_steps", str(steps), "--stop.when", "never", "--trainer.default_root_dir", root,
            "--threads", str(THREADS)]
    cli = CircuitsCLI(args=args, run=False)
    timer = _TrainTimer()
    cli.trainer.callbacks.append(timer.callback)
    with open(os.devnull, "w") as devnull:  # the progress bar and prints, not what we measure
        stdout, sys.stdout = sys.stdout, devnull
        try:
            cli.trainer.fit(cli.model, cli.datamodule)
        finally:
            sys.stdout = stdout
    return timer.seconds / timer.steps


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds (under a minute)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rounds = 3 if args.quick else 5
    nb_steps, single_steps, ens_steps = (2000, 10_000, 1000) if args.quick else (5000, 30_000, 3000)

    import logging
    import warnings

    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    times: dict[str, list[float]] = {"notebook": [], "single": [], "ensemble": []}
    with tempfile.TemporaryDirectory() as root:
        circuits_pl_loop(200, 1, root)  # warm-up: first-call costs of Lightning and torch
        for r in range(rounds):
            times["notebook"].append(notebook_loop(nb_steps))
            times["single"].append(circuits_pl_loop(single_steps, 1, root))
            times["ensemble"].append(circuits_pl_loop(ens_steps, 128, root) / 128)
            print(f"round {r + 1}/{rounds}: " + "  ".join(f"{k} {v[-1] * 1e6:.1f} µs" for k, v in times.items()),
                  file=sys.stderr)

        med = {k: statistics.median(v) for k, v in times.items()}
        py = sys.executable
        import_s = statistics.median(wall([py, "-c", "import circuits_pl.cli"]) for _ in range(3))
        min_fit = wall([py, "-m", "circuits_pl", "fit", "--task", "min", "--trainer.default_root_dir", root])

    nb = med["notebook"]
    print(f"\ncircuits_pl speed, torch {torch.__version__}, {THREADS} torch thread for every loop, "
          f"{os.cpu_count()} CPUs; median of {rounds} interleaved rounds")
    print(f"{'loop':<28}{'µs per network-step':>22}{'network-steps/s':>18}{'vs notebook':>13}")
    rows = [("notebook (autograd, 2-2-1)", nb), ("single  (fit, 1 member)", med["single"]),
            ("ensemble (fit, 128 members)", med["ensemble"])]
    for name, sec in rows:
        print(f"{name:<28}{sec * 1e6:>22.2f}{1 / sec:>18,.0f}{nb / sec:>12.1f}x")
    print(f"fit --task min (defaults), wall: {min_fit:.1f} s, of which import circuits_pl.cli: {import_s:.1f} s")
    print(f"single_vs_notebook={nb / med['single']:.2f} ensemble128_vs_notebook={nb / med['ensemble']:.1f} "
          f"min_fit_seconds={min_fit:.1f}")


if __name__ == "__main__":
    main()
