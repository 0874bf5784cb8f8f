"""``python -m circuits_pl inspect PATH``: read the circuit of a trained member, and draw it.

PATH is a checkpoint or a run directory (``lightning_logs/version_N``, whose ``checkpoints/last.ckpt``
is read). Prints the raw weights in the notebook's layout, the canonical form, the formula, which
exact circuit it is, the checks (homogeneity, held-out directions), the test MSE and the member's path
through circuits over training (its timeline: ``none → r(a + b) → r(a) − r(−a) − r(a − b) at 3000,
solved at 6000``); (re)writes ``timeline.png``, ``losses.png``, ``function_member{k}.png`` and
``circuit_member{k}.png`` into the run directory (``--figures false`` to only print). A run directory
that cannot be written still gets its readout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from circuits_pl.module_readout import heldout_mse, read_member, test_mse, write_figures
from circuits_pl.readout import Readout
from circuits_pl.saved_run import Run, check_finite_member, load_run
from circuits_pl.timeline import NOT_TRACKED, path_text
from circuits_pl.verdicts import TREND_WINDOW, projected_step


def report_text(run: Run, member: int, readout: Readout) -> str:
    module = run.module
    k_total = module.members
    header = f"{run.checkpoint}: step {run.step}, member {member}"
    if k_total > 1:
        best = int(module.population.best_member)
        header += f" of {k_total} ({'the best by validation MSE' if member == best else f'best is {best}'})"
    if module.cell_text(member):
        header += f"; {module.cell_text(member)}"
    lines = [header, timeline_line(run, member, readout.decision.solved), "", readout.text().rstrip()]
    held = heldout_mse(module, run.data)
    if held is not None:
        lines.append(f"Held-out directions (u·x < 0 for u = {run.data.cone}): MSE {float(held[member]):.4g}")
    return "\n".join(lines) + "\n"


def timeline_line(run: Run, member: int, solved: bool) -> str:
    """``Timeline: none → r(a + b) → r(a) − r(−a) − r(a − b) at 3000, solved at 6000``: the member's circuits
    at the run's validations, the step its final circuit formed, and the step it was first solved (by the
    validations; the last step if only the final decision says so)."""
    timeline = run.module.timeline
    if timeline.absent:
        return "Timeline: absent (this checkpoint was written before circuits_pl recorded one)"
    if not timeline.tracks(member):
        return f"Timeline: circuits {NOT_TRACKED} (the readout reads bias-free nets with 1 or 2 hidden layers)"
    module = run.module
    at = int(module.population.solved_at[member])
    solved_at = (at if at >= 0 else run.step) if solved else None
    text = "Timeline: " + path_text(timeline.path(member), timeline.formed_at()[member], solved_at)
    if not solved:
        projected = projected_step(*timeline.last(member, TREND_WINDOW),
                                   float(module.population.success_mse[member]))
        if projected is not None and math.isfinite(projected):
            text += f" (its last {TREND_WINDOW} validations project step {projected:.0f} along a power law)"
    return text


def bias_text(run: Run, member: int) -> str:
    """What inspect says of a net with biases: its weights and test MSE, and why no circuit is read."""
    mse = float(test_mse(run.module, run.data)[member])
    cell = f"; {run.module.cell_text(member)}" if run.module.cell_text(member) else ""
    return (f"{run.checkpoint}: step {run.step}, member {member}{cell}\n\n{run.module.weights_text(member)}\n"
            f"Test MSE: {mse:.4g} on {run.data.hparams.val_size} inputs\n"
            "Circuit: not read — the net has biases, so it is not positively homogeneous and the circuit "
            "readout (for bias-free nets) does not apply\n")


@dataclass(frozen=True)
class MemberChoice:
    """The member to read (fit's --model.member).

    Args:
        member: the member to read (null: the best by validation MSE)
    """

    member: int | None = None


def inspect(path: str, model: MemberChoice = MemberChoice(), figures: bool = True, task: str | None = None) -> None:
    """Read the circuit a run learned: inspect RUN_DIR_OR_CKPT

    Read the circuit a trained member computes: raw and canonical weights, formula, which exact circuit,
    checks; (re)writes its PNG figures into the run directory.

    Args:
        path: a checkpoint (.ckpt) or a run directory (lightning_logs/version_N)
        model: the member to read
        figures: (re)write timeline.png, losses.png, function_member{k}.png and circuit_member{k}.png into the
            run directory
        task: the checkpoint's task, if it is your own (package.module:function): a checkpoint never imports
            code by itself
    """
    run = load_run(path, model.member, task)
    module = run.module
    member = module.selected_member
    check_finite_member(run, member)
    readout = None
    if module.hparams.bias:
        print(bias_text(run, member), end="")
    else:
        readout = read_member(module, run.data, member)
        print(report_text(run, member, readout), end="")
    if not figures:
        return
    try:
        written = write_figures(run.directory, module, member, readout)
    except OSError as err:
        print(f"Figures not written: {run.directory} is not writable ({err.strerror or err})")
        return
    for figure in written:
        print(f"Figure: {figure}")
