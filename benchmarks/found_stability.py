"""How reliable is "found" before the end of a run? Found early against solved later, from the timeline.

A member still above the threshold counts as found when it is *converging* (circuits_pl.verdicts): its
readout names an exact circuit of the task, and

- rule of today (``trend``): the timeline named that circuit at the last 2 validations (``FORMED_VALIDATIONS``)
  and a power law of its validation MSE fitted over its last 3 validations reaches the threshold within 2x
  the steps trained (results.json: ``projected_solved_at``);
- the rule before the timeline (``geometric``): each of its last two validations at most 0.9x the one before.

This trains each setting once (plain ``Trainer.fit``, seed 0 as ``fit``/``report`` use, validation every
1000 steps, every member the whole budget), keeps the run's timeline (every member's circuit and validation
MSE at every validation), and asks both rules at every validation ``v`` whose doubled step is within the
budget: of the members each rule calls converging at ``v`` (found, not yet solved), how many are solved
by 2x that step (what the trend rule promises), and by the end of the run.

    python benchmarks/found_stability.py                      # every setting (~10 minutes on 2 cores)
    python benchmarks/found_stability.py --only min-2-8-1     # one setting
    python benchmarks/found_stability.py --save out.json      # keep the timelines (re-analyse with --load)
    python benchmarks/found_stability.py --summary benchmarks/found_stability.json   # docs/timeline.md's table

``tests/test_found_stability.py`` checks the table and sentences of docs/timeline.md against that file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.module import CircuitModule
from circuits_pl.verdicts import (
    FORMED_VALIDATIONS,
    GEOMETRIC_RATIO,
    TREND_HORIZON,
    TREND_WINDOW,
    Trend,
    falling_geometrically,
    projected_step,
)

SUMMARY = Path(__file__).with_name("found_stability.json")

# name: (task, sizes, lr, members, early step, final step)
SETTINGS = {
    "min-2-3-1": ("min", (2, 3, 1), 0.1, 256, 4000, 40000),
    "min-2-4-1": ("min", (2, 4, 1), 0.1, 64, 20000, 80000),
    "min-2-8-1": ("min", (2, 8, 1), 0.1, 64, 20000, 80000),
    "add-2-8-1": ("add", (2, 8, 1), 0.1, 64, 20000, 80000),
    "max-2-8-1": ("max", (2, 8, 1), 0.1, 64, 20000, 80000),
}


def record(task: str, sizes: tuple[int, ...], lr: float, members: int, steps: int) -> dict:
    """Train one setting; its timeline: per validation the step, every member's val MSE, whether the
    circuit named is an exact one of the task, and its code (changes of circuit)."""
    module = CircuitModule(task=task, layer_sizes=list(sizes), members=members, lr=lr, init_seed=0)
    data = CircuitDataModule(task=task, stream_seed=0, steps_per_batch=500)
    trainer = pl.Trainer(max_steps=steps, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[StopWhenSolved("never")])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # fit's own lines: not what this measures
        trainer.fit(module, data)
    seconds = time.perf_counter() - t0
    tl = module.timeline
    codes = tl.codes
    return {"task": task, "sizes": list(sizes), "lr": lr, "members": members,
            "success_mse": float(module.population.success_mse[0]),
            "steps": tl.steps, "val_mse": tl.val_mse.double().tolist(), "codes": codes.tolist(),
            "exact": [[tl.exact[c] for c in row] for row in codes.tolist()], "train_seconds": seconds,
            "timeline_seconds": tl.seconds}


def solved_by(h: dict, k: int, step: float) -> bool:
    """Member k below the threshold at some validation up to ``step``."""
    return any(s <= step and h["val_mse"][i][k] < h["success_mse"] for i, s in enumerate(h["steps"]))


def converging(h: dict, v: int, k: int, rule: str, formed: int = FORMED_VALIDATIONS) -> bool:
    """Does ``rule`` call member k found but not yet solved at validation index ``v``? ``formed``: the
    validations in a row the trend rule wants its circuit named (circuits_pl's rule: FORMED_VALIDATIONS)."""
    mse = [h["val_mse"][i][k] for i in range(v + 1)]
    if not h["exact"][v][k] or not math.isfinite(mse[-1]) or mse[-1] < h["success_mse"]:
        return False
    if rule == "geometric":
        return falling_geometrically(mse[-3:])
    stable = 0
    for i in range(v, -1, -1):
        if h["codes"][i][k] != h["codes"][v][k]:
            break
        stable += 1
    projected = projected_step(h["steps"][: v + 1][-TREND_WINDOW:], mse[-TREND_WINDOW:], h["success_mse"])
    trend = Trend(stable, projected, h["steps"][v])
    if formed == FORMED_VALIDATIONS:
        return trend.converging  # the rule as circuits_pl applies it
    return stable >= formed and projected is not None and projected <= TREND_HORIZON * h["steps"][v]


RULES = [("trend", FORMED_VALIDATIONS)] + [("trend", f) for f in (1, 3) if f != FORMED_VALIDATIONS] + \
    [("geometric", 0)]


def rule_label(rule: str, formed: int) -> str:
    return f"trend, formed {formed}" if rule == "trend" else "geometric"


def analyse(name: str, h: dict, early: int) -> tuple[list[str], dict]:
    """The printed lines of one setting, and its figures (what ``--summary`` saves): per rule, its calls at
    every validation up to half the run, how many were solved by twice the step and by the end, and how
    many members solved between a step and twice it each rule called; at ``early``, the same for one step."""
    end = h["steps"][-1]
    everyone = range(h["members"])
    solved_end = sum(solved_by(h, k, end) for k in everyone)
    lines = [f"{name}: {h['members']} members, lr {h['lr']:g}, trained {end} steps in {h['train_seconds']:.0f} s "
             f"(timeline {h['timeline_seconds']:.1f} s of it); solved by the end: {solved_end}"]
    figures = {"members": h["members"], "steps": end, "early": early, "solved_by_end": solved_end, "rules": {}}
    v_early = h["steps"].index(early)
    for rule, formed in RULES:
        calls = by_double = by_end = due = 0
        for v, step in enumerate(h["steps"]):
            if 2 * step > end:
                break
            for k in everyone:
                called = converging(h, v, k, rule, formed)
                later = solved_by(h, k, 2 * step) and not solved_by(h, k, step)
                due += later  # not solved yet, solved by twice the step: what a rule should call
                if called:
                    calls += 1
                    by_double += solved_by(h, k, 2 * step)
                    by_end += solved_by(h, k, end)
        at = [k for k in everyone if converging(h, v_early, k, rule, formed)]
        at_double = sum(solved_by(h, k, 2 * early) for k in at)
        at_end = sum(solved_by(h, k, end) for k in at)
        label = f"trend, formed {formed}" + (" (circuits_pl)" if formed == FORMED_VALIDATIONS else "") \
            if rule == "trend" else "geometric (before)"
        lines.append(
            f"  {label:26s} at {early}: converging {len(at)}, solved by {2 * early} {at_double}, by {end} {at_end}; "
            f"every validation to {end // 2}: {calls} calls, solved by 2x {by_double}, by the end {by_end}; "
            f"called {by_double} of the {due} solved between the step and 2x")
        figures["rules"][rule_label(rule, formed)] = {
            "calls": calls, "solved_by_double": by_double, "solved_by_end": by_end, "due": due,
            "early_calls": len(at), "early_solved_by_double": at_double, "early_solved_by_end": at_end}
    return lines, figures


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(SETTINGS))
    parser.add_argument("--save", type=Path, default=None, help="write the recorded timelines as JSON")
    parser.add_argument("--load", type=Path, default=None, help="analyse timelines saved by --save (no training)")
    parser.add_argument("--summary", type=Path, default=None,
                        help=f"write the figures of every setting as JSON (docs/timeline.md's table: {SUMMARY.name})")
    args = parser.parse_args()
    print(f"trend: the same exact circuit at {FORMED_VALIDATIONS} validations and a power law over {TREND_WINDOW} "
          f"reaching the threshold within {TREND_HORIZON:g}x the steps; geometric: the last two validations each "
          f"<= {GEOMETRIC_RATIO:g}x the one before", flush=True)
    histories = json.loads(args.load.read_text()) if args.load else {}
    summary = {}
    for name in args.only or list(SETTINGS):
        task, sizes, lr, members, early, final = SETTINGS[name]
        if name not in histories:
            histories[name] = record(task, sizes, lr, members, final)
            if args.save:
                args.save.write_text(json.dumps(histories))
        lines, summary[name] = analyse(name, histories[name], early)
        print("\n".join(lines), flush=True)
    if args.summary:
        args.summary.write_text(json.dumps({"command": "python benchmarks/found_stability.py",
                                            "formed_validations": FORMED_VALIDATIONS, "settings": summary},
                                           indent=1) + "\n")
        print(f"Saved: {args.summary}")


if __name__ == "__main__":
    main()
