"""The end of ``fit``: test the final weights, print the verdict, write ``results.json``.

results.json (next to metrics.csv) holds, per member: validation and test MSE, solved flag, the
step it was first solved at, the step it diverged at, and a verdict; and for the run: the success
rate with its Wilson 95% interval, the median solved-at step and the best member.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.inspection import classify_members, read_member, write_figures
from circuits_pl.logger import run_dir
from circuits_pl.module import HISTORY, CircuitModule
from circuits_pl.success import wilson_interval

UNLISTED = "an unlisted circuit"
STUCK_PROGRESS = 0.01  # relative MSE decrease over the last validations below which a member is "stuck"


def verdicts(module: CircuitModule) -> list[str]:
    """Per member: ``exact`` (solved), ``diverged``, ``stuck`` (on a plateau) or ``slow`` (still improving).

    Stuck: over the last validations (up to 8) its validation MSE fell by less than 1%.
    """
    out = []
    hist = module.val_history.cpu()
    for k in range(module.members):
        if int(module.diverged_at[k]) >= 0:
            out.append("diverged")
        elif bool(module.solved[k]):
            out.append("exact")
        else:
            h = hist[:, k]
            h = h[torch.isfinite(h)]
            if h.numel() >= 3 and float(h[-1]) > (1 - STUCK_PROGRESS) * float(h[0]):
                out.append("stuck")
            else:
                out.append("slow")
    return out


def summarize(module: CircuitModule, datamodule: CircuitDataModule, steps: int, stopped_when_solved: bool = False
              ) -> dict[str, Any]:
    """Everything results.json holds, as plain Python values."""
    k_total = module.members
    solved = module.solved.cpu()
    n_solved = int(solved.sum())
    lo, hi = wilson_interval(n_solved, k_total)
    # A member first seen solved at an off-schedule final validation is solved "at the last step".
    solved_at = torch.where(solved & (module.solved_at < 0).cpu(), steps, module.solved_at.cpu())
    at = solved_at[solved_at >= 0].double()
    hp = module.hparams

    def floats(t: torch.Tensor | None) -> list[float | None] | None:
        if t is None:
            return None
        return [None if not math.isfinite(v) else v for v in t.cpu().double().tolist()]

    data = {k: v for k, v in datamodule.hparams.items() if k != "task"}
    circuits = classify_members(module, datamodule)
    # A solved member whose weights match no listed form (wide nets spread a circuit over pairs of
    # units, r(u·x) − r(−u·x) = u·x) still computes the target: count it, as what it is.
    found = Counter(c["circuit"] or UNLISTED for c, ok in zip(circuits, solved.tolist())
                    if ok and c["formula"] is not None)
    sparsity = [c["sparsity_error"] for c, ok in zip(circuits, solved.tolist())
                if ok and c["sparsity_error"] is not None]
    return {
        "task": module.task.name,
        "formula": module.task.formula,
        "layer_sizes": list(hp.layer_sizes),
        "bias": bool(hp.bias),
        "lr": float(hp.lr),
        "members": k_total,
        "init_seed": int(hp.init_seed),
        "data": data,
        "steps": int(steps),
        "stopped_when_solved": bool(stopped_when_solved),
        "success_mse": float(module.success_mse),
        "solved": n_solved,
        "success_rate": n_solved / k_total,
        "success_rate_ci95": [lo, hi],
        "median_solved_at": float(at.quantile(0.5)) if at.numel() else None,
        "best_member": int(module.best_member),
        "circuits_of_solved": dict(found.most_common()),
        "max_sparsity_error_of_solved": max(sparsity) if sparsity else None,
        "per_member": {
            "val_mse": floats(module.val_mse),
            "test_mse": floats(module.test_mse),
            "heldout_mse": floats(module.heldout_mse),
            "solved": solved.tolist(),
            "solved_at": [int(v) if v >= 0 else None for v in solved_at.tolist()],
            "diverged_at": [int(v) if v >= 0 else None for v in module.diverged_at.cpu().tolist()],
            "verdict": verdicts(module),
            "formula": [c["formula"] for c in circuits],
            "rough_formula": [c["rough_formula"] for c in circuits],
            "circuit": [c["circuit"] for c in circuits],
            "sparsity_error": [c["sparsity_error"] for c in circuits],
        },
        "stuck_rule": f"validation MSE fell by less than {STUCK_PROGRESS:.0%} over the last {HISTORY} validations",
    }


def summary_line(res: dict[str, Any]) -> str:
    lo, hi = res["success_rate_ci95"]
    line = f"{res['solved']}/{res['members']} members solved (95% Wilson CI {lo:.2f}–{hi:.2f})"
    if res["median_solved_at"] is not None:
        line += f", median solved at {res['median_solved_at']:.0f} steps"
    return line


def finish_fit(trainer: pl.Trainer, module: CircuitModule, datamodule: CircuitDataModule,
               figures: bool = True) -> dict[str, Any]:
    """Test the final weights, print the summary and the best member's circuit, write results.json
    and (with ``figures``) losses.png, function_member{k}.png and circuit_member{k}.png."""
    if trainer.interrupted:
        return {}
    steps = trainer.global_step
    stopped_when_solved = any(
        isinstance(c, StopWhenSolved) and c.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD
        for c in trainer.callbacks) and not (0 < trainer.max_steps <= steps)
    trainer.test(module, datamodule=datamodule, verbose=False)
    res = summarize(module, datamodule, steps, stopped_when_solved)
    best = res["best_member"]
    per = res["per_member"]
    say = module.print
    say("")
    say(f"Final weights (member {best}, the best by validation MSE):" if module.members > 1 else "Final weights:")
    say(module.weights_text(best))
    say(f"Test MSE: {per['test_mse'][best]:.4g}" + (
        f"   held-out directions: {per['heldout_mse'][best]:.4g}" if per["heldout_mse"] else ""))
    readout = read_member(module, datamodule, best) if not module.hparams.bias else None
    if readout is not None:
        say(f"Circuit: {readout.formula} — {readout.circuit_text()}")
    say(summary_line(res) + f"; {steps} steps (solved: validation MSE < {res['success_mse']:.3g})")
    if res["circuits_of_solved"]:
        say("Circuits of the solved members: " + ", ".join(
            f"{n}× {c.replace('-', '−')}" for c, n in res["circuits_of_solved"].items()))
    if stopped_when_solved:
        say("Stopped once solved: members still converging count as unsolved. For a success rate, "
            "train every member the whole budget: --stop.when never")
    log_dir = run_dir(trainer)  # a collective under DDP: every rank must ask
    if trainer.is_global_zero and log_dir:
        path = os.path.join(log_dir, "results.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=2)
        say(f"Results: {path}")
        if figures and readout is not None:
            for fig in write_figures(Path(log_dir), module, best, readout):
                say(f"Figure: {fig}")
    return res
