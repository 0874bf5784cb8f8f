"""The fused CPU engine (circuits_pl.fused) against the torch engine: gradients and updates to float32
rounding, member k bit-identical whatever K, share or thread, and the --model.engine option."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import results, run_dirs

from circuits_pl import fused
from circuits_pl.errors import CircuitsError
from circuits_pl.network import GroupedMLPs, ReLUMLP, step_gradients
from circuits_pl.optim import MemberOptimizer, OptimizerSettings
from circuits_pl.sweep import Sweep
from circuits_pl.train_block import TrainedMembers, engine_problem, resolve_engine, run_engine, train_block

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]
HYPER = {"lr": 0.1, "weight_decay": 0.0, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
         "betas": (0.9, 0.999), "eps": 1e-8}

# one and two hidden layers, narrow and wide, one and several inputs (B = 333: no multiple of a vector)
SIZES = [(1, 2, 1), (2, 3, 1), (3, 12, 1), (1, 16, 1), (2, 3, 2, 1), (2, 5, 4, 1)]  # wider than 8: fused.WIDE


def _batch(sizes, steps, batch=333, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xt = torch.rand(steps, sizes[0], batch, generator=gen) * 2 - 1
    return xt, xt.amin(1, keepdim=True) + 0.3 * xt.sum(1, keepdim=True)


def _close(got, want, rtol=1e-5):
    """Relative ``rtol`` of the tensor's largest value (an entry that cancels to ~0 has no relative error)."""
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()) + 1e-30)


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("sizes", SIZES, ids=["-".join(map(str, s)) for s in SIZES])
def test_fused_gradients_equal_the_torch_engines(sizes, bias):
    net = ReLUMLP(sizes, members=4, bias=bias, seed=3)
    with torch.no_grad():  # biases away from their tiny init, so that they matter
        for b in net.biases:
            b.mul_(3.0)
    xt, yt = _batch(sizes, 1)
    params = list(net.parameters())
    grads = [torch.zeros_like(p) for p in params]
    fused.train_members(params, [[g] for g in grads], len(net.weights), "gradients", HYPER, xt, yt, 1, slice(0, 4))
    with torch.no_grad():  # the torch engine's gradients of this batch (xt[0]: (in, B)), as train_block asks them
        weights, biases = list(net.weights), list(net.biases)
        xs = xt[0].unsqueeze(0).expand(len(weights[0]), -1, -1)
        want = step_gradients(weights, [w.transpose(1, 2) for w in weights], biases, xs, xs.transpose(1, 2), yt[0])
    assert len(grads) == len(want)
    for g, w in zip(grads, want):
        assert w.abs().max() > 0
        _close(g, w)


RULES = [
    ("sgd", {}),
    ("sgd", {"weight_decay": 0.01}),
    ("momentum", {"momentum": 0.9}),
    ("momentum", {"momentum": 0.8, "dampening": 0.1, "weight_decay": 0.01}),
    ("momentum", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}),
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01}),
]


def _state(opt):
    return [t.clone() for ts in opt.state_tensors() for t in ts]


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("sizes", [(2, 3, 1), (2, 10, 1), (2, 3, 2, 1)], ids=["2-3-1", "2-10-1", "2-3-2-1"])
@pytest.mark.parametrize("rule, hp", RULES, ids=[f"{r}{i}" for i, (r, _) in enumerate(RULES)])
def test_each_fused_update_equals_the_torch_engines(rule, hp, sizes, bias):
    """Step by step from the same weights and state: the change of every weight and the new rule state
    agree to relative 1e-5 (lr 1: an update far above the rounding of the weight it changes)."""
    nets = [ReLUMLP(sizes, members=3, bias=bias, seed=1) for _ in range(2)]
    opts = [MemberOptimizer(n.parameters(), rule=rule, lr=1.0 if rule != "adam" else 0.1, **hp) for n in nets]
    xt, yt = _batch(sizes, 4)
    for s in range(4):
        before = [p.detach().clone() for p in nets[0].parameters()]
        for engine, net, opt in zip(("fused", "torch"), nets, opts):
            train_block(opt, len(net.weights), xt[s : s + 1], yt[s : s + 1], engine=engine)
        for pf, pt, b in zip(nets[0].parameters(), nets[1].parameters(), before):
            _close((pf - b).detach(), (pt - b).detach())
        for sf, st in zip(_state(opts[0]), _state(opts[1])):
            _close(sf, st)
        assert opts[0].steps_done == opts[1].steps_done == s + 1
        with torch.no_grad():  # the next step from the same point again: no drift between the engines
            for pf, pt in zip(nets[0].parameters(), nets[1].parameters()):
                pf.copy_(pt)
            for sf, st in zip(opts[0].state_tensors(), opts[1].state_tensors()):
                for a, b in zip(sf, st):
                    a.copy_(b)


def _fused_run(members, seed, steps=120, sizes=(2, 3, 1), rule="momentum", bias=True, share=None, threads=1,
               block=40, **hp):
    net = ReLUMLP(sizes, members=members, bias=bias, seed=seed)
    opt = MemberOptimizer(net.parameters(), rule=rule, lr=0.05, **hp)
    start = [t.detach().clone() for t in list(net.parameters()) + _state(opt)]
    xt, yt = _batch(sizes, steps, batch=200, seed=7)
    torch.set_num_threads(threads)
    try:
        for lo in range(0, steps, block):
            train_block(opt, len(net.weights), xt[lo : lo + block], yt[lo : lo + block], members=share,
                        engine="fused")
    finally:
        torch.set_num_threads(1)
    return [t.detach() for t in list(net.parameters()) + _state(opt)], start


@pytest.mark.parametrize("rule, sizes", [("momentum", (2, 3, 1)), ("adam", (2, 3, 2, 1)), ("sgd", (2, 9, 1))])
def test_member_k_is_bit_identical_whatever_k_share_threads_or_block(rule, sizes):
    whole, _ = _fused_run(7, 0, rule=rule, sizes=sizes)
    for k in (0, 4):  # a K = 1 run of seed k
        single, _ = _fused_run(1, k, rule=rule, sizes=sizes)
        for a, b in zip(whole, single):
            assert torch.equal(a[k], b[0])
    threaded, _ = _fused_run(7, 0, rule=rule, sizes=sizes, threads=3)  # members split over 3 threads
    one_step_blocks, _ = _fused_run(7, 0, rule=rule, sizes=sizes, block=1)  # as the divergence replay runs
    for a, b, c in zip(whole, threaded, one_step_blocks):
        assert torch.equal(a, b) and torch.equal(a, c)
    shared, start = _fused_run(7, 0, rule=rule, sizes=sizes, share=slice(2, 5))  # a DDP rank's share
    for a, s, w in zip(shared, start, whole):
        assert torch.equal(a[2:5], w[2:5]) and torch.equal(a[:2], s[:2]) and torch.equal(a[5:], s[5:])


def test_a_block_of_no_steps_changes_nothing():
    """A stop on a block's first step (a resumed run at its max_steps, an interrupt) hands over 0 steps."""
    net = ReLUMLP((2, 3, 1), members=2, seed=0)
    opt = MemberOptimizer(net.parameters(), rule="adam", lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    xt, yt = _batch((2, 3, 1), 1)
    train_block(opt, 2, xt[:0], yt[:0], engine="fused")
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before)) and opt.steps_done == 0


def test_fused_training_follows_the_torch_engine():
    """300 steps of 5 members: the engines stay within float32 rounding of each other."""
    xt, yt = _batch((2, 3, 1), 300, batch=200, seed=2)
    ends = []
    for engine in ("fused", "torch"):
        net = ReLUMLP((2, 3, 1), members=5, seed=0)
        opt = MemberOptimizer(net.parameters(), rule="sgd", lr=0.05)
        for lo in range(0, 300, 50):
            train_block(opt, 2, xt[lo : lo + 50], yt[lo : lo + 50], engine=engine)
        ends.append([p.detach() for p in net.parameters()])
    for a, b in zip(*ends):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The engine option
# ------------------------------------------------------------------------------------------------
def test_auto_is_fused_on_the_cpu_and_torch_elsewhere(monkeypatch):
    assert resolve_engine("auto", "cpu", (2, 3, 1)) == "fused"
    assert resolve_engine("auto", "cuda", (2, 3, 1)) == "torch"
    assert resolve_engine("auto", "cpu", (2, 3, 3, 3, 1)) == "torch"  # three hidden layers: no kernel
    assert resolve_engine("auto", "cpu", (2, 8, 8, 1)) == "fused"
    assert resolve_engine("auto", "cpu", (2, 16, 16, 1)) == "torch"  # the torch engine is faster there
    assert resolve_engine("fused", "cpu", (2, 16, 16, 1)) == "fused"  # but fused trains it if asked
    assert resolve_engine("torch", "cpu", (2, 3, 1)) == "torch"
    monkeypatch.setattr(fused, "import_error", lambda: "No module named 'numba'")
    assert resolve_engine("auto", "cpu", (2, 3, 1)) == "torch"


def test_auto_is_resolved_per_group_of_a_sweep_as_for_its_cells_alone():
    assert run_engine("auto", "cpu", [(2, 2, 1), (2, 3, 2, 1)]) == "fused"
    assert run_engine("auto", "cpu", [(2, 2, 1), (2, 16, 16, 1)]) == "auto"  # the groups differ: recorded as asked
    assert run_engine("fused", "cpu", [(2, 2, 1), (2, 16, 16, 1)]) == "fused"
    sweep = Sweep.product([(2, 2, 1), (2, 16, 16, 1), (2, 3, 3, 3, 1)], [0.1], [1.0], members_per_cell=2)
    net = GroupedMLPs(sweep)
    opt = OptimizerSettings().build([list(n.parameters()) for n in net.groups], [0.1] * 3)
    trained = TrainedMembers(net, opt, "auto")
    assert [trained.engine_of(g) for g in range(3)] == ["fused", "torch", "torch"]


def test_a_sweep_records_its_engine_and_fused_refuses_a_cell_it_cannot_train(run_cli, tmp_path, capsys):
    study = ["fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 100, *QUIET]
    run_cli(*study, "--sweep.sizes", "2-2-1,2-3-1")
    run_cli(*study, "--sweep.sizes", "2-2-1,2-3-3-3-1")
    assert [results(r)["engine"] for r in run_dirs(tmp_path)] == ["fused", "auto"]
    capsys.readouterr()
    run_cli(*study, "--sweep.sizes", "2-2-1,2-3-3-3-1", "--model.engine", "fused", expect=2)
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --model.engine fused cannot train this network (it has kernels for 1 or 2 hidden layers, and "
        "layer_sizes [2, 3, 3, 3, 1] has 3): give --model.engine torch (or auto)"]


@pytest.mark.parametrize("device, sizes, broken, message", [
    ("cuda", (2, 3, 1), False, "--model.engine fused runs on the CPU only, and this run trains on cuda: give "
                               "--model.engine torch (or auto), or --trainer.accelerator cpu"),
    ("cpu", (2, 3, 1), True, "--model.engine fused needs numba, which does not import here (No module named "
                             "'numba'): pip install numba, or give --model.engine torch (or auto)"),
    ("cpu", (2, 3, 3, 3, 1), False, "--model.engine fused cannot train this network (it has kernels for 1 or 2 "
                                    "hidden layers, and layer_sizes [2, 3, 3, 3, 1] has 3): give --model.engine "
                                    "torch (or auto)"),
])
def test_fused_where_it_cannot_run_names_the_alternative(monkeypatch, device, sizes, broken, message):
    if broken:
        monkeypatch.setattr(fused, "import_error", lambda: "No module named 'numba'")
    assert engine_problem("fused", device, sizes) == message
    with pytest.raises(CircuitsError) as err:
        resolve_engine("fused", device, sizes)
    assert str(err.value) == message


def test_fused_on_a_gpu_is_refused_in_one_line_before_anything_is_written(run_cli, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --trainer.accelerator auto would pick it
    run_cli("fit", "--task", "add", "--model.engine", "fused", *QUIET, expect=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --model.engine fused runs on the CPU only, and this run trains on cuda: give "
                   "--model.engine torch (or auto), or --trainer.accelerator cpu"]
    assert not (tmp_path / "lightning_logs").exists()


def test_fused_without_numba_is_refused_and_auto_trains_with_torch(run_cli, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fused, "import_error", lambda: "No module named 'numba'")
    run_cli("fit", "--task", "abs", "--model.engine", "fused", *QUIET, expect=2)
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --model.engine fused needs numba, which does not import here (No module named 'numba'): "
        "pip install numba, or give --model.engine torch (or auto)"]
    run_cli("fit", "--task", "abs", "--model.members", 2, "--trainer.max_steps", 100, *QUIET)
    assert results(run_dirs(tmp_path)[-1])["engine"] == "torch"


def test_an_unknown_engine_is_a_one_line_error(run_cli, capsys):
    run_cli("fit", "--task", "abs", "--model.engine", "numba", *QUIET, expect=2)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: model.engine must be one of fused, torch, auto, got 'numba'")


def _engine_of(run):
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = (run / "hparams.yaml").read_text()
    return ckpt["hyper_parameters"]["engine"], results(run)["engine"], f"engine: {results(run)['engine']}" in hparams


def test_the_engine_is_recorded_and_a_resumed_run_keeps_it(run_cli, tmp_path):
    common = ["--task", "abs", "--model.members", 3, "--stop.when", "never", *QUIET]
    run_cli("fit", *common, "--trainer.max_steps", 1000)  # auto: fused here
    run_cli("fit", *common, "--trainer.max_steps", 1000, "--model.engine", "torch")
    auto, torch_run = run_dirs(tmp_path)
    assert _engine_of(auto) == ("fused", "fused", True)
    assert _engine_of(torch_run) == ("torch", "torch", True)
    run_cli("fit", *common, "--trainer.max_steps", 1500, "--ckpt_path", torch_run / "checkpoints" / "last.ckpt")
    assert _engine_of(run_dirs(tmp_path)[-1])[:2] == ("torch", "torch")  # the checkpoint's engine
    run_cli("fit", *common, "--trainer.max_steps", 1500, "--ckpt_path", torch_run / "checkpoints" / "last.ckpt",
            "--model.engine", "fused")
    assert _engine_of(run_dirs(tmp_path)[-1])[:2] == ("fused", "fused")  # unless the user asks for another


def test_a_fused_run_resumed_equals_one_never_stopped(run_cli, tmp_path):
    from test_resume import assert_same_run

    common = ["--task", "min", "--model.members", 5, "--model.optimizer", "adam", "--model.lr", 0.01,
              "--model.bias", "true", "--stop.when", "never", "--data.batch_size", 200, *QUIET]
    run_cli("fit", *common, "--trainer.max_steps", 2000)
    run_cli("fit", *common, "--trainer.max_steps", 1300)
    half = run_dirs(tmp_path)[1]
    run_cli("fit", "--config", half / "config.yaml", "--ckpt_path", half / "checkpoints" / "last.ckpt",
            "--trainer.max_steps", 2000)
    full, _, resumed = run_dirs(tmp_path)
    assert results(full)["engine"] == results(resumed)["engine"] == "fused"
    assert_same_run(full, resumed)


@pytest.mark.parametrize("rule", ["adam", "momentum"])
def test_a_diverging_member_is_frozen_at_the_same_step_by_both_engines(rule):
    from test_training import _diverging_run

    fused_module, fused_tensors = _diverging_run(rule, 300, blow_up=True, engine="fused")
    torch_module, _ = _diverging_run(rule, 300, blow_up=True, engine="torch")
    assert fused_module.hparams.engine == "fused" and torch_module.hparams.engine == "torch"
    assert int(fused_module.population.diverged_at[1]) > 0
    assert torch.equal(fused_module.population.diverged_at, torch_module.population.diverged_at)
    assert all(bool(torch.isfinite(t).all()) for t in fused_tensors)


# ------------------------------------------------------------------------------------------------
# numba's cache
# ------------------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys, torch
    from circuits_pl.network import ReLUMLP
    from circuits_pl.optim import MemberOptimizer
    from circuits_pl.train_block import train_block
    {patch}
    torch.manual_seed(0)
    xt = torch.rand(40, 2, 200) * 2 - 1
    for sizes in [(2, 3, 1), (2, 12, 1)]:  # the one-pass kernel and the wide one (fused.WIDE)
        net = ReLUMLP(sizes, members=2, seed=0)
        opt = MemberOptimizer(net.parameters(), rule="momentum", lr=0.1, momentum=0.9)
        train_block(opt, 2, xt, xt.sum(1, keepdim=True).abs(), engine="fused")
        print(" ".join(w.detach().numpy().tobytes().hex() for w in net.weights))
    print(float(net.weights[0].sum()))
""")


def _child(tmp_path, patch="", **env):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(patch=patch))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                          env={**os.environ, **env}).stdout


def test_numba_cache_dir_is_used_and_its_kernel_computes_what_the_compiled_one_did(tmp_path):
    compiled = _child(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert list((tmp_path / "cache").rglob("fused.*.nbi")) and list((tmp_path / "cache").rglob("fused.*.nbc"))
    # a process that loads the kernel from the cache trains bit for bit as the one that compiled it (with
    # LLVM's "contract" flag they differed: see fused.FASTMATH)
    assert _child(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "cache")) == compiled


def test_with_nowhere_writable_the_kernel_is_compiled_without_a_cache(tmp_path):
    # every numba cache locator finds its directory unwritable (as a read-only install with no home)
    patch = ("import numba.core.caching as c\n"
             "def refuse(self): raise OSError('read-only')\n"
             "c._CacheLocator.ensure_cache_path = refuse\n")
    out = _child(tmp_path, patch=patch, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert math.isfinite(float(out.strip().splitlines()[-1]))  # it trained
    assert not list((tmp_path / "cache").rglob("*.nbc"))


# ------------------------------------------------------------------------------------------------
# The study's answer does not depend on the engine
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("task", ["abs", "add", "min"])
def test_found_rates_of_both_engines_agree_over_512_seeds(run_cli, tmp_path, task):
    """The study's protocol (512 seeds, 20k steps, lr 0.1): each engine's found rate lies inside the
    other's Wilson 95% interval."""
    for engine in ("fused", "torch"):
        run_cli("fit", "--task", task, "--model.members", 512, "--trainer.max_steps", 20_000, "--stop.when", "never",
                "--model.engine", engine, *QUIET)
    fused_run, torch_run = (results(r) for r in run_dirs(tmp_path))
    assert (fused_run["engine"], torch_run["engine"]) == ("fused", "torch")
    for a, b in ((fused_run, torch_run), (torch_run, fused_run)):
        lo, hi = b["found_rate_ci95"]
        assert lo <= a["found_rate"] <= hi, (task, fused_run["found"], torch_run["found"])


# ------------------------------------------------------------------------------------------------
# The first run after an install: the kernel compiles while torch and Lightning import
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, spec", [
    (["fit", "--task", "min"], fused.Spec((2, 3, 1), False, "sgd")),
    (["fit", "--task", "abs", "--model.optimizer", "adam", "--model.bias", "true"],
     fused.Spec((1, 2, 1), True, "adam")),
    (["fit", "--task", "add", "--model.layer_sizes", "[2, 8, 1]"], fused.Spec((2, 8, 1), False, "sgd")),
    (["fit", "--task", "add", "--model.layer_sizes=2-3-2-1", "--model.optimizer=momentum"],
     fused.Spec((2, 3, 2, 1), False, "momentum")),
    (["fit", "--task", "add", "--model.engine", "torch"], None),  # no kernel needed
    (["fit", "--task", "add", "--trainer.accelerator", "gpu"], None),
    (["fit", "--config", "run/config.yaml"], None),  # the command line alone does not say
    (["fit", "--task", "add", "--ckpt_path", "last.ckpt"], None),
    (["fit", "--task", "mypkg.tasks:f"], None),
    (["validate", "--task", "add"], None),
    (["fit", "--task", "add", "--model.layer_sizes", "[2, 3, 3, 3, 1]"], None),  # no kernel for it
    (["fit", "--task", "add", "--model.layer_sizes", "[2, 16, 16, 1]"], None),  # auto: torch is faster
    (["fit", "--task", "add", "--model.layer_sizes", "[2, 16, 16, 1]", "--model.engine", "fused"],
     fused.Spec((2, 16, 16, 1), False, "sgd")),
])
def test_the_kernel_a_command_line_needs_is_predicted(argv, spec):
    assert fused.spec_from_argv(argv) == spec


def test_a_fresh_cache_is_filled_by_the_first_run_and_marked(tmp_path):
    cache = tmp_path / "numba_cache"
    cmd = [sys.executable, "-m", "circuits_pl", "fit", "--task", "abs", "--model.members", "2", "--trainer.max_steps",
           "200", "--figures", "false", "--trainer.default_root_dir", str(tmp_path)]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    spec = fused.Spec((1, 2, 1), False, "sgd")
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    assert list(cache.rglob("fused._one_hidden*.nbc")) and list(cache.glob(f"circuits_pl-fused-{spec.key}-*.warm"))
    subprocess.run(cmd, check=True, capture_output=True, env=env)  # warm: loaded from the cache
    first, second = run_dirs(tmp_path)
    assert results(first)["engine"] == results(second)["engine"] == "fused"
    assert results(first)["per_member"]["val_mse"] == results(second)["per_member"]["val_mse"]


def test_the_fused_draws_are_torchs_stream_bit_for_bit():
    """circuits_pl.fused.fill_uniform reproduces torch's generator; the stream is the same whatever draws it."""
    from circuits_pl.stream import UniformBlocks, fill_uniform
    from circuits_pl.tasks import get_task

    for seed in (0, 1, 2**32 + 5, 2**64 - 1, 0x9E3779B97F4A7C15):
        for n in (1, 623, 624, 625, 1249, 20_000):
            want, got = torch.empty(n), torch.empty(n)
            fill_uniform(want, seed)
            fused.fill_uniform(got, seed)
            assert torch.equal(got, want), (seed, n)
    for task, cone in (("min", None), ("abs", [1.0])):
        streams = [UniformBlocks(get_task(task), 300, 40, seed=9, start_step=13, cone=cone, draws=d)
                   for d in ("torch", "fused")]
        for (xa, ya), (xb, yb), _ in zip(*streams, range(3)):  # a partial first block, then whole ones
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
