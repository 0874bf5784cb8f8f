"""Each figure is written as a real, non-empty PNG, also from sparse or partial metrics files."""

from __future__ import annotations

import pytest
import torch

from circuits_pl.plots import plot_circuit, plot_function, plot_losses, read_metrics
from circuits_pl.readout import canonicalize
from circuits_pl.tasks import BUILTIN_TASKS, Task, embed_circuit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# CSVLogger layout: one row per logging call, so train and val metrics sit on different rows.
METRICS_CSV = """epoch,step,train/mse,train/median_mse,val/mse,val/median_mse,val/solved
0,100,0.5,0.6,,,
0,200,0.1,0.3,,,
0,200,,,0.09,0.25,1
0,300,0.0,0.2,,,
0,300,,,0.0,0.2,2
"""


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_read_metrics_skips_empty_cells(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    series = read_metrics(csv_path)
    assert series["val/mse"] == ([200.0, 300.0], [0.09, 0.0])
    assert series["train/mse"][0] == [100.0, 200.0, 300.0]


@pytest.mark.parametrize("content", [
    METRICS_CSV,
    "step,train/mse\n100,0.5\n200,\n300,0.1\n",  # no validation, no medians
    "step,val/solved\n100,1\n",  # no MSE column at all
])
def test_plot_losses_writes_png(tmp_path, content):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(content)
    out = plot_losses(csv_path, tmp_path / "figs" / "losses.png")
    assert out == tmp_path / "figs" / "losses.png"
    assert_png(out)


@pytest.mark.parametrize("name, sizes", [("abs", (1, 2, 1)), ("identity", (1, 2, 2, 1)), ("min", (2, 3, 1)),
                                         ("max", (2, 3, 2, 1))])
def test_plot_function_writes_png(tmp_path, name, sizes):
    task = BUILTIN_TASKS[name]
    assert_png(plot_function(task.circuit_weights(sizes), task, tmp_path / "function.png"))


def test_plot_function_skips_more_than_two_inputs(tmp_path):
    task = Task("sum3", lambda a, b, c: a + b + c, 3, "a + b + c", (3, 2, 1))
    assert plot_function([torch.ones(2, 3), torch.ones(1, 2)], task, tmp_path / "f.png") is None
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("merged", [False, True])
def test_plot_circuit_writes_png(tmp_path, merged):
    task = BUILTIN_TASKS["min"]
    weights = embed_circuit(task.circuits[0].weights, (2, 4, 2, 1))  # a zero (dead) unit in layer 1
    assert_png(plot_circuit(canonicalize(weights), task, tmp_path / "circuit.png", merged=merged))
