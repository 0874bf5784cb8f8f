"""Training through the real CLI equals the notebook's plain autograd loop; it solves the tasks."""

import pytest
import torch
from conftest import reference_sgd, results, run_dirs

from circuits_pl.data import UniformBlocks
from circuits_pl.errors import TrainingDiverged
from circuits_pl.module import CircuitModule
from circuits_pl.tasks import get_task

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]


def _weights(run, member):
    module = CircuitModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    return [w[member].detach() for w in module.net.weights], module


def _reference(task, sizes, seed, data_seed, steps, batch, lr):
    torch.manual_seed(seed)  # the notebook: manual_seed, then build nn.Linear layers
    init = [torch.nn.Linear(i, o, bias=False).weight.detach() for i, o in zip(sizes[:-1], sizes[1:])]
    stream = UniformBlocks(get_task(task), batch, steps_per_batch=1, seed=data_seed)
    batches = ((x[0], y[0]) for x, y in stream)
    return reference_sgd(init, (next(batches) for _ in range(steps)), lr)


@pytest.mark.parametrize("task, members", [("add", 1), ("min", 3)])
def test_fast_path_equals_plain_autograd_sgd(run_cli, tmp_path, task, members):
    steps, batch, lr = 300, 200, 0.05
    run_cli("fit", "--task", task, "--seed_everything", 5, "--model.members", members, "--model.lr", lr,
            "--data.batch_size", batch, "--data.steps_per_batch", 40, "--trainer.max_steps", steps,
            "--stop.when", "never", *QUIET)
    run = run_dirs(tmp_path)[-1]
    for k in range(members):
        got, module = _weights(run, k)
        want = _reference(task, module.hparams.layer_sizes, 5 + k, 5, steps, batch, lr)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert results(run)["steps"] == steps


def test_member_k_equals_a_single_run_with_seed_plus_k(run_cli, tmp_path):
    common = ["--task", "abs", "--trainer.max_steps", 400, "--stop.when", "never", "--data.batch_size", 100, *QUIET]
    run_cli("fit", *common, "--model.members", 4)
    run_cli("fit", *common, "--model.members", 1, "--model.init_seed", 2)
    ensemble, single = run_dirs(tmp_path)
    for a, b in zip(_weights(ensemble, 2)[0], _weights(single, 0)[0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    res_e, res_s = results(ensemble), results(single)
    assert res_e["per_member"]["val_mse"][2] == pytest.approx(res_s["per_member"]["val_mse"][0], rel=1e-4)


@pytest.mark.parametrize("task", ["identity", "add", "subtract"])
def test_fit_solves_the_task_exactly(run_cli, tmp_path, task):
    run_cli("fit", "--task", task, "--model.members", 4, "--trainer.max_steps", 3000, *QUIET)
    res = results(run_dirs(tmp_path)[-1])
    best = res["best_member"]
    assert res["solved"] >= 1 and res["per_member"]["solved"][best]
    assert res["per_member"]["val_mse"][best] < res["success_mse"] < 1e-9
    assert res["per_member"]["test_mse"][best] < 1e-9


def test_divergence_of_the_only_network_stops_with_the_step(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "add", "--model.lr", 100, "--trainer.max_steps", 2000, *QUIET, expect=1)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: training diverged at step ") and "learning rate 100 is likely too large" in err
    step = int(err.split("step ")[1].split(":")[0])
    assert 1 <= step <= 100  # lr 100 explodes within a few steps
    assert not list(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))  # nothing non-finite saved


def test_one_diverging_member_does_not_kill_the_others():
    module = CircuitModule(task="abs", members=3, lr=0.1, init_seed=0)
    with torch.no_grad():
        module.net.weights[0][1].mul_(1e15)  # member 1 will overflow
    trainer = _trainer(max_steps=300)
    from circuits_pl.data import CircuitDataModule

    trainer.fit(module, CircuitDataModule(task="abs", stream_seed=0, steps_per_batch=50))
    assert module.diverged_at[1] > 0 and module.diverged_at[0] == -1 and module.diverged_at[2] == -1
    assert all(bool(torch.isfinite(w).all()) for w in module.net.weights)  # reset to its last finite state
    assert module.best_member != 1 and module.global_step == 300


def _trainer(**kwargs):
    import lightning.pytorch as pl

    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, val_check_interval=2,
                      check_val_every_n_epoch=None, enable_model_summary=False, **kwargs)


def test_all_members_diverging_raises_in_python():
    module = CircuitModule(task="add", lr=100.0, init_seed=0)
    from circuits_pl.data import CircuitDataModule

    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+"):
        _trainer(max_steps=500).fit(module, CircuitDataModule(task="add", stream_seed=0))
