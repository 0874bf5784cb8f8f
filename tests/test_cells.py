"""Members that differ (issue 22.1): a sweep's cells trained side by side in one run, each member
bit-identical to its cell trained alone; results, metrics, checkpoints, resume and refusals."""

from __future__ import annotations

import csv
import os
import re
import sys

import pytest
import torch
import yaml
from conftest import assert_drawn, results, run_dirs

from circuits_pl.cli import main
from circuits_pl.network import GroupedMLPs, ReLUMLP
from circuits_pl.optim import MemberOptimizer, OptimizerSettings
from circuits_pl.success import wilson_interval
from circuits_pl.sweep import Cell, Sweep
from circuits_pl.train_block import TrainedMembers, train_block

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]
RULES = {"sgd": {}, "momentum": {"momentum": 0.9, "nesterov": True}, "adam": {"betas": (0.8, 0.99)}}

# two architectures x two lr x two scales: groups of two cells (their seeds start again at each cell)
SWEEP = Sweep.product([(2, 2, 1), (2, 3, 1)], [0.05, 0.2], [0.5, 1.0], members_per_cell=3)


def _blocks(n_blocks=4, steps=25, batch=60):
    gen = torch.Generator().manual_seed(11)
    for _ in range(n_blocks):
        x = torch.rand(steps, batch, 2, generator=gen) * 2 - 1
        yield x, x.amin(-1, keepdim=True)


def _group_of(sweep: Sweep, member: int) -> tuple[int, int]:
    """The group holding ``member`` and its index there, from the groups' member ranges."""
    (g,) = [g for g, group in enumerate(sweep.groups()) if group.start <= member < group.stop]
    return g, member - sweep.groups()[g].start


def _sweep_run(rule, share=None, engine="torch"):
    net = GroupedMLPs(SWEEP, seed=7)
    opt = OptimizerSettings(rule, **RULES[rule]).build([list(n.parameters()) for n in net.groups],
                                                       [g.lr for g in SWEEP.groups()])
    trained = TrainedMembers(net, opt, engine)
    start = 0
    for x, y in _blocks():
        trained.guarded_steps(x, y, x.shape[0], start, torch.zeros(SWEEP.members, dtype=torch.bool), share)
        start += x.shape[0]
    return net, opt


def _alone(cell: Cell, rule, engine="torch"):
    """The cell as a run of its own: its K members, seeds 7.., its scale, its lr, one engine."""
    net = ReLUMLP(cell.layer_sizes, SWEEP.members_per_cell, seed=7, init_scale=cell.init_scale)
    opt = MemberOptimizer(net.parameters(), rule=rule, lr=cell.lr, **RULES[rule])
    for x, y in _blocks():
        train_block(opt, len(net.weights), x.transpose(1, 2).contiguous(), y.transpose(1, 2), engine=engine)
    return net, opt


@pytest.mark.parametrize("engine", ["torch", "fused"])
@pytest.mark.parametrize("rule", list(RULES))
def test_every_member_equals_its_cell_trained_alone(rule, engine):
    """Under either engine (the fused one runs each group's own kernel, specialised to its sizes)."""
    net, opt = _sweep_run(rule, engine=engine)
    for c, cell in enumerate(SWEEP.cells):
        alone, alone_opt = _alone(cell, rule, engine)
        for m in SWEEP.members_of(c):
            k = SWEEP.seed_offset(m)
            for got, want in zip(net.parameters_of(m), alone.parameters_of(k), strict=True):
                assert torch.equal(got, want), (cell.label, m)
        g, first = _group_of(SWEEP, SWEEP.members_of(c).start)
        mine = [s[first:first + SWEEP.members_per_cell] for ss in opt.state_tensors(g) for s in ss]
        for got, want in zip(mine, [s for ss in alone_opt.state_tensors() for s in ss], strict=True):
            assert torch.equal(got, want), cell.label
    assert opt.steps_done_of(3) == alone_opt.steps_done == 100
    # before training, a x0.5 cell is its x1 cell halved, seed for seed (cells 0 and 1 share group 0)
    fresh = GroupedMLPs(SWEEP, seed=7)
    for w in fresh.groups[0].weights:
        assert torch.equal(w[:3], w[3:6] * 0.5)


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_a_process_share_across_groups_trains_only_its_members(engine):
    """MemberParallelStrategy: a share [5, 17) cuts groups 0 and 2; its members end as in the whole run."""
    whole, whole_opt = _sweep_run("adam", engine=engine)
    part, part_opt = _sweep_run("adam", share=slice(5, 17), engine=engine)
    fresh = GroupedMLPs(SWEEP, seed=7)
    for m in range(SWEEP.members):
        want = whole if 5 <= m < 17 else fresh
        for got, w in zip(part.parameters_of(m), want.parameters_of(m)):
            assert torch.equal(got, w), m
    assert all(part_opt.steps_done_of(g) == 100 for g in range(4))  # every group counts the steps


def test_init_scale_multiplies_nothing_at_one_and_scales_the_bound():
    plain = ReLUMLP((2, 4, 1), 5, bias=True, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), ReLUMLP((2, 4, 1), 5, True, 3, 1.0).parameters()))
    small = ReLUMLP((2, 4, 1), 5, bias=True, seed=3, init_scale=0.25)
    for a, b in zip(small.parameters(), plain.parameters()):
        assert torch.equal(a, b * 0.25)
    # other dtypes: member by member (nn.init's own calls); a range of members seeded from 3 again
    reference = ReLUMLP((2, 4, 1), 5, bias=True, seed=3).double()
    reference.reset_parameters(3)
    by_member = ReLUMLP((2, 4, 1), 5, bias=True, seed=3).double()
    by_member.reset_parameters(3, slice(2, 5), init_scale=0.25)
    for a, b, p in zip(by_member.parameters(), reference.parameters(), plain.parameters()):
        assert torch.equal(a[2:], b[:3] * 0.25) and torch.equal(a[:2].float(), p[:2])


# ---------------------------------------------------------------------------------------------
# Through the CLI
# ---------------------------------------------------------------------------------------------
STUDY = ["--task", "abs", "--sweep.sizes", "1-2-1,1-3-1", "--sweep.lr", "0.05,0.2", "--sweep.init_scale", "0.5,1",
         "--model.members", 3, "--data.batch_size", 100, "--trainer.val_check_interval", 200,
         "--trainer.log_every_n_steps", 100, "--stop.when", "never", *QUIET]


def _ckpt(run):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _member_tensors(ckpt, member):
    """Member ``member``'s weights and optimizer state in a checkpoint, from its hyper-parameters' cells."""
    hp = ckpt["hyper_parameters"]
    sweep = Sweep.of_run(hp["layer_sizes"] or (), hp["lr"], hp["init_scale"], hp["cells"], hp["members"])
    g, k = _group_of(sweep, member)
    state = ckpt["state_dict"]
    weights = [state[key][k] for key in sorted(state) if key.startswith(f"net.groups.{g}.weights.")]
    before = sum(len(sweep.groups()[i].layer_sizes) - 1 for i in range(g))  # parameters of earlier groups
    n = len(sweep.groups()[g].layer_sizes) - 1
    rule = ckpt["optimizer_states"][0]["state"]
    states = [v[k] for p in range(before, before + n) for key, v in sorted(rule[p].items()) if key != "step"]
    assert len(weights) == n and len(states) == n  # momentum: one buffer per weight
    return weights + states


def test_a_study_through_the_cli_equals_each_cell_run_alone(run_cli, tmp_path, capsys):
    rule = ["--model.optimizer", "momentum", "--model.momentum", 0.9]
    run_cli("fit", *STUDY, *rule, "--trainer.max_steps", 600)
    out = capsys.readouterr().out
    (study,) = run_dirs(tmp_path)
    res = results(study)
    assert [c["layer_sizes"] for c in res["cells"]] == [[1, 2, 1]] * 4 + [[1, 3, 1]] * 4
    assert res["per_member"]["cell"] == [c for c in range(8) for _ in range(3)]
    # cells 1 (the second cell of group 0: its seeds start again) and 6 (1-3-1 lr 0.2 x0.5), alone
    for c, args in ((1, ["1-2-1", 0.05, 1.0]), (6, ["1-3-1", 0.2, 0.5])):
        run_cli("fit", *STUDY[:2], *STUDY[8:], *rule, "--trainer.max_steps", 600, "--model.layer_sizes", args[0],
                "--model.lr", args[1], "--model.init_scale", args[2])
        alone = run_dirs(tmp_path)[-1]
        for k in range(3):
            got, want = _member_tensors(_ckpt(study), 3 * c + k), _member_tensors(_ckpt(alone), k)
            for a, b in zip(got, want, strict=True):
                assert torch.equal(a, b), (c, k)
        single = results(alone)
        for key in ("solved", "found", "verdict", "solved_at"):
            assert res["per_member"][key][3 * c : 3 * c + 3] == single["per_member"][key], (c, key)
        assert res["cells"][c]["found"] == single["found"] and res["cells"][c]["success_mse"] == single["success_mse"]
    # the printed summary names every cell; the figure of the diagram is drawn only with --figures
    assert out.count("found ") >= 8 and "Cells (3 seeds each" in out and "1-3-1 lr 0.2 init×0.5" in out


def test_results_metrics_and_inspect_carry_each_members_cell(run_cli, tmp_path, capsys):
    run_cli("fit", *STUDY[:-2], "--trainer.max_steps", 400, "--figures", "true")
    out = capsys.readouterr().out
    (run,) = run_dirs(tmp_path)
    res = results(run)
    assert res["layer_sizes"] is None and res["lr"] is None and res["members"] == 24 and res["members_per_cell"] == 3
    per = res["per_member"]
    for c, cell in enumerate(res["cells"]):
        mine = range(3 * c, 3 * c + 3)
        assert cell["first_member"] == 3 * c and cell["members"] == 3
        assert cell["found"] == sum(per["found"][m] for m in mine)
        assert cell["solved"] == sum(per["solved"][m] for m in mine)
        assert cell["found_rate_ci95"] == pytest.approx(wilson_interval(cell["found"], 3))
        assert cell["basins"]["table"] and sum(r["members"] for r in cell["basins"]["table"]) == 3
    assert res["found"] == sum(c["found"] for c in res["cells"])
    assert "Figure: lightning_logs/version_0/phase.png" in out
    assert_drawn(run / "phase.png")
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r["val/solved"]]
    columns = [k for k in rows[0] if k.startswith("val/solved_cell")]
    assert columns == [f"val/solved_cell{c}" for c in range(8)]
    for r in rows:  # per cell, never per member; the cells add up to the run
        assert sum(float(r[k]) for k in columns) == float(r["val/solved"])
    assert [int(float(rows[-1][k])) for k in columns] == [c["solved"] for c in res["cells"]]
    # inspect names the member's cell and seed
    run_cli("inspect", run, "--model.member", 20, "--figures", "false")
    assert "member 20 of 24" in (said := capsys.readouterr().out)
    assert "cell 6: 1-3-1 lr 0.2 init×0.5, seed 2" in said


def test_a_sweep_of_one_cell_is_a_plain_run(run_cli, tmp_path, capsys):
    common = ["--task", "add", "--model.members", 3, "--trainer.max_steps", 300, "--trainer.val_check_interval", 100,
              "--stop.when", "never", *QUIET]
    run_cli("fit", *common, "--sweep.lr", 0.3, "--sweep.init_scale", 0.5)
    swept = capsys.readouterr().out
    run_cli("fit", *common, "--model.lr", 0.3, "--model.init_scale", 0.5)
    plain = capsys.readouterr().out
    a, b = run_dirs(tmp_path)
    timing = re.compile(r"Trained .*\n|version_\d")
    assert timing.sub("", swept) == timing.sub("", plain)
    ra, rb = results(a), results(b)
    for r in (ra, rb):
        for key in ("train_seconds", "member_steps_per_second"):
            r.pop(key)
    assert ra == rb and ra["cells"][0]["init_scale"] == 0.5 and ra["lr"] == 0.3
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    assert _ckpt(a)["hyper_parameters"] == _ckpt(b)["hyper_parameters"]


@pytest.mark.parametrize("one", [["--model.init_scale", "0.5"], ["--model.lr", "0.3"],
                                 ["--model.layer_sizes", "[2, 4, 1]"]], ids=["init_scale", "lr", "layer_sizes"])
def test_an_axis_not_swept_takes_the_models_one_value(run_cli, tmp_path, one):
    """docs/study.md: ``fit --task min --sweep.sizes 2-3-1,2-8-1 --model.init_scale 0.5``: the swept axis gives
    the cells, the model's value the axis not swept (it was refused as "model.cells ... drop model.init_scale")."""
    swept = ["--sweep.lr", "0.1,0.2"] if one[0] == "--model.layer_sizes" else ["--sweep.sizes", "2-3-1,2-8-1"]
    run_cli("fit", "--task", "min", *swept, *one, "--model.members", 2, "--trainer.max_steps", 200,
            "--trainer.val_check_interval", 100, "--stop.when", "never", *QUIET)
    (run,) = run_dirs(tmp_path)
    cells = results(run)["cells"]
    key, value = one[0].removeprefix("--model."), yaml.safe_load(one[1])
    assert len(cells) == 2 and all(c[key] == value for c in cells)


def test_a_study_stops_when_every_cell_has_a_solved_member(run_cli, tmp_path):
    run_cli("fit", "--task", "abs", "--sweep.sizes", "1-2-1,1-4-1", "--sweep.lr", "0.01,0.1", "--model.members", 4,
            "--data.batch_size", 200, "--trainer.val_check_interval", 100, "--trainer.max_steps", 5000, *QUIET)
    (run,) = run_dirs(tmp_path)
    res = results(run)
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r["val/solved"]]
    unsolved = [float(r["val/unsolved_cells"]) for r in rows]
    assert unsolved[-1] == 0 and all(u > 0 for u in unsolved[:-1])  # the first validation with none left
    assert res["stopped_when_solved"] and res["steps"] == int(float(rows[-1]["step"])) == 2100  # lr 0.01: slow
    for r in rows:
        assert float(r["val/unsolved_cells"]) == sum(float(r[f"val/solved_cell{c}"]) == 0 for c in range(4))


def test_a_config_file_holds_the_sweep_and_config_yaml_the_cells(run_cli, tmp_path):
    (tmp_path / "study.yaml").write_text("task: abs\nsweep:\n  sizes: [[1, 2, 1], [1, 3, 1]]\n  lr: 0.05,0.2\n"
                                         "model:\n  members: 2\ntrainer:\n  max_steps: 300\n"
                                         "  val_check_interval: 100\nstop:\n  when: never\n")
    run_cli("fit", "--config", tmp_path / "study.yaml", *QUIET)
    (first,) = run_dirs(tmp_path)
    import yaml

    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["sweep"] == {"sizes": None, "lr": None, "init_scale": None}  # resolved into the cells, once
    assert [(c["layer_sizes"], c["lr"]) for c in saved["model"]["cells"]] == [
        ([1, 2, 1], 0.05), ([1, 2, 1], 0.2), ([1, 3, 1], 0.05), ([1, 3, 1], 0.2)]
    run_cli("fit", "--config", first / "config.yaml")  # the run again, from its own config
    again = run_dirs(tmp_path)[-1]
    ca, cb = _ckpt(first), _ckpt(again)
    assert all(torch.equal(v, cb["state_dict"][k].nan_to_num(-7.0)) or torch.equal(v.nan_to_num(-7.0),
               cb["state_dict"][k].nan_to_num(-7.0)) for k, v in ca["state_dict"].items())
    assert results(first)["per_member"] == results(again)["per_member"]


def test_a_study_resumed_off_block_equals_one_that_never_stopped(run_cli, tmp_path):
    common = [*STUDY, "--model.optimizer", "adam"]
    run_cli("fit", *common, "--trainer.max_steps", 1000)
    run_cli("fit", *common, "--trainer.max_steps", 550, "--data.steps_per_batch", 100)  # inside a block of 200
    whole, half = run_dirs(tmp_path)
    assert _ckpt(half)["global_step"] == 550
    run_cli("fit", "--config", half / "config.yaml", "--ckpt_path", half / "checkpoints" / "last.ckpt",
            "--trainer.max_steps", 1000, "--data.steps_per_batch", 200)
    resumed = run_dirs(tmp_path)[-1]
    ca, cb = _ckpt(whole), _ckpt(resumed)
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key in ca["state_dict"]:  # NaN: history not yet filled
        assert torch.equal(ca["state_dict"][key].nan_to_num(-7.0), cb["state_dict"][key].nan_to_num(-7.0)), key
    assert str(ca["optimizer_states"][0]) == str(cb["optimizer_states"][0])
    assert [g["lr"] for g in cb["optimizer_states"][0]["param_groups"]] == [0.05, 0.2, 0.05, 0.2]
    assert results(whole)["per_member"] == results(resumed)["per_member"]
    assert results(whole)["cells"] == results(resumed)["cells"]


# ---------------------------------------------------------------------------------------------
# Refusals: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------
def _call(argv, cwd) -> int:
    old, old_argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["circuits_pl"]
    try:
        main([str(a) for a in argv])
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(old)
        sys.argv = old_argv


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A study of 2 cells and a plain run, 200 steps each."""
    root = tmp_path_factory.mktemp("cells")
    base = ["fit", "--task", "abs", "--model.members", 2, "--trainer.max_steps", 200, *QUIET]
    assert _call([*base, "--sweep.lr", "0.1,0.3"], root) == 0
    assert _call(base, root) == 0
    study, plain = run_dirs(root)
    return {"study": study / "checkpoints" / "last.ckpt", "plain": plain / "checkpoints" / "last.ckpt"}


ABS = ["fit", "--task", "abs"]
REFUSED = [
    ([*ABS, "--sweep.lr", "0.1,0"], r"--sweep.lr '0.1,0' must be positive numbers"),
    ([*ABS, "--sweep.lr", "0.1,-3"], r"--sweep.lr '0.1,-3' must be positive numbers"),
    ([*ABS, "--sweep.sizes", "1-0-1,1-2-1"], r"--sweep.sizes item '1-0-1' needs input-hidden...-1 with positive"),
    ([*ABS, "--sweep.sizes", "2-4-1"], r"--sweep.sizes item '2-4-1' starts with 2 inputs; the task has 1"),
    ([*ABS, "--sweep.sizes", "1-4"], r"--sweep.sizes item '1-4' needs input-hidden...-1"),
    ([*ABS, "--sweep.init_scale", "0,1"], r"--sweep.init_scale '0,1' must be positive numbers"),
    ([*ABS, "--model.init_scale", "-1"], r"model.init_scale must be a positive number, got -1"),
    ([*ABS, "--sweep.lr", "0.1,0.3", "--model.lr", "0.2"], r"--sweep.lr and --model.lr both give the lr: choose one"),
    ([*ABS, "--sweep.sizes", "1-2-1,1-4-1", "--model.layer_sizes", "1-3-1"],
     r"--sweep.sizes and --model.layer_sizes both give the layer sizes: choose one"),
    ([*ABS, "--sweep.init_scale", "0.5", "--model.init_scale", "2"], r"--sweep.init_scale and --model.init_scale both"),
    ([*ABS, "--sweep.lr", "0.1,0.3", "--model.cells", '[{"layer_sizes": [1, 2, 1], "lr": 0.1}]'],
     r"--sweep.lr and model.cells both give the cells: choose one"),
    ([*ABS, "--model.cells", '[{"layer_sizes": [1, 2, 1], "lr": 0.1}]', "--model.lr", "0.3"],
     r"model.cells gives every cell's layer sizes, lr and init_scale: drop model.lr"),
    ([*ABS, "--model.cells", '[{"layer_sizes": [1, 2, 1]}]'], r"a cell is a mapping with layer_sizes, lr"),
    ([*ABS, "--model.cells", '[{"layer_sizes": [2, 2, 1], "lr": 0.1}]'], r"the first size must be 1"),
    ([*ABS, "--sweep.lr", "0.1,0.3", "--model.members", "0"], r"model.members must be a positive integer, got 0"),
    # resumed runs: the cells and architecture are the checkpoint's
    (["fit", "--ckpt_path", "study.ckpt", "--sweep.lr", "0.1,0.2"], r"trains 2 cells .*, not 2 cells .*drop --sweep"),
    (["fit", "--ckpt_path", "study.ckpt", "--sweep.lr", "0.1"], r"trains 2 cells .*, not a 1-2-1 network at lr 0.1"),
    (["fit", "--ckpt_path", "plain.ckpt", "--sweep.lr", "0.1,0.3"], r"trains a 1-2-1 network at lr 0.1, not 2 cells"),
    (["fit", "--ckpt_path", "plain.ckpt", "--sweep.init_scale", "0.5"], r"trains a 1-2-1 network at lr 0.1, not a "
                                                                         r"1-2-1 network at lr 0.1, init scale 0.5"),
    (["fit", "--ckpt_path", "plain.ckpt", "--model.init_scale", "0.5"], r"has model.init_scale 1.0, not 0.5"),
    (["fit", "--ckpt_path", "study.ckpt", "--model.layer_sizes", "1-4-1"],
     r"holds 2 cells .*, not 1-4-1: drop --model.layer_sizes"),
    (["fit", "--ckpt_path", "study.ckpt", "--model.lr", "0.5"], r"its cells fix each member's lr; drop --model.lr"),
    (["validate", "--ckpt_path", "study.ckpt", "--model.member", "4"], r"model.member 4 is out of range: .* 4 member"),
]


@pytest.mark.parametrize("argv, message", REFUSED, ids=[" ".join(a)[:70] for a, _ in REFUSED])
def test_bad_cells_are_one_line_exit_2_and_write_nothing(tmp_path, checkpoints, capsys, argv, message):
    for name, path in checkpoints.items():
        (tmp_path / f"{name}.ckpt").write_bytes(path.read_bytes())
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert _call(argv, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_study_checkpoint_resumes_with_its_cells_and_validates_a_member(tmp_path, checkpoints, capsys):
    capsys.readouterr()
    assert _call(["validate", "--ckpt_path", checkpoints["study"], "--model.member", 3, *QUIET], tmp_path) == 0
    assert "validate: member 3 of 4 (--model.member)" in capsys.readouterr().out
    assert _call(["fit", "--ckpt_path", checkpoints["study"], "--trainer.max_steps", 300, *QUIET], tmp_path) == 0
    run = run_dirs(tmp_path)[-1]  # validate wrote its own version_N before
    assert [c["lr"] for c in results(run)["cells"]] == [0.1, 0.3] and results(run)["steps"] == 300


# ---------------------------------------------------------------------------------------------
# Member parallelism: a process's share cuts a group; nothing depends on the number of processes
# ---------------------------------------------------------------------------------------------
DDP_STUDY = ["fit", "--task", "add", "--sweep.sizes", "2-2-1,2-3-1,2-4-1", "--sweep.init_scale", "0.5,1",
             "--model.members", 3, "--model.optimizer", "momentum", "--data.batch_size", 200, "--stop.when", "never",
             "--trainer.accelerator", "cpu", *QUIET]  # 18 members in 3 groups [0, 6), [6, 12), [12, 18)


def _ddp_fit(cwd, *args, devices=1):
    import subprocess

    cmd = [sys.executable, "-m", "circuits_pl", *map(str, args), "--trainer.devices", str(devices)]
    if devices > 1:
        cmd += ["--trainer.strategy", "ddp"]  # ranks' shares [0, 9) and [9, 18): group 1 cut in two
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _same_study(a, b):
    ca, cb = _ckpt(a), _ckpt(b)
    assert ca["global_step"] == cb["global_step"] and ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value.nan_to_num(-7.0), cb["state_dict"][key].nan_to_num(-7.0)), key
    assert str(ca["optimizer_states"][0]) == str(cb["optimizer_states"][0])
    assert results(a)["per_member"] == results(b)["per_member"] and results(a)["cells"] == results(b)["cells"]


def test_a_study_on_two_ranks_trains_every_member_as_one_process(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _ddp_fit(tmp_path / "one", *DDP_STUDY, "--trainer.max_steps", 1000)
    _ddp_fit(tmp_path / "two", *DDP_STUDY, "--trainer.max_steps", 1000, devices=2)
    (one,) = run_dirs(tmp_path / "one")
    (two,) = run_dirs(tmp_path / "two")
    _same_study(one, two)


@pytest.mark.slow
def test_a_study_saved_on_two_ranks_resumes_on_one(tmp_path):
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    _ddp_fit(tmp_path / "whole", *DDP_STUDY, "--trainer.max_steps", 2000)
    _ddp_fit(tmp_path / "parts", *DDP_STUDY, "--trainer.max_steps", 1000, devices=2)
    (first,) = run_dirs(tmp_path / "parts")
    _ddp_fit(tmp_path / "parts", "fit", "--config", first / "config.yaml", "--ckpt_path",
             first / "checkpoints" / "last.ckpt", "--trainer.max_steps", 2000)
    (whole,) = run_dirs(tmp_path / "whole")
    _same_study(whole, run_dirs(tmp_path / "parts")[1])
