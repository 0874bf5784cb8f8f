"""Each figure draws what it says: the plotted data, read back through matplotlib's Axes, against the
metrics file by hand, the tasks by Python arithmetic and the circuits' own weights; and the PNG on disk,
read back with matplotlib.image, is an image of the figure's size with something drawn on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_drawn

import circuits_pl.plots as plots
from circuits_pl.plots import plot_basins, plot_circuit, plot_function, plot_losses, plot_phase_diagram, read_metrics
from circuits_pl.readout import canonicalize
from circuits_pl.tasks import BUILTIN_TASKS, Task, embed_circuit

DPI = 110  # plots.save_figure's

# CSVLogger layout: one row per logging call, so train and val metrics sit on different rows.
METRICS_CSV = """epoch,step,train/mse,train/median_mse,val/mse,val/median_mse,val/solved
0,100,0.5,0.6,,,
0,200,0.1,0.3,,,
0,200,,,0.09,0.25,1
0,300,0.0,0.2,,,
0,300,,,0.0,0.2,2
"""

PYTHON_TARGETS = {"abs": abs, "identity": lambda x: x, "min": min, "max": max, "add": lambda a, b: a + b}


@pytest.fixture
def figures(monkeypatch):
    """The Figure objects the plot functions save (they return only the path), in order."""
    saved = []
    real = plots.save_figure

    def keep(fig, out_png):
        saved.append(fig)
        return real(fig, out_png)

    monkeypatch.setattr(plots, "save_figure", keep)
    return saved


def _lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}


def test_read_metrics_skips_empty_cells(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    series = read_metrics(csv_path)
    assert series["val/mse"] == ([200.0, 300.0], [0.09, 0.0])
    assert series["train/mse"][0] == [100.0, 200.0, 300.0]


FLOOR = 0.09 / 100  # zeros are drawn 100x below the smallest positive value of METRICS_CSV


@pytest.mark.parametrize("content, expected", [
    (METRICS_CSV, {"train, best member": ([100, 200, 300], [0.5, 0.1, FLOOR]),
                   "validation, best member": ([200, 300], [0.09, FLOOR]),
                   "train, median member": ([100, 200, 300], [0.6, 0.3, 0.2]),
                   "validation, median member": ([200, 300], [0.25, 0.2])}),
    ("step,train/mse\n100,0.5\n200,\n300,0.1\n", {"train": ([100, 300], [0.5, 0.1])}),  # no validation, no medians
    ("step,val/solved\n100,1\n", {}),  # no MSE column at all
])
def test_plot_losses_draws_every_logged_mse_at_its_step(tmp_path, figures, content, expected):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(content)
    out = plot_losses(csv_path, tmp_path / "figs" / "losses.png")
    assert out == tmp_path / "figs" / "losses.png"
    (ax,) = figures[0].axes
    lines = _lines(ax)
    assert lines.keys() == expected.keys()
    for label, (xs, ys) in expected.items():
        assert lines[label][0] == xs and lines[label][1] == pytest.approx(ys, rel=1e-12), label
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "SGD step"
    texts = [t.get_text() for t in ax.texts]
    assert texts == ([] if expected else ["no train/val MSE columns in this file"])
    assert_drawn(out, (6.4 * DPI, 4.0 * DPI))


@pytest.mark.parametrize("name, sizes", [("abs", (1, 2, 1)), ("identity", (1, 2, 2, 1))])
def test_plot_function_of_one_input_draws_the_target_the_net_and_each_unit(tmp_path, figures, name, sizes):
    task = BUILTIN_TASKS[name]
    out = plot_function(task.circuit_weights(sizes), task, tmp_path / "function.png")
    (ax,) = figures[0].axes
    lines = _lines(ax)
    xs, target = lines[f"target {task.formula}"]
    assert xs[0] == -1.5 and xs[-1] == 1.5 and len(xs) == 601
    assert target == pytest.approx([PYTHON_TARGETS[name](x) for x in xs], abs=1e-15)
    assert lines["network"][1] == pytest.approx(target, abs=1e-12)  # the exact circuit
    units = [label for label in lines if label.startswith("unit ")]
    if len(sizes) == 3:  # one hidden layer: each unit's out·r(w·x) drawn, and they add up to the net
        assert units == ["unit 1: 1.000·r(x)", f"unit 2: {'' if name == 'abs' else '−'}1.000·r(−x)"]
        total = np.sum([lines[u][1] for u in units], axis=0)
        assert total.tolist() == pytest.approx(target, abs=1e-12)
    else:
        assert units == []
    assert_drawn(out, (6.4 * DPI, 4.2 * DPI))


@pytest.mark.parametrize("name, weights", [
    ("min", BUILTIN_TASKS["min"].circuit_weights((2, 3, 1))),
    ("max", BUILTIN_TASKS["max"].circuit_weights((2, 3, 2, 1))),
    ("add", [torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0]])]),  # r(a + b): wrong where a + b < 0
])
def test_plot_function_of_two_inputs_maps_the_output_and_its_error(tmp_path, figures, name, weights):
    task = BUILTIN_TASKS[name]
    out = plot_function(weights, task, tmp_path / "function.png")
    image_axes = [ax for ax in figures[0].axes if ax.get_images()]
    assert len(image_axes) == 2  # (and a colour bar beside each)
    output, error = (ax.get_images()[0] for ax in image_axes)
    assert output.get_extent() == [-1, 1, -1, 1] and output.origin == "lower"
    g = np.linspace(-1, 1, 101)
    # rows: b, columns: a; the net by Python arithmetic on its weights
    net = [[max(a + b, 0.0) if name == "add" else PYTHON_TARGETS[name](a, b) for a in g] for b in g]
    target = [[PYTHON_TARGETS[name](a, b) for a in g] for b in g]
    np.testing.assert_allclose(output.get_array(), net, atol=1e-12)
    np.testing.assert_allclose(error.get_array(), np.subtract(net, target), atol=1e-12)
    worst = float(np.abs(np.subtract(net, target)).max())
    title = image_axes[1].get_title()
    assert title.startswith("error (output − target), max |error| ")
    assert float(title.rsplit(" ", 1)[1]) == pytest.approx(worst, abs=1e-12)
    assert (worst == 2.0) == (name == "add")  # r(a + b) misses a + b = −2 at (−1, −1)
    assert_drawn(out, (10.0 * DPI, 4.2 * DPI))


def test_plot_function_skips_more_than_two_inputs(tmp_path):
    task = Task("sum3", lambda a, b, c: a + b + c, 3, "a + b + c", (3, 2, 1))
    assert plot_function([torch.ones(2, 3), torch.ones(1, 2)], task, tmp_path / "f.png") is None
    assert not (tmp_path / "f.png").exists()


def test_plot_circuit_draws_every_unit_and_labels_every_nonzero_weight(tmp_path, figures):
    task = BUILTIN_TASKS["min"]
    weights = embed_circuit(task.circuits[0].weights, (2, 4, 2, 1))  # a zero (dead) unit in layer 1
    out = plot_circuit(canonicalize(weights), task, tmp_path / "circuit.png")
    (ax,) = figures[0].axes
    # min in 2-4-2-1: r(a) − r(−a) − r(a − b) carried through (r(m), r(−m)), then m = r(m) − r(−m)
    nodes = [t.get_text() for t in ax.texts if t.get_text() in ("a", "b", "r", "y")]
    assert nodes == ["a", "b"] + ["r"] * 6 + ["y"]
    faces = [tuple(c.get_facecolor()[0]) for c in ax.collections]
    assert len(faces) == 9 and sum(f[:3] == (0.75, 0.75, 0.75) for f in faces) == 1  # the dead unit is grey
    labels = sorted(t.get_text() for t in ax.texts if t.get_text() not in ("a", "b", "r", "y"))
    # the circuit's non-zero weights, each drawn once: in, r(a): 1, r(−a): −1, r(a − b): 1, −1; then
    # m = r(a) − r(−a) − r(a − b) carried as r(m), r(−m): 1, −1, −1 and −1, 1, 1; out r(m) − r(−m): 1, −1
    assert labels == ["-1.000"] * 6 + ["1.000"] * 6, labels
    assert ax.get_title() == "Task min: y = 1.000·r(h1 − h2 − h3) − 1.000·r(−h1 + h2 + h3)\n" \
                             "  where h1 = r(a), h2 = r(a − b), h3 = r(−a)"
    assert_drawn(out)


def test_plot_basins_places_each_unit_at_its_direction_and_output_weight(tmp_path, figures):
    first = torch.tensor([[[1.0, 0.0], [0.0, -2.0]], [[-1.0, 1.0], [0.5, 0.5]]])  # 2 members, 2 units
    out_w = torch.tensor([[0.3, -0.4], [0.7, 0.1]])
    path = plot_basins(first, out_w, ["found", "y = r(a)"], [45.0, 225.0], "basins", tmp_path / "b.png")
    (ax,) = figures[0].axes
    points = {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}
    assert points.keys() == {"found (1)", "y = r(a) (1)"}
    # x: the angle of (w_a, w_b) in degrees, by hand; y: the unit's output weight
    np.testing.assert_allclose(points["found (1)"], [[0.0, 0.3], [270.0, -0.4]], atol=1e-6)
    np.testing.assert_allclose(points["y = r(a) (1)"], [[135.0, 0.7], [45.0, 0.1]], atol=1e-6)
    assert [ln.get_xdata()[0] for ln in ax.get_lines()][:2] == [45.0, 225.0]  # the sector boundaries
    assert_drawn(path)


def test_plot_basins_keeps_the_axes_with_the_stuck_forms_of_a_wide_net(tmp_path, figures, recwarn):
    """A 16-unit stuck form is hundreds of characters: the legend shortens it, the layout holds (no warning)."""
    long_form = "y = " + " + ".join(f"0.{i}·r(0.{i}·a − b)" for i in range(1, 10)) * 2  # 300+ characters
    first = torch.tensor([[[1.0, 0.0], [0.0, -2.0]], [[-1.0, 1.0], [0.5, 0.5]]])
    path = plot_basins(first, torch.ones(2, 2), ["found", long_form], [], "basins", tmp_path / "b.png")
    (ax,) = figures[0].axes
    labels = [c.get_label() for c in ax.collections]
    assert labels[0] == "found (1)" and labels[1] == long_form[:47].rstrip() + "… (1)"
    assert not [w for w in recwarn if "constrained_layout" in str(w.message)]
    bbox = ax.get_position()
    assert bbox.width > 0.3 and bbox.height > 0.3  # the axes keep most of the figure
    assert_drawn(path)


def test_plot_phase_diagram_puts_each_rate_in_its_cell(tmp_path, figures):
    cells = [{"panel": p, "layer_sizes": s, "lr": lr, "rate": r, "low": r / 2, "high": (1 + r) / 2}
             for p, s, lr, r in [("x1", "1-2-1", 0.1, 0.25), ("x1", "1-4-1", 0.1, 0.5), ("x1", "1-4-1", 0.3, 1.0),
                                 ("x0.5", "1-2-1", 0.3, 0.0)]]
    path = plot_phase_diagram(cells, "rates", tmp_path / "phase.png")
    panels = [ax for ax in figures[0].axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["x1", "x0.5"]
    # rows: hidden widths in order of appearance; columns: lr sorted; a cell without runs is blank (NaN)
    grids = [ax.get_images()[0].get_array().filled(np.nan) for ax in panels]
    np.testing.assert_array_equal(grids[0], [[0.25, np.nan], [0.5, 1.0]])
    np.testing.assert_array_equal(grids[1], [[np.nan, 0.0], [np.nan, np.nan]])
    assert [t.get_text() for t in panels[0].texts] == ["0.25\n(0.12–0.62)", "0.50\n(0.25–0.75)", "1.00\n(0.50–1.00)"]
    assert_drawn(path)
