"""The unique form of a bias-free ReLU net: its linear part plus a sum of kinks, L·x + Σ c_d·|d·x|.

One hidden layer: each unit is v·r(w·x). Units of the same direction add up, and opposite directions
combine, a·r(z) + b·r(−z) = ½(a+b)|z| + ½(a−b)z, so every such net is L·x + Σ c_d·|d·x| over distinct
crease directions d (up to sign). The kinks |d·x| of distinct directions and the linear functions are
linearly independent (each kink is non-smooth on its own line only), so this form is unique for the
function, whatever the width: exactness is decided on it, not on a catalogue of circuits.

Two hidden layers: a second-layer unit r(v·h) whose input v·h is non-negative on all inputs is v·h
itself (non-positive: 0), and an opposite pair p·r(z) − p·r(−z) is p·z; simplified so, the net is a
one-hidden-layer net over the first layer's units, read as above. Anything else has a crease
inside a first-layer cone and is not named (the reason says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from circuits_pl.readout.form import DENOMINATOR, Form, simple_fraction
from circuits_pl.readout.matrices import forward, random_inputs
from circuits_pl.tasks import Task

FORM_TOL = 1e-2  # a coefficient (or direction entry) within this of a simple fraction rounds to it
EXACT_POINT_TOL = 1e-9  # max |rounded form − target| on points that counts as the same function


@dataclass(frozen=True)
class Structure:
    """How a net computes its form.

    Args:
        linear, kinks: the float form (kinks as (direction, coefficient)); None when not reducible.
        form: the form rounded to simple fractions, or None (``reason`` says why).
        deviation: max |float coefficient − rounded coefficient|, with direction entries' gaps weighted
            by their kink's |c| (what a rounding moves the function by, per unit of |x|).
        pairs: unit groups with both signs whose kinks cancel (linear pairs r(z) − r(−z) = z).
        singles: groups of one sign (a kink plus a linear part).
        kinked_pairs: groups with both signs and a kink left (a·r(z) + b·r(−z), a ≠ −b).
        simplified: second-layer units read as linear (0 for one hidden layer).
        reason: why there is no form, or None.
    """

    linear: torch.Tensor | None
    kinks: list[tuple[torch.Tensor, float]]
    form: Form | None
    deviation: float
    pairs: int = 0
    singles: int = 0
    kinked_pairs: int = 0
    simplified: int = 0
    reason: str | None = None
    by_cones: bool = False  # read from its values on every cone's edges (2 inputs), not unit by unit

    def how(self, names: Sequence[str] | None = None) -> str:
        """``a + b through 2 linear pairs``; ``½(a + b) − ½|a − b|: 1 kink on a = b from 1 pair, linear part
        from 2 pairs``. A pair is a·r(z) + b·r(−z); a single unit gives a kink and a linear part."""
        if self.form is None:
            return f"no simple form: {self.reason}"
        text = self.form.text(names)
        if self.by_cones:
            kinks = ""
            if self.form.kinks:
                kinks = f": {_count(len(self.form.kinks), 'kink')} on {self.form.crease_text(names)}"
            return f"{text}{kinks}, read cone by cone (a second-layer unit bends inside a first-layer cone)"
        deep = f" (after reading {_count(self.simplified, 'second-layer unit')} as linear)" if self.simplified else ""
        if not self.form.kinks:
            units = [_count(self.pairs, "linear pair"), _count(self.singles, "single unit"),
                     _count(self.kinked_pairs, "pair")]
            cancel = " (their kinks cancel)" if self.singles or self.kinked_pairs else ""
            return f"{text} through {' and '.join(u for u in units if u) or 'no units'}{cancel}{deep}"
        kink_units = [_count(self.kinked_pairs, "pair"), _count(self.singles, "single unit")]
        kinks = (f"{_count(len(self.form.kinks), 'kink')} on {self.form.crease_text(names)} from "
                 + " and ".join(u for u in kink_units if u))
        linear = ""
        if any(self.form.linear):
            lin_units = [_count(self.pairs, "pair"), _count(self.singles, "single unit")]
            linear = ", linear part from " + (" and ".join(u for u in lin_units if u) or "the kinked pairs")
        return f"{text}: {kinks}{linear}{deep}"

    def max_error(self, task: Task, x: torch.Tensor) -> float:
        """max |form(x) − task(x)| (inf without a form)."""
        if self.form is None:
            return math.inf
        return float((self.form(x) - task(x).to(torch.float64)).abs().max())


def structure_of(weights: Sequence[torch.Tensor], tol: float = FORM_TOL) -> Structure:
    """The form of a bias-free ReLU net with 1 or 2 hidden layers (``(out, in)`` float64 matrices)."""
    mats = [torch.as_tensor(w, dtype=torch.float64) for w in weights]
    n = mats[0].shape[1]
    if len(mats) == 2:
        return _one_layer(mats[0], mats[1][0], tol)
    if len(mats) != 3:
        return Structure(None, [], None, math.inf,
                         reason=f"{len(mats) - 1} hidden layers: the structural readout reads 1 or 2")
    w1, w2, w3 = mats
    if w1.shape[0] == 0 or w2.shape[0] == 0:
        return _one_layer(torch.zeros(0, n, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), tol)
    rays = _rays(w1)
    h = (rays @ w1.T).relu()  # first-layer units on directions covering every cone
    out = torch.zeros(w1.shape[0], dtype=torch.float64)
    simplified = 0
    for sign_dir, members in _groups(w2, tol):
        v = sign_dir
        p, m, _ = _sides(members, w3[0])
        z = h @ v
        scale = max(float(z.abs().max()), 1e-12)
        if float(z.min()) >= -tol * scale:  # r(z) = z, r(−z) = 0
            out += p * v
        elif float(z.max()) <= tol * scale:  # r(z) = 0, r(−z) = −z
            out += -m * v
        elif abs(p + m) <= tol * max(abs(p), abs(m), 1.0):  # p·r(z) + m·r(−z) = ½(p−m)·z
            out += 0.5 * (p - m) * v
        else:
            return _by_cones(mats, tol)
        simplified += len(members)
    inner = _one_layer(w1, out, tol)
    return Structure(inner.linear, inner.kinks, inner.form, inner.deviation, inner.pairs, inner.singles,
                     inner.kinked_pairs, simplified, inner.reason)


def _by_cones(mats: list[torch.Tensor], tol: float) -> Structure:
    """A 2-hidden-layer net of 1 or 2 inputs read from its values: it is linear between neighbouring
    creases (rays of the first layer's lines, plus the rays where a second-layer unit's input, linear
    on each first-layer cone, crosses 0), so its values on those rays and between them fix it. Fit
    L·x + Σ c·|d·x| over the lines of all those rays; an exact fit is the form, else there is none
    (a crease on a half-line only, which no L·x + Σ c·|d·x| has)."""
    w1, w2, w3 = mats
    n = w1.shape[1]
    why = "a second-layer unit's input changes sign inside a first-layer cone"
    if n > 2:
        return Structure(None, [], None, math.inf, reason=why + "; such nets are read for 1 or 2 inputs only")
    rays = _rays(w1)[: (2 if n == 1 else None)]
    if n == 2:
        angles = torch.atan2(rays[:, 1], rays[:, 0]) % (2 * math.pi)
        rays = rays[angles.argsort()]
        z = (rays @ w1.T).relu() @ w2.T  # second-layer inputs on the rays (R, h2)
        extra = []
        for i in range(rays.shape[0]):
            j = (i + 1) % rays.shape[0]
            for k in range(z.shape[1]):
                zi, zj = float(z[i, k]), float(z[j, k])
                if zi * zj < 0:  # linear between neighbouring rays: crosses 0 at t
                    t = zi / (zi - zj)
                    extra.append(rays[i] + t * (rays[j] - rays[i]))
        if extra:
            rays = torch.cat([rays, torch.stack(extra)])
        angles = sorted(set(round(float(a) % (2 * math.pi), 12) for a in torch.atan2(rays[:, 1], rays[:, 0])))
        mids = [(a + b) / 2 for a, b in zip(angles, angles[1:] + [angles[0] + 2 * math.pi], strict=True)]
        every = torch.tensor(angles + mids, dtype=torch.float64)
        points = torch.stack([every.cos(), every.sin()], dim=1)
        lines = torch.stack([torch.tensor([-math.sin(a), math.cos(a)], dtype=torch.float64) for a in angles])
    else:
        points = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
        lines = torch.ones(1, 1, dtype=torch.float64)
    dirs = [d for d, _ in _groups(lines, 1e-9)]
    y = forward(mats, points)[:, 0]
    design = torch.cat([points] + [(points @ d)[:, None].abs() for d in dirs], dim=1)
    coef = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    residual = float((design @ coef - y).abs().max())
    scale = max(float(y.abs().max()), 1.0)
    if residual > tol * scale:
        return Structure(None, [], None, math.inf, reason=(
            f"{why}, and the net is not L·x + Σ c·|d·x|: it bends on a half-line only (fit off by {residual:.2g})"))
    kinks = [(d, float(c)) for d, c in zip(dirs, coef[n:], strict=True) if abs(float(c)) > tol * 1e-3]
    form, deviation, reason = _rounded(coef[:n], kinks, tol)
    return Structure(coef[:n], kinks, form, max(deviation, residual), simplified=w2.shape[0], reason=reason,
                     by_cones=True)


def _one_layer(w1: torch.Tensor, w2: torch.Tensor, tol: float) -> Structure:
    n = w1.shape[1]
    linear = torch.zeros(n, dtype=torch.float64)
    kinks: list[tuple[torch.Tensor, float]] = []
    pairs = singles = kinked = 0
    for d, members in _groups(w1, tol):
        p, m, both = _sides(members, w2)
        linear += 0.5 * (p - m) * d  # p·r(d·x) + m·r(−d·x) = ½(p+m)|d·x| + ½(p−m)(d·x)
        c = 0.5 * (p + m)
        if both and abs(c) <= tol * max(abs(p), abs(m), 1.0):
            pairs += 1
            continue
        singles += not both
        kinked += both
        kinks.append((d, c))
    form, deviation, reason = _rounded(linear, kinks, tol)
    return Structure(linear, kinks, form, deviation, pairs, singles, kinked, 0, reason)


def _groups(w: torch.Tensor, tol: float) -> list[tuple[torch.Tensor, list[tuple[int, float]]]]:
    """Rows of ``w`` grouped by direction up to sign: (direction, max |entry| 1, first clear entry > 0;
    [(row, f)]) with row = f·direction: r(row·x) = |f|·r(±direction·x), the sign of f says which."""
    groups: list[tuple[torch.Tensor, list[tuple[int, float]]]] = []
    for i, row in enumerate(w):
        size = float(row.abs().max()) if row.numel() else 0.0
        if size == 0:
            continue
        row = row / size
        for gd, members in groups:  # the same line as a group's, either way round
            if float((gd - row).abs().max()) <= tol:
                members.append((i, size))
                break
            if float((gd + row).abs().max()) <= tol:
                members.append((i, -size))
                break
        else:
            first = next(float(v) for v in row if abs(float(v)) > 0.5)  # max |entry| is 1
            groups.append((row if first > 0 else -row, [(i, size if first > 0 else -size)]))
    return groups


def _sides(members: list[tuple[int, float]], w_out: torch.Tensor) -> tuple[float, float, bool]:
    """(p, m, both signs present) of a group: the net holds p·r(d·x) + m·r(−d·x)."""
    p = sum(float(w_out[i]) * f for i, f in members if f > 0)
    m = sum(float(w_out[i]) * -f for i, f in members if f < 0)
    return p, m, any(f > 0 for _, f in members) and any(f < 0 for _, f in members)


def _rays(w1: torch.Tensor, n_random: int = 4096) -> torch.Tensor:
    """Input directions that touch every cone of the first layer: on a cone a positively homogeneous
    piecewise-linear function is linear, so its sign there is decided by the cone's edges and middle.

    One input: ±1. Two inputs: every crease ray, the axes, and the midpoints between neighbours.
    More inputs: ``n_random`` random points (a sample, not a proof)."""
    n = w1.shape[1]
    if n == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    if n > 2:
        return random_inputs(n_random, n, seed=3)
    angles = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2]
    for row in w1:
        base = math.atan2(float(row[1]), float(row[0])) + math.pi / 2
        angles += [base % (2 * math.pi), (base + math.pi) % (2 * math.pi)]
    angles = sorted(set(round(a, 12) for a in angles))
    mids = [(a + b) / 2 for a, b in zip(angles, angles[1:] + [angles[0] + 2 * math.pi], strict=True)]
    all_angles = torch.tensor(angles + mids, dtype=torch.float64)
    return torch.stack([all_angles.cos(), all_angles.sin()], dim=1)


def _rounded(linear: torch.Tensor, kinks: list[tuple[torch.Tensor, float]], tol: float
             ) -> tuple[Form | None, float, str | None]:
    """The float form rounded to simple fractions, its largest rounding gap, and why not (if not)."""
    gaps = [0.0]
    lin = tuple(simple_fraction(float(v)) for v in linear)
    gaps += [abs(float(v) - float(q)) for v, q in zip(linear, lin, strict=True)]
    merged: dict[tuple[int, ...], Fraction] = {}
    kinks, gap = _near_kinks(kinks, tol)
    gaps.append(gap)
    for d, c in kinks:
        dq = [simple_fraction(float(v)) for v in d]
        # a direction's rounding moves the function by |c|·|d − dq|·|x|: weigh its gap by |c|
        gaps += [abs(c) * abs(float(v) - float(q)) for v, q in zip(d, dq, strict=True)]
        lcm = math.lcm(*[q.denominator for q in dq])
        ints = [int(q * lcm) for q in dq]
        g = math.gcd(*ints) or 1
        ints = [i // g for i in ints]
        if next(i for i in ints if i) < 0:  # |d·x| = |−d·x|: first non-zero entry positive
            ints, dq = [-i for i in ints], [-q for q in dq]
        factor = float(dq[next(i for i, q in enumerate(dq) if q)] / ints[next(i for i, v in enumerate(ints) if v)])
        cq = simple_fraction(c * factor)  # c·|d·x| = (c·factor)·|ints·x|
        gaps.append(abs(c * factor - float(cq)))
        merged[tuple(ints)] = merged.get(tuple(ints), Fraction(0)) + cq
    deviation = max(gaps)
    if deviation > tol:
        return None, deviation, (f"a coefficient is {deviation:.2g} away from the nearest simple fraction "
                                 f"(denominator <= {DENOMINATOR}): not a simple exact form")
    kinks_q = tuple(sorted((d, c) for d, c in merged.items() if c != 0))
    return Form(lin, kinks_q), deviation, None


def _near_kinks(kinks: list[tuple[torch.Tensor, float]], tol: float) -> tuple[list[tuple[torch.Tensor, float]], float]:
    """Kinks of nearly the same direction summed onto the largest: c·|d'·x| = c·|d·x| + O(|c|·|d' − d|·|x|).

    Trained nets leave pairs such as 0.187·|a + 0.975·b| − 0.150·|0.985·a + b| (add 2-4-1, MSE < 1e-6):
    units a little apart that the canonical merge keeps separate but whose kinks almost cancel. A kink
    joins a larger one when |c|·(direction gap) <= ``tol``; the largest such product is returned."""
    worst = 0.0
    while True:  # again until nothing merges: sums of nearly cancelling kinks are small and merge further
        clusters: list[tuple[torch.Tensor, float]] = []
        for d, c in sorted(kinks, key=lambda k: -abs(k[1])):
            for j, (rd, rc) in enumerate(clusters):
                gap = abs(c) * min(float((rd - d).abs().max()), float((rd + d).abs().max()))  # |d·x| = |−d·x|
                if gap <= tol:
                    clusters[j] = (rd, rc + c)
                    worst = max(worst, gap)
                    break
            else:
                clusters.append((d, c))
        if len(clusters) == len(kinks):
            return clusters, worst
        kinks = clusters


def target_form(task: Task) -> Form | None:
    """The task's own form, from its first exact circuit with 1 or 2 hidden layers (None without one)."""
    for circuit in task.circuits:
        mats = [torch.as_tensor(w, dtype=torch.float64) for w in circuit.weights]
        s = structure_of(mats, tol=1e-9)
        if s.form is not None:
            return s.form
    return None


def is_target(form: Form, task: Task, n: int = 4096) -> tuple[bool, str | None]:
    """Does ``form`` compute the task? Symbolically against the task's own form where it has an exact
    circuit, and always on ``n`` random points (the only check for a task without circuits)."""
    target = target_form(task)
    if target is not None and form != target:
        return False, f"its form {form.text()} is not the task's form {target.text()}"
    x = random_inputs(n, task.arity, seed=11)
    err = float((form(x) - task(x).to(torch.float64)).abs().max())
    if not err < EXACT_POINT_TOL:
        return False, f"its form {form.text()} differs from the target by up to {err:.2g} on random inputs"
    return True, None


def _count(n: int, what: str) -> str:
    return "" if n == 0 else f"{n} {what}{'s' if n != 1 else ''}"
