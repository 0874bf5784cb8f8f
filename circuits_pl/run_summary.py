"""The end of ``fit``: test the final weights, print the verdict, write ``results.json`` and figures.

:class:`RunSummary` is a Lightning callback, so a run gets the same ending from the CLI and from
plain Python::

    trainer = pl.Trainer(max_steps=3000, val_check_interval=10, check_val_every_n_epoch=None,
                         callbacks=[RunSummary()])
    trainer.fit(CircuitModule(task="add"), CircuitDataModule(task="add"))
    trainer.callbacks[-1].results          # what results.json holds

results.json (in the run directory) holds, per member: validation and test MSE, solved flag, the
step it was first solved at, the step it diverged at, a verdict, and its circuit; and for the run:
the success rate with its Wilson 95% interval, the median solved-at step and the best member.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from circuits_pl import basins, plots
from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.files import atomic_write_text
from circuits_pl.interrupts import GracefulInterrupt
from circuits_pl.logger import run_dir
from circuits_pl.module import CircuitModule
from circuits_pl.module_readout import (
    describe_members,
    heldout_mse,
    member_decisions,
    read_member,
    target_bounds,
    test_mse,
    write_figures,
)
from circuits_pl.population import HISTORY
from circuits_pl.readout.certify import box_text
from circuits_pl.success import median_interval, wilson_interval
from circuits_pl.sweep import Cell
from circuits_pl.timeline import NOT_TRACKED
from circuits_pl.verdicts import (
    FORMED_VALIDATIONS,
    GEOMETRIC_RATIO,
    MIN_VALIDATIONS,
    STUCK_PROGRESS,
    TREND_HORIZON,
    TREND_WINDOW,
    Decision,
    Trend,
    found,
    projected_step,
    verdict,
)

UNLISTED = "an unlisted circuit"


def member_verdicts(module: CircuitModule, circuits: list[dict[str, Any]], decisions: list[Decision],
                    trends: list[Trend] | None = None) -> list[str]:
    """Per member: converged / converging / slow / stuck / too early / diverged (see circuits_pl.verdicts);
    ``trends`` (:func:`member_trends`) decide converging where the run has a timeline."""
    population = module.population
    hist = population.val_history.cpu().double()
    out = []
    for k in range(module.members):
        exact = bool(circuits[k]["matched"])  # the readout, whatever the loss: a converging member is found
        out.append(verdict(decisions[k].solved, exact, hist[:, k].tolist(),
                           diverged=int(population.diverged_at[k]) >= 0,
                           trend=None if trends is None else trends[k]))
    return out


def member_trends(module: CircuitModule, steps: int) -> list[Trend] | None:
    """Per member, what the timeline says of its way down (``circuits_pl.verdicts.Trend``): how many
    validations in a row named its final circuit, an exact one (None where circuits are not tracked),
    and the step a power law of its last validations projects it to reach the threshold; None for a run
    from before the timeline."""
    timeline = module.timeline
    if timeline.absent:
        return None
    codes = timeline.codes
    stable = timeline.stable_for()
    thresholds = module.population.success_mse.cpu().tolist()
    out = []
    for k in range(module.members):
        recorded, mse = timeline.last(k, TREND_WINDOW)
        final_exact = codes.shape[0] > 0 and timeline.exact[int(codes[-1, k])]
        projected = projected_step(recorded, mse, thresholds[k])  # its own cell's threshold
        out.append(Trend((stable[k] if final_exact else 0) if timeline.tracks(k) else None, projected, steps))
    return out


def _floats(t: torch.Tensor | None) -> list[float | None] | None:
    """Plain floats for JSON (non-finite values as null)."""
    if t is None:
        return None
    return [None if not math.isfinite(v) else v for v in t.cpu().double().tolist()]


def rates(found_flags: list[bool], solved_flags: list[bool], solved_at: list[int]) -> dict[str, Any]:
    """Found and solved counts of some members, rates with Wilson 95% intervals, median solved-at step
    (``solved_at`` -1: not solved)."""
    n, n_found, n_solved = len(found_flags), sum(found_flags), sum(solved_flags)
    at = torch.tensor([float(s) for s in solved_at if s >= 0], dtype=torch.float64)
    return {
        "found": n_found,
        "found_rate": n_found / n,
        "found_rate_ci95": list(wilson_interval(n_found, n)),
        "solved": n_solved,
        "success_rate": n_solved / n,
        "success_rate_ci95": list(wilson_interval(n_solved, n)),
        "median_solved_at": float(at.quantile(0.5)) if at.numel() else None,
    }


def circuits_of_found(circuits: list[dict[str, Any]], verdicts: list[str]) -> dict[str, int]:
    """How many found members found each circuit, most common first."""
    # A solved member whose weights match no listed form (wide nets spread a circuit over pairs of
    # units, r(u·x) − r(−u·x) = u·x) still computes the target: count it, as what it is.
    # grouped by family (the listed circuit, or the function's form: wide nets make one form many ways)
    found_circuits = Counter(c["family"] or c["circuit"] or UNLISTED for c, v in zip(circuits, verdicts)
                             if found(v) and c["formula"] is not None)
    return dict(found_circuits.most_common())


def run_results(module: CircuitModule, datamodule: CircuitDataModule, steps: int,
              stopped_when_solved: bool = False) -> dict[str, Any]:
    """Everything results.json holds, as plain Python values (test MSE must be set: see RunSummary)."""
    k_total, population, sweep = module.members, module.population, module.sweep
    hp = module.hparams
    data = {k: v for k, v in datamodule.hparams.items() if k != "task" and not k.startswith("_")}
    circuits = describe_members(module, datamodule)
    bounds = target_bounds(module)
    decisions = member_decisions(module, [bool(c["matched"]) for c in circuits], bounds)
    solved = torch.tensor([d.solved for d in decisions], dtype=torch.bool)
    # solved_at: the first validation below the threshold; a member solved by the decision but never below
    # it at a scheduled validation (an off-schedule final one, or a certified MSE below it) is solved "at the
    # last step"; a member not solved has none
    solved_at = torch.where(solved & (population.solved_at < 0).cpu(), steps, population.solved_at.cpu())
    solved_at = torch.where(solved, solved_at, -1)
    trends = member_trends(module, steps)
    verdicts = member_verdicts(module, circuits, decisions, trends)
    certified = bounds is not None and bounds.certified
    box = box_text(module.task.arity)
    exact_errors = [float(bounds.max_error[k]) for k, d in enumerate(decisions) if d.exact and certified]
    found_flags, solved_flags, at = [found(v) for v in verdicts], solved.tolist(), solved_at.tolist()
    sparsity = [c["sparsity_error"] for c, ok in zip(circuits, solved_flags) if ok and c["sparsity_error"] is not None]
    basin_of, basin_summaries = member_basins(module, found_flags)
    thresholds = population.success_mse.cpu().tolist()
    formed_at = module.timeline.formed_at()
    cells = []
    for c, cell in enumerate(sweep.cells):
        ms = sweep.members_of(c)
        cells.append({
            **cell.as_dict(),
            "members": len(ms),
            "first_member": ms.start,
            "success_mse": thresholds[ms.start],
            **rates([found_flags[m] for m in ms], [solved_flags[m] for m in ms], [at[m] for m in ms]),
            "circuits_of_found": circuits_of_found([circuits[m] for m in ms], [verdicts[m] for m in ms]),
            "basins": basin_summaries[c] if basin_summaries else None,
            **formed_summary([formed_at[m] for m in ms], [found_flags[m] for m in ms], module.timeline.absent),
        })
    single = cells[0] if sweep.is_single else None
    return {
        "task": module.task.name,
        "formula": module.task.formula,
        # a sweep's cells differ in these: see cells
        "layer_sizes": single["layer_sizes"] if single else None,
        "bias": bool(hp.bias),
        "lr": single["lr"] if single else None,
        "init_scale": single["init_scale"] if single else None,
        "engine": hp.get("engine", "torch"),  # what trained it (checkpoints from before the option: torch)
        "members": k_total,
        "members_per_cell": sweep.members_per_cell,
        "init_seed": int(hp.init_seed),
        "data": data,
        "steps": int(steps),
        "stopped_when_solved": bool(stopped_when_solved),
        "success_mse": single["success_mse"] if single else None,
        **rates(found_flags, solved_flags, at),
        "best_member": int(population.best_member),
        "decided_on": f"exact MSE over {box}" if certified else "validation MSE",  # solved: this < success_mse
        "certified_over": box if certified else None,
        "why_not_certified": None if certified else (bounds.why_sampled if bounds is not None else "biases"),
        "max_certified_error_of_exact": max(exact_errors) if exact_errors else None,
        "circuits_of_found": circuits_of_found(circuits, verdicts),
        "max_sparsity_error_of_solved": max(sparsity) if sparsity else None,
        "basins": single["basins"] if single else None,
        # every cell of the run (one without a sweep), sorted by sizes, lr, init_scale; member m is of
        # cell m // members_per_cell, seeded init_seed + m % members_per_cell
        "cells": cells,
        "timeline": timeline_summary(module, circuits, verdicts),
        "per_member": {
            "cell": population.cell_of.cpu().tolist(),
            "val_mse": _floats(population.val_mse),
            "test_mse": _floats(population.test_mse),
            "heldout_mse": _floats(population.heldout_mse),
            "found": found_flags,
            "solved": solved_flags,
            "solved_at": [int(v) if v >= 0 else None for v in at],
            "diverged_at": [int(v) if v >= 0 else None for v in population.diverged_at.cpu().tolist()],
            # the step from which the timeline named its final circuit (None: none, or no timeline), and the
            # step a power law of its last validations reaches success_mse at (None: too few; inf: not falling)
            "formed_at": None if module.timeline.absent else formed_at,
            "projected_solved_at": None if trends is None else [_projected(t.projected) for t in trends],
            "verdict": verdicts,
            "formula": [c["formula"] for c in circuits],
            "rough_formula": [c["rough_formula"] for c in circuits],
            "circuit": [c["circuit"] for c in circuits],
            # exact only below the threshold: a member still above it is approaching its circuit
            "exact": [bool(c["matched"] and ok) for c, ok in zip(circuits, solved_flags)],
            "family": [c["family"] for c in circuits],
            "unnamed_reason": [c["reason"] for c in circuits],
            "sparsity_error": [c["sparsity_error"] for c in circuits],
            # max |net − target| over the box (certified when certified_over is set, else on sample points),
            # the exact MSE over the box (certified runs), max |net − printed formula| over the box
            "max_error": _floats(None if bounds is None else torch.as_tensor(bounds.max_error)),
            "box_mse": _floats(torch.as_tensor(bounds.mse)) if certified else None,
            "formula_max_error": [c["formula_max_error"] for c in circuits],
            # the initial weights' class (circuits_pl.basins): sectors of the target some unit faces,
            # and faced by a unit whose output weight has the target's sign there
            "sectors_covered": [b.covered for b in basin_of] if basin_of else None,
            "sectors_agreeing": [b.agreeing for b in basin_of] if basin_of else None,
        },
        "verdict_rules": {
            "found": (f"the readout is an exact circuit of the task, and the member is solved (see decided_on) or "
                      f"converging: the timeline named that circuit at the last {FORMED_VALIDATIONS} validations "
                      f"and a power law of its MSE fitted over the last {TREND_WINDOW} reaches success_mse within "
                      f"{TREND_HORIZON:g}x the steps trained (projected_solved_at)")
                     if trends is not None else
                     ("the readout is an exact circuit of the task, and the member is solved (see decided_on) "
                      f"or each of the last two validations is at most {GEOMETRIC_RATIO:g}x the one before "
                      "(a run from before the timeline)"),
            "converged": "solved: the MSE named in decided_on below success_mse",
            "exact": "the readout is an exact circuit of the task (named in circuit) and the member is solved; "
                     "a member not solved with a circuit named is approaching that circuit",
            "stuck": f"validation MSE fell by less than {STUCK_PROGRESS:.0%} over the last {HISTORY} validations",
            "too early": f"fewer than {MIN_VALIDATIONS} scheduled validations",
        },
    }


def _projected(step: float | None) -> float | str | None:
    """A projected step for JSON (inf as the string "inf": JSON has no infinity)."""
    return None if step is None else "inf" if math.isinf(step) else round(step)


def timeline_summary(module: CircuitModule, circuits: list[dict[str, Any]], verdicts: list[str]
                     ) -> dict[str, Any] | None:
    """results.json's ``timeline``: what was recorded, the median formed-at of the found members with a
    95% interval, the common paths and transitions, and whether the last entry names each member's circuit
    as the final readout does; None for a run from before the timeline."""
    timeline = module.timeline
    if timeline.absent:
        return None
    codes = timeline.codes
    last = [timeline.names[int(c)] for c in codes[-1]] if codes.shape[0] else []
    final = [c["name"] for c in circuits]
    return {
        "validations": len(timeline.steps),
        "tracked": timeline.mode_text(),
        "last_step": timeline.steps[-1] if timeline.steps else None,
        **formed_summary(timeline.formed_at(), [found(v) for v in verdicts], False),
        "common_paths": [{"path": list(p), "members": n} for p, n in timeline.common_paths(8)],
        "transitions": [{"from": a, "to": b, "count": n} for (a, b), n in timeline.transitions().most_common(12)],
        # of the members whose circuits are tracked
        "last_entry_as_readout": sum(a == b for k, (a, b) in enumerate(zip(last, final)) if timeline.tracks(k))
        if timeline.tracked else None,
    }


def formed_summary(formed_at: list[int | None], found_flags: list[bool], absent: bool) -> dict[str, Any]:
    """The median step at which found members' circuits formed, with its 95% interval (None without a
    timeline, or with no found member whose circuit the timeline named)."""
    median = None if absent else median_interval([f for f, ok in zip(formed_at, found_flags) if ok and f is not None])
    return {"formed_at_median_of_found": None if median is None else median[0],
            "formed_at_ci95": None if median is None else [median[1], median[2]]}


def member_basins(module: CircuitModule, found_flags: list[bool]) -> tuple[list | None, list[dict] | None]:
    """Every member's basin (its initial weights, recomputed from its seed and its cell's init scale)
    and per cell the table of found rate per basin (``circuits_pl.basins``); (None, None) for nets
    with biases or more than two inputs, where basins are not defined."""
    hp, sweep = module.hparams, module.sweep
    if hp.bias or module.task.arity > 2:
        return None, None
    of, summaries = [], []
    for c, cell in enumerate(sweep.cells):
        weights = basins.initial_weights(cell.layer_sizes, sweep.members_per_cell, int(hp.init_seed),
                                         init_scale=cell.init_scale)
        cell_of = basins.classify(module.task, weights)
        of += cell_of
        summaries.append(basins.summary(module.task, cell.layer_sizes, cell_of,
                                        [found_flags[m] for m in sweep.members_of(c)]))
    return of, summaries


def range_text(values: list[float], suffix: str = "") -> str:
    """``6.6e-11`` when all values print alike, else ``1.2e-10–3.3e-10`` and ``suffix``."""
    low, high = f"{min(values):.3g}", f"{max(values):.3g}"
    return low if low == high else f"{low}–{high}{suffix}"


def cell_line(cell: dict[str, Any], label: str) -> str:
    """One cell of a sweep in the printed summary: ``1-4-1 lr 0.1  found 40/64 (0.50–0.74), solved ...``."""
    lo, hi = cell["found_rate_ci95"]
    line = f"{label}  found {cell['found']}/{cell['members']} ({lo:.2f}–{hi:.2f})"
    lo, hi = cell["success_rate_ci95"]
    line += f", solved {cell['solved']}/{cell['members']} ({lo:.2f}–{hi:.2f})"
    if cell["median_solved_at"] is not None:
        line += f" median at {cell['median_solved_at']:.0f}"
    if cell["circuits_of_found"]:
        line += "; " + ", ".join(f"{n}× {c.replace('-', '−')}" for c, n in cell["circuits_of_found"].items())
    return line


def phase_diagram(res: dict[str, Any], path: Path) -> Path:
    """A sweep's found rates as heat maps, sizes × lr, one panel per init scale (``plots.plot_phase_diagram``)."""
    scales = list(dict.fromkeys(c["init_scale"] for c in res["cells"]))
    cells = [{"panel": res["task"] + (f", init ×{c['init_scale']:g}" if len(scales) > 1 else ""),
              "layer_sizes": c["layer_sizes"], "lr": c["lr"], "rate": c["found_rate"],
              "low": c["found_rate_ci95"][0], "high": c["found_rate_ci95"][1]} for c in res["cells"]]
    return plots.plot_phase_diagram(cells, f"Found the exact circuit, {res['members_per_cell']} seeds per cell", path)


def summary_line(res: dict[str, Any]) -> str:
    """``F/K found the exact circuit (CI), S/K converged below ε, median solved at N steps``."""
    lo, hi = res["found_rate_ci95"]
    line = f"{res['found']}/{res['members']} members found the exact circuit (95% Wilson CI {lo:.2f}–{hi:.2f})"
    lo, hi = res["success_rate_ci95"]
    line += f"; {res['solved']}/{res['members']} members solved (CI {lo:.2f}–{hi:.2f})"
    if res["median_solved_at"] is not None:
        line += f", median solved at {res['median_solved_at']:.0f} steps"
    return line


def stopped_early_line(verdicts: list[str]) -> str:
    """What a fit stopped by --stop.when says: that it stopped early, the members still converging
    (when there are any), and how to get success rates over the whole budget."""
    converging = sum(v == "converging" for v in verdicts)
    line = "Stopped early by --stop.when"
    if converging:
        line += f": {converging} member(s) had found the circuit and were still converging"
    return line + ". For success rates over a whole budget: --stop.when never"


def stopped_when_solved(trainer: pl.Trainer) -> bool:
    """Did StopWhenSolved end the fit (before max_steps)?"""
    return any(
        isinstance(c, StopWhenSolved) and c.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD
        for c in trainer.callbacks) and not (0 < trainer.max_steps <= trainer.global_step)


def test_members(trainer: pl.Trainer, module: CircuitModule, datamodule: CircuitDataModule) -> None:
    """Per-member test MSE (and held-out MSE of cone runs) of the final weights, logged like ``test``.

    Computed here rather than through ``trainer.test``: this runs inside ``fit`` (a callback), where
    a nested trainer loop cannot run.
    """
    population, k = module.population, module.selected_member
    population.test_mse = test_mse(module, datamodule)
    population.heldout_mse = heldout_mse(module, datamodule)
    metrics = {"test/mse": float(population.test_mse[k])}
    if module.members > 1:
        metrics["test/median_mse"] = float(population.median(population.test_mse))
    if population.heldout_mse is not None:
        metrics["test/heldout_mse"] = float(population.heldout_mse[k])
    metrics["step"] = float(trainer.global_step)
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()


def finish_fit(trainer: pl.Trainer, module: CircuitModule, datamodule: CircuitDataModule,
               figures: bool = True, timing: tuple[int, float] | None = None) -> dict[str, Any]:
    """Test the final weights, print the summary and the best member's circuit, write results.json
    and (with ``figures``) losses.png, function_member{k}.png and circuit_member{k}.png.

    ``timing``: (SGD steps trained, seconds) of this fit's training loop, printed and saved.
    """
    steps = trainer.global_step
    test_members(trainer, module, datamodule)
    res = run_results(module, datamodule, steps, stopped_when_solved(trainer))
    if timing is not None and timing[1] > 0:
        res["train_steps"], res["train_seconds"] = timing
        res["member_steps_per_second"] = timing[0] * module.members / timing[1]
    best = res["best_member"]
    per = res["per_member"]
    say = module.print
    say("")
    cell = f" ({module.cell_text(best)})" if module.cell_text(best) else ""
    say(f"Final weights (member {best}{cell}, the best by validation MSE):" if module.members > 1 else "Final weights:")
    say(module.weights_text(best))
    say(f"Test MSE: {per['test_mse'][best]:.4g}" + (
        f"   held-out directions: {per['heldout_mse'][best]:.4g}" if per["heldout_mse"] else ""))
    readout = None
    if module.hparams.bias:
        say("Circuit: not read — the net has biases, so it is not positively homogeneous and the circuit "
            "readout (for bias-free nets) does not apply")
    else:
        readout = read_member(module, datamodule, best)
        say(f"Circuit: {readout.formula} — {readout.circuit_text()}")
        say(f"Solved: {readout.solved_text()}")
    if len(res["cells"]) > 1:
        say(f"Cells ({res['members_per_cell']} seeds each; 95% Wilson intervals):")
        labels = [Cell(tuple(c["layer_sizes"]), c["lr"], c["init_scale"]).label for c in res["cells"]]
        width = max(map(len, labels))
        for c, label in zip(res["cells"], labels):
            say("  " + cell_line(c, label.ljust(width)))
        solved_when = range_text([c["success_mse"] for c in res["cells"]], " by sizes")
    else:
        solved_when = f"{res['success_mse']:.3g}"
    say(summary_line(res) + f"; {steps} steps (solved: {res['decided_on']} < {solved_when})")
    if "train_seconds" in res:
        say(f"Trained {res['train_steps']} steps in {res['train_seconds']:.2f} s "
            f"({res['member_steps_per_second']:,.0f} member-steps/s, validation and checkpoints included)")
    if res["circuits_of_found"]:
        say("Circuits found: " + ", ".join(
            f"{n}× {c.replace('-', '−')}" for c, n in res["circuits_of_found"].items()))
    if res["stopped_when_solved"]:
        say(stopped_early_line(per["verdict"]))
    log_dir = run_dir(trainer)  # a collective under DDP: every rank must ask
    if trainer.is_global_zero and log_dir:
        path = Path(log_dir) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(res, indent=2) + "\n")
        timeline = write_timeline(Path(log_dir), module)
        written = write_figures(log_dir, module, best, readout) if figures else []
        if figures and len(res["cells"]) > 1:
            written.append(phase_diagram(res, Path(log_dir) / "phase.png"))
        _mark_done(trainer)  # everything is on disk: a signal from now on says so
        say(f"Results: {path}")
        if timeline is not None:
            say(timeline)
        for fig in written:
            say(f"Figure: {fig}")
    _mark_done(trainer)
    return res


def _mark_done(trainer: pl.Trainer) -> None:
    for guard in trainer.callbacks:
        if isinstance(guard, GracefulInterrupt):
            guard.done()


def write_timeline(directory: Path, module: CircuitModule) -> str | None:
    """circuits.csv in the run directory (timeline.png is one of the run's figures); what fit says of it."""
    timeline = module.timeline
    if timeline.absent or not timeline.steps:
        return None
    return (f"Timeline: {timeline.write_csv(directory / 'circuits.csv')} ({len(timeline.steps)} validations x "
            f"{module.members} members{'' if timeline.tracked else '; circuits ' + NOT_TRACKED})")


class RunSummary(pl.Callback):
    """At the end of a ``fit`` that was not interrupted: :func:`finish_fit` (results.json, figures).

    Args:
        figures: write losses.png and the best member's function and circuit PNGs.
    """

    def __init__(self, figures: bool = True):
        self.figures = figures
        self.results: dict[str, Any] | None = None
        self._start: tuple[int, float] | None = None
        self._timing: tuple[int, float] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = (trainer.global_step, time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None:
            step0, t0 = self._start
            self._timing = (trainer.global_step - step0, time.perf_counter() - t0)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or not isinstance(pl_module, CircuitModule):
            return
        if any(isinstance(c, GracefulInterrupt) and c.stopped for c in trainer.callbacks):
            return  # stopped by Ctrl-C/SIGTERM: last.ckpt holds the state; no verdict on a cut run
        datamodule = trainer.datamodule
        if not isinstance(datamodule, CircuitDataModule):
            datamodule = CircuitDataModule(task=pl_module.task.name)
        if self._start is None and trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps:
            # Lightning skips the training loop (no on_train_start) for a checkpoint already at max_steps
            pl_module.print(f"Nothing to train: the checkpoint is at step {trainer.global_step}, at or past "
                            f"--trainer.max_steps {trainer.max_steps} (raise it to train on); testing its weights")
        self.results = finish_fit(trainer, pl_module, datamodule, self.figures, self._timing)
