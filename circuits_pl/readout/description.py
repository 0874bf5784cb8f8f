"""One member's circuit in a few fields, for results.json (every member of a run, K up to 1024)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from circuits_pl.readout.canonical import canonicalize
from circuits_pl.readout.certify import between
from circuits_pl.readout.diagnostics import sparsity_error
from circuits_pl.readout.formula import formula, formula_weights
from circuits_pl.readout.rules import match_circuit, why_unnamed
from circuits_pl.readout.structure import Structure, structure_of
from circuits_pl.tasks import Task


@dataclass(frozen=True)
class MemberDescription:
    """What a member's weights compute.

    Args:
        formula: the merged canonical circuit, 3 decimals.
        rough_formula: the same with 1 decimal (groups members stuck in the same place).
        label: the listed circuit's formula, or how the units make the task's form
            (``a + b through 2 linear pairs``), or None when no rule names the net.
        exact: the net's form IS the task's function (whatever its loss: a converging net can be exact).
        family: a short key grouping members by circuit family (listed formula, or the form
            ``½(a + b) − ½|a − b|``); for unnamed nets the simple form if there is one, else the rough formula.
        sparsity_error: max_w min(|w|, |1 − |w||) over the merged canonical weights.
        reason: why the net is not named (None when it is).
        structure: the structural reading (not in :meth:`as_dict`).
        formula_max_error: max |net − formula| over the input box: what the printed formula leaves out
            (certified for 1 or 2 inputs, else on sample points).
    """

    formula: str
    rough_formula: str
    label: str | None
    exact: bool
    family: str
    sparsity_error: float
    reason: str | None = None
    structure: Structure | None = None
    formula_max_error: float | None = None
    formula_weights: list[torch.Tensor] | None = None  # the net the printed formula denotes (not in as_dict)

    def as_dict(self) -> dict[str, Any]:
        return {"formula": self.formula, "rough_formula": self.rough_formula, "label": self.label,
                "exact": self.exact, "family": self.family, "sparsity_error": self.sparsity_error,
                "reason": self.reason, "formula_max_error": self.formula_max_error}


def describe_member(weights: Sequence, task: Task, x: torch.Tensor | None = None,
                    to_formula: bool = True) -> MemberDescription:
    """Canonical form, formula, structural form and label of one bias-free net.

    Args:
        weights: ``(out, in)`` matrices, input layer first, bias-free, one output.
        task: the task it was trained on.
        x: test inputs; a unit never active on them is dead (default: only all-zero units are).
        to_formula: measure ``formula_max_error`` here (``describe_members`` does it for all members at once).
    """
    canonical = canonicalize(weights, x)
    structure = structure_of(canonical.weights)
    match = match_circuit(canonical, task, structure=structure)
    rough = formula(canonical, decimals=1)
    if match is not None:
        label, family, reason = match.label, match.family, None
    else:
        label, reason = None, why_unnamed(structure, task)
        family = structure.form.text() if structure.form is not None else rough
    printed = formula_weights(canonical)
    distance = between(canonical.weights, printed).member(0).max_error if to_formula else None
    return MemberDescription(formula(canonical), rough, label, match is not None, family,
                             sparsity_error(canonical), reason, structure, distance, printed)
