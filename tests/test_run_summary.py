"""The end of fit from plain Python: RunSummary gives a Trainer.fit what the CLI's fit gets."""

import json

import lightning.pytorch as pl
import pytest
import torch
from conftest import assert_drawn

from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.module import CircuitModule
from circuits_pl.run_summary import RunSummary


def _fit(tmp_path, logger):
    module = CircuitModule(task="add", members=6, lr=0.1, init_seed=0)
    data = CircuitDataModule(task="add", stream_seed=0)
    summary = RunSummary(figures=True)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=2000, val_check_interval=10,
                         check_val_every_n_epoch=None, enable_progress_bar=False, logger=logger,
                         enable_checkpointing=False, callbacks=[summary, StopWhenSolved("never")])
    trainer.fit(module, data)
    return module, data, summary


def test_run_summary_from_plain_trainer_fit_writes_results_and_figures(tmp_path):
    module, data, summary = _fit(tmp_path, pl.loggers.CSVLogger(tmp_path))
    run = tmp_path / "lightning_logs" / "version_0"
    res = json.loads((run / "results.json").read_text())
    assert res == json.loads(json.dumps(summary.results))
    per = res["per_member"]
    # solved: decided on the exact MSE over the box, which a fine midpoint grid of the final weights confirms
    assert res["decided_on"] == "exact MSE over [-1, 1]²"
    assert res["solved"] == sum(v < res["success_mse"] for v in per["box_mse"])
    g = (torch.arange(400, dtype=torch.float64) + 0.5) / 200 - 1
    grid = torch.cartesian_prod(g, g)
    for k in range(6):
        out = grid
        weights = [w.detach() for w in module.net.weights_of(k)]
        for layer, w in enumerate(weights):
            out = out @ w.double().T
            out = out.relu() if layer < len(weights) - 1 else out
        mse = float((out[:, 0] - grid.sum(1)).square().mean())
        assert per["box_mse"][k] == pytest.approx(mse, rel=2e-2, abs=1e-15)  # the grid misses thin creases
    # test MSE against plain arithmetic on the final weights
    x, y = data.fixed_set("test").tensors
    for k in range(6):
        with torch.no_grad():
            mse = float((module.net(x, member=k).double() - y.double()).square().mean())
        torch.testing.assert_close(per["test_mse"][k], mse, rtol=1e-4, atol=1e-12)
    assert "_instantiator" not in res["data"]
    for name in ("losses.png", f"function_member{res['best_member']}.png", f"circuit_member{res['best_member']}.png"):
        assert_drawn(run / name)
    assert "test/mse" in (run / "metrics.csv").read_text().splitlines()[0]


def test_figures_do_not_depend_on_the_logger(tmp_path):
    module, _, summary = _fit(tmp_path, False)  # no logger: no metrics.csv, still loss curves
    assert not list(tmp_path.rglob("metrics.csv"))
    assert_drawn(tmp_path / "losses.png", (6.4 * 110, 4.0 * 110))
    steps, values = module.population.loss_history["val/mse"]
    assert steps == [1000.0, 2000.0] and len(values) == 2


def test_the_stopped_early_line_names_converging_members_only_when_there_are_some(run_cli, capsys):
    from circuits_pl.run_summary import stopped_early_line

    # abs 1-4-1 stops at its first solved validation with no member still converging
    run_cli("fit", "--task", "abs", "--model.layer_sizes", "1-4-1", "--trainer.enable_progress_bar", "false",
            "--figures", "false")
    out = capsys.readouterr().out
    assert "Stopped early by --stop.when. For success rates over a whole budget: --stop.when never" in out, out
    assert "0 member(s)" not in out

    none = stopped_early_line(["converged", "stuck", "stuck"])
    assert none == "Stopped early by --stop.when. For success rates over a whole budget: --stop.when never"
    some = stopped_early_line(["converged", "converging", "converging", "stuck"])
    assert some == ("Stopped early by --stop.when: 2 member(s) had found the circuit and were still converging. "
                    "For success rates over a whole budget: --stop.when never")
