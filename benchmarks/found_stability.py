"""How reliable is "found" before the end of a run? Found early against solved (or still found) later.

"Found" (circuits_pl.verdicts) is: the readout names an exact circuit of the task, and validation MSE is
below the threshold or fell geometrically at the last two validations. For the minimal min net 2-3-1 that
predicts the outcome (issue 23: 131/131 members found at 4k were solved by 40k); for wide nets it may not
(min 2-8-1 at lr 0.1: 39 found at 20k, 0 at 80k). This trains each setting once (plain ``Trainer.fit``,
seed 0 as ``fit``/``report`` use, every member the whole budget), records every member's validation MSE and
whether its readout names an exact circuit at every validation, and prints, per setting:

- found at the early step (the rule of today), and of those: solved by the end;
- members whose MSE, projected along an exponential or a power law fitted over their last 3 validations,
  reaches the threshold within 2x or 4x the steps trained (``projected_solved_at``), and of those: solved by
  then. The trend rule the timeline will implement is chosen on these figures.

    python benchmarks/found_stability.py                      # every setting (a few minutes on 2 cores)
    python benchmarks/found_stability.py --only min-2-8-1     # one setting
    python benchmarks/found_stability.py --save out.json      # keep the histories (re-analyse with --load)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.module import HISTORY, CircuitModule
from circuits_pl.readout import describe_member
from circuits_pl.verdicts import found, verdict

# name: (task, sizes, lr, members, early step, final step)
SETTINGS = {
    "min-2-3-1": ("min", (2, 3, 1), 0.1, 256, 4000, 40000),
    "min-2-4-1": ("min", (2, 4, 1), 0.1, 64, 20000, 80000),
    "min-2-8-1": ("min", (2, 8, 1), 0.1, 64, 20000, 80000),
}


class Recorder(pl.Callback):
    """Every member's validation MSE and weights at every scheduled validation of the fit."""

    def __init__(self):
        self.steps: list[int] = []
        self.val_mse: list[list[float]] = []
        self.weights: list[list[torch.Tensor]] = []

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step == 0:
            return
        self.steps.append(int(trainer.global_step))
        self.val_mse.append(module.population.val_mse.double().tolist())
        self.weights.append([w.detach().clone() for w in module.net.groups[0].weights])


def record(task: str, sizes: tuple[int, ...], lr: float, members: int, steps: int) -> dict:
    """Train one setting; per validation: step, every member's val MSE and readout (exact circuit or not)."""
    module = CircuitModule(task=task, layer_sizes=list(sizes), members=members, lr=lr, init_seed=0)
    data = CircuitDataModule(task=task, stream_seed=0, steps_per_batch=500)
    rec = Recorder()
    trainer = pl.Trainer(max_steps=steps, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[rec, StopWhenSolved("never")])
    t0 = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - t0
    x = data.fixed_set("test").tensors[0].double()
    matched = [[describe_member([w[k] for w in ws], module.task, x).exact for k in range(members)]
               for ws in rec.weights]
    return {"task": task, "sizes": list(sizes), "lr": lr, "members": members,
            "success_mse": float(module.population.success_mse[0]),
            "steps": rec.steps, "val_mse": rec.val_mse, "matched": matched, "train_seconds": seconds}


def found_now(h: dict, v: int) -> list[bool]:
    """Today's rule at validation index ``v``: circuits_pl.verdicts over the last HISTORY validations."""
    out = []
    for k in range(h["members"]):
        hist = [h["val_mse"][i][k] for i in range(max(0, v - HISTORY + 1), v + 1)]
        solved = hist[-1] < h["success_mse"]
        out.append(found(verdict(solved, h["matched"][v][k], hist)))
    return out


def projected_solved_at(h: dict, v: int, k: int, window: int = 3, law: str = "power") -> float | None:
    """The step at which member k's MSE would reach the threshold, projected from its last ``window``
    validations up to index ``v`` (a least-squares line of log MSE against log step, ``power``, or against
    the step, ``exp``); None unless its readout names an exact circuit at ``v``; inf if it is not falling."""
    lo = v - window + 1
    if lo < 0 or not h["matched"][v][k]:
        return None
    mse, threshold, step = h["val_mse"][v][k], h["success_mse"], h["steps"][v]
    if mse < threshold:
        return float(step)
    xs = [float(h["steps"][i]) for i in range(lo, v + 1)]
    if law == "power":
        xs = [math.log(x) for x in xs]
    ys = [math.log(max(h["val_mse"][i][k], 1e-300)) for i in range(lo, v + 1)]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    if not slope < 0:
        return math.inf
    to_go = (math.log(threshold) - math.log(mse)) / slope  # along the fitted line, from the last point
    return step * math.exp(to_go) if law == "power" else step + to_go


def solved_by(h: dict, k: int, step: float) -> bool:
    """Member k below the threshold at some validation up to ``step``."""
    return any(s <= step and h["val_mse"][i][k] < h["success_mse"] for i, s in enumerate(h["steps"]))


def analyse(name: str, h: dict, early: int) -> list[str]:
    v_early = h["steps"].index(early)
    v_end = len(h["steps"]) - 1
    end = h["steps"][-1]
    everyone = range(h["members"])
    solved_end = [m < h["success_mse"] for m in h["val_mse"][v_end]]
    lines = [f"{name}: {h['members']} members, lr {h['lr']:g}, trained {end} steps in "
             f"{h['train_seconds']:.0f} s; at the end: {sum(solved_end)} solved, {sum(found_now(h, v_end))} found"]
    f_early = found_now(h, v_early)
    solved = sum(a and solved_by(h, k, end) for k, a in enumerate(f_early))
    lines.append(f"  today's rule (geometric at 2 validations) found at {early}: {sum(f_early)}; of them solved by "
                 f"{end}: {solved}; solved by {end} in all: {sum(solved_by(h, k, end) for k in everyone)}")
    for law in ("exp", "power"):
        proj = [projected_solved_at(h, v_early, k, law=law) for k in everyone]
        for factor in (2, 4):
            horizon = factor * early
            if horizon > end:
                continue
            yes = [k for k, p in enumerate(proj) if p is not None and p <= horizon]
            hit = sum(solved_by(h, k, horizon) for k in yes)
            lines.append(f"  {law}-law projection over 3 validations at {early}: solved by {horizon} (x{factor}) "
                         f"projected for {len(yes)}, of them solved by then {hit}; solved by then in all "
                         f"{sum(solved_by(h, k, horizon) for k in everyone)}")
    return lines


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(SETTINGS))
    parser.add_argument("--save", type=Path, default=None, help="write the recorded histories as JSON")
    parser.add_argument("--load", type=Path, default=None, help="analyse histories saved by --save (no training)")
    args = parser.parse_args()
    histories = json.loads(args.load.read_text()) if args.load else {}
    for name in args.only or list(SETTINGS):
        task, sizes, lr, members, early, final = SETTINGS[name]
        if name not in histories:
            histories[name] = record(task, sizes, lr, members, final)
            if args.save:
                args.save.write_text(json.dumps(histories))
        print("\n".join(analyse(name, histories[name], early)), flush=True)


if __name__ == "__main__":
    main()
