"""Certified distances over the input box: hand-built nets whose maximum and mean square are known
analytically, and random nets against dense grids (the certified maximum is at least the grid's and within
the grid's resolution of it; the exact mean square matches a fine midpoint grid)."""

import math

import numpy as np
import pytest
import torch

from circuits_pl.readout import canonicalize, certify, describe_member, read_circuit
from circuits_pl.readout.diagnostics import describe_cones
from circuits_pl.readout.formula import formula_weights
from circuits_pl.tasks import BUILTIN_TASKS, Task
from circuits_pl.verdicts import decide


def net(*layers):
    return certify.stack([[np.asarray(w, dtype=np.float64) for w in layers]])


def grid(n: int, arity: int) -> np.ndarray:
    """Midpoints of an n^arity grid over [-1, 1]^arity: the midpoint rule for the mean square."""
    g = (np.arange(n) + 0.5) / n * 2 - 1
    return np.stack(np.meshgrid(*[g] * arity), -1).reshape(-1, arity)


def perimeter(n: int) -> np.ndarray:
    """n points per edge of the square, corners included: the boundary, where the maximum is."""
    t = np.linspace(-1, 1, n)
    one = np.ones(n)
    return np.concatenate([np.stack([t, one], 1), np.stack([t, -one], 1), np.stack([one, t], 1),
                           np.stack([-one, t], 1)])


def forward_all(nets, x: torch.Tensor) -> torch.Tensor:
    """K nets on the same points ``(M, n)``, outputs ``(K, M)``: torch, independent of certify.evaluate."""
    a = x.T[None]  # (1, n, M)
    for layer, w in enumerate(nets):
        a = torch.as_tensor(w) @ a
        if layer < len(nets) - 1:
            a = a.relu()
    return a[:, 0]


def lipschitz(nets) -> np.ndarray:
    """An upper bound on each net's Lipschitz constant in the ∞-norm: the product of its layers' ∞-norms."""
    out = 1.0
    for w in nets:
        out = out * np.abs(w).sum(axis=-1).max(axis=-1)
    return out


ABS = ([[1.0], [-1.0]], [[1.0, 1.0]])
IDENTITY = ([[1.0], [-1.0]], [[1.0, -1.0]])
MIN = ([[1.0, 0.0], [-1.0, 0.0], [1.0, -1.0]], [[1.0, -1.0, -1.0]])


def test_one_input_hand_built():
    d = certify.distance(net(*ABS), net(*IDENTITY))  # |x| − x: 2 at x = −1, 0 for x > 0
    assert d.certified and d.max_error[0] == 2.0 and d.argmax[0].tolist() == [-1.0]
    assert d.mse[0] == pytest.approx(4 / 6, rel=1e-15)  # ∫_{-1}^0 (2x)² dx / 2


def test_stuck_add_is_off_by_two_at_the_corner_and_one_third_in_mean_square():
    d = certify.to_target(BUILTIN_TASKS["add"], net([[1.0, 1.0]], [[1.0]]))  # r(a + b) for a + b
    assert d.certified and d.max_error[0] == 2.0 and d.argmax[0].tolist() == [-1.0, -1.0]
    assert d.mse[0] == pytest.approx(1 / 3, rel=1e-15)  # the dark half-plane: the NOTES' 1/3


def test_a_scaled_kink_of_min():
    delta = 1e-3  # r(a) − r(−a) − (1 + δ)·r(a − b): off by δ·r(a − b), largest (2δ) at (1, −1)
    w1, w2 = MIN
    d = certify.to_target(BUILTIN_TASKS["min"], net(w1, [[1.0, -1.0, -1.0 - delta]]))
    assert d.max_error[0] == pytest.approx(2 * delta, rel=1e-12) and d.argmax[0].tolist() == [1.0, -1.0]
    assert d.mse[0] == pytest.approx(delta**2 / 3, rel=1e-9)  # E[r(a − b)²] = ½·E[(a − b)²] = 1/3
    assert certify.to_target(BUILTIN_TASKS["min"], net(*MIN)).max_error[0] == 0.0


def test_two_hidden_layers_scaled_output_of_min():
    # the notebook's 2-3-2-1 min: r(m), r(−m) of the min circuit m; (1 + δ)·r(m) − r(−m) is off by δ·r(min)
    delta = 1e-2
    w1, w2 = MIN
    f = net(w1, [w2[0], [-v for v in w2[0]]], [[1.0 + delta, -1.0]])
    d = certify.to_target(BUILTIN_TASKS["min"], f)
    assert d.max_error[0] == pytest.approx(delta, rel=1e-12) and d.argmax[0].tolist() == [1.0, 1.0]
    assert d.mse[0] == pytest.approx(delta**2 / 24, rel=1e-9)  # P(a, b > 0)·E[min(U, V)²] = ¼·⅙


def test_a_maximum_at_a_second_layer_crease_only():
    # 0.5·r(h1) − r(h1 − 0.5·h2) + 0.5·r(h1 − h2), h1 = r(a), h2 = r(b): 0 on three edges; on b = 1 it
    # rises to 0.25 at a = 0.5, where the second unit's input crosses 0: no corner, no first-layer crease
    f = net([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, -0.5], [1.0, -1.0]], [[0.5, -1.0, 0.5]])
    zero = net([[0.0, 0.0]], [[0.0]])
    d = certify.distance(f, zero)
    assert d.max_error[0] == pytest.approx(0.25, rel=1e-15) and d.argmax[0].tolist() == [0.5, 1.0]
    y = forward_all(f, torch.as_tensor(grid(500, 2)))[0]
    assert d.mse[0] == pytest.approx(float((y**2).mean()), rel=1e-4)
    # without the second-layer step the candidates (corners, first-layer creases) would all give 0
    first_layer_only = certify.breakpoints(f[:1] + [np.zeros((1, 1, 2))])
    assert np.abs(certify.evaluate(f, first_layer_only)).max() == 0.0


@pytest.mark.parametrize("sizes", [(1, 5, 1), (1, 3, 4, 1), (2, 3, 1), (2, 8, 1), (2, 3, 2, 1), (2, 6, 5, 1)])
def test_random_nets_against_dense_grids(sizes):
    rng = np.random.default_rng(sum(sizes))
    k = 6
    f = [rng.normal(size=(k, o, i)) for i, o in zip(sizes[:-1], sizes[1:])]
    task = BUILTIN_TASKS["abs" if sizes[0] == 1 else "min"]
    d = certify.to_target(task, f)
    assert d.certified
    target = certify.target_circuit(task)
    x = torch.as_tensor(grid(4000 if sizes[0] == 1 else 500, sizes[0]))
    err = (forward_all(f, x) - forward_all(target, x)).numpy()
    np.testing.assert_allclose(d.mse, (err**2).mean(axis=1), rtol=2e-3)
    edge = np.array([[-1.0], [1.0]]) if sizes[0] == 1 else perimeter(5001)
    edge = torch.as_tensor(edge)
    on_edge = (forward_all(f, edge) - forward_all(target, edge)).abs().amax(dim=1).numpy()
    on_grid = np.abs(err).max(axis=1)
    spacing = 2 / 5000
    assert (d.max_error >= on_edge - 1e-12).all() and (d.max_error >= on_grid - 1e-12).all()
    assert (d.max_error - on_edge <= (lipschitz(f) + lipschitz(target)) * spacing + 1e-12).all()
    # the maximum is attained where it says
    at = certify.evaluate(f, d.argmax[:, None, :]) - certify.evaluate(target, d.argmax[:, None, :])
    np.testing.assert_allclose(np.abs(at[:, 0]), d.max_error, rtol=1e-12)


def test_a_batch_equals_its_members_one_by_one():
    rng = np.random.default_rng(5)
    f = [rng.normal(size=(9, o, i)) for i, o in [(2, 4), (4, 3), (3, 1)]]
    d = certify.to_target(BUILTIN_TASKS["max"], f)
    for k in range(9):
        one = certify.to_target(BUILTIN_TASKS["max"], [w[k:k + 1] for w in f])
        assert one.max_error[0] == d.max_error[k] and one.mse[0] == d.mse[k]


def _hypot(a, b):
    return (a * a + b * b).sqrt()


def test_what_is_sampled_and_says_why():
    hypot = Task("t:hypot", _hypot, 2, "hypot(a, b)", (2, 4, 1))
    d = certify.to_target(hypot, net([[1.0, 0.0], [-1.0, 0.0]], [[1.0, 1.0]]))
    assert not d.certified and "not a bias-free ReLU circuit" in d.why_sampled
    text = d.member(0).text()
    assert text.startswith("max error ") and "sampled, not certified" in text
    three = Task("t:sum3", lambda a, b, c: a + b + c, 3, "a + b + c", (3, 4, 1))
    d3 = certify.to_target(three, certify.stack([[np.ones((1, 3)), np.ones((1, 1))]]))
    assert not d3.certified and d3.why_sampled.startswith("3 inputs")
    # a Task whose listed circuit is not its function is not certified against that circuit
    liar = Task("t:liar", lambda a, b: a - b, 2, "a - b", (2, 2, 1), BUILTIN_TASKS["add"].circuits)
    assert certify.why_target_sampled(liar) is not None
    assert certify.to_target(BUILTIN_TASKS["add"], net([[1.0, 1.0]], [[1.0]])).member(0).text() == \
        "certified max error 2 over [-1, 1]²"


def test_a_member_inside_the_tolerances_is_not_the_printed_formula():
    # a silent unit and a near-duplicate: the formula drops one and merges the other; the certified distance
    # says how far the printed formula is from the net, and the readout lists what it left out
    w1 = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, -1.0], [1.0, -1.006], [0.3, 0.9]])
    w2 = torch.tensor([[1.0, -1.0, -0.6, -0.4, 0.009]])
    member = describe_member([w1, w2], BUILTIN_TASKS["min"])
    x = perimeter(5001)
    formula_net = certify.stack([formula_weights(canonicalize([w1, w2]))])
    on_edge = np.abs(certify.evaluate(net(w1.numpy(), w2.numpy()), x[None])
                     - certify.evaluate(formula_net, x[None])).max()
    assert member.formula_max_error >= on_edge - 1e-12 and member.formula_max_error > 5e-3
    readout = read_circuit([w1, w2], BUILTIN_TASKS["min"])
    text = readout.text()
    assert f"Formula vs the net: certified max error {member.formula_max_error:.2g} over [-1, 1]²" in text
    assert ("left out: unit 3 merged into unit 2 (incoming weights 0.006 apart); unit 4 (silent: outgoing 0.0081)"
            in text)


def test_the_cones_holding_the_error_of_a_stuck_min():
    # every output weight negative: the net cannot be positive, so it is wrong where a, b > 0; one cone is dark
    w1 = [[1.0, 0.0], [0.0, -1.0], [0.5, 1.0]]  # dark where a < 0 and 0 < b < −0.5·a
    w2 = [[-1.0, -1.0, -0.9]]
    cones = certify.error_cones([np.array(w1), np.array(w2)], BUILTIN_TASKS["min"])
    assert sum(c.area for c in cones) == pytest.approx(1.0) and sum(c.error for c in cones) == pytest.approx(1.0)
    x = grid(500, 2)
    f = forward_all(net(w1, w2), torch.as_tensor(x))[0].numpy()
    sq = (f - np.minimum(x[:, 0], x[:, 1])) ** 2
    theta = np.arctan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    for c in cones:  # each cone's shares against the grid points inside it
        span = (c.hi - c.lo) % (2 * math.pi) or 2 * math.pi
        inside = (theta - c.lo) % (2 * math.pi) < span
        assert c.area == pytest.approx(inside.mean(), abs=2e-3)
        assert c.error == pytest.approx(sq[inside].sum() / sq.sum(), abs=2e-3)
        assert c.dark == bool((f[inside] == 0).all())
    assert any(c.dark for c in cones)
    text = describe_cones(cones, ["a", "b"])
    top = max(cones, key=lambda c: c.error)
    assert f"{top.error:.0%} of the squared error on {top.area:.0%} of the inputs" in text
    assert ("dark: no unit active" in text) == any(c.dark for c in cones if c.error >= top.error)


def test_one_decision_for_solved_and_exact():
    assert decide(True, 1e-10, 5e-11, 1.0) == decide(True, 1e-10, 5e-11, 0.0)  # the certified MSE decides
    d = decide(True, 1e-10, 2e-10, 1e-12)  # validation says solved, the box says not: not solved
    assert not d.solved and not d.exact and d.certified
    d = decide(True, 1e-10, None, 1e-12)  # no certificate: validation decides
    assert d.solved and d.exact and not d.certified
    assert not decide(False, 1e-10, 1e-12, 1e-12).exact
    assert not decide(True, 1e-10, None, float("nan")).solved
