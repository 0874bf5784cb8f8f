"""The structural readout: every width, 1 or 2 hidden layers, named from the function's unique form.

References are independent of the readout: hand-built exact circuits, exact Fractions for the
forms, and a dense grid for where a net is wrong.
"""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
import torch

from circuits_pl.readout import (
    RULES,
    Readout,
    describe_errors,
    describe_member,
    random_inputs,
    read_circuit,
    structure_of,
    target_form,
)
from circuits_pl.readout.form import Form
from circuits_pl.tasks import BUILTIN_TASKS

H = Fraction(1, 2)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def forward(weights, x):
    """Plain bias-free ReLU MLP (the reference)."""
    a = x.to(torch.float64)
    for i, w in enumerate(weights):
        a = a @ w.T
        if i < len(weights) - 1:
            a = a.relu()
    return a


def disguise(weights: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The same function, harder to read: every hidden unit rescaled by a random c > 0 (outgoing by
    1/c), split into two duplicates sharing its outgoing weight, a dead unit (zero incoming weights,
    random outgoing) added, and the units permuted."""
    gen = torch.Generator().manual_seed(seed)
    mats = [w.clone() for w in weights]
    for layer in range(len(mats) - 1):
        w_in, w_out = mats[layer], mats[layer + 1]
        c = 0.3 + 2 * torch.rand(w_in.shape[0], generator=gen, dtype=torch.float64)
        w_in, w_out = w_in * c[:, None], w_out / c[None, :]
        share = torch.rand(w_in.shape[0], generator=gen, dtype=torch.float64)
        w_in = torch.cat([w_in, w_in, torch.zeros(1, w_in.shape[1], dtype=torch.float64)])
        dead_out = torch.randn(w_out.shape[0], 1, generator=gen, dtype=torch.float64)
        w_out = torch.cat([w_out * share, w_out * (1 - share), dead_out], dim=1)
        perm = torch.randperm(w_in.shape[0], generator=gen)
        mats[layer], mats[layer + 1] = w_in[perm], w_out[:, perm]
    return mats


GRID = random_inputs(20000, 2, seed=5)

# add through two linear pairs of directions that are not a + b: 0.85·(a + 0.3b) + 0.75·(0.2a + b)... solved exactly
_P = torch.linalg.solve(t([1.0, 0.2], [0.3, 1.0]), t([1.0], [1.0]))[:, 0]
ADD_TWO_PAIRS = [t([1.0, 0.3], [-1.0, -0.3], [0.2, 1.0], [-0.2, -1.0]),
                 t([float(_P[0]), -float(_P[0]), float(_P[1]), -float(_P[1])])]
# min = ½(a+b) − ½|a−b| with the linear part from 2 axis pairs: ½r(a) − ½r(−a) + ½r(b) − ½r(−b) − ½r(a−b) − ½r(b−a)
MIN_SIX = [t([1, 0], [-1, 0], [0, 1], [0, -1], [1, -1], [-1, 1]), t([0.5, -0.5, 0.5, -0.5, -0.5, -0.5])]
# notebook 2-3-2-1 min: first layer r(a), r(−a), r(a − b); second layer r(m), r(−m) of m = min
DEEP_MIN = [t([1, 0], [-1, 0], [1, -1]), t([1, -1, -1], [-1, 1, 1]), t([1, -1])]
# trained-like 2-3-2-1 min whose second layer bends inside a cone: r(r(b) − 0.1·r(−b)) = r(b)
DEEP_MIN_BENT = [t([0, 1], [0, -1], [-1, 1]), t([1, -0.1, 0], [0, 1, 1]), t([1, -1])]


def test_target_forms_are_the_tasks_own():
    x = Fraction(1)
    assert target_form(BUILTIN_TASKS["abs"]) == Form((Fraction(0),), (((1,), x),))
    assert target_form(BUILTIN_TASKS["add"]) == Form((x, x), ())
    assert target_form(BUILTIN_TASKS["subtract"]) == Form((x, -x), ())
    assert target_form(BUILTIN_TASKS["min"]) == Form((H, H), (((1, -1), -H),))
    assert target_form(BUILTIN_TASKS["max"]) == Form((H, H), (((1, -1), H),))
    assert target_form(BUILTIN_TASKS["min"]).text() == "½(a + b) − ½|a − b|"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task, weights, label", [
    ("add", ADD_TWO_PAIRS, "a + b through 2 linear pairs"),
    ("min", MIN_SIX, "½(a + b) − ½|a − b|: 1 kink on a = b from 1 pair, linear part from 2 pairs"),
    ("min", DEEP_MIN, "r(a) − r(−a) − r(a − b)"),
    ("min", DEEP_MIN_BENT, "½(a + b) − ½|a − b|: 1 kink on a = b, read cone by cone"),
])
def test_wide_and_deep_exact_circuits_are_named(task, weights, label, seed):
    task = BUILTIN_TASKS[task]
    assert float((forward(weights, GRID) - task(GRID)).abs().max()) < 1e-12  # the hand-built net is exact
    net = disguise(weights, seed)
    assert float((forward(net, GRID) - task(GRID)).abs().max()) < 1e-12  # and so is its disguise
    member = describe_member(net, task, random_inputs(1000, 2))
    assert member.exact and member.reason is None
    assert member.label.startswith(label), member.label
    assert member.family in ("½(a + b) − ½|a − b|", "a + b", "r(a) − r(−a) − r(a − b)")
    assert member.structure.max_error(task, GRID) < 1e-12


def test_add_as_two_axis_pairs_and_its_family():
    net = [t([1, 0], [-1, 0], [0, 1], [0, -1]), t([1, -1, 1, -1])]
    member = describe_member(disguise(net, 3), BUILTIN_TASKS["add"])
    assert member.label == "a + b through 2 linear pairs" and member.family == "a + b" and member.exact
    assert set(member.as_dict()) == {"formula", "rough_formula", "label", "exact", "family", "sparsity_error",
                                     "reason", "formula_max_error"}


def test_near_exact_products_are_exact_and_off_coefficients_are_not():
    """1.236·0.809 = 0.99992: the function is a + b to 8e-5, so exact (not spoilt by rounding each weight);
    a 1.05 where 1 belongs is another function and is never called exact, whatever the width."""
    task = BUILTIN_TASKS["add"]
    near = [t([1.236, 1.236], [-1, -1]), t([0.809, -1])]
    assert describe_member(near, task).exact
    for w in ([t([1, 1], [-1, -1]), t([1.05, -1])], disguise([t([1, 1], [-1, -1]), t([1.05, -1])], 0),
              [t([1, 0], [-1, 0], [0, 1], [0, -1]), t([1, -1, 1.1, -1.1])]):
        member = describe_member(w, task)
        assert not member.exact and member.label is None and member.reason, member


def test_a_simple_form_of_another_function_is_not_exact_and_says_so():
    member = describe_member([t([1, 1], [-1, -1]), t([1, 1])], BUILTIN_TASKS["add"])  # |a + b|
    assert not member.exact and member.family == "|a + b|"
    assert member.reason == "its form |a + b| is not the task's form a + b"


def test_deep_net_with_a_real_second_layer_crease_says_why():
    """r(r(a) − r(b)) bends on the half-line a = b, a > 0 only: no L·x + Σ c·|d·x| has that."""
    s = structure_of([t([1, 0], [0, 1]), t([1, -1]), t([1])])
    assert s.form is None and "half-line" in s.reason
    member = describe_member([t([1, 0], [0, 1]), t([1, -1]), t([1])], BUILTIN_TASKS["min"])
    assert not member.exact and "second-layer" in member.reason


def test_readout_exposes_exact_and_label():
    readout = read_circuit(disguise(MIN_SIX, 4), BUILTIN_TASKS["min"])
    assert isinstance(readout, Readout) and readout.exact and readout.solved
    assert readout.label == readout.match.label and "½(a + b) − ½|a − b|" in readout.circuit_text()
    stuck = read_circuit([t([1, 1], [0.3, 1]), t([1, 0])], BUILTIN_TASKS["add"])
    assert not stuck.exact and stuck.label is None
    assert "its form ½(a + b) + ½|a + b| is not the task's form a + b" in stuck.circuit_text()


def test_a_rule_added_to_rules_names_what_the_others_leave_and_the_first_match_wins(monkeypatch):
    from circuits_pl.readout import CircuitMatch, canonicalize, match_circuit, rules

    seen = []

    def everything(canonical, task, structure, tol):
        seen.append(task.name)
        return CircuitMatch(None, "y = anything", 0.0, structure, "anything")

    monkeypatch.setattr(rules, "RULES", [*RULES, everything])
    task = BUILTIN_TASKS["add"]
    listed = match_circuit(canonicalize(disguise([t([1, 1], [-1, -1]), t([1, -1])], 2)), task)
    assert listed.index == 0 and seen == []  # the catalogue named it: later rules are not asked
    stuck = match_circuit(canonicalize([t([1, 1], [0.3, 1]), t([1, 0])]), task)
    assert stuck.rule == "anything" and seen == ["add"]  # no built-in rule names it: the added one does
    assert listed.rule == "catalogue"


def test_stuck_add_is_wrong_exactly_in_its_half_plane():
    """Both units on the same side of a + b = 0: the net is exact where a + b > 0 and 0 where
    a + b < 0. On a dense grid, 100% of the squared error lies in a + b < 0, and the diagnosis says so."""
    task = BUILTIN_TASKS["add"]
    net = [t([1, 1], [1, 1]), t([0.4, 0.6])]
    x = random_inputs(40000, 2, seed=9)
    sq = (forward(net, x) - task(x)).square()[:, 0]
    inside = x.sum(1) < 0
    assert float(sq[~inside].sum()) < 1e-20 * float(sq[inside].sum())  # float rounding only
    text = describe_errors(lambda z: forward(net, z), task, x, weights=net)
    assert text.startswith("wrong where a + b < 0 (MSE"), text
    # without the net's geometry: half-planes and quadrants, the smallest holding >= 99% of the error
    assert describe_errors(lambda z: forward(net, z), task, x).startswith("wrong where a + b < 0")


def test_trained_stuck_add_members_are_wrong_in_one_half_plane():
    """Really trained 2-2-1 add members (plain autograd SGD, lr 0.1, 1000 steps): those stuck on the
    plateau (MSE 1/3) put their error in one half-plane bounded by their own crease, named as such."""
    task = BUILTIN_TASKS["add"]
    gen = torch.Generator().manual_seed(0)
    w1 = torch.randn(24, 2, 2, generator=gen, dtype=torch.float64).mul_(0.7).requires_grad_()
    w2 = torch.randn(24, 1, 2, generator=gen, dtype=torch.float64).mul_(0.7).requires_grad_()
    for _ in range(1000):
        x = torch.rand(256, 2, generator=gen, dtype=torch.float64) * 2 - 1
        out = torch.einsum("kho,kbh->kbo", w2.transpose(1, 2), (x @ w1.transpose(1, 2)).relu())
        loss = (out - task(x)).square().mean(dim=(1, 2)).sum()
        g1, g2 = torch.autograd.grad(loss, [w1, w2])
        with torch.no_grad():
            w1 -= 0.1 * g1
            w2 -= 0.1 * g2
    x = random_inputs(20000, 2, seed=9)
    stuck = 0
    for k in range(24):
        net = [w1[k].detach(), w2[k].detach()]
        sq = (forward(net, x) - task(x)).square()[:, 0]
        if not 0.3 < float(sq.mean()) < 0.37:  # the plateau of a stuck add is MSE 1/3
            continue
        stuck += 1
        text = describe_errors(lambda z, net=net: forward(net, z), task, x, weights=net)
        assert text.startswith("wrong where "), text
        half_plane = re.match(r"wrong where (?:([\d.]+)·)?a \+ (?:([\d.]+)·)?b ([<>]) 0 \(MSE", text)
        assert half_plane, text  # one half-plane, bounded by the net's own crease (a still-turning unit
        ca, cb = (float(c) if c else 1.0 for c in half_plane.groups()[:2])  # gives e.g. 0.578·a + b < 0)
        side = x[:, 0] * ca + x[:, 1] * cb
        region = side < 0 if half_plane.group(3) == "<" else side > 0
        assert float(sq[region].sum()) / float(sq.sum()) > 0.9  # the label is that region: checked on the grid
    assert stuck >= 2, stuck
