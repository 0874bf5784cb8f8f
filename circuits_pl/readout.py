"""Read the circuit a bias-free ReLU MLP computes: canonical weights, formula, which exact circuit.

A bias-free ReLU net's weights are identifiable only up to two symmetries: the hidden units of a
layer can be permuted, and a unit can be rescaled, because r(c·z) = c·r(z) for c > 0 (r = ReLU):
scaling a unit's incoming weights by c and its outgoing weights by 1/c changes nothing. Reading a
circuit therefore starts by removing both, then compares with the task's exact circuits::

    raw         W1 = [[0.53], [-1.92]]   W2 = [[1.8868, 0.5208]]
    canonical   W1 = [[1.0], [-1.0]]     W2 = [[1.0, 1.0]]         ->  y = 1.000·r(x) + 1.000·r(−x)
                                                                       matches |x| = r(x) + r(-x)

Weights are lists of ``(out, in)`` matrices (PyTorch's Linear layout), input layer first, no biases,
one output; e.g. ``[w[k] for w in net.weights]`` for member k of a :class:`~circuits_pl.network.ReLUMLP`.
Pure torch/numpy/scipy: no Lightning here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from circuits_pl.errors import CircuitsError
from circuits_pl.success import success_threshold
from circuits_pl.tasks import Task, embed_circuit

DUPLICATE_TOL = 1e-2  # units whose normalised incoming weights differ by less are one unit (for reading)
MATCH_TOL = 1e-2  # max weight deviation (relative to the circuit's largest weight) of a match
EXACT_TOL = 1e-6  # max |error| of the rounded circuit that counts as computing the target exactly
HOMOGENEITY_RTOL = 1e-4  # float32 nets reach ~1e-7; a bias gives O(1)
MINUS = "\u2212"  # "−", as in r(−x): a typographic minus reads better than "-" in formulas

Fn = Callable[[torch.Tensor], torch.Tensor]  # inputs (N, arity) -> outputs (N, 1)


# ---------------------------------------------------------------------------------------------
# Weights as a list of matrices
# ---------------------------------------------------------------------------------------------

def as_matrices(weights: Sequence) -> list[torch.Tensor]:
    """Float64 CPU copies of ``(out, in)`` weight matrices, checked to chain into a one-output net.

    Raises CircuitsError for a 1-D tensor (a bias: the readout is for bias-free nets) or for
    shapes that do not chain.
    """
    mats = [torch.as_tensor(w).detach().to("cpu", torch.float64).clone() for w in weights]
    if not mats:
        raise CircuitsError("no weights given: need one (out, in) matrix per layer")
    for layer, w in enumerate(mats):
        if w.dim() != 2:
            raise CircuitsError(
                f"weights[{layer}] has shape {tuple(w.shape)}, not (out, in): the readout is for bias-free "
                "nets; pass the weight matrices only, e.g. [w[k] for w in net.weights]"
            )
        if layer and w.shape[1] != mats[layer - 1].shape[0]:
            raise CircuitsError(
                f"weights[{layer}] has {w.shape[1]} inputs, but layer {layer - 1} has "
                f"{mats[layer - 1].shape[0]} units"
            )
    if mats[-1].shape[0] != 1:
        raise CircuitsError(f"the last layer has {mats[-1].shape[0]} outputs; the readout needs one")
    return mats


def layer_sizes(weights: Sequence[torch.Tensor]) -> tuple[int, ...]:
    return (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)


def forward(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The bias-free ReLU MLP of ``weights`` on inputs ``(N, in)``: outputs ``(N, 1)``, float64."""
    a = x.to(torch.float64)
    for layer, w in enumerate(weights):
        a = a @ w.T
        if layer < len(weights) - 1:
            a = a.relu()
    return a


def input_names(arity: int) -> list[str]:
    """``x`` for one input, ``a, b`` for two (as in the task formulas), ``x1..xn`` otherwise."""
    return {1: ["x"], 2: ["a", "b"]}.get(arity, [f"x{i + 1}" for i in range(arity)])


def weights_text(weights: Sequence, biases: Sequence | None = None) -> str:
    """Weights in the notebook's layout: each layer transposed (in, out), 4 decimals, named
    ``hidden_layer_0: ... output_layer:``, so a readout compares line by line with the notebook.
    Biases, if any, follow their layer as ``<layer>_bias:``."""
    def text(t) -> str:
        arr = torch.as_tensor(t).detach().to("cpu", torch.float64).numpy()
        return np.array2string(arr, precision=4, floatmode="fixed", separator=", ", suppress_small=True)

    lines = []
    for layer, w in enumerate(weights):
        name = "output_layer" if layer == len(weights) - 1 else f"hidden_layer_{layer}"
        lines += [f"{name}:", text(torch.as_tensor(w).T)]
        if biases:
            lines += [f"{name}_bias:", text(biases[layer])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def random_inputs(n: int, arity: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` points uniform in [-1, 1]^arity from one seed (the default test set of the readout)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, arity, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)


# ---------------------------------------------------------------------------------------------
# Canonical form
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Canonical:
    """A net with the permutation and rescaling symmetries removed.

    Args:
        weights: every unit kept; each hidden unit's incoming weights scaled to max |w| = 1 (the
            scale moved into its outgoing weights), units sorted. Computes exactly the raw function.
        dead: per hidden layer, a bool per unit of ``weights``: zero incoming weights, or never
            active (pre-activation <= 0) on the test inputs.
        duplicate_of: per hidden layer, per unit of ``weights``: the index of the first unit with the
            same normalised incoming weights (within the tolerance), or None.
        silent: per hidden layer, a bool per unit of ``weights``: every outgoing weight ~0 (within
            the tolerance), so the unit does not reach the output.
        merged: the circuit proper: duplicates merged (outgoing weights summed), dead units and
            silent units dropped. The same function on the test inputs, up to the tolerance (exactly,
            if duplicates are exact and dropped units are dead or have outgoing weights of 0).
    """

    weights: list[torch.Tensor]
    dead: list[torch.Tensor]
    duplicate_of: list[list[int | None]]
    silent: list[torch.Tensor]
    merged: list[torch.Tensor]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return layer_sizes(self.weights)

    @property
    def merged_sizes(self) -> tuple[int, ...]:
        return layer_sizes(self.merged)


def canonicalize(weights: Sequence, x: torch.Tensor | None = None, tol: float = DUPLICATE_TOL) -> Canonical:
    """Normalise, sort and flag the hidden units of a bias-free ReLU net, first layer to last.

    Max-abs normalisation (largest |incoming weight| = 1) gives readable coefficients, r(a − b)
    rather than r(0.71·a − 0.71·b); the positive scale goes to the outgoing weights, which by
    positive homogeneity leaves the function unchanged. Units are sorted by their incoming
    weights, lexicographically, descending (then by outgoing weights), zero units last.

    Args:
        weights: ``(out, in)`` matrices, input layer first, one output.
        x: test inputs ``(N, in)``; a unit never active on them counts as dead. Without ``x``
            only units with all-zero incoming weights are dead.
        tol: units whose normalised incoming weights differ by at most ``tol`` (max abs) are
            duplicates; a unit whose outgoing weights are all at most ``tol`` is silent.
    """
    mats = as_matrices(weights)
    for layer in range(len(mats) - 1):
        mats = _normalise_layer(mats, layer)
    dead = _dead_units(mats, x)
    duplicates = [_duplicates(w, d, tol) for w, d in zip(mats[:-1], dead, strict=True)]
    silent = [_row_max(w_out.T) <= tol for w_out in mats[1:]]
    return Canonical(mats, dead, duplicates, silent, _merge(mats, x, tol))


def _row_max(w: torch.Tensor) -> torch.Tensor:
    """Largest |weight| of each row; 0 for rows of an empty matrix."""
    if w.shape[1] == 0:
        return torch.zeros(w.shape[0], dtype=w.dtype)
    return w.abs().amax(dim=1)


def _normalise_layer(mats: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
    """Scale hidden layer ``layer``'s units to max |incoming| = 1 and sort them (a new list)."""
    w_in, w_out = mats[layer], mats[layer + 1]
    scale = _row_max(w_in)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a zero unit has nothing to scale
    w_in, w_out = w_in / scale[:, None], w_out * scale[None, :]  # r(s·z) = s·r(z) for s > 0
    order = _unit_order(w_in, w_out)
    out = list(mats)
    out[layer], out[layer + 1] = w_in[order], w_out[:, order]
    return out


def _unit_order(w_in: torch.Tensor, w_out: torch.Tensor) -> list[int]:
    """Descending lexicographic order of the incoming rows (ties: outgoing columns), zero rows last.

    Keys are rounded to 6 decimals so that float noise (0.9999999999999999 against 1.0) cannot
    reorder units whose weights are equal in exact arithmetic.
    """
    def key(i: int) -> tuple:
        row, col = w_in[i].tolist(), w_out[:, i].tolist()
        return (not any(row), [-round(v, 6) for v in row], [-round(v, 6) for v in col])

    return sorted(range(w_in.shape[0]), key=key)


def _dead_units(mats: list[torch.Tensor], x: torch.Tensor | None) -> list[torch.Tensor]:
    """Per hidden layer: zero incoming weights, or (given ``x``) pre-activation <= 0 on every input."""
    dead = []
    a = None if x is None or x.shape[0] == 0 else x.to(torch.float64)
    for w in mats[:-1]:
        flags = _row_max(w) == 0
        if a is not None:
            pre = a @ w.T  # (N, units)
            flags |= (pre <= 0).all(dim=0)
            a = pre.relu()
        dead.append(flags)
    return dead


def _duplicates(w_in: torch.Tensor, dead: torch.Tensor, tol: float) -> list[int | None]:
    """For each live unit, the first earlier live unit with the same incoming weights (within ``tol``)."""
    out: list[int | None] = []
    for i in range(w_in.shape[0]):
        gaps = _row_max(w_in[:i] - w_in[i])  # max |difference| to each earlier unit
        same = [j for j in range(i) if not dead[i] and not dead[j] and float(gaps[j]) <= tol]
        out.append(same[0] if same else None)
    return out


def _merge(mats: list[torch.Tensor], x: torch.Tensor | None, tol: float) -> list[torch.Tensor]:
    """Merge duplicates, drop dead and silent units, layer by layer, until nothing changes.

    Dropping a silent unit of layer l+1 can leave a unit of layer l with no outgoing weight, and
    merging units of layer l can make units of layer l+1 duplicates: hence the repeat.
    """
    while True:
        before = layer_sizes(mats)
        for layer in range(len(mats) - 1):
            mats = _normalise_layer(mats, layer)
            dead = _dead_units(mats, x)[layer]
            mats = _merge_layer(mats, layer, dead, tol)
        if layer_sizes(mats) == before:
            return mats


def _merge_layer(mats: list[torch.Tensor], layer: int, dead: torch.Tensor, tol: float) -> list[torch.Tensor]:
    """One hidden layer: sum the outgoing weights of duplicates into the first, drop the rest."""
    w_in, w_out = mats[layer], mats[layer + 1].clone()
    keep = []
    for i, j in enumerate(_duplicates(w_in, dead, tol)):
        if j is None:
            keep.append(i)
        else:
            w_out[:, j] += w_out[:, i]
    silent = _row_max(w_out.T) <= tol  # per unit: every outgoing weight ~0
    keep = [i for i in keep if not dead[i] and not silent[i]]
    out = list(mats)
    out[layer], out[layer + 1] = w_in[keep], w_out[:, keep]
    return out


# ---------------------------------------------------------------------------------------------
# Formula
# ---------------------------------------------------------------------------------------------

def formula(canonical: Canonical, names: Sequence[str] | None = None, decimals: int = 3) -> str:
    """The merged circuit as a formula, e.g. ``y = 1.000·r(a + b) − 1.000·r(−a − b)``.

    Output coefficients always get 3 decimals; inner coefficients of ±1 print as the bare name or
    minus, others with 3 decimals (``r(0.500·a − b)``). In deeper nets the last hidden layer stays
    inline and earlier layers' units get names, defined on the lines below::

        y = 1.000·r(h1 − h2 − h3) − 1.000·r(−h1 + h2 + h3)
          where h1 = r(a), h2 = r(a − b), h3 = r(−a)

    (units of the first hidden layer are h1, h2, ... when it is the only named layer, else layer l's
    units are hl_1, hl_2, ...).

    Args:
        canonical: from :func:`canonicalize`.
        names: input names; default ``x``, ``a, b`` or ``x1..xn`` (see :func:`input_names`).
        decimals: digits of the coefficients (1 gives a rough form that groups similar nets).
    """
    return _formula_of(canonical.merged, names, decimals)


def _formula_of(mats: Sequence[torch.Tensor], names: Sequence[str] | None = None, decimals: int = 3) -> str:
    terms = list(names) if names is not None else input_names(mats[0].shape[1])
    named = len(mats) - 2  # hidden layers before the last one
    where = []
    for layer in range(named):
        units = [f"h{i + 1}" if named == 1 else f"h{layer + 1}_{i + 1}" for i in range(mats[layer].shape[0])]
        defs = [f"{u} = {unit_formula(row, terms, decimals)}" for u, row in zip(units, mats[layer], strict=True)]
        where.append("  where " + (", ".join(defs) if defs else "(no units)"))
        terms = units
    if len(mats) > 1:
        terms = [unit_formula(row, terms, decimals) for row in mats[-2]]
    return "\n".join([f"y = {_combination(mats[-1][0], terms, False, decimals)}"] + where)


def unit_formula(row: torch.Tensor, terms: Sequence[str], decimals: int = 3) -> str:
    """One unit as ``r(a − b)``: its incoming weights ``row`` over the names ``terms``."""
    return f"r({_combination(row, terms, True, decimals)})"


def _combination(coefs: torch.Tensor, terms: Sequence[str], bare_ones: bool, decimals: int = 3) -> str:
    """``c1·t1 + c2·t2 ...`` with 3 decimals; zero terms left out; ``0`` if nothing is left.

    With ``bare_ones``, a coefficient that prints as ±1.000 prints as ``t`` or ``−t``.
    """
    parts = []
    for c, term in zip(coefs.tolist(), terms, strict=True):
        size = f"{abs(c):.{decimals}f}"
        if float(size) == 0:
            continue
        body = term if bare_ones and float(size) == 1 else f"{size}·{term}"
        parts.append((c < 0, body))
    if not parts:
        return "0"
    text = (MINUS if parts[0][0] else "") + parts[0][1]
    for negative, body in parts[1:]:
        text += f" {MINUS if negative else '+'} {body}"
    return text


# ---------------------------------------------------------------------------------------------
# Matching the task's circuits
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CircuitMatch:
    """Which exact circuit a net computes.

    Args:
        index: position in ``task.circuits``; None for an equivalent exact circuit not listed there.
        formula: the listed circuit's formula, or the learned circuit's (for an equivalent one).
        deviation: max |learned − circuit weight| over the merged canonical weights (for an
            equivalent circuit: the distance to the weights rounded to 3 decimals).
    """

    index: int | None
    formula: str
    deviation: float

    def describe(self) -> str:
        if self.index is None:
            return (f"computes the target exactly through an equivalent exact circuit, not one listed for "
                    f"the task (max weight deviation from 3 decimals {self.deviation:.2g}):\n{self.formula}")
        listed = self.formula.replace("-", MINUS)  # the task's ASCII formula, in the style of ours
        return f"matches the exact circuit {listed} (max weight deviation {self.deviation:.2g})"


def match_circuit(canonical: Canonical, task: Task, tol: float = MATCH_TOL) -> CircuitMatch | None:
    """The task's exact circuit that the merged canonical net equals, or None.

    Each circuit in ``task.circuits`` (mirror forms and spread-out forms included) is embedded in
    the net's layer sizes (wider: zero units; deeper: ``r(y), r(−y)`` pairs), canonicalised the same
    way, and compared weight by weight after pairing units layer by layer (Hungarian assignment on
    incoming weights, so near-ties in the sort order cannot spoil a match). Outgoing weights are
    compared too: identity and negate share the units r(x), r(−x). A match needs deviation
    <= ``tol`` × max(1, largest circuit weight).

    Fallback: if no listed circuit matches but the merged weights rounded to 3 decimals compute the
    target with max |error| < 1e-6 on random inputs, the net found an equivalent exact circuit
    (``index`` None, with its own formula).
    """
    best: CircuitMatch | None = None
    for index, circuit in enumerate(task.circuits):
        embedded = embed_circuit(circuit.weights, canonical.layer_sizes)
        if embedded is None:
            continue
        ref = canonicalize(embedded).merged
        dev = _deviation(canonical.merged, ref)
        scale = max([1.0] + [float(w.abs().max()) for w in ref if w.numel()])
        if dev is not None and dev <= tol * scale and (best is None or dev < best.deviation):
            best = CircuitMatch(index, circuit.formula, dev)
    return best if best is not None else _equivalent_exact(canonical, task)


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


def _equivalent_exact(canonical: Canonical, task: Task) -> CircuitMatch | None:
    """The merged circuit rounded to 3 decimals, if that computes the target exactly."""
    rounded = [w.round(decimals=3) for w in canonical.merged]
    x = random_inputs(4096, task.arity, seed=1)
    err = float((forward(rounded, x) - task(x)).abs().max())
    if not err < EXACT_TOL:
        return None
    return CircuitMatch(None, _formula_of(rounded), _max_gap(canonical.merged, rounded))


# ---------------------------------------------------------------------------------------------
# Checks of a network as a function
# ---------------------------------------------------------------------------------------------

def sparsity_error(canonical: Canonical) -> float:
    """max_w min(|w|, |1 − |w||) over the merged canonical weights (the NALM sparsity error).

    0 for a circuit of weights ±1 and 0 only; 0.5 for the spread-out form ½r(a+b) − ½r(−a−b) − ...
    """
    if not any(w.numel() for w in canonical.merged):
        return 0.0
    a = torch.cat([w.flatten() for w in canonical.merged]).abs()
    return float(torch.minimum(a, (1 - a).abs()).max())


def homogeneity_check(fn: Fn, arity: int, n: int = 1000, seed: int = 0, rtol: float = HOMOGENEITY_RTOL,
                      dtype: torch.dtype = torch.float32) -> tuple[bool, float]:
    """Is ``fn`` positively homogeneous, f(c·x) = c·f(x)? A bias-free ReLU net always is; a bias breaks it.

    Args:
        fn: maps inputs ``(N, arity)`` to outputs ``(N, 1)``.
        arity: number of inputs.
        n: random points x in [-1, 1]^arity, each with its own c in (0, 10].
        seed: seed of x and c.
        rtol: largest relative error that passes.
        dtype: dtype of the inputs given to ``fn`` (float32 for a ReLUMLP).

    Returns:
        (ok, max |f(c·x) − c·f(x)| / max |c·f(x)|): relative to the output scale, so that points
        where f is ~0 do not blow the ratio up.
    """
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, arity, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)
    c = (10 * (1 - torch.rand(n, 1, generator=gen, dtype=torch.float64))).to(dtype)  # (0, 10]
    with torch.no_grad():
        scaled = fn(c * x).to(torch.float64).reshape(n, -1)
        expected = (c.to(torch.float64) * fn(x).to(torch.float64).reshape(n, -1))
    scale = float(expected.abs().max())
    err = float((scaled - expected).abs().max()) / (scale if scale > 0 else 1.0)
    return err <= rtol, err


@dataclass(frozen=True)
class WorstInputs:
    """The inputs a net gets most wrong, worst first: x ``(k, arity)``, the rest ``(k,)``."""

    x: torch.Tensor
    output: torch.Tensor
    target: torch.Tensor
    sq_error: torch.Tensor


def worst_inputs(fn: Fn, task: Task, x: torch.Tensor, k: int = 5) -> WorstInputs:
    """The ``k`` inputs of ``x`` with the largest squared error: which inputs a stuck net gets wrong."""
    out, target, sq = _errors(fn, task, x)
    top = sq.topk(min(k, sq.numel())).indices
    return WorstInputs(x[top].to(torch.float64), out[top], target[top], sq[top])


def _errors(fn: Fn, task: Task, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs, targets and squared errors ``(N,)``, float64."""
    with torch.no_grad():
        out = fn(x).to(torch.float64).reshape(-1)
        target = task(x).to(torch.float64).reshape(-1)
    return out, target, (out - target).square()


def describe_errors(fn: Fn, task: Task, x: torch.Tensor, names: Sequence[str] | None = None) -> str:
    """One line on where the errors are, e.g. ``wrong where x < 0 (MSE 0.333 there, 1e-12 elsewhere)``.

    Tries half-spaces (``a < 0``, ``a > b``, ``a + b > 0``, ...) and sign quadrants of pairs of
    inputs, and names the one that holds most of the squared error while covering the fewest
    inputs (score: share of the error inside − share of the inputs inside). Stuck bias-free nets
    fail on such regions: a unit never changes sign, so a whole half-line or cone stays dark.
    """
    names = list(names) if names is not None else input_names(task.arity)
    _, _, sq = _errors(fn, task, x)
    total = float(sq.sum())
    if total == 0:
        return "no errors on the test inputs"

    def score(region: tuple[str, torch.Tensor]) -> float:
        return float(sq[region[1]].sum()) / total - float(region[1].double().mean())

    label, inside = max(_regions(x.to(torch.float64), names), key=score)
    if float(sq[inside].sum()) / total < 0.9:
        return (f"errors spread over all inputs (MSE {float(sq.mean()):.3g}; "
                f"largest where {label}: {float(sq[inside].mean()):.3g})")
    outside = sq[~inside]
    rest = f"{float(outside.mean()):.3g}" if outside.numel() else "no inputs"
    return f"wrong where {label} (MSE {float(sq[inside].mean()):.3g} there, {rest} elsewhere)"


def _regions(x: torch.Tensor, names: Sequence[str]) -> list[tuple[str, torch.Tensor]]:
    """Candidate regions as (label, mask over x): simple ones first, so they win ties."""
    out = []
    n = x.shape[1]
    for i in range(n):
        out += [(f"{names[i]} < 0", x[:, i] < 0), (f"{names[i]} > 0", x[:, i] > 0)]
    for i, j in itertools.combinations(range(n), 2):
        a, b = names[i], names[j]
        d, s = x[:, i] - x[:, j], x[:, i] + x[:, j]
        out += [(f"{a} < {b}", d < 0), (f"{a} > {b}", d > 0)]
        out += [(f"{a} + {b} < 0", s < 0), (f"{a} + {b} > 0", s > 0)]
    for i, j in itertools.combinations(range(n), 2):
        for si, sj in itertools.product("<>", repeat=2):
            mi = x[:, i] < 0 if si == "<" else x[:, i] > 0
            mj = x[:, j] < 0 if sj == "<" else x[:, j] > 0
            out.append((f"{names[i]} {si} 0 and {names[j]} {sj} 0", mi & mj))
    return out


# ---------------------------------------------------------------------------------------------
# The whole readout
# ---------------------------------------------------------------------------------------------

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
    errors: str | None  # where the net is wrong, when it is not solved
    worst: WorstInputs | None

    @property
    def solved(self) -> bool:
        return self.test_mse < self.success_mse

    def circuit_text(self) -> str:
        """Which circuit, in words: a listed one, or none; a solved net that matches no listed form
        (wide nets spread a circuit over unit pairs, r(u·x) − r(−u·x) = u·x) says so."""
        if self.match is not None:
            return self.match.describe()
        if self.solved:
            return "computes the target (solved), through a form not in the task's list of circuits"
        return "matches no known circuit"

    def text(self) -> str:
        """The report: raw weights, canonical form, formula, circuit match and checks."""
        sizes = "-".join(map(str, layer_sizes(self.raw)))
        lines = [f"Task {self.task.name}: f = {self.task.formula}; network {sizes}", "",
                 "Raw weights:", weights_text(self.raw)]
        lines += _canonical_lines(self.canonical, input_names(self.task.arity))
        lines += ["", "Formula:", self.formula, ""]
        lines.append("Circuit: " + self.circuit_text())
        lines.append(f"Sparsity error: {self.sparsity_error:.3g}  (max over weights of min(|w|, |1 - |w||))")
        homogeneity = "OK" if self.homogeneous else "FAILED (not bias-free; the circuit above ignores that)"
        lines.append(f"Homogeneity f(c·x) = c·f(x): {homogeneity}, "
                     f"max relative error {self.homogeneity_error:.2g}")
        verdict = "solved" if self.solved else "not solved"
        lines.append(f"Test MSE: {self.test_mse:.4g} on {self.n_test} inputs "
                     f"({verdict}: threshold {self.success_mse:.3g})")
        if self.errors:
            lines.append(f"Where it is wrong: {self.errors}")
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
                 tol: float = DUPLICATE_TOL, k: int = 5, success_mse: float | None = None) -> Readout:
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
    """
    mats = as_matrices(weights)
    if mats[0].shape[1] != task.arity:
        raise CircuitsError(f"the net has {mats[0].shape[1]} inputs but task {task.name!r} has {task.arity}")
    x = random_inputs(1000, task.arity) if x is None else x
    net = fn if fn is not None else (lambda z: forward(mats, z))
    canonical = canonicalize(mats, x, tol)
    ok, homog_err = homogeneity_check(net, task.arity, dtype=x.dtype)
    _, _, sq = _errors(net, task, x)
    mse = float(sq.mean())
    threshold = success_threshold(task, layer_sizes(mats)) if success_mse is None else success_mse
    unsolved = not mse < threshold  # NaN too
    return Readout(
        task=task, raw=mats, canonical=canonical, formula=formula(canonical),
        match=match_circuit(canonical, task),
        sparsity_error=sparsity_error(canonical), homogeneous=ok, homogeneity_error=homog_err, test_mse=mse,
        n_test=x.shape[0], success_mse=threshold,
        errors=describe_errors(net, task, x) if unsolved else None,
        worst=worst_inputs(net, task, x, k) if unsolved else None,
    )
