"""The readout of K one-hidden-layer nets at once: each member's circuit name, as tensor ops over members.

The full readout (:func:`~circuits_pl.readout.describe_member`) reads one member at a time, in Python: at
every validation of a run of 1024 members it would cost more than the training (``benchmarks/
timeline_agreement.py`` prints both). For one hidden layer its decisions are few and local, so this module
takes them for every member at once, in the readout's own order and with its tolerances:

1. canonical units: incoming weights scaled to max |w| = 1 (the scale moved into the outgoing weight c),
   sorted as :func:`~circuits_pl.readout.canonicalize` sorts them;
2. the form L·x + Σ κ·|d·x| (:mod:`~circuits_pl.readout.structure`): units grouped by line, opposite sides
   combined (a·r(z) + b·r(−z) = ½(a+b)|z| + ½(a−b)z), kinks of nearly one line merged, every coefficient
   rounded to a simple fraction within ``FORM_TOL`` (directions weighted by their kink's |κ|);
3. the task's listed circuits (:mod:`~circuits_pl.readout.rules`): the duplicate-merged, silent-free units
   against each listed circuit within ``MATCH_TOL``, and, for a net whose form is the task's, the units
   merged as they print at 1 decimal within ``ROUNDED_TOL``.

Each member gets an integer key row (the listed circuit it matches, and its rounded form: every simple
fraction is a whole number of 1/27720ths, 27720 = lcm(1..12)); :class:`Snapper` names each distinct key
once, with the readout's own printers (a listed circuit's :attr:`~circuits_pl.readout.CircuitMatch.label`,
:meth:`~circuits_pl.readout.Form.text`), so a name reads exactly as the readout's family. The greedy
choices (which unit leads a group) follow the readout's order; where a net sits on a tolerance's edge the
two can still differ: ``benchmarks/timeline_agreement.py`` measures how often on real runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import torch

from circuits_pl.readout.canonical import DUPLICATE_TOL, canonicalize
from circuits_pl.readout.description import MemberDescription
from circuits_pl.readout.form import DENOMINATOR, Form
from circuits_pl.readout.rules import MATCH_TOL, ROUNDED_TOL, CircuitMatch
from circuits_pl.readout.structure import FORM_TOL, is_target, target_form
from circuits_pl.tasks import Task, embed_circuit

NONE = "none"  # no simple circuit yet: the readout finds no simple form and names no circuit
UNIT = math.lcm(*range(1, DENOMINATOR + 1))  # every simple fraction is a whole number of 1/UNIT
_FRACTIONS = sorted({Fraction(p, q) for q in range(1, DENOMINATOR + 1) for p in range(q + 1)})
_VALUES = torch.tensor([float(f) for f in _FRACTIONS], dtype=torch.float64)  # simple fractions in [0, 1]
_UNITS = torch.tensor([int(f * UNIT) for f in _FRACTIONS], dtype=torch.long)


def circuit_name(description: MemberDescription) -> tuple[str, bool]:
    """What a timeline calls a net the full readout described: its family (the listed circuit's formula, or
    its form's text) when the readout names it or finds a simple form, else ``NONE``; and whether that is
    an exact circuit of the task."""
    if description.exact or (description.structure is not None and description.structure.form is not None):
        return description.family, description.exact
    return NONE, False


def snap_fractions(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest simple fraction to every entry of ``v`` (float64): (as whole 1/UNITs, |gap|).

    Fractions of denominator <= 12 repeat with period 1, so the nearest is the integer part plus the
    nearest in [0, 1] (what ``Fraction.limit_denominator(12)`` returns, up to exact ties)."""
    whole = torch.floor(v)
    rest = v - whole
    hi = torch.bucketize(rest, _VALUES).clamp(1, len(_VALUES) - 1)
    lo = hi - 1
    pick = torch.where((rest - _VALUES[lo]).abs() <= (_VALUES[hi] - rest).abs(), lo, hi)
    return whole.long() * UNIT + _UNITS[pick], (rest - _VALUES[pick]).abs()


def _first_close(close: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy grouping in unit order, as the readout's loops do: unit i joins the first earlier group
    leader j with ``close[:, j, i]``, else leads a group of its own. Returns (leader of each unit, leads);
    invalid units lead nothing and join nothing (their leader is themselves)."""
    k, h = valid.shape
    leader = torch.arange(h).repeat(k, 1)
    leads = valid.clone()  # unit 0 leads if valid
    for i in range(1, h):
        cand = close[:, :i, i] & leads[:, :i]
        joins = cand.any(dim=1) & valid[:, i]
        leader[:, i] = torch.where(joins, cand.int().argmax(dim=1), i)
        leads[:, i] = valid[:, i] & ~joins
    return leader, leads


def _sum_into(leader: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per member, each unit's value added into its leader's slot."""
    return torch.zeros_like(values).scatter_add_(1, leader, values)


def _max_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """max |a − b| over the last dimension, for every pair: a (K, h, n), b (K, h, n) -> (K, h, h)."""
    return (a[:, :, None, :] - b[:, None, :, :]).abs().amax(dim=3)


def canonical_units(weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every member's hidden units as the readout's canonical form holds them: directions ``(K, h, n)``
    scaled to max |entry| = 1, outgoing weights ``(K, h)`` carrying the scale, and which units are alive
    (non-zero); sorted per member as :func:`~circuits_pl.readout.canonicalize` sorts (descending rows,
    ties by outgoing weight, zero units last)."""
    w1, w2 = (w.detach().to("cpu", torch.float64) for w in weights)
    scale = w1.abs().amax(dim=2)
    alive = scale > 0
    d = w1 / torch.where(alive, scale, 1.0)[..., None]
    c = w2[:, 0, :] * scale
    order = torch.arange(d.shape[1]).repeat(d.shape[0], 1)
    # least significant key first, stable sorts: outgoing, then the row's entries last to first, then zero last
    for key in [c.round(decimals=6)] + [d[..., j].round(decimals=6) for j in reversed(range(d.shape[2]))]:
        order = order.gather(1, key.gather(1, order).sort(dim=1, descending=True, stable=True).indices)
    order = order.gather(1, (~alive).gather(1, order).int().sort(dim=1, stable=True).indices)
    return d.gather(1, order[..., None].expand_as(d)), c.gather(1, order), alive.gather(1, order)


class Snapper:
    """Names of the circuits K one-hidden-layer members compute, at once (see the module docstring).

    Args:
        task: the members' task (its listed circuits; whether a form is its function).
        layer_sizes: the members' sizes, ``(n, h, 1)``.
        tol: the readout's tolerances, as one (they are equal): duplicates, silent units, form rounding.
    """

    def __init__(self, task: Task, layer_sizes: Sequence[int], tol: float = FORM_TOL):
        if len(layer_sizes) != 3:
            raise ValueError(f"Snapper reads one hidden layer, got layer sizes {list(layer_sizes)}")
        if not FORM_TOL == DUPLICATE_TOL == MATCH_TOL:
            raise AssertionError("the readout's tolerances differ: Snapper assumes one")
        self.task, self.sizes, self.tol = task, tuple(layer_sizes), tol
        self.listed = self._listed_units()
        self.target = target_form(task)  # the task's own form (None without a listed circuit)
        self._names: dict[tuple[int, ...], tuple[str, bool]] = {}
        self._lines: dict[tuple[int, ...], tuple[list[int], float]] = {}

    def _listed_units(self) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
        """Each listed circuit that fits these sizes, as the readout compares it: (label, merged canonical
        directions (m, n), outgoing weights (m,), scale = max(1, largest weight))."""
        out = []
        for index, circuit in enumerate(self.task.circuits):
            embedded = embed_circuit(circuit.weights, self.sizes)
            if embedded is None:
                continue
            merged = canonicalize(embedded).merged
            scale = max([1.0] + [float(w.abs().max()) for w in merged if w.numel()])
            out.append((CircuitMatch(index, circuit.formula, 0.0).label, merged[0], merged[1][0], scale))
        return out

    # --- keys ------------------------------------------------------------------------------------------
    def keys(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """One key row per member of ``weights`` = [(K, h, n), (K, 1, h)]: ``(K, 3 + n + h(n + 1))`` int64:
        the listed circuit matched (1-based, 0 none), the listed circuit its units round to at 1 decimal
        (for a net whose form is the task's), whether it has a simple form, the form's linear part and its
        kinks (integer line and coefficient, sorted); all values in whole 1/UNITs."""
        d, c, alive = canonical_units(weights)
        tol = self.tol
        # listed circuits: the merged canonical net (duplicates within tol summed, silent units dropped)
        leader, leads = _first_close(_max_gap(d, d) <= tol, alive)
        merged = _sum_into(leader, torch.where(alive, c, 0.0))
        kept = leads & (merged.abs() > tol)
        listed = self._closest_listed(d, merged, kept, tol)
        printed = (d * 10).round()  # units whose incoming weights print alike at 1 decimal are one
        leader, leads = _first_close((printed[:, :, None, :] == printed[:, None, :, :]).all(dim=3), kept)
        merged_1 = _sum_into(leader, torch.where(kept, merged, 0.0))
        rounded = self._closest_listed(d, merged_1, leads & ((merged_1 * 10).round() != 0), ROUNDED_TOL)
        form_ok, linear, kinks = self._form(d, c, alive)
        return torch.cat([listed[:, None], rounded[:, None], form_ok.long()[:, None],
                          torch.where(form_ok[:, None], linear, 0), torch.where(form_ok[:, None], kinks, 0)], dim=1)

    def _closest_listed(self, d: torch.Tensor, c: torch.Tensor, kept: torch.Tensor, tol: float) -> torch.Tensor:
        """Per member, the listed circuit (1-based; 0: none) its ``kept`` units equal weight by weight within
        ``tol`` × the circuit's scale, the closest if several. Units are paired by nearest direction; listed
        units lie further apart than twice any tolerance, so that is the readout's optimal pairing whenever
        a match exists."""
        best = torch.zeros(d.shape[0], dtype=torch.long)
        best_dev = torch.full((d.shape[0],), math.inf, dtype=torch.float64)
        count = kept.sum(dim=1)
        for index, (_, ld, lc, scale) in enumerate(self.listed):
            m = ld.shape[0]
            gap = (d[:, :, None, :] - ld[None, None]).abs()  # (K, h, m, n)
            nearest = gap.sum(dim=3).argmin(dim=2)  # L1, as the readout's assignment costs
            dir_gap = gap.amax(dim=3).gather(2, nearest[..., None])[..., 0]
            out_gap = (c - lc[nearest]).abs()
            dev = torch.where(kept, torch.maximum(dir_gap, out_gap), 0.0).amax(dim=1)
            hits = torch.zeros(d.shape[0], m, dtype=torch.long).scatter_add_(1, nearest, kept.long())
            ok = (count == m) & (hits == 1).all(dim=1) & (dev <= tol * scale) & (dev < best_dev)
            best = torch.where(ok, index + 1, best)
            best_dev = torch.where(ok, dev, best_dev)
        return best

    def _form(self, d: torch.Tensor, c: torch.Tensor, alive: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rounded form of every member (``structure._one_layer`` and ``_rounded``): (has one, linear part
        ``(K, n)``, kinks ``(K, h(n + 1))``), in whole 1/UNITs."""
        tol = self.tol
        k, h, n = d.shape
        # lines: unit i joins the first earlier group whose direction is within tol, either way round
        same, opposite = _max_gap(d, d), _max_gap(d, -d)
        leader, leads = _first_close(torch.minimum(same, opposite) <= tol, alive)
        big = torch.where(d.abs() > 0.5, torch.arange(n, 0, -1), 0).argmax(dim=2, keepdim=True)  # first |v| > .5
        flip = torch.where(d.gather(2, big)[..., 0] < 0, -1.0, 1.0)  # the group's direction: that entry > 0
        line = d * flip[..., None]
        rep = line.gather(1, leader[..., None].expand_as(line))  # each unit's group direction
        plus_side = (rep - d).abs().amax(dim=2) <= tol
        live = torch.where(alive, c, 0.0)
        p = _sum_into(leader, torch.where(plus_side, live, 0.0))
        m = _sum_into(leader, torch.where(plus_side, 0.0, live))
        n_plus = _sum_into(leader, (alive & plus_side).double())
        n_minus = _sum_into(leader, (alive & ~plus_side).double())
        linear = (0.5 * (p - m) * leads)[..., None].mul(line).sum(dim=1)
        kappa = 0.5 * (p + m)
        pair = (n_plus > 0) & (n_minus > 0) & (kappa.abs() <= tol * torch.maximum(p.abs(), m.abs()).clamp(min=1.0))
        kink_dir, kappa, has = self._near_kinks(line, kappa, leads & ~pair)
        # rounding (structure._rounded): linear entries; each kink's direction (gap weighted by |κ|) and κ
        lin_units, lin_gap = snap_fractions(linear)
        dir_units, dir_gap = snap_fractions(kink_dir)
        ints, per_int = self._integer_lines(dir_units)
        coef_units, coef_gap = snap_fractions(kappa * per_int)
        gaps = torch.cat([lin_gap, torch.where(has, kappa.abs() * dir_gap.amax(dim=2), 0.0),
                          torch.where(has, coef_gap, 0.0)], dim=1)
        ok = (gaps <= tol).all(dim=1)
        # kinks rounding to one integer line add up; zero sums drop out
        lead_k, leads_k = _first_close((ints[:, :, None, :] == ints[:, None, :, :]).all(dim=3), has)
        total = _sum_into(lead_k, torch.where(has, coef_units, 0))
        used = leads_k & (total != 0)
        return ok, lin_units, _sorted_slots(ints, total, used)

    def _near_kinks(self, line: torch.Tensor, kappa: torch.Tensor, has: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``structure._near_kinks``: by decreasing |κ|, a kink joins the first larger one whose line is
        within ``tol`` once weighted by its own |κ|; again until nothing merges."""
        tol = self.tol
        while True:
            order = torch.where(has, kappa.abs(), -1.0).sort(dim=1, descending=True, stable=True).indices
            line, kappa, has = (line.gather(1, order[..., None].expand_as(line)), kappa.gather(1, order),
                                has.gather(1, order))
            gap = torch.minimum(_max_gap(line, line), _max_gap(line, -line))
            leader, leads = _first_close(kappa.abs()[:, None, :] * gap <= tol, has)
            if bool((leads == has).all()):
                return line, kappa, has
            kappa = _sum_into(leader, torch.where(has, kappa, 0.0))
            has = leads

    def _integer_lines(self, dir_units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each rounded direction as a coprime integer vector, first non-zero entry positive, and the factor
        f with |d·x| = f·|ints·x| (distinct directions are few: each worked out once, in Python)."""
        distinct, inverse = _unique_rows(dir_units.reshape(-1, dir_units.shape[-1]))
        ints, factor = [], []
        for row in distinct.tolist():
            if tuple(row) not in self._lines:
                fr = [Fraction(v, UNIT) for v in row]
                lcm = math.lcm(*[f.denominator for f in fr])
                whole = [int(f * lcm) for f in fr]
                g = math.gcd(*whole) or 1
                whole = [w // g for w in whole]
                if any(whole) and next(w for w in whole if w) < 0:
                    whole = [-w for w in whole]
                self._lines[tuple(row)] = whole, 1.0 / max(1, max(abs(w) for w in whole))  # max |d| = 1
            w, f = self._lines[tuple(row)]
            ints.append(w)
            factor.append(f)
        shape = dir_units.shape
        return (torch.tensor(ints, dtype=torch.long)[inverse].reshape(shape),
                torch.tensor(factor, dtype=torch.float64)[inverse].reshape(shape[:-1]))

    # --- names -----------------------------------------------------------------------------------------
    def names(self, keys: torch.Tensor) -> list[tuple[str, bool]]:
        """(name, an exact circuit of the task) per key row, each distinct key worked out once."""
        distinct, inverse = _unique_rows(keys)
        named = [self.name(tuple(row)) for row in distinct.tolist()]
        return [named[i] for i in inverse.tolist()]

    def name(self, key: tuple[int, ...]) -> tuple[str, bool]:
        if key not in self._names:
            self._names[key] = self._work_out(key)
        return self._names[key]

    def _work_out(self, key: tuple[int, ...]) -> tuple[str, bool]:
        """The readout's rules, in its order: a listed circuit; else a simple form (the task's: a listed
        circuit as rounded at 1 decimal, else the form); else none."""
        listed, rounded, has_form = key[:3]
        if listed:
            return self.listed[listed - 1][0], True
        if not has_form:
            return NONE, False
        n = self.sizes[0]
        linear = tuple(Fraction(v, UNIT) for v in key[3 : 3 + n])
        slots = [key[3 + n + i * (n + 1):][: n + 1] for i in range(self.sizes[1])]
        form = Form(linear, tuple(sorted((tuple(s[:n]), Fraction(s[n], UNIT)) for s in slots if s[n] != 0)))
        # is_target compares with the task's form first: done here once, not per new form of a stuck member
        exact = (self.target is None or form == self.target) and is_target(form, self.task)[0]
        if exact and rounded:
            return self.listed[rounded - 1][0], True
        return form.text(), exact


def _unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)``, through one int64 per row where the rows fit
    (``unique`` over rows sorts them column by column, several times slower than over numbers)."""
    lo, hi = (int(rows.min()), int(rows.max())) if rows.numel() else (0, 0)
    base = hi - lo + 1
    if rows.shape[1] == 0 or base ** rows.shape[1] >= 2**62:
        return torch.unique(rows, dim=0, return_inverse=True)
    code = torch.zeros(rows.shape[0], dtype=torch.long)
    for col in range(rows.shape[1]):
        code = code * base + (rows[:, col] - lo)
    distinct, first, inverse = _unique_first(code)
    return rows[first], inverse


def _unique_first(code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct values of ``code``, the index of one row holding each, and each row's value index."""
    distinct, inverse = torch.unique(code, return_inverse=True)
    first = torch.zeros(len(distinct), dtype=torch.long).scatter_(0, inverse, torch.arange(len(code)))
    return distinct, first, inverse


def _sorted_slots(direction: torch.Tensor, value: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """Per member, its used (direction, value) slots in lexicographic order, flattened ``(K, h(n + 1))``;
    unused slots are zero (a key is the same whatever the units' order)."""
    rows = torch.where(used[..., None], torch.cat([direction, value[..., None]], dim=2), 0)
    order = torch.arange(rows.shape[1]).repeat(rows.shape[0], 1)
    for col in reversed(range(rows.shape[2])):
        order = order.gather(1, rows[..., col].gather(1, order).sort(dim=1, stable=True).indices)
    return rows.gather(1, order[..., None].expand_as(rows)).flatten(1)
