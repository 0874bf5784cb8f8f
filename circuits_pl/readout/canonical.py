"""The canonical form of a net: the permutation and rescaling symmetries removed.

A bias-free ReLU net's weights are identifiable only up to two symmetries: the hidden units of a
layer can be permuted, and a unit can be rescaled, because r(c·z) = c·r(z) for c > 0 (r = ReLU)::

    raw         W1 = [[0.53], [-1.92]]   W2 = [[1.8868, 0.5208]]
    canonical   W1 = [[1.0], [-1.0]]     W2 = [[1.0, 1.0]]         ->  y = 1.000·r(x) + 1.000·r(−x)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from circuits_pl.readout.matrices import as_matrices, layer_sizes

DUPLICATE_TOL = 1e-2  # units whose normalised incoming weights differ by less are one unit (for reading)


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


def merge_printed(mats: Sequence[torch.Tensor], decimals: int) -> list[torch.Tensor]:
    """A merged canonical net as it prints with ``decimals`` digits: units whose incoming weights print
    alike (the same direction, same sign, at that resolution) are one unit, their outgoing weights
    summed; units whose outgoing weights all print as 0 are dropped. Layer by layer, until nothing changes.

    The canonical merge (:func:`canonicalize`) joins units only within ``DUPLICATE_TOL``; a stuck add
    keeps units a little apart, 0.117·r(a + 0.981·b) + 0.886·r(0.997·a + b), which at 1 decimal both
    print as r(a + b): printed as they are they would read 0.1·r(a + b) + 0.9·r(a + b), and members
    stuck on one line would group apart. Merged, they read 1.0·r(a + b).
    """
    mats = [m.clone() for m in mats]

    def printed(v: float) -> float:
        return float(f"{v:.{decimals}f}") + 0.0  # + 0.0: −0.0 prints as 0

    while True:
        before = layer_sizes(mats)
        for layer in range(len(mats) - 1):
            mats = _normalise_layer(mats, layer)
            w_in, w_out = mats[layer], mats[layer + 1].clone()
            first: dict[tuple[float, ...], int] = {}
            keep = []
            for i in range(w_in.shape[0]):
                key = tuple(printed(v) for v in w_in[i].tolist())
                if key in first:
                    w_out[:, first[key]] += w_out[:, i]
                else:
                    first[key] = i
                    keep.append(i)
            keep = [i for i in keep if any(printed(v) != 0 for v in w_out[:, i].tolist())]
            mats[layer], mats[layer + 1] = w_in[keep], w_out[:, keep]
        if layer_sizes(mats) == before:
            return mats


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
    """For each live unit, the first earlier live unit, itself no duplicate, with the same incoming
    weights (within ``tol``)."""
    out: list[int | None] = []
    for i in range(w_in.shape[0]):
        gaps = _row_max(w_in[:i] - w_in[i])  # max |difference| to each earlier unit
        # only units that are no one's duplicate: a chain 2 -> 1 -> 0 would lose 2's weight when 1 is dropped
        # (seen: add 2-8-1, MSE < 1e-6, merged net off by MSE 5e-3)
        same = [j for j in range(i) if not dead[i] and not dead[j] and out[j] is None and float(gaps[j]) <= tol]
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
