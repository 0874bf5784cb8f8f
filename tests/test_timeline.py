"""The timeline: every member's circuit at every validation, named as the full readout names it."""

import csv
import json
import math
import random
from fractions import Fraction

import lightning.pytorch as pl
import pytest
import torch
from conftest import results, run_dirs
from scipy.stats import binom

from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.errors import CircuitsError
from circuits_pl.module import CircuitModule
from circuits_pl.readout import describe_member
from circuits_pl.readout.snap import UNIT, Snapper, circuit_name, snap_fractions
from circuits_pl.report import timeline_markdown
from circuits_pl.success import median_interval
from circuits_pl.tasks import get_task
from circuits_pl.timeline import Timeline, path_text
from circuits_pl.verdicts import FORMED_VALIDATIONS, Trend, projected_step, verdict

QUIET = ["--trainer.enable_progress_bar", "false"]


def test_snapped_fractions_are_the_readouts_simple_fractions():
    rng = random.Random(0)
    values = [rng.uniform(-3, 3) for _ in range(2000)] + [0.0, 1.0, -1.0, 0.5, 1 / 3, -2 / 7, 11 / 12]
    units, gaps = snap_fractions(torch.tensor(values, dtype=torch.float64))
    for v, u, g in zip(values, units.tolist(), gaps.tolist()):
        want = Fraction(v).limit_denominator(12)
        assert Fraction(u, UNIT) == want, v
        assert g == pytest.approx(abs(v - float(want)), abs=1e-12)


def _net(task: str, w1, w2):
    return [torch.tensor(w1, dtype=torch.float64), torch.tensor([w2], dtype=torch.float64)]


# (task, first layer, output weights, the name the readout gives)
HAND_BUILT = [
    ("min", [[1, 0], [-1, 0], [1, -1]], [1, -1, -1], "r(a) − r(−a) − r(a − b)"),
    ("min", [[0, 1], [0, -1], [-1, 1]], [1, -1, -1], "r(b) − r(−b) − r(b − a)"),
    # permuted, every unit rescaled (r(s·z) = s·r(z)), one unit split in two, a silent unit
    ("min", [[2, -2], [0, 0.5], [-3, 0], [0.7, 0], [1.2, 0], [0.01, 0.9]], [-0.5, 0, -1 / 3, 0.4 / 0.7, 0.5, 0.003],
     "r(a) − r(−a) − r(a − b)"),
    ("min", [[1, 0], [-1, 0], [1, -1]], [1.005, -0.995, -1.004], "r(a) − r(−a) − r(a − b)"),  # within 1e-2
    ("min", [[1, 1], [-1, -1], [1, -1], [-1, 1]], [0.5, -0.5, -0.5, -0.5],
     "0.5 r(a + b) − 0.5 r(−a − b) − 0.5 r(a − b) − 0.5 r(b − a)"),
    # the same function through units no rule lists: named by its form
    ("min", [[1, 0], [-1, 0], [0, 1], [0, -1], [1, -1], [-1, 1]], [0.5, -0.5, 0.5, -0.5, -0.5, -0.5],
     "½(a + b) − ½|a − b|"),
    ("add", [[1, 1], [-1, -1]], [1, -1], "r(a + b) − r(−a − b)"),
    ("add", [[1, 0], [-1, 0], [0, 1], [0, -1]], [1, -1, 1, -1], "a + b"),
    ("add", [[1, 1]], [1], "½(a + b) + ½|a + b|"),  # stuck on a half-plane: r(a + b)
    # near kinks cancel (0.15·|a + 0.975·b| − 0.15·|0.985·a + b|); as printed at 1 decimal, the listed circuit
    ("add", [[1, 1], [-1, -1], [1, 0.975], [-1, -0.975], [0.985, 1], [-0.985, -1]], [1, -1, 0.15, 0.15, -0.15, -0.15],
     "r(a + b) − r(−a − b)"),
    ("abs", [[1], [-1]], [1, 1], "r(x) + r(−x)"),
    ("abs", [[1], [-1], [0.5]], [0.6, 1, 0.8], "r(x) + r(−x)"),
    ("identity", [[1], [-1]], [1, -1], "r(x) − r(−x)"),
    ("identity", [[1]], [0.004], "0"),  # everything silent
    ("min", [[0.31, -1], [-1, 0.23], [0.77, 1]], [-0.61, -0.43, 0.37], "none"),
    ("add", [[0, 0], [0, 0]], [1, 1], "0"),  # dead units
]


@pytest.mark.parametrize("task,w1,w2,name", HAND_BUILT, ids=[f"{h[0]}-{i}" for i, h in enumerate(HAND_BUILT)])
def test_hand_built_nets_are_named_as_the_readout_names_them(task, w1, w2, name):
    t = get_task(task)
    net = _net(task, w1, w2)
    full = circuit_name(describe_member(net, t, to_formula=False))
    snapper = Snapper(t, (t.arity, len(w1), 1))
    (fast,) = snapper.names(snapper.keys([w[None] for w in net]))
    assert fast == full
    assert full[0] == name


def test_members_are_named_whatever_else_shares_the_batch():
    """A member's key is its own: the same net named alone, or among others in any order."""
    t = get_task("min")
    nets = [_net("min", w1, w2) for task, w1, w2, _ in HAND_BUILT if task == "min" and len(w1) == 3]
    snapper = Snapper(t, (2, 3, 1))
    stacked = [torch.stack(ws) for ws in zip(*nets)]
    together = snapper.names(snapper.keys(stacked))
    alone = [snapper.names(snapper.keys([w[None] for w in net]))[0] for net in nets]
    assert together == alone
    backwards = snapper.names(snapper.keys([w.flip(0) for w in stacked]))
    assert backwards == together[::-1]


class Recorder(pl.Callback):
    def __init__(self):
        self.weights = []

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking and trainer.global_step > 0:
            self.weights.append([w.detach().clone() for w in module.net.groups[0].weights])


def _train(task: str, sizes: list[int], members: int, lr: float, steps: int, every: int = 500):
    module = CircuitModule(task=task, layer_sizes=sizes, members=members, lr=lr, init_seed=0)
    data = CircuitDataModule(task=task, stream_seed=0, steps_per_batch=every)
    rec = Recorder()
    pl.Trainer(max_steps=steps, val_check_interval=1, check_val_every_n_epoch=None, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               num_sanity_val_steps=0, callbacks=[rec, StopWhenSolved("never")]).fit(module, data)
    return module, data, rec


@pytest.mark.parametrize("task,sizes,members,lr,steps", [
    ("min", [2, 3, 1], 48, 0.1, 4000),  # exact circuits, stuck forms, and members on their way
    ("add", [2, 4, 1], 16, 0.3, 3000),  # spread circuits
    ("abs", [1, 2, 1], 16, 0.1, 1500),  # stuck members
])
def test_every_member_at_every_validation_is_named_as_the_full_readout_names_it(task, sizes, members, lr, steps):
    module, data, rec = _train(task, sizes, members, lr, steps)
    x = data.fixed_set("test").tensors[0].double()
    timeline = module.timeline
    assert len(rec.weights) == len(timeline.steps) == steps // 500
    names = set()
    for v, weights in enumerate(rec.weights):
        for k in range(members):
            full = circuit_name(describe_member([w[k] for w in weights], module.task, x, to_formula=False))
            code = int(timeline.codes[v, k])
            assert (timeline.names[code], timeline.exact[code]) == full, (v, k)
            names.add(full[0])
    assert len(names) >= 2  # more than one circuit along the way (none, then circuits)


def test_two_hidden_layers_are_named_by_the_full_readout():
    module, data, rec = _train("abs", [1, 4, 4, 1], 8, 0.1, 1500)
    x = data.fixed_set("test").tensors[0].double()
    assert module.timeline.modes == ["readout"]
    for v, weights in enumerate(rec.weights):
        for k in range(8):
            full = circuit_name(describe_member([w[k] for w in weights], module.task, x, to_formula=False))
            assert module.timeline.names[int(module.timeline.codes[v, k])] == full[0]


def test_formed_at_paths_and_transitions_follow_the_recorded_names():
    t = Timeline(get_task("add"), [((2, 2, 1), 3)])
    stuck, exact = _net("add", [[1, 1], [0.3, 1]], [1, 0.0]), _net("add", [[1, 1], [-1, -1]], [1, -1])
    noise = _net("add", [[0.31, -1], [-1, 0.23]], [-0.61, -0.43])
    schedule = [  # member -> net per validation
        [noise, noise, noise],
        [stuck, noise, exact],
        [exact, stuck, exact],
        [exact, stuck, exact],
    ]
    for v, nets in enumerate(schedule):
        weights = [torch.stack([n[i] for n in nets]) for i in range(2)]
        t.record(1000 * (v + 1), [weights], torch.full((3,), 0.1 / (v + 1)))
    assert t.formed_at() == [3000, 3000, 2000]
    assert [name for name, _ in t.path(0)] == ["none", "½(a + b) + ½|a + b|", "r(a + b) − r(−a − b)"]
    assert t.path(2) == [("none", 1000), ("r(a + b) − r(−a − b)", 2000)]
    assert t.transitions()[("none", "½(a + b) + ½|a + b|")] == 2
    assert t.transitions()[("½(a + b) + ½|a + b|", "r(a + b) − r(−a − b)")] == 1
    assert t.stable_for() == [2, 2, 3]
    assert path_text(t.path(2), 2000, 4000) == "none → r(a + b) − r(−a − b) at 2000, solved at 4000"
    names, counts = t.shares()
    assert counts.sum(dim=1).tolist() == [3, 3, 3, 3] and counts[0, names.index("none")] == 3
    # a checkpoint round trip keeps everything (tensors and plain lists only)
    state = t.state()
    back = Timeline(get_task("add"), [((2, 2, 1), 3)])
    back.load(state)
    assert back.formed_at() == t.formed_at() and back.names == t.names and back.steps == t.steps
    bad = dict(state, codes=state["codes"][:, :2])
    with pytest.raises(CircuitsError, match="timeline is damaged"):
        back.load(bad)


def test_projected_step_follows_a_power_law_exactly():
    steps = [2000, 3000, 4000]
    mse = [1e-2 * (s / 1000) ** -4 for s in steps]  # reaches 1e-10 at 1000 · (1e8)^(1/4) = 100000
    assert projected_step(steps, mse, 1e-10) == pytest.approx(100_000, rel=1e-9)
    assert projected_step(steps, [1e-3, 1e-3, 2e-3], 1e-10) == math.inf
    assert projected_step(steps[1:], mse[1:], 1e-10) is None
    assert projected_step(steps, [1e-3, 1e-6, 1e-11], 1e-10) == 4000
    assert projected_step(steps, [1e-3, math.nan, 1e-6], 1e-10) is None


def test_converging_needs_the_circuit_formed_and_the_threshold_within_reach():
    reach = Trend(stable_for=FORMED_VALIDATIONS, projected=7000.0, steps=4000)
    assert verdict(False, True, [1e-3] * 8, trend=reach) == "converging"
    assert verdict(False, True, [1e-3] * 8, trend=Trend(FORMED_VALIDATIONS - 1, 7000.0, 4000)) == "stuck"
    assert verdict(False, True, [1e-3] * 8, trend=Trend(FORMED_VALIDATIONS, 9000.0, 4000)) == "stuck"
    # without a timeline (a run from before it): falling geometrically stands in, as before
    assert verdict(False, True, [1e-3, 1e-4, 1e-5]) == "converging"


def test_median_interval_has_its_coverage():
    for n in (6, 7, 10, 31, 100, 257):
        mid, lo, hi = median_interval(list(range(n)))
        r = int(lo) + 1  # rank of the lower bound (1-based)
        assert hi == n - r
        coverage = binom.cdf(n - r, n, 0.5) - binom.cdf(r - 1, n, 0.5)  # P(x_(r) <= median <= x_(n+1-r))
        assert coverage >= 0.95
        assert binom.cdf(n - r - 1, n, 0.5) - binom.cdf(r, n, 0.5) < 0.95  # one rank tighter would not do
        assert mid == pytest.approx((n - 1) / 2)
    assert median_interval([]) is None


def test_fit_writes_circuits_csv_formed_at_and_the_figure(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "min", "--model.members", 16, "--trainer.max_steps", 5000, "--stop.when", "never",
            "--trainer.val_check_interval", 500, *QUIET)
    (run,) = run_dirs(tmp_path)
    out = capsys.readouterr().out
    assert "circuits.csv (10 validations x 16 members)" in out
    assert (run / "timeline.png").stat().st_size > 0
    rows = list(csv.DictReader((run / "circuits.csv").open()))
    assert len(rows) == 10 * 16 and rows[0].keys() == {"step", "member", "circuit", "val_mse"}
    res = results(run)
    per = res["per_member"]
    by_member = {k: [r for r in rows if int(r["member"]) == k] for k in range(16)}
    for k, mine in by_member.items():
        names = [r["circuit"] for r in mine]
        change = max([i for i in range(1, len(names)) if names[i] != names[i - 1]], default=0)
        assert per["formed_at"][k] == (None if names[-1] == "none" else int(mine[change]["step"]))
        assert float(mine[-1]["val_mse"]) == pytest.approx(per["val_mse"][k], rel=1e-6)
        if per["found"][k]:  # a found member's circuit, as results.json names it
            assert names[-1] == per["family"][k]
    assert res["timeline"]["last_entry_as_readout"] == 16
    found_formed = sorted(f for f, ok in zip(per["formed_at"], per["found"]) if ok)
    assert res["timeline"]["formed_at_median_of_found"] == median_interval(found_formed)[0]
    assert sum(p["members"] for p in res["timeline"]["common_paths"]) <= 16
    # inspect prints the member's path, as the CSV has it
    best = res["best_member"]
    capsys.readouterr()
    run_cli("inspect", run, "--model.member", best, "--figures", "false")
    text = capsys.readouterr().out
    path = []
    for r in by_member[best]:
        if not path or path[-1] != r["circuit"]:
            path.append(r["circuit"])
    solved = per["solved_at"][best]
    assert (f"Timeline: {' → '.join(path)} at {per['formed_at'][best]}, "
            + (f"solved at {solved}" if solved else "not solved")) in text
    report = "\n".join(timeline_markdown([dict(res, job="min")]))
    assert "**min** (2-3-1): 10 validations" in report and " → ".join(path) in report


def test_a_run_from_before_the_timeline_inspects_and_reports_saying_it_is_absent(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "add", "--model.members", 4, "--trainer.max_steps", 1000, "--stop.when", "never",
            "--figures", "false", *QUIET)
    (run,) = run_dirs(tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    del state["timeline"]
    torch.save(state, ckpt)
    capsys.readouterr()
    run_cli("inspect", run, "--figures", "false")
    out = capsys.readouterr().out
    assert "Timeline: absent (this checkpoint was written before circuits_pl recorded one)" in out
    assert "Circuit" in out or "circuit" in out  # the rest of the readout as before
    old = results(run)
    for key in ("timeline",):
        old.pop(key)
    for key in ("formed_at", "projected_solved_at"):
        old["per_member"].pop(key)
    report = "\n".join(timeline_markdown([dict(old, job="add")]))
    assert "**add** (2-2-1): timeline absent (a run from before circuits_pl recorded one)" in report
    json.dumps(old)


class GroupRecorder(pl.Callback):
    """Every group's weights at every regular validation."""

    def __init__(self):
        self.weights = []

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking and trainer.global_step > 0:
            self.weights.append([[w.detach().clone() for w in net.weights] for net in module.net.groups])


def test_a_sweeps_members_are_named_with_their_own_groups_sizes(run_cli, tmp_path, capsys):
    # three architectures side by side: two one-hidden-layer widths (snapped) and a two-hidden-layer net
    # (the full readout); each member is named from its own group's weights, and the names are shared
    cells = [{"layer_sizes": s, "lr": 0.1} for s in ([2, 2, 1], [2, 3, 1], [2, 2, 2, 1])]
    module = CircuitModule(task="min", cells=cells, members=8, init_seed=0)
    data = CircuitDataModule(task="min", stream_seed=0, steps_per_batch=500)
    rec = GroupRecorder()
    pl.Trainer(max_steps=3000, val_check_interval=1, check_val_every_n_epoch=None, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               num_sanity_val_steps=0, callbacks=[rec, StopWhenSolved("never")]).fit(module, data)
    timeline, sweep = module.timeline, module.sweep
    assert [g.layer_sizes for g in sweep.groups()] == [(2, 2, 1), (2, 2, 2, 1), (2, 3, 1)]  # sorted by sizes
    assert timeline.modes == ["snap", "readout", "snap"] and timeline.members == 24
    x = data.fixed_set("test").tensors[0].double()
    assert len(rec.weights) == len(timeline.steps) == 6
    exact_by_group = [0, 0, 0]
    for v, groups in enumerate(rec.weights):
        for m in range(24):
            g = next(i for i, group in enumerate(sweep.groups()) if group.start <= m < group.stop)
            k = m - sweep.groups()[g].start
            assert len(groups[g][0][k].shape) == 2 and groups[g][0].shape[1] == sweep.groups()[g].layer_sizes[1]
            full = circuit_name(describe_member([w[k] for w in groups[g]], module.task, x, to_formula=False))
            code = int(timeline.codes[v, m])
            assert (timeline.names[code], timeline.exact[code]) == full, (v, m)
            exact_by_group[g] += full[1]
    assert exact_by_group[2] > 0  # 2-3-1 members find the exact circuit within the run

    # the CLI: circuits.csv over every member, formed-at per cell, inspect a member of the second cell
    run_cli("fit", "--task", "min", "--sweep.sizes", "2-2-1,2-3-1", "--model.members", 6, "--trainer.max_steps",
            3000, "--stop.when", "never", "--trainer.val_check_interval", 500, "--figures", "true", *QUIET)
    (run,) = run_dirs(tmp_path)
    out = capsys.readouterr().out
    assert "circuits.csv (6 validations x 12 members)" in out and (run / "timeline.png").stat().st_size > 0
    res = results(run)
    per = res["per_member"]
    rows = list(csv.DictReader((run / "circuits.csv").open()))
    assert len(rows) == 6 * 12
    assert res["timeline"]["last_entry_as_readout"] == 12
    for c, cell in enumerate(res["cells"]):
        ms = range(cell["first_member"], cell["first_member"] + cell["members"])
        formed = [per["formed_at"][m] for m in ms if per["found"][m] and per["formed_at"][m] is not None]
        want = median_interval(formed)
        assert cell["formed_at_median_of_found"] == (None if want is None else want[0]), c
    member = 6 + max(range(6), key=lambda k: per["found"][6 + k])  # of the 2-3-1 cell, a found one if any
    capsys.readouterr()
    run_cli("inspect", run, "--model.member", member, "--figures", "false")
    text = capsys.readouterr().out
    path = []
    for r in rows:
        if int(r["member"]) == member and (not path or path[-1] != r["circuit"]):
            path.append(r["circuit"])
    assert f"Timeline: {' → '.join(path)}" in text and "cell 1: 2-3-1" in text
