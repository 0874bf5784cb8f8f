"""Certified distances between bias-free ReLU nets over the whole input box [-1, 1]^n, for 1 or 2 inputs.

A bias-free ReLU net is positively homogeneous and linear on each cone cut out by its creases, so the
difference d of two such nets is too. Along the boundary of the box d is then linear between *breakpoints*:
the corners, the rays where a first-layer unit's input crosses 0, and (two hidden layers) the rays where a
second-layer unit's input, linear between neighbouring first-layer rays, crosses 0. So:

- max |d| over the box is max |d| over the breakpoints of both nets, scaled onto the box's boundary
  (d(c·u) = c·d(u): the maximum is on the boundary, and on each straight piece of it at an end);
- the mean of d² over the box is exact too: the triangles (0, p, q) between neighbouring breakpoints p, q
  tile the box, d is linear on each, and ∫ d² over a triangle with d(0) = 0 is area·(d(p)² + d(p)d(q) +
  d(q)²)/6.

Both are computed for K members at once (numpy, float64: the nets' own float32 weights evaluated exactly
enough that rounding sits near 1e-16 of the output scale), against a net shared by all members (a task's
exact circuit) or one net per member (its printed formula). Nothing is sampled: these are the numbers the
readout calls *certified*. One input: the box's boundary is the two points ±1.

Per-cone shares (:func:`error_cones`) split the same integral along the net's own cones: which of its linear
pieces hold the squared error of a stuck member, and which of them are dark (no unit active: output 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from circuits_pl.readout.matrices import forward, random_inputs
from circuits_pl.tasks import Task

MAX_INPUTS = 2  # the box's boundary is enumerated for 1 or 2 inputs; more are sampled
MAX_HIDDEN = 2  # second-layer creases are found segment by segment; deeper nets are sampled
SAMPLED_POINTS = 4096
TARGET_TOL = 1e-12  # a task's circuit must equal its target to this (relative) on random points to stand in for it
SQUARED = "\u00b2"

Nets = Sequence[np.ndarray]  # (K or 1, out, in) float64 per layer, input layer first, one output


def box_text(arity: int) -> str:
    """``[-1, 1]`` for one input, ``[-1, 1]²`` for two, ``[-1, 1]^n`` beyond."""
    return "[-1, 1]" + {1: "", 2: SQUARED}.get(arity, f"^{arity}")


def certifiable(sizes: Sequence[int]) -> str | None:
    """None if nets of these layer sizes are certified over the box, else why they are only sampled."""
    if sizes[0] > MAX_INPUTS:
        return f"{sizes[0]} inputs: the box's boundary is enumerated for 1 or 2 inputs only"
    if len(sizes) - 2 > MAX_HIDDEN:
        return f"{len(sizes) - 2} hidden layers: creases are enumerated for 1 or 2 hidden layers only"
    return None


def stack(weights: Sequence[Sequence]) -> list[np.ndarray]:
    """Members' weights (a list over members of ``(out, in)`` matrices, or a list over layers of
    ``(K, out, in)`` tensors) as float64 arrays ``(K, out, in)`` per layer."""
    first = weights[0]
    if isinstance(first, (torch.Tensor, np.ndarray)) and np.ndim(first) == 3:
        return [_np(w) for w in weights]
    return [np.stack([_np(member[layer]) for member in weights]) for layer in range(len(first))]


def _np(w) -> np.ndarray:
    if isinstance(w, torch.Tensor):
        return w.detach().to("cpu", torch.float64).numpy()
    return np.asarray(w, dtype=np.float64)


def pad_units(nets: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """One net per member, of different widths (printed formulas), as one batch: zero units added (a zero
    unit computes 0 and adds only harmless breakpoints)."""
    depth = len(nets[0])
    widths = [max(net[layer].shape[0] for net in nets) for layer in range(depth)]
    n = nets[0][0].shape[1]
    out = []
    for layer in range(depth):
        cols = n if layer == 0 else widths[layer - 1]
        batch = np.zeros((len(nets), widths[layer], cols))
        for k, net in enumerate(nets):
            w = np.asarray(net[layer], dtype=np.float64)
            batch[k, : w.shape[0], : w.shape[1]] = w
        out.append(batch)
    return out


def evaluate(nets: Nets, x: np.ndarray) -> np.ndarray:
    """Outputs ``(K, M)`` of K bias-free nets on points ``x`` ``(K or 1, M, n)``."""
    a = x
    for layer, w in enumerate(nets):
        a = a @ np.swapaxes(w, -1, -2)  # (K, M, units)
        if layer < len(nets) - 1:
            a = np.maximum(a, 0.0)
    return a[..., 0]


_CORNERS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])


def _onto_box(p: np.ndarray) -> np.ndarray:
    """Points scaled onto the boundary of [-1, 1]^n along their rays (every point given is non-zero)."""
    return p / np.abs(p).max(axis=-1, keepdims=True)


def _angles(p: np.ndarray) -> np.ndarray:
    return np.arctan2(p[..., 1], p[..., 0]) % (2 * math.pi)


def breakpoints(nets: Nets) -> np.ndarray:
    """Points ``(K, M, n)`` on the box's boundary between which every one of the K nets is linear along it.

    One input: ±1. Two inputs: the corners, both rays of each first-layer crease, and, for two hidden
    layers, the rays where a second-layer unit's input changes sign between neighbouring first-layer rays
    (that input is linear there, as every first-layer unit is). Extra points are harmless: they only cut
    a linear piece in two.
    """
    return _breakpoints(nets)[0]


def _breakpoints(nets: Nets) -> tuple[np.ndarray, np.ndarray]:
    """:func:`breakpoints`, and ``(K, M)``: which of them are creases of the net (not corners or fillers)."""
    w1 = nets[0]
    k, n = w1.shape[0], w1.shape[2]
    if n == 1:
        return np.broadcast_to(np.array([[1.0], [-1.0]]), (k, 2, 1)), np.zeros((k, 2), dtype=bool)
    normals = np.concatenate([-w1[..., 1:2], w1[..., 0:1]], axis=-1)  # (K, h, 2): along the line w·x = 0
    live = np.abs(normals).max(axis=-1) > 0
    normals = np.where(live[..., None], normals, 1.0)  # a zero unit has no crease: a corner stands in
    points = _onto_box(np.concatenate([normals, -normals, np.broadcast_to(_CORNERS, (k, 4, 2))], axis=1))
    crease = np.concatenate([live, live, np.zeros((k, 4), dtype=bool)], axis=1)
    if len(nets) == 3:
        zeros, crossed = _second_layer_zeros(nets, points)
        points, crease = np.concatenate([points, zeros], axis=1), np.concatenate([crease, crossed], axis=1)
    return points, crease


def _second_layer_zeros(nets: Nets, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each second-layer unit's input crosses 0 between neighbouring first-layer breakpoints
    ``(K, R·h2, 2)``, and which of those are real crossings (elsewhere the segment's start stands in)."""
    order = np.argsort(_angles(points), axis=1)
    p = np.take_along_axis(points, order[..., None], axis=1)  # (K, R, 2) by angle
    q = np.roll(p, -1, axis=1)  # each point's next neighbour (cyclic)
    z_p = _hidden(nets, p)  # (K, R, h2)
    z_q = np.roll(z_p, -1, axis=1)
    cross = (z_p * z_q) < 0
    t = np.where(cross, z_p / np.where(cross, z_p - z_q, 1.0), 0.0)  # z is linear on the chord p -> q
    zeros = p[:, :, None, :] + t[..., None] * (q - p)[:, :, None, :]  # (K, R, h2, 2)
    at_p = (z_p == 0) & ((z_q != 0) | (np.roll(z_p, 1, axis=1) != 0))  # a crease exactly on p (t = 0)
    k = zeros.shape[0]
    return _onto_box(zeros.reshape(k, -1, 2)), (cross | at_p).reshape(k, -1)


def _hidden(nets: Nets, x: np.ndarray) -> np.ndarray:
    """Second-layer pre-activations ``(K, M, h2)`` of two-hidden-layer nets."""
    h = np.maximum(x @ np.swapaxes(nets[0], -1, -2), 0.0)
    return h @ np.swapaxes(nets[1], -1, -2)


@dataclass(frozen=True)
class Distance:
    """max |f − g| and the mean of (f − g)² over the box, per member, and where the maximum is.

    Args:
        max_error: ``(K,)``.
        mse: ``(K,)``, the exact mean over the box (uniform inputs) when ``certified``.
        argmax: ``(K, n)``: a point of the box where |f − g| is largest.
        certified: exact over the whole box (else measured on sample points).
        why_sampled: why not certified, or None.
    """

    max_error: np.ndarray
    mse: np.ndarray
    argmax: np.ndarray
    certified: bool
    why_sampled: str | None = None

    def member(self, k: int) -> Bound:
        return Bound(float(self.max_error[k]), float(self.mse[k]), tuple(float(v) for v in self.argmax[k]),
                     self.certified, self.why_sampled)


@dataclass(frozen=True)
class Bound:
    """One member's :class:`Distance`: max |f − g| (at ``at``) and the mean square over the box."""

    max_error: float
    mse: float
    at: tuple[float, ...]
    certified: bool
    why_sampled: str | None = None

    def text(self) -> str:
        """``certified max error 3.4e-05 over [-1, 1]²``, or ``max error 0.012 on 4096 sampled points (sampled,
        not certified: ...)``."""
        box = box_text(len(self.at))
        if self.certified:
            return f"certified max error {self.max_error:.2g} over {box}"
        return (f"max error {self.max_error:.2g} on {SAMPLED_POINTS} points sampled in {box} "
                f"(sampled, not certified: {self.why_sampled})")


def distance(f: Nets, g: Nets) -> Distance:
    """The certified distance between K nets ``f`` and nets ``g`` (K of them, or 1 shared by all), 1 or 2
    inputs, 1 or 2 hidden layers each (see :func:`certifiable`)."""
    n, k = f[0].shape[2], f[0].shape[0]
    points = breakpoints(f)  # one input: ±1, for every net
    if n == 2:
        theirs = breakpoints(g)
        points = np.concatenate([points, np.broadcast_to(theirs, (k,) + theirs.shape[1:])], axis=1)
        order = np.argsort(_angles(points), axis=1)
        points = np.take_along_axis(points, order[..., None], axis=1)
    d = evaluate(f, points) - evaluate(g, points)  # (K, M)
    absd = np.abs(d)
    top = absd.argmax(axis=1)
    argmax = np.take_along_axis(points, top[:, None, None], axis=1)[:, 0]
    return Distance(absd.max(axis=1), _box_mean_square(points, d), argmax, True)


def _box_mean_square(points: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Mean of d² over the box, from d's values at its sorted breakpoints (d linear between them)."""
    if points.shape[-1] == 1:  # ∫_0^1 (x·d(1))² dx = d(1)²/3 on each side, over a length of 2
        return (d ** 2).sum(axis=1) / 6.0
    return _triangles(points, d).sum(axis=1) / 4.0  # the box's area is 4


def _triangles(points: np.ndarray, d: np.ndarray) -> np.ndarray:
    """∫ d² over each triangle (0, p_i, p_{i+1}) between neighbouring sorted boundary points ``(K, M)``."""
    q = np.roll(points, -1, axis=1)
    dq = np.roll(d, -1, axis=1)
    area = 0.5 * np.abs(points[..., 0] * q[..., 1] - points[..., 1] * q[..., 0])
    return area * (d * d + d * dq + dq * dq) / 6.0


def sampled_distance(f: Nets, fn, arity: int, why: str, x: np.ndarray | None = None) -> Distance:
    """max |f − fn| and the mean square on sample points (``SAMPLED_POINTS`` uniform in the box): for
    targets that are no ReLU circuit, or nets beyond :func:`certifiable`. ``fn`` maps ``(M, n)`` points
    to ``(M,)`` values."""
    if x is None:
        x = random_inputs(SAMPLED_POINTS, arity, seed=13).numpy()
    ys = evaluate(f, x[None]) - np.asarray(fn(x), dtype=np.float64)[None, :]
    absd = np.abs(ys)
    top = absd.argmax(axis=1)
    return Distance(absd.max(axis=1), (ys ** 2).mean(axis=1), x[top], False, why)


def target_circuit(task: Task) -> list[np.ndarray] | None:
    """The task's exact circuit as a net ``(1, out, in)`` per layer, if it has one with 1 or 2 hidden layers
    that equals its target (checked on random points: a user's Task may list a circuit that is not its
    function); None otherwise (a user's ``hypot``: its distance to a net can only be sampled)."""
    cached = _TARGETS.get(task)
    if cached is not None or task in _TARGETS:
        return cached
    net = None
    for circuit in task.circuits:
        mats = [np.asarray(w, dtype=np.float64)[None] for w in circuit.weights]
        if certifiable((mats[0].shape[2],) + tuple(m.shape[1] for m in mats)) is not None:
            continue
        x = random_inputs(SAMPLED_POINTS, task.arity, seed=17)
        want = task(x).to(torch.float64)[:, 0].numpy()
        got = evaluate(mats, x.numpy()[None])[0]
        if np.abs(got - want).max() <= TARGET_TOL * max(1.0, float(np.abs(want).max())):
            net = mats
            break
    _TARGETS[task] = net
    return net


_TARGETS: dict[Task, list[np.ndarray] | None] = {}


def why_target_sampled(task: Task) -> str | None:
    """None if the distance to the task's target is certified (for nets :func:`certifiable` allows)."""
    if task.arity > MAX_INPUTS:
        return f"{task.arity} inputs: the box's boundary is enumerated for 1 or 2 inputs only"
    if target_circuit(task) is None:
        return (f"the target {task.formula} is not a bias-free ReLU circuit the readout knows "
                "(not piecewise linear, or no exact circuit given)")
    return None


def to_target(task: Task, nets: Nets) -> Distance:
    """Distance of K nets to the task's target: certified when :func:`why_target_sampled` and
    :func:`certifiable` allow, else sampled (and ``why_sampled`` says why)."""
    sizes = (nets[0].shape[2],) + tuple(w.shape[1] for w in nets)
    why = certifiable(sizes) or why_target_sampled(task)
    if why is None:
        return distance(nets, target_circuit(task))

    def target(x: np.ndarray) -> np.ndarray:
        return task(torch.as_tensor(x)).to(torch.float64)[:, 0].numpy()

    return sampled_distance(nets, target, task.arity, why)


def between(f: Sequence, g: Sequence) -> Distance:
    """Distance between one net ``f`` and one net ``g`` (``(out, in)`` matrices), certified where it can be."""
    fs, gs = stack([f]), stack([g])
    sizes_f = (fs[0].shape[2],) + tuple(w.shape[1] for w in fs)
    sizes_g = (gs[0].shape[2],) + tuple(w.shape[1] for w in gs)
    why = certifiable(sizes_f) or certifiable(sizes_g)
    if why is None:
        return distance(fs, gs)
    mats = [torch.as_tensor(w, dtype=torch.float64) for w in g]
    return sampled_distance(fs, lambda x: forward(mats, torch.as_tensor(x))[:, 0].numpy(), sizes_f[0], why)


def between_each(nets: Sequence[Sequence], others: Sequence[Sequence]) -> Distance:
    """:func:`between` for K pairs at once: member k's net ``nets[k]`` (all of one architecture) against
    ``others[k]`` (of any widths, e.g. printed formulas: padded with zero units)."""
    fs = stack(nets)
    sizes = (fs[0].shape[2],) + tuple(w.shape[1] for w in fs)
    gs = pad_units([[_np(w) for w in g] for g in others])
    why = certifiable(sizes) or certifiable((gs[0].shape[2],) + tuple(w.shape[1] for w in gs))
    if why is None:
        return distance(fs, gs)
    parts = [between(f, g) for f, g in zip(nets, others, strict=True)]
    return Distance(np.array([p.max_error[0] for p in parts]), np.array([p.mse[0] for p in parts]),
                    np.stack([p.argmax[0] for p in parts]), False, why)


@dataclass(frozen=True)
class Cone:
    """One linear piece of a net with 2 inputs: the open angular interval (lo, hi) of the input plane.

    Args:
        lo, hi: angles in [0, 2π) of its edge rays (counter-clockwise from lo to hi).
        area: its share of the box [-1, 1]².
        error: its share of the squared error over the box.
        mse: the mean squared error on it.
        dark: no unit of some hidden layer is active on it: the net outputs 0 there.
    """

    lo: float
    hi: float
    area: float
    error: float
    mse: float
    dark: bool


def error_cones(net: Sequence, task: Task) -> list[Cone] | None:
    """A net's cones (its linear pieces, 2 inputs) with their shares of the box and of the squared error
    against the task's target, exactly; None if that is not certified (see :func:`to_target`)."""
    mats = stack([net])
    sizes = (mats[0].shape[2],) + tuple(w.shape[1] for w in mats)
    if task.arity != 2 or certifiable(sizes) or why_target_sampled(task):
        return None
    target = target_circuit(task)
    own, crease = (a[0] for a in _breakpoints(mats))
    edges = np.unique(np.round(_angles(own[crease]), 12))  # the net's creases; corners cut none of its pieces
    points = np.concatenate([own, breakpoints(target)[0]])
    points = points[np.argsort(_angles(points))]
    d = evaluate(mats, points[None])[0] - evaluate(target, points[None])[0]
    tri = _triangles(points[None], d[None])[0]
    q = np.roll(points, -1, axis=0)
    area = 0.5 * np.abs(points[:, 0] * q[:, 1] - points[:, 1] * q[:, 0]) / 4.0  # share of the box
    mid = _angles(points + q)  # each triangle's middle ray (neighbours are less than π apart)
    total = tri.sum()
    if len(edges) == 0:  # no crease: one linear piece, the whole plane
        edges = np.array([0.0])
    cones = []
    for i, lo in enumerate(edges):
        hi = edges[(i + 1) % len(edges)]
        span = (hi - lo) % (2 * math.pi) or 2 * math.pi
        inside = ((mid - lo) % (2 * math.pi)) < span
        share, err = float(area[inside].sum()), float(tri[inside].sum())
        ray = np.array([[math.cos(lo + span / 2), math.sin(lo + span / 2)]])
        cones.append(Cone(float(lo), float(hi), share, float(err / total) if total > 0 else 0.0,
                          err / 4.0 / share if share > 0 else 0.0, _dark(mats, ray)))
    return cones


def _dark(mats: Nets, ray: np.ndarray) -> bool:
    """No unit of some hidden layer active on ``ray``: the net is 0 on its cone."""
    a = ray[None]
    for w in mats[:-1]:
        a = np.maximum(a @ np.swapaxes(w, -1, -2), 0.0)
        if not (a > 0).any():
            return True
    return False
