"""A canonical net as a formula: ``y = 1.000·r(a + b) − 1.000·r(−a − b)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuits_pl.readout.canonical import Canonical, merge_printed
from circuits_pl.readout.matrices import input_names, join_signed


def formula(canonical: Canonical, names: Sequence[str] | None = None, decimals: int = 3) -> str:
    """The merged circuit as a formula, e.g. ``y = 1.000·r(a + b) − 1.000·r(−a − b)``.

    Units that print alike at ``decimals`` digits are one unit (:func:`merge_printed`): a formula never
    shows the same ``r(...)`` twice, so ``decimals=1`` reads 0.117·r(a + 0.981·b) + 0.886·r(0.997·a + b)
    as ``y = 1.0·r(a + b)``.

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
    return formula_of(merge_printed(canonical.merged, decimals), names, decimals)


def formula_weights(canonical: Canonical, decimals: int = 3) -> list[torch.Tensor]:
    """The net the printed :func:`formula` denotes: the merged circuit, units that print alike merged, every
    weight rounded to ``decimals`` as printed. Its distance to the net is what the formula leaves out."""
    return [torch.round(w, decimals=decimals) for w in merge_printed(canonical.merged, decimals)]


def left_out(canonical: Canonical, decimals: int = 3) -> list[str]:
    """What the formula drops or merges, unit by unit, with sizes: ``unit 3 (silent: outgoing 0.0043)``,
    ``unit 4 merged into unit 2 (incoming weights 0.0061 apart)``, ``unit 2 (dead on the test inputs)``."""
    out = []
    deep = len(canonical.weights) > 2
    for layer in range(len(canonical.weights) - 1):
        w_in, w_out = canonical.weights[layer], canonical.weights[layer + 1]

        prefix = f"layer {layer + 1} " if deep else ""
        for i in range(w_in.shape[0]):
            if bool(canonical.dead[layer][i]):
                out.append(f"{prefix}unit {i + 1} (dead: never active on the test inputs)")
            elif (j := canonical.duplicate_of[layer][i]) is not None:
                gap = float((w_in[i] - w_in[j]).abs().max())
                out.append(f"{prefix}unit {i + 1} merged into unit {j + 1} (incoming weights {gap:.2g} apart)")
            elif bool(canonical.silent[layer][i]):
                out.append(f"{prefix}unit {i + 1} (silent: outgoing {float(w_out[:, i].abs().max()):.2g})")
    printed = merge_printed(canonical.merged, decimals)
    merged = sum(a.shape[0] - b.shape[0] for a, b in zip(canonical.merged[:-1], printed[:-1], strict=True))
    if merged:
        out.append(f"{merged} more unit{'s' if merged > 1 else ''} merged or dropped as printed at {decimals} "
                   "decimals")
    return out


def formula_of(mats: Sequence[torch.Tensor], names: Sequence[str] | None = None, decimals: int = 3) -> str:
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
    return "\n".join([f"y = {combination(mats[-1][0], terms, False, decimals)}"] + where)


def unit_formula(row: torch.Tensor, terms: Sequence[str], decimals: int = 3) -> str:
    """One unit as ``r(a − b)``: its incoming weights ``row`` over the names ``terms``."""
    return f"r({combination(row, terms, True, decimals)})"


def combination(coefs: torch.Tensor, terms: Sequence[str], bare_ones: bool, decimals: int = 3) -> str:
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
    return join_signed(parts)
