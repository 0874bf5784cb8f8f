"""Basins: the target's sectors, each member's class from its initial weights, and the dark ceiling.

References are independent of circuits_pl.basins: Python arithmetic on the targets (where they change
sign or slope), the initialisation redone with nn.Linear per member, and a real training run.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from circuits_pl import CircuitDataModule, CircuitModule
from circuits_pl.basins import (
    basin_table,
    classify,
    dark_ceiling,
    initial_weights,
    outcome_labels,
    summary,
    target_sectors,
)
from circuits_pl.run_summary import RunSummary
from circuits_pl.success import wilson_interval
from circuits_pl.tasks import Task, get_task


def _edges(task_name):
    return sorted(round(s.lo % 360, 3) for s in target_sectors(get_task(task_name)))


@pytest.mark.parametrize("name, edges", [
    ("add", [135.0, 315.0]),          # a + b changes sign on the line a = −b
    ("subtract", [45.0, 225.0]),      # a − b on a = b
    ("min", [0.0, 45.0, 90.0, 225.0]),  # min(cos, sin): 0 at 0° and 90°, crease a = b at 45° and 225°
    ("max", [45.0, 180.0, 225.0, 270.0]),
])
def test_sectors_of_two_input_targets(name, edges):
    assert _edges(name) == edges
    task = get_task(name)
    for s in target_sectors(task):
        # inside each sector the target has one sign and is linear: f(mid) equals the linear
        # interpolation of f at two inner points (Python arithmetic, not the module's estimate)
        width = s.hi - s.lo
        angles = [math.radians(s.lo + width * q) for q in (0.25, 0.5, 0.75)]
        pts = torch.tensor([[math.cos(t), math.sin(t)] for t in angles], dtype=torch.float64)
        f = task(pts).reshape(-1).tolist()
        assert all(v * s.sign > 0 for v in f), (name, s)
        # linear on the arc: f(u) = g·u for one g, solved from the two outer points
        g = torch.linalg.solve(pts[[0, 2]], torch.tensor([f[0], f[2]], dtype=torch.float64))
        assert float(pts[1] @ g) == pytest.approx(f[1], abs=1e-9)


def test_one_input_sectors_are_the_half_lines():
    abs_, ident = target_sectors(get_task("abs")), target_sectors(get_task("identity"))
    assert [s.label for s in abs_] == ["x > 0", "x < 0"]
    assert [s.sign for s in abs_] == [1, 1] and [s.sign for s in ident] == [1, -1]


def test_smooth_target_is_cut_by_sign_only():
    hypot = Task("hypot", lambda a, b: (a * a + b * b).sqrt(), 2, "sqrt(a² + b²)", (2, 4, 1))
    assert [s.label for s in target_sectors(hypot)] == ["all directions"]
    assert target_sectors(Task("sum3", lambda a, b, c: a + b + c, 3, "a + b + c", (3, 3, 1))) is None


def test_classify_hand_built_members():
    # member 0: units facing x > 0 (v > 0) and x < 0 (v > 0): abs covered and agreeing on both;
    # identity needs v < 0 on the x < 0 unit, so only one agreeing sector there.
    # member 1: both units face x > 0: one sector covered.
    w1 = torch.tensor([[[0.5], [-0.3]], [[0.2], [0.9]]])
    w2 = torch.tensor([[[0.2, 0.4]], [[-0.1, 0.6]]])
    b_abs = classify(get_task("abs"), [w1, w2])
    b_id = classify(get_task("identity"), [w1, w2])
    assert [(b.covered, b.agreeing) for b in b_abs] == [(2, 2), (1, 1)]
    assert [(b.covered, b.agreeing) for b in b_id] == [(2, 1), (1, 1)]
    # add: a unit along (1, 1) with v > 0 and one along (−1, −0.2) with v < 0: both half-planes, agreeing
    w1 = torch.tensor([[[1.0, 1.0], [-1.0, -0.2]]])
    w2 = torch.tensor([[[0.5, -0.5]]])
    (b,) = classify(get_task("add"), [w1, w2])
    assert (b.covered, b.agreeing, b.sectors) == (2, 2, 2)
    # two hidden layers: coverage only
    (b,) = classify(get_task("add"), [w1, torch.ones(1, 2, 2), torch.ones(1, 1, 2)])
    assert (b.covered, b.agreeing) == (2, None)


def test_initial_weights_are_the_runs_initialisation():
    # member k as nn.Linear builds it after torch.manual_seed(seed + k): the notebook's net
    ws = initial_weights([2, 3, 1], 4, init_seed=7)
    for k in range(4):
        torch.manual_seed(7 + k)
        ref = [nn.Linear(2, 3, bias=False), nn.Linear(3, 1, bias=False)]
        for w, layer in zip(ws, ref):
            assert torch.equal(w[k], layer.weight.detach())


@pytest.mark.parametrize("hidden", [2, 4])
def test_one_sided_share_matches_the_ceiling(hidden):
    # The share of members whose first-layer weights all share one sign is 2^(1−h) under symmetric
    # init: 4096 members, counted with Python arithmetic, inside its Wilson interval.
    k = 4096
    (w1, w2) = initial_weights([1, hidden, 1], k, init_seed=0)
    one_sided = sum(all(v > 0 for v in row) or all(v < 0 for v in row) for row in w1[:, :, 0].tolist())
    lo, hi = wilson_interval(one_sided, k, confidence=0.999)
    assert lo <= 1 - dark_ceiling(hidden) <= hi
    covered = [b.covered for b in classify(get_task("abs"), [w1, w2])]
    assert covered.count(1) == one_sided


def test_a_dark_half_line_is_never_found(tmp_path):
    # Real training (abs 1-2-1, 64 members, 2000 steps at lr 0.1): a member whose units all face one way
    # cannot compute |x| on the other half-line, so its MSE stays at or above 1/6 · (share of the
    # line it cannot reach)... in practice near 1/6: never below 0.1. Members covering both sides reach
    # the circuit for the most part.
    torch.set_num_threads(1)
    module = CircuitModule(task="abs", members=64, init_seed=0)
    run = RunSummary(figures=False)
    trainer = pl.Trainer(max_steps=2000, val_check_interval=10, check_val_every_n_epoch=None, logger=False,
                         default_root_dir=tmp_path, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[run])
    trainer.fit(module, CircuitDataModule(task="abs", steps_per_batch=100))
    basins = classify(get_task("abs"), initial_weights([1, 2, 1], 64, 0))
    per = run.results["per_member"]  # results.json carries every member's class and the table
    assert per["sectors_covered"] == [b.covered for b in basins]
    assert per["sectors_agreeing"] == [b.agreeing for b in basins]
    assert run.results["basins"]["found_when_not_covered"] == 0
    assert sum(r["found"] for r in run.results["basins"]["table"]) == sum(per["found"])
    mse = module.population.val_mse.tolist()
    dark = [m for b, m in zip(basins, mse) if b.covered == 1]
    lit = [m for b, m in zip(basins, mse) if b.covered == 2]
    assert dark and lit
    assert min(dark) > 0.1  # 1/6 where half the line is dark
    assert sum(m < 1e-6 for m in lit) >= len(lit) // 2


def test_table_and_summary_count_with_python_arithmetic():
    w1, w2 = initial_weights([1, 2, 1], 200, init_seed=3)
    basins = classify(get_task("abs"), [w1, w2])
    found = [b.covered == 2 and k % 3 != 0 for k, b in enumerate(basins)]  # any labelling will do
    rows = basin_table(basins, found)
    assert sum(r["members"] for r in rows) == 200 and sum(r["found"] for r in rows) == sum(found)
    for r in rows:
        members = [k for k, b in enumerate(basins) if (b.covered, b.agreeing) == (r["covered"], r["agreeing"])]
        assert r["members"] == len(members) and r["found"] == sum(found[k] for k in members)
    s = summary(get_task("abs"), [1, 2, 1], basins, found)
    assert s["dark_ceiling"] == 0.5 and s["found_when_not_covered"] == 0
    assert s["covered_rate"] == sum(b.covered == 2 for b in basins) / 200


def test_outcome_labels():
    assert outcome_labels([True, False, False, False], [None, "y = r(x)", "y = r(x)", "y = 0"], top=1) == \
        ["found", "y = r(x)", "y = r(x)", "other"]


def _readme_basins_rows() -> dict:
    """The Basins table of docs/basins.md: (task, h) -> the row's cells after the ceiling."""
    text = (Path(__file__).parents[1] / "docs" / "basins.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| (abs|identity) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) / (\d+) \| "
                         r"(\d+) / (\d+) \|$", text, re.M):
        rows[m.group(1), int(m.group(2))] = m.groups()[2:]
    assert len(rows) == 6, "docs/basins.md's table changed shape"
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("task", ["abs", "identity"])
def test_the_readme_basins_rows_for_two_units_are_what_report_trains_today(task, tmp_path):
    """The h = 2 rows of docs/basins.md, retrained the way its `report` command trains them (512 seeds, 20k steps,
    seed 0, the torch engine that made them) and counted here from per-member fields with Python arithmetic."""
    from circuits_pl.study import Base, FitPlan
    from circuits_pl.sweep import Cell

    args = FitPlan(task, Base(task, task=task), (Cell((1, 2, 1), 0.1),), 0, 512).fit_args(0, 20_000, tmp_path, 20_000)
    if "--model.engine" in subprocess.run([sys.executable, "-m", "circuits_pl", "fit", "--help"],
                                          capture_output=True, text=True).stdout:
        args += ["--model.engine", "torch"]
    subprocess.run([sys.executable, "-m", "circuits_pl", *args], check=True, capture_output=True)
    res = json.loads(next(tmp_path.rglob("results.json")).read_text())
    per = res["per_member"]
    covered, agreeing, found = per["sectors_covered"], per["sectors_agreeing"], per["found"]
    ceiling, both, rate, dark_found, dark, agree_found, agree = _readme_basins_rows()[task, 2]
    assert float(ceiling) == 1 - 2 ** (1 - 2)
    assert f"{sum(c == 2 for c in covered) / 512:.3f}" == both
    assert f"{sum(found) / 512:.3f}" == rate
    dark_members = [f for c, f in zip(covered, found) if c < 2]
    assert (sum(dark_members), len(dark_members)) == (int(dark_found), int(dark))
    full = [f for c, a, f in zip(covered, agreeing, found) if c == 2 and a == 2]
    assert (sum(full), len(full)) == (int(agree_found), int(agree))
