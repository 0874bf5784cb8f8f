"""Basins: what in a member's *initial* weights decides whether it finds the exact circuit.

A bias-free ReLU unit ``v·r(w·x)`` sees only the inputs on its side of the line ``w·x = 0``, and in
practice never turns its incoming weights ``w`` around. So a net's first-layer units, at
initialisation, already fix which *directions* of the input space the net can ever respond to. For a
1-h-1 net the two directions are x > 0 and x < 0: when all h units start facing one way (probability
2^(1−h) under symmetric init), the other half-line stays dark and the net can never compute |x|, x or
−x there: a ceiling of 1 − 2^(1−h) on the found rate (0.5, 0.875, 0.992 at h = 2, 4, 8).

The same holds in the plane, sector by sector. The target of a task is positively homogeneous, so it
is fixed by its values on the unit circle; split the circle into **sectors**, arcs on which the target
is linear and of one sign (add: the half-planes a + b > 0 and a + b < 0; min: four, cut by the rays
a = 0, b = 0 and the crease a = b). Each first-layer unit faces one sector (the one its direction
w/|w| lies in), and it *agrees* there when its output weight has the target's sign in that sector (the
unit then starts pushing the output the right way). A member is classified by

    covered    how many of the sectors some unit faces,
    agreeing   how many are faced by an agreeing unit (one hidden layer only),

and the found rate is tabulated per class (:func:`basin_table`). Measured with 512 seeds per task at
lr 0.1 (docs/basins.md): the dark ceiling is exact for abs (no member with an uncovered half-line is
found) and every abs and add member whose sectors are all covered by agreeing units is found; min's
initial directions decide far less (its fate is made during training).

This is analysis of initial weights, recomputed from the run's seeds (every member's initialisation is
a pure function of ``init_seed + k``): it needs no change to training and works on any run.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from circuits_pl.network import ReLUMLP
from circuits_pl.readout.matrices import MINUS, input_names, join_signed
from circuits_pl.success import wilson_interval
from circuits_pl.tasks import Task

# Directions sampled on the unit circle to find the target's sectors (offset by half a step, so
# that no sample sits on a ray at a whole or half degree, where the built-in targets' creases are).
CIRCLE_SAMPLES = 3600
# More linear pieces than this on the circle: the target is not piecewise linear (e.g. hypot):
# sectors are then cut by its sign alone.
MAX_PIECES = 24


@dataclass(frozen=True)
class Sector:
    """An arc of input directions on which the target is linear and of one sign.

    ``lo``/``hi``: angles in degrees, ``0 <= lo < 360``, ``lo < hi <= lo + 360`` (2 inputs); for one
    input the two half-lines, ``x > 0`` (0°) and ``x < 0`` (180°). ``sign``: the target's sign there
    (0 where it vanishes). ``label``: for printing, e.g. ``45°–90°: f = a > 0``.
    """

    lo: float
    hi: float
    sign: int
    label: str

    def contains(self, angle: float) -> bool:
        return (angle - self.lo) % 360.0 < self.hi - self.lo


@dataclass(frozen=True)
class Basin:
    """One member's class: sectors covered by a first-layer unit, and by an agreeing one.

    ``agreeing`` is None for nets with two hidden layers (a first-layer unit reaches the output
    through another layer, so its output sign is not one weight). ``units``: per unit its sector index
    and whether it agrees (None as above), in unit order.
    """

    covered: int
    agreeing: int | None
    sectors: int
    units: tuple[tuple[int, bool | None], ...]

    @property
    def label(self) -> str:
        text = f"{self.covered}/{self.sectors} sectors covered"
        if self.agreeing is not None:
            text += f", {self.agreeing} by an agreeing unit"
        return text


def dark_ceiling(hidden: int) -> float:
    """The found-rate ceiling of a 1-h-1 net under symmetric init: 1 − 2^(1−h) (all h units facing one
    way, probability 2^(1−h), leave a half-line dark)."""
    return 1.0 - 2.0 ** (1 - hidden)


def target_sectors(task: Task) -> list[Sector] | None:
    """The sectors of a one- or two-input task's target (see the module docstring); None for more inputs."""
    if task.arity == 1:
        f = task(torch.tensor([[1.0], [-1.0]], dtype=torch.float64)).reshape(-1)
        names = input_names(1)
        return [Sector(0.0, 180.0, _sign(float(f[0])), f"{names[0]} > 0"),
                Sector(180.0, 360.0, _sign(float(f[1])), f"{names[0]} < 0")]
    if task.arity != 2:
        return None
    step = 2 * math.pi / CIRCLE_SAMPLES
    theta = (torch.arange(CIRCLE_SAMPLES, dtype=torch.float64) + 0.5) * step
    f, g = _values_and_gradients(task, theta)
    sign = torch.sign(torch.where(f.abs() < 1e-12, torch.zeros_like(f), f)).to(torch.int64)
    scale = max(float(g.norm(dim=1).max()), 1e-12)
    jump = (g - g.roll(1, 0)).norm(dim=1) > 1e-7 * scale
    boundary = (sign != sign.roll(1)) | jump  # sample j starts a new piece
    if int(jump.sum()) > MAX_PIECES:  # not piecewise linear: cut by the sign only
        boundary = sign != sign.roll(1)
        g = None
    starts = boundary.nonzero().flatten().tolist()
    if not starts:  # one sector: the whole circle (a linear target has two, unless it vanishes)
        return [Sector(0.0, 360.0, int(sign[0]), "all directions")]
    angles = [_boundary_angle(task, float(theta[j]) - step, float(theta[j]),
                              None if g is None else g[j - 1], None if g is None else g[j]) for j in starts]
    names = input_names(2)
    sectors = []
    for i, j in enumerate(starts):
        lo, hi = angles[i], angles[(i + 1) % len(starts)]
        if hi <= lo:
            hi += 360.0
        s = int(sign[j])
        piece = "" if g is None else f" = {_linear_text(g[j], names)}"
        rel = {1: " > 0", -1: " < 0", 0: " = 0"}[s]
        lo, hi = lo % 360.0, lo % 360.0 + (hi - lo)
        shown = (lo - 360.0, hi - 360.0) if hi > 360.0 else (lo, hi)  # -45°–135°, not 315°–495°
        sectors.append(Sector(lo, hi, s, f"{shown[0]:.0f}°–{shown[1]:.0f}°: f{piece}{rel}".replace("-", MINUS)))
    return sectors


def classify(task: Task, weights: Sequence[torch.Tensor], sectors: list[Sector] | None = None) -> list[Basin] | None:
    """Every member's basin from its initial weights ``weights[l]``: ``(K, out, in)`` per layer.

    None where basins are not defined: more than two inputs.
    """
    sectors = target_sectors(task) if sectors is None else sectors
    if sectors is None:
        return None
    first = weights[0].detach().double()  # (K, h, n)
    index = _sector_index(sectors, _unit_angles(first))  # (K, h)
    signs = torch.tensor([s.sign for s in sectors], dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(index, len(sectors)).bool()  # (K, h, sectors)
    covered = onehot.any(1).sum(1).tolist()
    if len(weights) == 2:
        agree = weights[-1].detach().double()[:, 0, :] * signs[index] > 0  # (K, h)
        agreeing = (onehot & agree[..., None]).any(1).sum(1).tolist()
        agree_rows = agree.tolist()
    else:
        agreeing = [None] * first.shape[0]
        agree_rows = [[None] * first.shape[1]] * first.shape[0]
    return [Basin(c, a, len(sectors), tuple(zip(i, ag)))
            for c, a, i, ag in zip(covered, agreeing, index.tolist(), agree_rows)]


def initial_weights(layer_sizes: Sequence[int], members: int, init_seed: int, bias: bool = False,
                    init_scale: float = 1.0) -> list[torch.Tensor]:
    """The initial weights of a run's (or a cell's) members, as training began (member k from seed
    ``init_seed + k``, times ``init_scale``)."""
    net = ReLUMLP(list(layer_sizes), members, bias, init_seed, init_scale)
    return [w.detach() for w in net.weights]


def basin_table(basins: Sequence[Basin], found: Sequence[bool]) -> list[dict]:
    """Found rate per class (covered, agreeing), most populated first: rows with ``members``,
    ``found``, ``rate`` and its 95% Wilson interval ``ci95``."""
    groups: dict[tuple[int, int | None], list[bool]] = defaultdict(list)
    for b, f in zip(basins, found, strict=True):
        groups[(b.covered, b.agreeing)].append(bool(f))
    rows = []
    for (covered, agreeing), fs in groups.items():
        n, k = len(fs), sum(fs)
        rows.append({"covered": covered, "agreeing": agreeing, "sectors": basins[0].sectors, "members": n,
                     "found": k, "rate": k / n, "ci95": list(wilson_interval(k, n))})
    return sorted(rows, key=lambda r: (-r["covered"], -(r["agreeing"] or 0)))


def summary(task: Task, layer_sizes: Sequence[int], basins: Sequence[Basin], found: Sequence[bool]) -> dict:
    """What results.json and report.md say about basins: the sectors, the table, and for one-input
    nets with one hidden layer the dark ceiling beside the measured rates."""
    sectors = target_sectors(task) or []
    out = {"sectors": [s.label for s in sectors], "table": basin_table(basins, found)}
    n = len(basins)
    full = [b.covered == b.sectors for b in basins]
    out["fully_covered"] = sum(full)
    out["found_when_not_covered"] = sum(f for f, c in zip(found, full) if not c)
    if task.arity == 1 and len(layer_sizes) == 3:
        out["dark_ceiling"] = dark_ceiling(layer_sizes[1])
        out["covered_rate"] = sum(full) / n if n else math.nan
        out["found_rate"] = sum(map(bool, found)) / n if n else math.nan
    return out


def summary_lines(s: dict) -> list[str]:
    """report.md / printed lines of :func:`summary`."""
    lines = []
    if "dark_ceiling" in s:
        lines.append(f"dark ceiling 1 − 2^(1−h) = {s['dark_ceiling']:.3f}; measured: both half-lines covered "
                     f"{s['covered_rate']:.3f}, found {s['found_rate']:.3f}")
    lines.append(f"members with a sector no unit faces, yet found: {s['found_when_not_covered']} "
                 f"(of {sum(r['members'] for r in s['table']) - s['fully_covered']})")
    return lines


# ---------------------------------------------------------------------------------------------
def _sign(v: float) -> int:
    return 0 if abs(v) < 1e-12 else (1 if v > 0 else -1)


def _directions(theta: torch.Tensor) -> torch.Tensor:
    return torch.stack([theta.cos(), theta.sin()], -1)


def _values_and_gradients(task: Task, theta: torch.Tensor, delta: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """The target f on the unit circle and, where it is linear, its gradient g (f(u) = g·u): from
    f(u) and its derivative along the circle, g = f(u)·u + f'(θ)·u⊥."""
    u = _directions(theta)
    f = task(u).reshape(-1).double()
    df = (task(_directions(theta + delta)).reshape(-1).double()
          - task(_directions(theta - delta)).reshape(-1).double()) / (2 * delta)
    perp = torch.stack([-u[:, 1], u[:, 0]], -1)
    return f, f[:, None] * u + df[:, None] * perp


def _boundary_angle(task: Task, lo: float, hi: float, g_lo: torch.Tensor | None, g_hi: torch.Tensor | None,
                    iterations: int = 60) -> float:
    """The angle in (lo, hi) radians where the target changes sign (bisection on its exact values) or,
    with the same sign on both sides, its linear piece: the crease of pieces g_lo and g_hi is the ray
    in (lo, hi) on which they agree, (g_lo − g_hi)·u = 0. In degrees, rounded to 1e-6."""
    f_lo = _sign(float(task(_directions(torch.tensor([lo], dtype=torch.float64))).reshape(-1)[0]))
    f_hi = _sign(float(task(_directions(torch.tensor([hi], dtype=torch.float64))).reshape(-1)[0]))
    if f_lo == f_hi and g_lo is not None and g_hi is not None:
        d = (g_lo - g_hi).tolist()
        normal = math.atan2(d[1], d[0])
        for angle in (normal + math.pi / 2, normal - math.pi / 2):
            offset = (angle - lo) % (2 * math.pi)
            if offset <= hi - lo:
                return round(math.degrees(lo + offset) % 360.0, 6)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        f = _sign(float(task(_directions(torch.tensor([mid], dtype=torch.float64))).reshape(-1)[0]))
        lo, hi = (mid, hi) if f == f_lo else (lo, mid)
    return round(math.degrees(hi) % 360.0, 6)


def _linear_text(g: torch.Tensor, names: Sequence[str]) -> str:
    parts = []
    for c, name in zip(g.tolist(), names):
        c = round(c, 3)
        if c == 0:
            continue
        mag = abs(c)
        parts.append((c < 0, name if mag == 1 else f"{mag:g}·{name}"))
    return join_signed(parts) if parts else "0"


def _unit_angles(first: torch.Tensor) -> torch.Tensor:
    """Each first-layer unit's direction as an angle in degrees in [0, 360): (K, h). One input:
    0° for w > 0, 180° for w < 0."""
    if first.shape[-1] == 1:
        return torch.where(first[..., 0] > 0, 0.0, 180.0).double()
    return torch.rad2deg(torch.atan2(first[..., 1], first[..., 0])) % 360.0


def _sector_index(sectors: list[Sector], angles: torch.Tensor) -> torch.Tensor:
    """The sector each angle (degrees) lies in: ``(K, h)`` int64."""
    rel = torch.stack([(angles - s.lo) % 360.0 < (s.hi - s.lo) for s in sectors], -1)  # (K, h, sectors)
    return rel.to(torch.int64).argmax(-1)


def outcome_labels(found: Sequence[bool], forms: Sequence[str | None], top: int = 3) -> list[str]:
    """One label per member for a figure: ``found``, its stuck form if among the ``top`` commonest, else
    ``other``."""
    stuck = Counter(f for f, ok in zip(forms, found) if not ok and f)
    common = {f for f, _ in stuck.most_common(top)}
    return ["found" if ok else (f if f in common else "other") for ok, f in zip(found, forms)]


__all__ = ["Basin", "Sector", "basin_table", "classify", "dark_ceiling", "initial_weights", "outcome_labels",
           "summary", "summary_lines", "target_sectors"]
