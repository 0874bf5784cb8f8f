"""Per-member verdicts: did a member find the circuit, has it converged, or is it stuck?

Two questions, answered separately (a fixed budget must not count a member that is still
converging onto the exact circuit as a failure):

- **converged**: validation MSE below the success threshold (the field's ε-protocol);
- **found**: the structural readout of its weights is an exact circuit of the task, and the loss
  is below the threshold or the member is converging: its timeline (``circuits_pl.timeline``) named
  that circuit at its last ``FORMED_VALIDATIONS`` validations and a power law of its validation MSE
  fitted over its last ``TREND_WINDOW`` validations reaches the threshold within ``TREND_HORIZON`` times
  the steps trained (:class:`Trend`). Of the members this rule called converging in five runs (min
  2-3-1 to wide 2-8-1 nets), 94% were solved within twice the step (``benchmarks/found_stability.py``);
  a run from before the timeline keeps the rule before it (each of the last two validations at most
  ``GEOMETRIC_RATIO`` times the one before), which wide nets whose MSE slows down fool (14%).

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

GEOMETRIC_RATIO = 0.9  # "falling geometrically": each validation at most 90% of the one before (no timeline)
TREND_WINDOW = 3  # validations a power law of MSE against step is fitted over
TREND_HORIZON = 2.0  # converging: the fitted power law reaches the threshold within this x the steps trained
FORMED_VALIDATIONS = 2  # converging: the same exact circuit named at this many validations in a row
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


def projected_step(steps: Sequence[float], mse: Sequence[float], threshold: float,
                   window: int = TREND_WINDOW) -> float | None:
    """The step at which a member's validation MSE reaches ``threshold`` along a power law (a least-squares
    line of log MSE against log step) fitted over its last ``window`` validations; the last step if it is
    already below; inf when the fit is not falling; None with fewer than ``window`` finite positive values."""
    pts = [(float(s), float(m)) for s, m in zip(steps, mse) if s > 0 and math.isfinite(m) and m > 0][-window:]
    if len(pts) < window:
        return None
    last_step, last = pts[-1]
    if last < threshold:
        return last_step
    xs, ys = [math.log(s) for s, _ in pts], [math.log(m) for _, m in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / spread if spread > 0 else 0.0
    if not slope < 0:
        return math.inf
    log_step = math.log(last_step) + (math.log(threshold) - math.log(last)) / slope
    return math.exp(log_step) if log_step < 700 else math.inf  # beyond any run: as good as never


@dataclass(frozen=True)
class Trend:
    """What a member's timeline says of its way down (``circuits_pl.timeline``).

    Args:
        stable_for: how many validations in a row, up to the last, named its final circuit.
        projected: :func:`projected_step` of its last validations (None: too few).
        steps: SGD steps trained.
    """

    stable_for: int
    projected: float | None
    steps: int

    @property
    def converging(self) -> bool:
        """Formed (the same circuit at ``FORMED_VALIDATIONS`` validations in a row) and projected to reach
        the threshold within ``TREND_HORIZON`` x the steps trained."""
        return (self.stable_for >= FORMED_VALIDATIONS and self.projected is not None
                and self.projected <= TREND_HORIZON * self.steps)


def on_plateau(history: Sequence[float]) -> bool:
    """At least ``MIN_VALIDATIONS`` finite values, and the last fell by less than 1% from the first."""
    h = [v for v in history if math.isfinite(v)]
    return len(h) >= MIN_VALIDATIONS and h[-1] > (1 - STUCK_PROGRESS) * h[0]


def verdict(converged: bool, exact: bool, history: Sequence[float], diverged: bool = False,
            trend: Trend | None = None) -> str:
    """One member's verdict (see the module docstring).

    Args:
        converged: validation MSE below the success threshold.
        exact: the structural readout of the weights is an exact circuit of the task.
        history: the member's validation MSE at its last scheduled validations, oldest first.
        diverged: its loss became non-finite.
        trend: what its timeline says (:class:`Trend`); None (a run without one): falling geometrically
            over the last validations stands in for it.
    """
    if diverged:
        return "diverged"
    if exact and converged:
        return "converged"
    if exact and (trend.converging if trend is not None else falling_geometrically(history)):
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
