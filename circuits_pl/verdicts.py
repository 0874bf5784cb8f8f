"""Per-member verdicts: did a member find the circuit, has it converged, or is it stuck?

Two questions, answered separately (a fixed budget must not count a member that is still
converging onto the exact circuit as a failure):

- **converged**: validation MSE below the success threshold (the field's ε-protocol);
- **found**: the structural readout of its weights is an exact circuit of the task, and the loss
  is below the threshold or still falling geometrically (each of the last two validations at most
  ``GEOMETRIC_RATIO`` times the one before).

The verdict of a member is one word::

    converged   found, and below the threshold
    converging  found, still on its way down
    slow        not found yet, still improving
    stuck       not found, on a plateau: its MSE fell by less than 1% over its last validations
    too early   fewer than 3 scheduled validations: a plateau cannot be told from slow progress yet
    diverged    its loss became non-finite; reset to its last finite weights and frozen

Whether a member is solved, and so exact, is decided in one place, :func:`decide`, from one number: the
exact MSE over the whole input box where the readout certifies it (1 or 2 inputs, a piecewise-linear
target: :mod:`circuits_pl.readout.certify`), else the validation MSE. results.json, the Circuit line of
``fit``, ``inspect`` and ``report`` all take it from there.

Pure Python and torch (no Lightning), so the rules are tested on synthetic histories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

GEOMETRIC_RATIO = 0.9  # "falling geometrically": each validation at most 90% of the one before
STUCK_PROGRESS = 0.01  # relative decrease over the kept validations below which a member is stuck
MIN_VALIDATIONS = 3  # validations needed to call a plateau

VERDICTS = ("converged", "converging", "slow", "stuck", "too early", "diverged")


def falling_geometrically(history: Sequence[float]) -> bool:
    """The last three finite values each at most ``GEOMETRIC_RATIO`` times the one before."""
    h = [v for v in history if math.isfinite(v)]
    if len(h) < 3:
        return False
    a, b, c = h[-3:]
    return b <= GEOMETRIC_RATIO * a and c <= GEOMETRIC_RATIO * b


def on_plateau(history: Sequence[float]) -> bool:
    """At least ``MIN_VALIDATIONS`` finite values, and the last fell by less than 1% from the first."""
    h = [v for v in history if math.isfinite(v)]
    return len(h) >= MIN_VALIDATIONS and h[-1] > (1 - STUCK_PROGRESS) * h[0]


def verdict(converged: bool, exact: bool, history: Sequence[float], diverged: bool = False) -> str:
    """One member's verdict (see the module docstring).

    Args:
        converged: validation MSE below the success threshold.
        exact: the structural readout of the weights is an exact circuit of the task.
        history: the member's validation MSE at its last scheduled validations, oldest first.
        diverged: its loss became non-finite.
    """
    if diverged:
        return "diverged"
    if exact and converged:
        return "converged"
    if exact and falling_geometrically(history):
        return "converging"
    if converged:  # below the threshold through a form the readout does not call exact
        return "converged"
    if len([v for v in history if math.isfinite(v)]) < MIN_VALIDATIONS:
        return "too early"
    return "stuck" if on_plateau(history) else "slow"


def found(verdict_: str) -> bool:
    """Did the member find the circuit (converged, or found and converging)?"""
    return verdict_ in ("converged", "converging")


@dataclass(frozen=True)
class Decision:
    """Is a member solved, and is its circuit exact? (see :func:`decide`)

    Args:
        solved: the deciding MSE is below the success threshold.
        exact: solved, and the readout names an exact circuit of the task.
        mse: the MSE that decided.
        certified: that MSE is the exact mean over the whole input box (else a validation MSE on points).
    """

    solved: bool
    exact: bool
    mse: float
    certified: bool


def decide(matched: bool, success_mse: float, certified_mse: float | None, val_mse: float) -> Decision:
    """The one decision of solved and exact, for every place that prints or saves them.

    Args:
        matched: the readout names an exact circuit of the task (whatever the loss).
        success_mse: the threshold (circuits_pl.success).
        certified_mse: the exact MSE over the input box, where the readout certifies it; else None.
        val_mse: the member's validation MSE: decides when there is no certified MSE.
    """
    mse, certified = (certified_mse, True) if certified_mse is not None else (val_mse, False)
    solved = bool(mse < success_mse)  # NaN: not solved
    return Decision(solved, solved and bool(matched), float(mse), certified)
