"""Read the circuit a bias-free ReLU MLP computes: canonical weights, formula, the function's unique
form, which exact circuit, and where it is wrong. Pure torch/numpy/scipy: no Lightning here.

One concept per module, bottom up:

- :mod:`.matrices`: weights as ``(out, in)`` matrices, forward pass, input names, printing.
- :mod:`.canonical`: the permutation and rescaling symmetries removed (:func:`canonicalize`).
- :mod:`.formula`: a canonical net as ``y = 1.000·r(a) − ...``.
- :mod:`.form`: a unique form L·x + Σ c·|d·x| with simple fractions, as text (``½(a + b) − ½|a − b|``).
- :mod:`.structure`: reading that form from a net with 1 or 2 hidden layers, and how its units make it.
- :mod:`.rules`: the ordered rules that name a net (:data:`RULES`), one label (:attr:`CircuitMatch.label`).
- :mod:`.diagnostics`: sparsity, homogeneity, where a net is wrong (in its own cones).
- :mod:`.description`: one member in a few fields for results.json (:func:`describe_member`).
- :mod:`.full`: the whole readout of one net (:func:`read_circuit`, :class:`Readout`).
"""

from circuits_pl.readout.canonical import DUPLICATE_TOL, Canonical, canonicalize, merge_printed
from circuits_pl.readout.description import MemberDescription, describe_member
from circuits_pl.readout.diagnostics import (
    HOMOGENEITY_RTOL,
    WorstInputs,
    describe_errors,
    errors_of,
    homogeneity_check,
    sparsity_error,
    worst_inputs,
)
from circuits_pl.readout.form import Form
from circuits_pl.readout.formula import formula, formula_of, unit_formula
from circuits_pl.readout.full import Readout, read_circuit
from circuits_pl.readout.matrices import (
    MINUS,
    Fn,
    as_matrices,
    forward,
    input_names,
    layer_sizes,
    random_inputs,
    weights_text,
)
from circuits_pl.readout.rules import MATCH_TOL, RULES, CircuitMatch, match_circuit, why_unnamed
from circuits_pl.readout.structure import Structure, is_target, structure_of, target_form

__all__ = [
    "DUPLICATE_TOL", "HOMOGENEITY_RTOL", "MATCH_TOL", "MINUS", "RULES", "Canonical", "CircuitMatch", "Fn",
    "Form", "MemberDescription", "Readout", "Structure", "WorstInputs", "as_matrices", "canonicalize",
    "describe_errors", "describe_member", "errors_of", "forward", "formula", "formula_of", "homogeneity_check",
    "input_names", "is_target", "layer_sizes", "match_circuit", "merge_printed", "random_inputs", "read_circuit",
    "sparsity_error", "structure_of", "target_form", "unit_formula", "weights_text", "why_unnamed",
    "worst_inputs",
]
