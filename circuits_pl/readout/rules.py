"""Which circuit a net computes: an ordered list of rules, the first that names the net wins.

To teach the readout a new kind of circuit, add a rule to :data:`RULES` (a function
``(canonical, task, structure, tol) -> CircuitMatch | None``); :meth:`CircuitMatch.label` is the one
place that turns a match into the label results, inspection and plots print.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from circuits_pl.readout.canonical import Canonical, canonicalize, merge_printed
from circuits_pl.readout.formula import formula
from circuits_pl.readout.matrices import MINUS
from circuits_pl.readout.structure import Structure, is_target, structure_of
from circuits_pl.tasks import Task, embed_circuit

MATCH_TOL = 1e-2  # max weight deviation (relative to the circuit's largest weight) of a catalogue match
ROUNDED_TOL = 5e-2  # the same for a net whose form is the task's: its weights round (1 decimal) to the circuit's


@dataclass(frozen=True)
class CircuitMatch:
    """Which exact circuit a net computes.

    Args:
        index: position in ``task.circuits``; None for an exact circuit not listed there.
        formula: the listed circuit's formula, or the learned circuit's (3 decimals) for an unlisted one.
        deviation: max |learned − circuit weight| over the merged canonical weights (for an unlisted
            circuit: max |coefficient − simple fraction| of its structural form).
        structure: the structural reading of the net (how its units make the function's unique form).
        rule: the name of the rule that matched.
    """

    index: int | None
    formula: str
    deviation: float
    structure: Structure | None = None
    rule: str = "catalogue"

    @property
    def label(self) -> str:
        """The one label of a matched net: the listed circuit's formula (``r(a) − r(−a) − r(a − b)``), or
        how the units make the function's form (``a + b through 2 linear pairs``)."""
        if self.index is not None:
            return self.formula.replace("-", MINUS)  # the task's ASCII formula, in the style of ours
        if self.structure is not None and self.structure.form is not None:
            return self.structure.how()
        return "equivalent exact"

    @property
    def family(self) -> str:
        """A short key grouping nets by circuit family: the listed formula, or the form (``½(a + b) − ½|a − b|``)."""
        if self.index is None and self.structure is not None and self.structure.form is not None:
            return self.structure.form.text()
        return self.label

    def describe(self, solved: bool = True) -> str:
        """In words; a net not ``solved`` (MSE not below the threshold) is only approaching the circuit."""
        if self.index is None:
            lead = ("computes the target exactly through an equivalent exact circuit" if solved
                    else "approaching an equivalent exact circuit")
            return (f"{lead}, not one listed for the task: {self.label} (max deviation from simple fractions "
                    f"{self.deviation:.2g}):\n{self.formula}")
        lead = "matches the exact circuit" if solved else "approaching the exact circuit"
        return f"{lead} {self.label} (max weight deviation {self.deviation:.2g})"


Rule = Callable[[Canonical, Task, Structure, float], "CircuitMatch | None"]


def catalogue_rule(canonical: Canonical, task: Task, structure: Structure, tol: float) -> CircuitMatch | None:
    """The task's listed circuit the merged canonical net equals weight by weight, or None.

    Each circuit in ``task.circuits`` (mirror forms and spread-out forms included) is embedded in
    the net's layer sizes (wider: zero units; deeper: ``r(y), r(−y)`` pairs), canonicalised the same
    way, and compared weight by weight after pairing units layer by layer (Hungarian assignment on
    incoming weights, so near-ties in the sort order cannot spoil a match). Outgoing weights are
    compared too: identity and negate share the units r(x), r(−x). A match needs deviation
    <= ``tol`` × max(1, largest circuit weight).
    """
    return _closest_listed(canonical.merged, canonical.layer_sizes, task, structure, tol)


def _closest_listed(merged: Sequence[torch.Tensor], sizes: tuple[int, ...], task: Task, structure: Structure | None,
                    tol: float) -> CircuitMatch | None:
    """The listed circuit (embedded in ``sizes``) closest to the merged net ``merged``, within ``tol``."""
    best: CircuitMatch | None = None
    for index, circuit in enumerate(task.circuits):
        embedded = embed_circuit(circuit.weights, sizes)
        if embedded is None:
            continue
        ref = canonicalize(embedded).merged
        dev = _deviation(merged, ref)
        scale = max([1.0] + [float(w.abs().max()) for w in ref if w.numel()])
        if dev is not None and dev <= tol * scale and (best is None or dev < best.deviation):
            best = CircuitMatch(index, circuit.formula, dev, structure)
    return best


def structural_rule(canonical: Canonical, task: Task, structure: Structure, tol: float) -> CircuitMatch | None:
    """The net's unique form L·x + Σ c·|d·x|, rounded to simple fractions, IS the task's function
    (symbolically against the task's own form, and on random points): an exact circuit. Listed after all
    when its form rounded to 1 decimal (units that print alike merged) is a listed circuit within
    ``ROUNDED_TOL``: a net still converging onto r(a + b) − r(−a − b), 1.003·r(a + 0.987·b) −
    1.002·r(−0.994·a − b), is that circuit, not an unlisted one."""
    if structure.form is None or not is_target(structure.form, task)[0]:
        return None
    listed = _closest_listed(merge_printed(canonical.merged, 1), canonical.layer_sizes, task, structure, ROUNDED_TOL)
    if listed is not None:
        return listed
    return CircuitMatch(None, formula(canonical), structure.deviation, structure, "structural")


RULES: list[Rule] = [catalogue_rule, structural_rule]  # in order: the first match wins


def match_circuit(canonical: Canonical, task: Task, tol: float = MATCH_TOL,
                  structure: Structure | None = None) -> CircuitMatch | None:
    """The first rule of :data:`RULES` that names the merged canonical net, or None."""
    structure = structure_of(canonical.weights) if structure is None else structure
    for rule in RULES:
        match = rule(canonical, task, structure, tol)
        if match is not None:
            return match
    return None


def why_unnamed(structure: Structure, task: Task) -> str:
    """Why no rule names a net: no simple form (and why), or a form that is not the task's."""
    if structure.form is None:
        return structure.reason or "no structural form"
    ok, reason = is_target(structure.form, task)
    return "named by no rule" if ok else (reason or "not the task's function")


def _deviation(learned: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> float | None:
    """Max |weight difference| after pairing units; None if the layer sizes differ."""
    if [w.shape for w in learned] != [w.shape for w in ref]:
        return None
    mats = list(learned)
    for layer in range(len(mats) - 1):
        if mats[layer].shape[0] == 0:
            continue
        cost = torch.cdist(ref[layer], mats[layer], p=1)  # (ref units, learned units)
        _, learned_of_ref = linear_sum_assignment(cost.numpy())
        perm = torch.as_tensor(learned_of_ref)
        mats[layer], mats[layer + 1] = mats[layer][perm], mats[layer + 1][:, perm]
    return _max_gap(mats, ref)


def _max_gap(mats: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> float:
    """Max |difference| over the weights of two nets of the same sizes (0 for empty nets)."""
    gaps = [float((a - b).abs().max()) for a, b in zip(mats, other, strict=True) if a.numel()]
    return max(gaps, default=0.0)
