"""Figures of a run as PNG files: loss curves, the learned function, the circuit as a graph.

matplotlib is imported inside the functions, so importing this module does not load it, and is
used through its object-oriented API (``Figure``, never pyplot): no global backend or figure
state, no display needed, nothing left open after a figure is saved (PNG goes through Agg).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from circuits_pl.files import atomic_open
from circuits_pl.readout import Canonical, canonicalize, formula, forward, input_names, unit_formula
from circuits_pl.tasks import Task

Fn = Callable[[torch.Tensor], torch.Tensor]  # inputs (N, arity) -> outputs (N, 1)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POSITIVE, NEGATIVE, DEAD = "tab:blue", "tab:red", "0.75"  # edge colours of plot_circuit


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, out_png: str | Path) -> Path:
    """Write the figure atomically (circuits_pl.files): a signal or a full disk mid-write leaves the
    previous figure (or none), never a truncated PNG; a failed write is one SaveFailed."""
    out = Path(out_png)
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format=out.suffix.lstrip(".").lower() or "png", dpi=110)
    return out


# ---------------------------------------------------------------------------------------------
# Loss curves
# ---------------------------------------------------------------------------------------------

# (column, label without medians, label with medians, line style, colour)
_LOSS_COLUMNS = [
    ("train/mse", "train", "train, best member", "-", "C0"),
    ("val/mse", "validation", "validation, best member", "-", "C1"),
    ("train/median_mse", None, "train, median member", "--", "C0"),
    ("val/median_mse", None, "validation, median member", "--", "C1"),
]


def read_metrics(metrics_csv_path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Per column of a CSVLogger ``metrics.csv``: (steps, values) of the rows where it has a value.

    Lightning writes one row per logging call, so most cells are empty: train and validation
    metrics land on different rows. Rows without a step use their row number; non-numbers are skipped.
    """
    with open(metrics_csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    series: dict[str, tuple[list[float], list[float]]] = {}
    for n, row in enumerate(rows):
        step = _number(row.get("step"))
        for column, cell in row.items():
            value = _number(cell)
            if column is None or column == "step" or value is None:
                continue
            steps, values = series.setdefault(column, ([], []))
            steps.append(float(n) if step is None else step)
            values.append(value)
    return series


def _number(cell: str | None) -> float | None:
    try:
        return float(cell) if cell not in (None, "") else None
    except ValueError:
        return None


Series = dict[str, tuple[list[float], list[float]]]  # column -> (steps, values)


def plot_losses(history: Series | str | Path, out_png: str | Path) -> Path:
    """Train and validation MSE against SGD step, log scale; medians over members dashed if logged.

    Args:
        history: the series to draw, column -> (steps, values) (a module's
            ``population.loss_history``, which exists whatever the logger), or a CSVLogger
            ``metrics.csv`` to read them from.
        out_png: where to write the figure.

    With several members ``train/mse`` is the best member's and ``*/median_mse`` the median
    member's: the gap between them shows how many seeds got stuck. A log axis cannot show 0, so
    zeros (an exact circuit in float32) are drawn a factor 100 below the smallest positive value.
    """
    series = read_metrics(history) if isinstance(history, (str, Path)) else history
    with_medians = any(col.endswith("median_mse") and col in series for col, *_ in _LOSS_COLUMNS)
    plotted = {col: s for col, s in series.items() if col in {c for c, *_ in _LOSS_COLUMNS}}
    positives = [v for _, values in plotted.values() for v in values if v > 0 and math.isfinite(v)]
    floor = min(positives, default=1.0) / 100
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for column, plain, with_median, style, colour in _LOSS_COLUMNS:
        if column not in plotted:
            continue
        steps, values = plotted[column]
        points = [(s, max(v, floor)) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
        if points:
            xs, ys = zip(*points, strict=True)
            label = with_median if with_medians else plain
            ax.plot(xs, ys, style, color=colour, label=label, marker=".", ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("MSE")
    ax.set_title("Loss curves")
    if plotted:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no train/val MSE columns in this file", ha="center", transform=ax.transAxes)
    ax.grid(True, which="major", alpha=0.3)
    return save_figure(fig, out_png)


# ---------------------------------------------------------------------------------------------
# The learned function
# ---------------------------------------------------------------------------------------------

def plot_function(weights: Sequence, task: Task, out_png: str | Path, fn: Fn | None = None) -> Path | None:
    """The learned function against the target; None (nothing written) for more than two inputs.

    One input: network and target on [-1.5, 1.5] with the training range [-1, 1] shaded, and for a
    one-hidden-layer bias-free net each unit's contribution out_w·r(in_w·x), so a dark half-line (a
    stuck net) shows at a glance. Two inputs: heat maps of the output and of the error on [-1, 1]².

    Args:
        weights: the ``(out, in)`` weight matrices of a bias-free net.
        task: gives the target and the input names.
        out_png: where to write the figure.
        fn: the network as it runs, inputs ``(N, arity)`` -> outputs ``(N, 1)``; give it for a net
            with biases (``weights`` alone do not describe it; no unit contributions are drawn).
    """
    mats = canonicalize(weights).weights  # canonical units: same function, readable labels
    net = _as_float64(fn) if fn is not None else (lambda z: forward(mats, z))
    units = mats if fn is None else None
    if task.arity == 1:
        fig = _figure(6.4, 4.2)
        _plot_function_1d(fig.add_subplot(), net, units, task)
    elif task.arity == 2:
        fig = _figure(10.0, 4.2)
        _plot_function_2d(fig, net, task)
    else:
        return None
    return save_figure(fig, out_png)


def _as_float64(fn: Fn) -> Fn:
    def net(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fn(z).detach().to("cpu", torch.float64)

    return net


def _plot_function_1d(ax: Axes, net: Fn, mats: list[torch.Tensor] | None, task: Task) -> None:
    x = torch.linspace(-1.5, 1.5, 601, dtype=torch.float64)[:, None]  # (N, 1)
    ax.axvspan(-1, 1, color="0.93", zorder=0, label="training range")
    ax.plot(x[:, 0], task(x)[:, 0], color="k", lw=4, alpha=0.25, label=f"target {task.formula}")
    ax.plot(x[:, 0], net(x)[:, 0], color="C0", lw=1.5, label="network")
    if mats is not None and len(mats) == 2:
        for i, (row, out) in enumerate(zip(mats[0], mats[1][0].tolist(), strict=True)):
            contribution = out * (x @ row[:, None]).relu()
            label = f"unit {i + 1}: {out:.3f}·{unit_formula(row, ['x'])}"
            ax.plot(x[:, 0], contribution[:, 0], "--", lw=1, color=f"C{i + 1}", label=label)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"Task {task.name}: learned function")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)


def _plot_function_2d(fig: Figure, net: Fn, task: Task, points: int = 101) -> None:
    axis = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (points², 2): a varies slowest
    out = net(grid)[:, 0].reshape(points, points).T  # rows: b, columns: a
    err = out - task(grid)[:, 0].reshape(points, points).T
    names = input_names(2)
    limit = max(float(err.abs().max()), 1e-12)
    panels = [
        (out, "network output", "viridis", None, None),
        (err, f"error (output − target), max |error| {float(err.abs().max()):.2g}", "RdBu_r", -limit, limit),
    ]
    for k, (image, title, cmap, vmin, vmax) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        shown = ax.imshow(image.numpy(), origin="lower", extent=(-1, 1, -1, 1), cmap=cmap,
                          vmin=vmin, vmax=vmax)
        fig.colorbar(shown, ax=ax, shrink=0.85)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_title(title, fontsize="medium")
    fig.suptitle(f"Task {task.name}: f = {task.formula}")


# ---------------------------------------------------------------------------------------------
# The circuit as a graph
# ---------------------------------------------------------------------------------------------

def plot_circuit(canonical: Canonical, task: Task, out_png: str | Path) -> Path:
    """The canonical circuit as a layered graph: inputs, hidden units (r), output.

    Edge labels are the weights (3 decimals; zero weights are not drawn), colour is the sign
    (blue +, red −), width grows with |w|. Dead units and their edges are grey.

    Args:
        canonical: from :func:`circuits_pl.readout.canonicalize`.
        task: gives the input names and the title.
        out_png: where to write the figure.
    """
    mats, dead = canonical.weights, canonical.dead
    sizes = [mats[0].shape[1]] + [w.shape[0] for w in mats]
    fig = _figure(2.2 * len(sizes) + 1, 1.1 * max(sizes) + 1.6)
    ax = fig.add_subplot()
    pos = [[(layer, (n - 1) / 2 - i) for i in range(n)] for layer, n in enumerate(sizes)]
    greyed = [torch.zeros(sizes[0], dtype=torch.bool)] + list(dead) + [torch.zeros(1, dtype=torch.bool)]
    biggest = max([float(w.abs().max()) for w in mats if w.numel()], default=1.0)
    for layer, w in enumerate(mats):
        for i, j in itertools.product(range(w.shape[0]), range(w.shape[1])):
            grey = bool(greyed[layer][j]) or bool(greyed[layer + 1][i])
            _draw_edge(ax, pos[layer][j], pos[layer + 1][i], float(w[i, j]), biggest, grey, j, w.shape[1])
    labels = [input_names(sizes[0])] + [["r"] * n for n in sizes[1:-1]] + [["y"]]
    for layer, layer_pos in enumerate(pos):
        for i, (x, y) in enumerate(layer_pos):
            face = DEAD if bool(greyed[layer][i]) else "white"
            ax.scatter([x], [y], s=900, facecolor=face, edgecolor="k", zorder=3)
            ax.text(x, y, labels[layer][i], ha="center", va="center", zorder=4)
    ax.set_xlim(-0.4, len(sizes) - 0.6)
    ax.set_ylim(-max(sizes) / 2 - 0.2, max(sizes) / 2 + 0.2)
    ax.axis("off")
    ax.set_title(f"Task {task.name}: {formula(canonical)}", fontsize="medium")
    return save_figure(fig, out_png)


def _draw_edge(ax: Axes, start: tuple[float, float], end: tuple[float, float], w: float, biggest: float,
               grey: bool, source: int, n_sources: int) -> None:
    """One weighted edge; its label sits part-way along, shifted per source so labels of edges
    that converge on one unit do not overlap."""
    if f"{abs(w):.3f}" == "0.000":
        return
    colour = DEAD if grey else (POSITIVE if w > 0 else NEGATIVE)
    ax.plot([start[0], end[0]], [start[1], end[1]], color=colour, lw=0.6 + 3 * abs(w) / biggest, zorder=1)
    t = 0.3 + 0.35 * source / max(n_sources - 1, 1)
    x, y = start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])
    ax.text(x, y, f"{w:.3f}", ha="center", va="center", fontsize="small", color=colour, zorder=2,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})


# ---------------------------------------------------------------------------------------------
# Basins: initial units coloured by their member's outcome
# ---------------------------------------------------------------------------------------------

def plot_basins(first: torch.Tensor, out: torch.Tensor | None, outcomes: Sequence[str],
                boundaries: Sequence[float], title: str, out_png: str | Path) -> Path:
    """Every member's first-layer units at initialisation, coloured by what the member ended as.

    Args:
        first: initial first-layer weights ``(K, h, n)``, n = 1 or 2.
        out: initial output weights ``(K, h)`` (one hidden layer), or None: the unit's norm is drawn instead.
        outcomes: one label per member (``found`` or a stuck form; ``circuits_pl.basins.outcome_labels``).
        boundaries: sector boundaries to mark (degrees; two inputs) — where the target changes sign or piece.
        title: the figure's title.

    x: the unit's direction (its angle in degrees for two inputs; its weight w for one input, so that
    the sign, x > 0 or x < 0, is the side it faces); y: its output weight.
    """
    first = first.detach().double()
    k, h, n = first.shape
    xs = first[..., 0] if n == 1 else torch.rad2deg(torch.atan2(first[..., 1], first[..., 0])) % 360.0
    ys = out.detach().double() if out is not None else first.norm(dim=-1)
    order = ["found"] + sorted({o for o in outcomes if o != "found"} - {"other"}) + ["other"]
    stuck = iter(["tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"] * 9)
    colours = {o: "tab:green" if o == "found" else "0.6" if o == "other" else next(stuck) for o in order}
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    for label in order:
        rows = [m for m in range(k) if outcomes[m] == label]
        if not rows:
            continue
        ax.scatter(xs[rows].flatten().tolist(), ys[rows].flatten().tolist(), s=6, alpha=0.6,
                   color=colours[label], label=f"{_legend_text(label)} ({len(rows)})", linewidths=0)
    if n == 1:
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.set_xlabel("initial input weight w (the unit faces x > 0 when w > 0)")
    else:
        for b in boundaries:
            ax.axvline(b % 360.0, color="0.3", lw=0.8, ls="--")
        ax.set_xlim(0, 360)
        ax.set_xticks(range(0, 361, 45))
        ax.set_xlabel("initial direction of the unit's input weights (degrees; dashed: sector boundaries)")
    ax.axhline(0.0, color="0.8", lw=0.6)
    ax.set_ylabel("initial output weight" if out is not None else "norm of the input weights")
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    return save_figure(fig, out_png)


# A stuck form of a wide net can run to hundreds of characters; a legend that long is wider than the
# figure and leaves the axes no room (matplotlib then gives up the layout).
LEGEND_CHARS = 48


def _legend_text(label: str) -> str:
    return label if len(label) <= LEGEND_CHARS else label[:LEGEND_CHARS - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------
# Phase diagram: found rate per (hidden sizes, lr), a panel per task or init scale
# ---------------------------------------------------------------------------------------------

def plot_phase_diagram(cells: Sequence[dict], title: str, out_png: str | Path,
                       colour_label: str = "found rate (Wilson 95% CI)") -> Path:
    """Heat maps of a rate per (hidden sizes, lr) cell, written with its Wilson 95% interval; one panel
    per distinct ``panel`` (a task of ``report``, an init scale of a ``fit`` sweep).

    Args:
        cells: one mapping per cell: ``panel`` (its panel's title), ``layer_sizes`` (e.g. ``2-4-1`` or a
            list), ``lr``, ``rate``, ``low``, ``high``.
        title: the figure's title.
        out_png: where to write it.
    """
    panels = list(dict.fromkeys(c["panel"] for c in cells))
    widths = list(dict.fromkeys(_hidden(c["layer_sizes"]) for c in cells))
    lrs = sorted({c["lr"] for c in cells})
    fig = _figure(3.2 * len(panels) + 1.2, 0.55 * len(widths) + 2.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    shown = None
    for ax, panel in zip(axes, panels):
        grid = [[float("nan")] * len(lrs) for _ in widths]
        for c in cells:
            if c["panel"] != panel:
                continue
            i, j = widths.index(_hidden(c["layer_sizes"])), lrs.index(c["lr"])
            grid[i][j] = c["rate"]
            ax.text(j, i, f"{c['rate']:.2f}\n({c['low']:.2f}–{c['high']:.2f})", ha="center", va="center",
                    fontsize="x-small")
        shown = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(widths)), widths)
        ax.set_xlabel("learning rate")
        ax.set_title(panel)
    axes[0].set_ylabel("hidden width")
    fig.colorbar(shown, ax=list(axes), shrink=0.9, label=colour_label)
    fig.suptitle(title, fontsize="medium")
    return save_figure(fig, out_png)


def _hidden(sizes: str | Sequence[int]) -> str:
    """``2-4-1`` (or ``[2, 4, 1]``) -> ``4``: the hidden widths, the same for every task of a sweep."""
    parts = sizes.split("-") if isinstance(sizes, str) else [str(n) for n in sizes]
    return "-".join(parts[1:-1])


# ---------------------------------------------------------------------------------------------
# Timeline
# ---------------------------------------------------------------------------------------------

def plot_timeline(steps: Sequence[int], names: Sequence[str], counts: torch.Tensor, out_png: str | Path,
                  title: str = "", top: int = 7) -> Path:
    """The share of members holding each circuit at each recorded validation, as a stacked area chart.

    Args:
        steps: SGD step of each validation.
        names: the circuit names (``counts``' columns); ``none`` is drawn grey, at the bottom.
        counts: ``(V, len(names))`` members per circuit per validation (``Timeline.shares``).
        top: circuits drawn on their own (the most held at any validation); the rest as "other".
    """
    counts = counts.double()
    members = max(1.0, float(counts[0].sum())) if counts.shape[0] else 1.0
    peak = counts.amax(dim=0) if counts.shape[0] else torch.zeros(len(names))
    ranked = [int(i) for i in peak.argsort(descending=True) if peak[i] > 0 and names[int(i)] != "none"]
    shown, rest = ranked[:top], ranked[top:]
    layers, labels, colours = [], [], []
    if "none" in names:
        layers.append(counts[:, names.index("none")])
        labels.append("none")
        colours.append("0.8")
    palette = iter(f"C{i}" for i in range(10))
    for i in shown:
        layers.append(counts[:, i])
        labels.append(names[i])
        colours.append(next(palette))
    if rest:
        layers.append(counts[:, rest].sum(dim=1))
        labels.append(f"other ({len(rest)} circuits)")
        colours.append("0.5")
    fig = _figure(8.0, 4.2)
    ax = fig.add_subplot()
    if layers and len(steps) > 1:
        ax.stackplot(list(steps), *[(layer / members).tolist() for layer in layers], labels=labels,
                     colors=colours, alpha=0.9)
    elif layers and steps:  # one validation: an area needs two; a stacked bar at that step
        bottom = 0.0
        for layer, label, colour in zip(layers, labels, colours):
            share = float(layer[0]) / members
            ax.bar(steps[0], share, width=max(0.1 * steps[0], 0.1), bottom=bottom, label=label, color=colour, alpha=0.9)
            bottom += share
    ax.set_xlim(*((min(steps), max(steps)) if len(steps) > 1 else (0, max(1.1 * steps[0], 1) if steps else 1)))
    ax.set_ylim(0, 1)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("share of members")
    ax.set_title(title or "Each member's circuit at each validation", fontsize="medium")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, out_png)
