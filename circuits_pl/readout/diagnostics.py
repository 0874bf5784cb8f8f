"""Checks of a network as a function: sparsity, homogeneity, and where (in its own cones) it is wrong."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from circuits_pl.readout.canonical import Canonical
from circuits_pl.readout.certify import Cone
from circuits_pl.readout.matrices import MINUS, Fn, input_names
from circuits_pl.stream import fill_uniform
from circuits_pl.tasks import Task

HOMOGENEITY_RTOL = 1e-4  # float32 nets reach ~1e-7; a bias gives O(1)
ALL_OF_THE_ERROR = 0.99  # a region holding this share of the squared error holds "all" of it
# a simpler region covering at most this much more of the inputs is preferred: a trained stuck add is
# wrong on the cone between its two units' creases (0.94·a + b > 0 and a + 0.927·b > 0), ~1% short of a + b > 0
NEARLY_AS_SMALL = 0.05


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
    gen = torch.Generator()
    x = fill_uniform(torch.empty(n, arity, dtype=torch.float64), seed, gen).to(dtype)  # seeds gen
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
    out, target, sq = errors_of(fn, task, x)
    top = sq.topk(min(k, sq.numel())).indices
    return WorstInputs(x[top].to(torch.float64), out[top], target[top], sq[top])


def errors_of(fn: Fn, task: Task, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs, targets and squared errors ``(N,)``, float64."""
    with torch.no_grad():
        out = fn(x).to(torch.float64).reshape(-1)
        target = task(x).to(torch.float64).reshape(-1)
    return out, target, (out - target).square()


def describe_errors(fn: Fn, task: Task, x: torch.Tensor, names: Sequence[str] | None = None,
                    weights: Sequence[torch.Tensor] | None = None) -> str:
    """One line on where the errors are, e.g. ``wrong where a + b < 0 (MSE 0.667 there, 1e-12 elsewhere)``.

    A bias-free net is linear on each cone cut out by its creases, so the region where it is wrong
    is a union of such cones. Given the net's ``weights`` (two inputs), the candidates are every
    run of neighbouring cones between the creases of its first layer and of the task's circuit
    (half-planes such as ``a + b < 0`` among them); otherwise half-spaces (``a < 0``, ``a > b``,
    ``a + b > 0``, ...) and sign quadrants of pairs of inputs. The candidate that holds most of the
    squared error while covering the fewest inputs wins (score: share of the error inside − share
    of the inputs inside), unless some candidates hold (almost) all of the error: then the smallest of
    those, or a simpler one nearly as small (a stuck add: all of it in a + b < 0, though the quadrant
    a, b < 0 holds 88%).
    """
    names = list(names) if names is not None else input_names(task.arity)
    _, _, sq = errors_of(fn, task, x)
    total = float(sq.sum())
    if total == 0:
        return "no errors on the test inputs"

    def score(region: tuple[str, torch.Tensor]) -> float:
        return float(sq[region[1]].sum()) / total - float(region[1].double().mean())

    x64 = x.to(torch.float64)
    regions = _regions(x64, names)
    if weights is not None and task.arity == 2:
        regions = _cone_regions(x64, names, _crease_rays(weights, task)) + regions
    holding = [r for r in regions if float(sq[r[1]].sum()) / total >= ALL_OF_THE_ERROR]
    if holding:  # the simplest of the smallest regions with (almost) all of the error
        smallest = min(float(r[1].double().mean()) for r in holding)
        near = [r for r in holding if float(r[1].double().mean()) <= smallest + NEARLY_AS_SMALL]
        label, inside = min(near, key=lambda r: r[0].count(" and ") + r[0].count(" or "))
    else:
        label, inside = max(regions, key=score)
    if float(sq[inside].sum()) / total < 0.9:
        return (f"errors spread over all inputs (MSE {float(sq.mean()):.3g}; "
                f"largest where {label}: {float(sq[inside].mean()):.3g})")
    outside = sq[~inside]
    rest = f"{float(outside.mean()):.3g}" if outside.numel() else "no inputs"
    return f"wrong where {label} (MSE {float(sq[inside].mean()):.3g} there, {rest} elsewhere)"


CONES_SHOWN = 3  # at most this many of a net's cones are named, largest share of the squared error first
CONES_ENOUGH = 0.9  # ... and no more once they hold this share of it


def describe_cones(cones: Sequence[Cone], names: Sequence[str]) -> str:
    """Where a net with two inputs is wrong, exactly, in its own linear pieces: the cones holding most of the
    squared error, each with its share of it, its share of the inputs, its MSE, and whether it is dark
    (no unit active, the net outputs 0), e.g. ``0.216·a − b > 0 and 0.154·a − b < 0 (dark: no unit active;
    86% of the squared error on 20% of the inputs, MSE 0.21 there)``."""
    ranked = sorted(cones, key=lambda c: -c.error)
    shown, held = [], 0.0
    for cone in ranked[:CONES_SHOWN]:
        if held >= CONES_ENOUGH or cone.error <= 0:
            break
        shown.append(cone)
        held += cone.error
    if not shown:
        return "no error over the box"
    parts = []
    for c in shown:
        span = (c.hi - c.lo) % (2 * math.pi) or 2 * math.pi
        where = "everywhere" if span >= 2 * math.pi else _cone_label(c.lo, c.hi, span, names)
        dark = "dark: no unit active; " if c.dark else ""
        parts.append(f"{where} ({dark}{c.error:.0%} of the squared error on {c.area:.0%} of the inputs, "
                     f"MSE {c.mse:.3g} there)")
    rest = len(cones) - len(shown)
    tail = f"; the other {rest} cone{'s' if rest > 1 else ''}: {1 - held:.0%}" if rest and held < 0.995 else ""
    return "; ".join(parts) + tail


def _crease_rays(weights: Sequence[torch.Tensor], task: Task) -> list[float]:
    """Angles in [0, 2π) of the rays where the first layer of the net or of the task's first circuit bends."""
    rows = [r for r in torch.as_tensor(weights[0], dtype=torch.float64)]
    if task.circuits:
        rows += [r for r in torch.as_tensor(task.circuits[0].weights[0], dtype=torch.float64)]
    angles: set[float] = set()
    for row in rows:
        if float(row.abs().max()) == 0:
            continue
        base = math.atan2(float(row[1]), float(row[0])) + math.pi / 2  # the line row·x = 0
        angles |= {round(base % (2 * math.pi), 9), round((base + math.pi) % (2 * math.pi), 9)}
    return sorted(a % (2 * math.pi) for a in angles)


def _cone_regions(x: torch.Tensor, names: Sequence[str], rays: list[float]) -> list[tuple[str, torch.Tensor]]:
    """Every run of neighbouring cones between ``rays`` (angles), as (label, mask over x)."""
    theta = torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    out = []
    r = len(rays)
    for i in range(r):
        for length in range(1, r):
            lo, hi = rays[i], rays[(i + length) % r]
            span = (hi - lo) % (2 * math.pi)
            inside = ((theta - lo) % (2 * math.pi) > 0) & ((theta - lo) % (2 * math.pi) < span)
            out.append((_cone_label(lo, hi, span, names), inside))
    return out


def _cone_label(lo: float, hi: float, span: float, names: Sequence[str]) -> str:
    """The angular interval (lo, hi) as inequalities: ``a + b < 0``, ``a > 0 and a < b``."""
    after_lo = _inequality((-math.sin(lo), math.cos(lo)), names)  # left of the ray lo
    before_hi = _inequality((math.sin(hi), -math.cos(hi)), names)  # right of the ray hi
    if abs(span - math.pi) < 1e-6:
        return after_lo
    return f"{after_lo} and {before_hi}" if span < math.pi else f"{after_lo} or {before_hi}"


def _inequality(normal: tuple[float, float], names: Sequence[str]) -> str:
    """n·x > 0 in words: ``a > 0``, ``b < 0``, ``a + b < 0``, ``a > b``, ``a − 0.5·b > 0``."""
    n = [v / max(abs(v) for v in normal) for v in normal]
    n = [0.0 if abs(v) < 1e-6 else v for v in n]
    a, b = names[0], names[1]
    if n[1] == 0:
        return f"{a} {'>' if n[0] > 0 else '<'} 0"
    if n[0] == 0:
        return f"{b} {'>' if n[1] > 0 else '<'} 0"
    if abs(abs(n[0]) - 1) < 1e-6 and abs(abs(n[1]) - 1) < 1e-6:
        if n[0] * n[1] > 0:
            return f"{a} + {b} {'>' if n[0] > 0 else '<'} 0"
        return f"{a} > {b}" if n[0] > 0 else f"{a} < {b}"
    sign = 1 if n[0] > 0 else -1  # write the first coefficient positive
    c0, c1 = sign * n[0], sign * n[1]
    t0 = a if abs(c0 - 1) < 1e-6 else f"{c0:.3g}·{a}"
    t1 = b if abs(abs(c1) - 1) < 1e-6 else f"{abs(c1):.3g}·{b}"
    return f"{t0} {'+' if c1 > 0 else MINUS} {t1} {'>' if sign > 0 else '<'} 0"


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
