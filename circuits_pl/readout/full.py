"""The whole readout of one network (:func:`read_circuit`, what ``inspect`` prints)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.readout import certify
from circuits_pl.readout.canonical import DUPLICATE_TOL, Canonical, canonicalize, merge_printed
from circuits_pl.readout.certify import Bound, Cone
from circuits_pl.readout.diagnostics import (
    WorstInputs,
    describe_cones,
    describe_errors,
    errors_of,
    homogeneity_check,
    sparsity_error,
    worst_inputs,
)
from circuits_pl.readout.formula import formula, formula_weights, left_out
from circuits_pl.readout.matrices import Fn, as_matrices, forward, input_names, layer_sizes, random_inputs, weights_text
from circuits_pl.readout.rules import CircuitMatch, match_circuit, why_unnamed
from circuits_pl.readout.structure import Structure, structure_of
from circuits_pl.success import success_threshold
from circuits_pl.tasks import Task
from circuits_pl.verdicts import Decision, decide


@dataclass(frozen=True)
class Readout:
    """Everything ``python -m circuits_pl inspect`` prints about one network (see :meth:`text`)."""

    task: Task
    raw: list[torch.Tensor]
    canonical: Canonical
    formula: str
    match: CircuitMatch | None
    sparsity_error: float
    homogeneous: bool
    homogeneity_error: float
    test_mse: float
    n_test: int
    success_mse: float
    val_mse: float | None  # the member's validation MSE, if known (decides when the box is not certified)
    errors: str | None  # where the net is wrong, when it is not solved
    worst: WorstInputs | None
    decision: Decision  # solved and exact: circuits_pl.verdicts.decide, as results.json
    target_bound: Bound  # |net − target| over the box: certified (1 or 2 inputs), else sampled
    formula_bound: Bound  # |net − printed formula| over the box
    left_out: list[str]  # what the formula drops or merges
    structure: Structure | None = None  # the function's unique form and how the units make it
    cones: list[Cone] | None = None  # the net's cones with their shares of the squared error (2 inputs)

    @property
    def exact(self) -> bool:
        """The circuit IS the task's function (a listed circuit, or a structural form equal to the task's)
        and the net is solved: a net still above the threshold is only approaching its circuit."""
        return self.decision.exact

    @property
    def label(self) -> str | None:
        """The circuit's name (see :attr:`CircuitMatch.label`), or None."""
        return None if self.match is None else self.match.label

    @property
    def solved(self) -> bool:
        """Decided by :func:`circuits_pl.verdicts.decide` (the certified MSE over the box, else validation)."""
        return self.decision.solved

    def solved_text(self) -> str:
        """``yes, by the exact MSE over [-1, 1]² 3.1e-11 < 1.66e-10 (certified max error 5.6e-05 over [-1, 1]²)``."""
        d = self.decision
        by = (f"the exact MSE over {certify.box_text(self.task.arity)}" if d.certified
              else "the validation MSE" if self.val_mse is not None else f"the test MSE on {self.n_test} inputs")
        return (f"{'yes' if d.solved else 'no'}, by {by} {d.mse:.3g} {'<' if d.solved else '≥'} "
                f"{self.success_mse:.3g} ({self.target_bound.text()})")

    def circuit_text(self) -> str:
        """Which circuit, in words: a listed one, or none; a solved net that matches no listed form
        (wide nets spread a circuit over unit pairs, r(u·x) − r(−u·x) = u·x) says so."""
        if self.match is not None:
            return self.match.describe(self.solved)
        why = "" if self.structure is None else f" ({why_unnamed(self.structure, self.task)})"
        if self.solved:
            return "computes the target (solved), through a form not in the task's list of circuits" + why
        return "matches no known circuit" + why

    def text(self) -> str:
        """The report: raw weights, canonical form, formula, circuit match and checks."""
        sizes = "-".join(map(str, layer_sizes(self.raw)))
        lines = [f"Task {self.task.name}: f = {self.task.formula}; network {sizes}", "",
                 "Raw weights:", weights_text(self.raw)]
        lines += _canonical_lines(self.canonical, input_names(self.task.arity))
        lines += ["", "Formula:", self.formula]
        lines.append(f"Formula vs the net: {self.formula_bound.text()}"
                     + (f"; left out: {'; '.join(self.left_out)}" if self.left_out else ""))
        rough = merge_printed(self.canonical.merged, 1)
        if layer_sizes(rough) != self.canonical.merged_sizes:
            lines.append("Rounded (1 decimal, units that print alike merged; how report.md groups stuck members): "
                         + formula(self.canonical, input_names(self.task.arity), decimals=1))
        lines.append("")
        lines.append("Circuit: " + self.circuit_text())
        lines.append(f"Sparsity error: {self.sparsity_error:.3g}  (max over weights of min(|w|, |1 - |w||))")
        homogeneity = "OK" if self.homogeneous else "FAILED (not bias-free; the circuit above ignores that)"
        lines.append(f"Homogeneity f(c·x) = c·f(x): {homogeneity}, "
                     f"max relative error {self.homogeneity_error:.2g}")
        lines.append(f"Test MSE: {self.test_mse:.4g} on {self.n_test} inputs")
        lines.append(f"Solved: {self.solved_text()}")
        if self.errors:
            where = "Where the error is (exact, over the net's own cones)" if self.cones else "Where it is wrong"
            lines.append(f"{where}: {self.errors}")
        if self.worst is not None:
            lines.append("Worst inputs:")
            names = input_names(self.task.arity)
            lines += [_worst_line(self.worst, i, names) for i in range(len(self.worst.sq_error))]
        return "\n".join(lines) + "\n"


def _canonical_lines(canonical: Canonical, names: Sequence[str]) -> list[str]:
    lines = ["Canonical form (incoming weights scaled to max |w| = 1, the scale moved to the outgoing "
             "weights; units sorted):"]
    w = canonical.weights
    for layer in range(len(w) - 1):
        over = ", ".join(names) if layer == 0 else f"layer {layer} units"
        lines.append(f"  hidden layer {layer + 1}: incoming ({over}) -> outgoing")
        for i in range(w[layer].shape[0]):
            flags = []
            if bool(canonical.dead[layer][i]):
                flags.append("dead")
            if canonical.duplicate_of[layer][i] is not None:
                flags.append(f"duplicate of unit {canonical.duplicate_of[layer][i] + 1}")
            if bool(canonical.silent[layer][i]):
                flags.append("silent")
            line = f"    unit {i + 1}: {_vector(w[layer][i])} -> {_vector(w[layer + 1][:, i])}"
            lines.append(line + (f"   ({', '.join(flags)})" if flags else ""))
    if canonical.merged_sizes != canonical.layer_sizes:
        lines.append("  merged (duplicates summed, dead and silent units dropped): "
                     + "-".join(map(str, canonical.merged_sizes)))
    return lines


def _vector(v: torch.Tensor) -> str:
    return "[" + ", ".join(f"{x: .4f}" for x in v.tolist()) + "]"


def _worst_line(worst: WorstInputs, i: int, names: Sequence[str]) -> str:
    at = ", ".join(f"{n} = {v: .4f}" for n, v in zip(names, worst.x[i].tolist(), strict=True))
    return (f"  {at}: target {float(worst.target[i]):.4f}, output {float(worst.output[i]):.4f}, "
            f"squared error {float(worst.sq_error[i]):.3g}")


def read_circuit(weights: Sequence, task: Task, x: torch.Tensor | None = None, fn: Fn | None = None,
                 tol: float = DUPLICATE_TOL, k: int = 5, success_mse: float | None = None,
                 val_mse: float | None = None, target_bound: Bound | None = None) -> Readout:
    """Read one network's circuit: canonical form, formula, match, and checks as a :class:`Readout`.

    Args:
        weights: ``(out, in)`` matrices, input layer first, bias-free, one output.
        task: the task the net was trained on.
        x: test inputs ``(N, arity)``; default 1000 fixed points uniform in [-1, 1]^arity.
        fn: the network as it runs (e.g. ``lambda x: net(x, member=k)``), used for homogeneity and
            test MSE; default: the bias-free forward of ``weights`` in float64.
        tol: duplicate/silent tolerance of :func:`canonicalize`.
        k: worst inputs listed when the net is not solved.
        success_mse: the "solved" threshold; default the task's (see :mod:`circuits_pl.success`).
        val_mse: the member's validation MSE: decides "solved" where the box is not certified (default: the
            test MSE on ``x``).
        target_bound: its distance to the target, as computed for its whole run
            (:func:`circuits_pl.readout.certify.to_target`); default: computed here.
    """
    mats = as_matrices(weights)
    if mats[0].shape[1] != task.arity:
        raise CircuitsError(f"the net has {mats[0].shape[1]} inputs but task {task.name!r} has {task.arity}")
    x = random_inputs(1000, task.arity) if x is None else x
    net = fn if fn is not None else (lambda z: forward(mats, z))
    canonical = canonicalize(mats, x, tol)
    ok, homog_err = homogeneity_check(net, task.arity, dtype=x.dtype)
    _, _, sq = errors_of(net, task, x)
    structure = structure_of(canonical.weights)
    mse = float(sq.mean())
    threshold = success_threshold(task, layer_sizes(mats)) if success_mse is None else success_mse
    match = match_circuit(canonical, task, structure=structure)
    if target_bound is None:
        target_bound = certify.to_target(task, certify.stack([mats])).member(0)
    decision = decide(match is not None, threshold, target_bound.mse if target_bound.certified else None,
                      mse if val_mse is None else val_mse)
    unsolved = not decision.solved
    cones = certify.error_cones(mats, task) if unsolved else None
    if cones is not None:
        errors = describe_cones(cones, input_names(task.arity))
    else:
        errors = describe_errors(net, task, x, weights=mats) if unsolved else None
    return Readout(
        task=task, raw=mats, canonical=canonical, formula=formula(canonical),
        match=match, structure=structure,
        sparsity_error=sparsity_error(canonical), homogeneous=ok, homogeneity_error=homog_err, test_mse=mse,
        n_test=x.shape[0], success_mse=threshold, val_mse=val_mse, errors=errors,
        worst=worst_inputs(net, task, x, k) if unsolved else None, decision=decision, target_bound=target_bound,
        formula_bound=certify.between(mats, formula_weights(canonical)).member(0), left_out=left_out(canonical),
        cones=cones,
    )
