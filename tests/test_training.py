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
    return [w.detach() for w in module.net.weights_of(member)], module


def _reference(task, sizes, seed, data_seed, steps, batch, lr):
    torch.manual_seed(seed)  # the notebook: manual_seed, then build nn.Linear layers
    init = [torch.nn.Linear(i, o, bias=False).weight.detach() for i, o in zip(sizes[:-1], sizes[1:])]
    stream = UniformBlocks(get_task(task), batch, steps_per_batch=1, seed=data_seed)
    batches = ((x[0], y[0]) for x, y in stream)
    return reference_sgd(init, (next(batches) for _ in range(steps)), lr)


@pytest.mark.parametrize("engine", ["fused", "torch"])
@pytest.mark.parametrize("task, members", [("add", 1), ("min", 3)])
def test_fast_path_equals_plain_autograd_sgd(run_cli, tmp_path, task, members, engine):
    steps, batch, lr = 300, 200, 0.05
    run_cli("fit", "--task", task, "--seed_everything", 5, "--model.members", members, "--model.lr", lr,
            "--model.engine", engine,
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
        assert torch.equal(a, b)  # issue 13.5: training is K-independent bit for bit
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


def test_divergence_from_a_huge_init_scale_names_the_init_scale(run_cli, tmp_path, capsys):
    """init_scale 1e30 gives a non-finite loss at the first step at lr 0.1: blaming the lr alone (and
    suggesting --model.lr 0.1, the value in use) sent a fresh user the wrong way."""
    run_cli("fit", "--task", "abs", "--model.members", 4, "--model.init_scale", 1e30, "--trainer.max_steps", 500,
            *QUIET, expect=1)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the learning rate 0.1 or the init scale 1e+30 is likely too large" in err, err
    assert "(try a smaller --model.lr or --model.init_scale)" in err


def test_divergence_of_the_only_network_stops_with_the_step(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "add", "--model.lr", 100, "--trainer.max_steps", 2000, *QUIET, expect=1)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: training diverged at step ") and "learning rate 100 is likely too large" in err
    assert "(try a smaller --model.lr)" in err  # the init scale is 1: not named
    step = int(err.split("step ")[1].split(":")[0])
    assert 1 <= step <= 100  # lr 100 explodes within a few steps
    assert not list(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))  # nothing non-finite saved


def test_one_diverging_member_does_not_kill_the_others():
    module = CircuitModule(task="abs", members=3, lr=0.1, init_seed=0)
    with torch.no_grad():
        module.net.groups[0].weights[0][1].mul_(1e15)  # member 1 will overflow
    trainer = _trainer(max_steps=300)
    from circuits_pl.data import CircuitDataModule

    trainer.fit(module, CircuitDataModule(task="abs", stream_seed=0, steps_per_batch=50))
    assert module.population.diverged_at[1] > 0 and module.population.diverged_at[[0, 2]].tolist() == [-1, -1]
    assert all(bool(torch.isfinite(w).all()) for w in module.net.parameters())  # reset to its last finite state
    assert module.population.best_member != 1 and module.global_step == 300


def _trainer(**kwargs):
    import lightning.pytorch as pl

    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, val_check_interval=2,
                      check_val_every_n_epoch=None, enable_model_summary=False, **kwargs)


def test_all_members_diverging_raises_in_python():
    module = CircuitModule(task="add", lr=100.0, init_seed=0)
    from circuits_pl.data import CircuitDataModule

    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+"):
        _trainer(max_steps=500).fit(module, CircuitDataModule(task="add", stream_seed=0))


RULES = [
    ("momentum", ["--model.momentum", 0.9, "--model.nesterov", "true"], torch.optim.SGD,
     {"momentum": 0.9, "nesterov": True}),
    ("adam", ["--model.betas", "[0.8, 0.99]", "--model.weight_decay", 0.001], torch.optim.Adam,
     {"betas": (0.8, 0.99), "weight_decay": 0.001}),
]


@pytest.mark.parametrize("engine", ["fused", "torch"])
@pytest.mark.parametrize("rule, args, torch_cls, kwargs", RULES, ids=[r[0] for r in RULES])
def test_each_rule_through_the_cli_equals_torch_optim_with_autograd(run_cli, tmp_path, rule, args, torch_cls, kwargs,
                                                                    engine):
    steps, batch, lr = 300, 200, 0.01
    run_cli("fit", "--task", "min", "--seed_everything", 5, "--model.members", 2, "--model.lr", lr,
            "--model.engine", engine,
            "--model.optimizer", rule, *args, "--data.batch_size", batch, "--data.steps_per_batch", 40,
            "--trainer.max_steps", steps, "--stop.when", "never", *QUIET)
    run = run_dirs(tmp_path)[-1]
    for k in range(2):
        got, module = _weights(run, k)
        sizes = module.hparams.layer_sizes
        torch.manual_seed(5 + k)
        layers = [torch.nn.Linear(i, o, bias=False) for i, o in zip(sizes[:-1], sizes[1:])]
        net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1])
        opt = torch_cls(net.parameters(), lr=lr, **kwargs)
        stream = iter(UniformBlocks(get_task("min"), batch, steps_per_batch=1, seed=5))
        for _ in range(steps):
            x, y = next(stream)
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x[0]), y[0]).backward()
            opt.step()
        for g, w in zip(got, [lin.weight.detach() for lin in layers]):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)  # autograd rounds the gradients differently


BLOW_UPS = {  # member 1's weights scaled so that it diverges: Adam at step 1, momentum at step 4 (mid-block)
    "adam": ({"optimizer": "adam", "lr": 0.01}, (1e30, 1.0)),
    "momentum": ({"optimizer": "momentum", "momentum": 0.9, "lr": 0.1}, (30.0, 30.0)),
}


def _diverging_run(rule, max_steps, blow_up, engine="auto"):
    """3 members on abs; with ``blow_up``, member 1's layers scaled until its updates overflow."""
    from circuits_pl.data import CircuitDataModule

    kwargs, scales = BLOW_UPS[rule]
    module = CircuitModule(task="abs", members=3, init_seed=0, engine=engine, **kwargs)
    if blow_up:
        with torch.no_grad():
            for w, scale in zip(module.net.groups[0].weights, scales):
                w[1].mul_(scale)
    trainer = _trainer(max_steps=max_steps)
    trainer.fit(module, CircuitDataModule(task="abs", stream_seed=0, steps_per_batch=50))
    states = [t for ts in trainer.optimizers[0].state_tensors() for t in ts]
    return module, list(module.net.parameters()) + states


@pytest.mark.parametrize("rule", list(BLOW_UPS))
def test_a_diverging_member_gets_its_rule_state_back_and_stays_frozen(rule):
    module, tensors = _diverging_run(rule, 300, blow_up=True)
    step = int(module.population.diverged_at[1])
    assert step > 0 and module.population.diverged_at[0] == -1 and module.population.diverged_at[2] == -1
    assert all(bool(torch.isfinite(t[1]).all()) for t in tensors)
    # the healthy members are exactly those of a run without member 1's blow-up
    for a, b in zip(tensors, _diverging_run(rule, 300, blow_up=False)[1]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    # member 1 holds its weights and rule state from before the diverging step, as a run stopped
    # there, and has not moved since under the rule (300 - step more steps)
    for a, b in zip(tensors, _diverging_run(rule, step - 1, blow_up=True)[1]):
        assert torch.equal(a[1], b[1])


def test_a_foreign_optimizer_is_refused_in_one_line():
    class WithAdam(CircuitModule):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.1)

    from circuits_pl.data import CircuitDataModule
    from circuits_pl.errors import CircuitsError

    with pytest.raises(CircuitsError, match="must return one circuits_pl.optim.MemberOptimizer.*got Adam"):
        _trainer(max_steps=100).fit(WithAdam(task="abs", members=2), CircuitDataModule(task="abs", stream_seed=0))


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "rmsprop"}, "model.optimizer must be one of sgd, momentum, adam"),
    ({"optimizer": "momentum", "momentum": 1.5}, "model.momentum must be in"),
    ({"optimizer": "adam", "betas": [0.9]}, "model.betas must be two numbers"),
    ({"optimizer": "sgd", "nesterov": True}, "model.nesterov needs"),
    ({"weight_decay": -1.0}, "model.weight_decay must be"),
])
def test_bad_optimizer_settings_are_one_line_errors(kwargs, message):
    from circuits_pl.errors import CircuitsError

    with pytest.raises(CircuitsError, match=message):
        CircuitModule(task="abs", **kwargs)


@pytest.mark.parametrize("rule", [["momentum", "--model.momentum", 0.9], ["adam"]], ids=["momentum", "adam"])
def test_resume_with_rule_state_is_bit_identical(run_cli, tmp_path, rule):
    from test_resume import _ckpt, assert_same_run

    common = ["--task", "min", "--model.members", 5, "--model.lr", 0.01, "--model.optimizer", *rule,
              "--stop.when", "never", "--data.batch_size", 200, *QUIET]
    run_cli("fit", *common, "--trainer.max_steps", 2000)
    run_cli("fit", *common, "--trainer.max_steps", 1500)  # stops between validations (every 1000)
    half = run_dirs(tmp_path)[1]
    state = _ckpt(half)["optimizer_states"][0]["state"][0]
    assert float(state["step"]) == 1500 and set(state) > {"step"}  # the rule's state is in the checkpoint
    run_cli("fit", "--config", half / "config.yaml", "--ckpt_path", half / "checkpoints" / "last.ckpt",
            "--trainer.max_steps", 2000)
    full, _, resumed = run_dirs(tmp_path)
    assert_same_run(full, resumed)
    for key, value in _ckpt(full)["optimizer_states"][0]["state"][0].items():
        assert torch.equal(value, _ckpt(resumed)["optimizer_states"][0]["state"][0][key]), key


def test_resuming_with_another_rule_is_a_one_line_error(run_cli, tmp_path, capsys):
    common = ["--task", "abs", "--model.members", 2, "--stop.when", "never", *QUIET]
    run_cli("fit", *common, "--trainer.max_steps", 100)
    ckpt = run_dirs(tmp_path)[0] / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    run_cli("fit", *common, "--trainer.max_steps", 200, "--model.optimizer", "adam", "--ckpt_path", ckpt, expect=2)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("error: the checkpoint was trained with --model.optimizer sgd, not adam: "
                   "its optimizer state cannot continue another rule")
    assert ckpt.read_bytes() == before  # the run on disk stays intact


def test_fit_freezes_the_heap_for_its_duration_only(tmp_path):
    """FrozenHeap (added by the CLI): the collector skips the imports' objects during fit, and an
    in-process caller gets its collector back afterwards, also when fit fails."""
    import gc

    import lightning.pytorch as pl

    from circuits_pl.cadence import trainer_cadence
    from circuits_pl.callbacks import FrozenHeap
    from circuits_pl.data import CircuitDataModule

    seen = []

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(gc.get_freeze_count())

        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step >= 200 and fail:
                raise RuntimeError("boom")

    for fail in (False, True):
        trainer = pl.Trainer(max_steps=200, callbacks=[FrozenHeap(), Probe()], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path, **trainer_cadence(100, 100, 100))
        module = CircuitModule(task="identity", members=2)
        data = CircuitDataModule(task="identity", steps_per_batch=100)
        if fail:
            with pytest.raises(RuntimeError, match="boom"):
                trainer.fit(module, data)
        else:
            trainer.fit(module, data)
        assert seen[-1] > 1000  # the imports' objects were frozen during training
        assert gc.get_freeze_count() == 0
