"""The circuit readout against hand-built circuits, scrambled by the symmetries it must undo.

Every listed circuit of every built-in task is permuted and rescaled at random (the two symmetries
of a bias-free ReLU net), optionally padded with a duplicate split of a unit, a dead unit and a
silent unit; the readout must see through all of it. Independent reference: the circuits' own
weights and formulas in circuits_pl.tasks, and plain float64 matrix products.
"""

from __future__ import annotations

import pytest
import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.network import ReLUMLP
from circuits_pl.readout import (
    canonicalize,
    describe_errors,
    formula,
    homogeneity_check,
    match_circuit,
    read_circuit,
    sparsity_error,
    worst_inputs,
)
from circuits_pl.tasks import BUILTIN_TASKS, Task, embed_circuit

CIRCUITS = [(name, i) for name, task in BUILTIN_TASKS.items() for i in range(len(task.circuits))]


def reference_forward(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Plain bias-free ReLU MLP in float64 (independent of circuits_pl.readout.forward)."""
    a = x.double().T
    for w in weights[:-1]:
        a = torch.clamp(w.double() @ a, min=0)
    return (weights[-1].double() @ a).T


def circuit_weights(name: str, index: int) -> list[torch.Tensor]:
    return [torch.tensor(w, dtype=torch.float64) for w in BUILTIN_TASKS[name].circuits[index].weights]


def scramble(weights: list[torch.Tensor], seed: int, extras: bool = False) -> list[torch.Tensor]:
    """Permute and rescale every hidden layer at random; with ``extras``, first add to the first
    hidden layer a duplicate (unit 0 split in two), a dead unit (zero incoming weights) and a silent
    unit (zero outgoing weights): none of them changes the function."""
    gen = torch.Generator().manual_seed(seed)
    mats = [w.clone() for w in weights]
    if extras:
        w_in, w_out = mats[0], mats[1]
        share = 0.2 + 0.6 * float(torch.rand((), generator=gen, dtype=torch.float64))
        copy_scale = 0.5 + float(torch.rand((), generator=gen, dtype=torch.float64))
        n_in, n_out = w_in.shape[1], w_out.shape[0]
        #       circuit, duplicate of unit 0,    dead,                 silent
        rows = [w_in, copy_scale * w_in[:1], torch.zeros(1, n_in), torch.randn(1, n_in, generator=gen)]
        cols = [w_out.clone(), (1 - share) * w_out[:, :1] / copy_scale, torch.randn(n_out, 1, generator=gen),
                torch.zeros(n_out, 1)]
        cols[0][:, 0] *= share
        mats[0], mats[1] = torch.cat(rows).double(), torch.cat(cols, dim=1).double()
    for layer in range(len(mats) - 1):
        n = mats[layer].shape[0]
        perm = torch.randperm(n, generator=gen)
        alpha = 0.3 + 2.7 * torch.rand(n, generator=gen, dtype=torch.float64)  # in [0.3, 3]
        mats[layer] = (alpha[:, None] * mats[layer])[perm]
        mats[layer + 1] = (mats[layer + 1] / alpha[None, :])[:, perm]
    return mats


def inputs(arity: int, n: int = 2000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, arity, generator=gen, dtype=torch.float64) * 2 - 1) * 3  # beyond the box too


def assert_same_mats(got: list[torch.Tensor], want: list[torch.Tensor], atol: float = 1e-9) -> None:
    assert [w.shape for w in got] == [w.shape for w in want]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------
# Canonical form and matching on hand-built circuits
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, index", CIRCUITS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("extras", [False, True])
def test_scrambled_circuit_reads_back_as_itself(name, index, seed, extras):
    task = BUILTIN_TASKS[name]
    original = circuit_weights(name, index)
    scrambled = scramble(original, seed, extras)
    x = inputs(task.arity, seed=seed)
    # The scrambling is a symmetry: the function is unchanged, and it is the task's target.
    torch.testing.assert_close(reference_forward(scrambled, x), reference_forward(original, x),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(reference_forward(original, x), task(x), rtol=0, atol=1e-12)

    canonical, reference = canonicalize(scrambled, x), canonicalize(original, x)
    # Canonicalisation keeps the function: every unit, and merged (dead units are 0 on x anyway).
    torch.testing.assert_close(reference_forward(canonical.weights, x), task(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(reference_forward(canonical.merged, x), task(x), rtol=0, atol=1e-9)
    if extras:
        assert canonical.layer_sizes[1] == reference.layer_sizes[1] + 3
        assert int(canonical.dead[0].sum()) == 1 and int(canonical.silent[0].sum()) == 1
        # in 1-D the silent unit's direction is ±x too, so it duplicates a circuit unit as well
        assert sum(d is not None for d in canonical.duplicate_of[0]) == (2 if task.arity == 1 else 1)
    else:
        assert_same_mats(canonical.weights, reference.weights)
    assert_same_mats(canonical.merged, reference.merged)
    assert canonical.merged_sizes == tuple(task.circuits[index].layer_sizes)

    match = match_circuit(canonical, task)
    assert match is not None and match.index == index, match
    assert match.formula == task.circuits[index].formula
    assert match.deviation < 1e-9
    spread_out = len(task.circuits[index].weights[0]) == 4  # ½r(a+b) ∓ ...: weights 0.5 and 1
    assert sparsity_error(canonical) == pytest.approx(0.5 if spread_out else 0.0, abs=1e-9)


@pytest.mark.parametrize("name, expected", [
    ("identity", "y = 1.000·r(x) − 1.000·r(−x)"),
    ("negate", "y = −1.000·r(x) + 1.000·r(−x)"),
    ("abs", "y = 1.000·r(x) + 1.000·r(−x)"),
    ("add", "y = 1.000·r(a + b) − 1.000·r(−a − b)"),
    ("subtract", "y = 1.000·r(a − b) − 1.000·r(−a + b)"),
    ("min", "y = 1.000·r(a) − 1.000·r(a − b) − 1.000·r(−a)"),
    ("max", "y = 1.000·r(a) + 1.000·r(−a + b) − 1.000·r(−a)"),
])
def test_formula_of_scrambled_canonical_circuit(name, expected):
    scrambled = scramble(circuit_weights(name, 0), seed=3, extras=True)
    assert formula(canonicalize(scrambled)) == expected


def test_formula_prints_other_coefficients_with_three_decimals():
    weights = [torch.tensor([[0.25, -0.5], [0.0, 0.0]]), torch.tensor([[3.0, 7.0]])]
    assert formula(canonicalize(weights)) == "y = 1.500·r(0.500·a − b)"  # the zero unit is dropped
    assert formula(canonicalize([torch.tensor([[2.0, 1.0, -4.0]]), torch.tensor([[1.0]])])) \
        == "y = 4.000·r(0.500·x1 + 0.250·x2 − x3)"


def test_deeper_circuit_is_matched_and_named():
    """min embedded in 2-3-2-1 (the second layer carries r(m), r(−m)), scrambled in both layers."""
    task = BUILTIN_TASKS["min"]
    original = embed_circuit(task.circuits[0].weights, (2, 3, 2, 1))
    scrambled = scramble(original, seed=5)
    x = inputs(2)
    torch.testing.assert_close(reference_forward(scrambled, x), task(x), rtol=0, atol=1e-9)
    canonical = canonicalize(scrambled, x)
    assert_same_mats(canonical.weights, canonicalize(original, x).weights)
    assert formula(canonical) == ("y = 1.000·r(h1 − h2 − h3) − 1.000·r(−h1 + h2 + h3)\n"
                                  "  where h1 = r(a), h2 = r(a − b), h3 = r(−a)")
    match = match_circuit(canonical, task)
    assert match is not None and match.index == 0


def test_three_hidden_layers_name_units_per_layer():
    weights = embed_circuit(BUILTIN_TASKS["abs"].circuits[0].weights, (1, 2, 2, 2, 1))
    text = formula(canonicalize(weights))
    assert text.splitlines() == ["y = 1.000·r(h2_1 − h2_2) − 1.000·r(−h2_1 + h2_2)",
                                 "  where h1_1 = r(x), h1_2 = r(−x)",
                                 "  where h2_1 = r(h1_1 + h1_2), h2_2 = r(−h1_1 − h1_2)"]


def test_unit_dead_on_the_test_set_is_flagged_and_dropped():
    """Second-layer unit −r(x) − r(−x) is never positive: dead on x, though its weights are not 0."""
    weights = [torch.tensor([[1.0], [-1.0]]), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]),
               torch.tensor([[5.0, 1.0]])]
    x = inputs(1)
    assert not canonicalize(weights).dead[1].any()  # without test inputs only zero units are dead
    canonical = canonicalize(weights, x)
    assert canonical.dead[1].tolist() == [False, True]
    assert canonical.merged_sizes == (1, 2, 1, 1)
    torch.testing.assert_close(reference_forward(canonical.merged, x), x.abs(), rtol=0, atol=1e-12)
    assert match_circuit(canonical, BUILTIN_TASKS["abs"]) is not None  # r(r(x) + r(−x)) = |x|


# ---------------------------------------------------------------------------------------------
# What must not match
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_random_weights_match_nothing(name):
    task = BUILTIN_TASKS[name]
    for sizes in [task.layer_sizes, (task.arity, 5, 1), (task.arity, 3, 2, 1)]:
        net = ReLUMLP(sizes, seed=11)
        assert match_circuit(canonicalize([w[0] for w in net.weights], inputs(task.arity)), task) is None


@pytest.mark.parametrize("circuit_of, task", [("identity", "negate"), ("negate", "identity"),
                                              ("identity", "abs"), ("add", "subtract")])
def test_same_units_other_outgoing_weights_do_not_match(circuit_of, task):
    """identity r(x) − r(−x) and negate r(−x) − r(x) share their units; only outgoing weights differ."""
    assert match_circuit(canonicalize(circuit_weights(circuit_of, 0)), BUILTIN_TASKS[task]) is None


def test_near_circuit_matches_within_tolerance_only():
    task = BUILTIN_TASKS["min"]
    exact = circuit_weights("min", 1)
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    close = [exact[0] + 1e-3 * noise, exact[1]]
    match = match_circuit(canonicalize(close), task)
    assert match is not None and match.index == 1 and 1e-4 < match.deviation < 5e-3
    assert match_circuit(canonicalize([exact[0] + 0.1 * noise, exact[1]]), task) is None


def test_match_survives_a_sort_order_changed_by_noise():
    """Learned r(0.998·a + b) sorts after r(a − b), the circuit's r(a + b) before it: units are
    paired by assignment, not by sort position."""
    exact = circuit_weights("min", 2)  # ½r(a+b) − ½r(−a−b) − ½r(a−b) − ½r(b−a)
    learned = [exact[0].clone(), exact[1]]
    learned[0][0, 0] = 0.998
    canonical = canonicalize(learned)
    assert canonical.weights[0][0].tolist() == [1.0, -1.0]  # the order did change
    match = match_circuit(canonical, BUILTIN_TASKS["min"])
    assert match is not None and match.index == 2 and match.deviation == pytest.approx(0.002)


def test_unlisted_exact_circuit_is_reported_as_equivalent():
    """a + b = r(a) − r(−a) + r(b) − r(−b): exact, but not the listed r(a + b) − r(−a − b)."""
    weights = [torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]),
               torch.tensor([[1.0, -1.0, 1.0, -1.0]])]
    match = match_circuit(canonicalize(scramble(weights, seed=1)), BUILTIN_TASKS["add"])
    assert match is not None and match.index is None and match.deviation < 1e-9
    assert match.formula == "y = 1.000·r(a) + 1.000·r(b) − 1.000·r(−b) − 1.000·r(−a)"
    assert "equivalent exact circuit" in match.describe()


# ---------------------------------------------------------------------------------------------
# A stuck net, homogeneity, errors
# ---------------------------------------------------------------------------------------------

# Both units r(+x): exact for x > 0, 0 for x < 0 (MSE 1/6), the 1-D tasks' plateau.
STUCK_IDENTITY = [torch.tensor([[0.53], [1.92]]), torch.tensor([[0.5 / 0.53, 0.5 / 1.92]])]


def test_stuck_identity_matches_nothing_and_is_wrong_where_x_is_negative():
    task = BUILTIN_TASKS["identity"]
    x = inputs(1, n=1000) / 3
    canonical = canonicalize(STUCK_IDENTITY, x)
    assert canonical.duplicate_of[0] == [None, 0] and canonical.merged_sizes == (1, 1, 1)
    assert match_circuit(canonical, task) is None

    def net(z):
        return reference_forward(STUCK_IDENTITY, z)

    worst = worst_inputs(net, task, x, k=5)
    assert worst.x.shape == (5, 1) and bool((worst.x < 0).all())
    assert torch.equal(worst.sq_error, worst.sq_error.sort(descending=True).values)
    assert float(worst.sq_error[0]) == pytest.approx(float((task(x) - net(x)).square().max()))
    assert describe_errors(net, task, x).startswith("wrong where x < 0 (MSE 0.3")


def test_describe_errors_finds_a_quadrant():
    """A min net stuck at 0 where a, b > 0 (it cannot output positive values there)."""
    task = BUILTIN_TASKS["min"]
    x = inputs(2, n=4000) / 3

    def stuck(z):
        return torch.where((z > 0).all(-1, keepdim=True), 0.0, task(z))

    assert describe_errors(stuck, task, x).startswith("wrong where a > 0 and b > 0 (MSE")
    assert describe_errors(lambda z: task(z) + 0.1, task, x).startswith("errors spread over all inputs")


@pytest.mark.parametrize("sizes", [(1, 2, 1), (2, 3, 2, 1)])
def test_homogeneity_holds_without_bias_and_fails_with_one(sizes):
    plain = ReLUMLP(sizes, members=1, bias=False, seed=0)
    ok, err = homogeneity_check(lambda x: plain(x, member=0), sizes[0])
    assert ok and err < 1e-5
    biased = ReLUMLP(sizes, members=1, bias=True, seed=0)
    ok, err = homogeneity_check(lambda x: biased(x, member=0), sizes[0])
    assert not ok and err > 1e-2


def test_weights_with_biases_or_broken_shapes_are_refused():
    net = ReLUMLP((1, 2, 1), bias=True)
    with pytest.raises(CircuitsError, match="bias-free"):
        canonicalize(net.parameters_of(0))
    with pytest.raises(CircuitsError, match="has 3 inputs, but layer 0 has 2 units"):
        canonicalize([torch.ones(2, 1), torch.ones(1, 3)])
    with pytest.raises(CircuitsError, match="task 'add' has 2"):
        read_circuit([torch.ones(2, 1), torch.ones(1, 2)], BUILTIN_TASKS["add"])


# ---------------------------------------------------------------------------------------------
# The whole readout
# ---------------------------------------------------------------------------------------------

def test_readout_text_of_an_exact_scrambled_circuit():
    task = BUILTIN_TASKS["abs"]
    readout = read_circuit(scramble(circuit_weights("abs", 0), seed=4, extras=True), task)
    text = readout.text()
    assert readout.solved and readout.match is not None and readout.homogeneous
    for line in ["hidden_layer_0:", "output_layer:", "(dead)", "(duplicate of unit 1)", "silent)",
                 "y = 1.000·r(x) + 1.000·r(−x)", "Circuit: matches the exact circuit r(x) + r(−x)",
                 "Homogeneity f(c·x) = c·f(x): OK"]:
        assert line in text, line
    assert "Worst inputs" not in text


def test_readout_text_of_a_stuck_net():
    readout = read_circuit(STUCK_IDENTITY, BUILTIN_TASKS["identity"])
    text = readout.text()
    assert not readout.solved and readout.test_mse == pytest.approx(1 / 6, rel=0.1)
    assert "Circuit: matches no known circuit" in text
    assert "Where it is wrong: wrong where x < 0" in text
    assert text.count("  x = -") == 5  # the five worst inputs, all negative


def test_readout_uses_the_given_network_function():
    """With ``fn`` (the net as it runs), a bias shows up in the homogeneity check and the MSE."""
    net = ReLUMLP((1, 2, 1), bias=True, seed=0)
    readout = read_circuit([w[0] for w in net.weights], BUILTIN_TASKS["abs"], fn=lambda x: net(x, member=0),
                           x=inputs(1, n=500).float() / 3)
    assert not readout.homogeneous and "Homogeneity f(c·x) = c·f(x): FAILED" in readout.text()


def test_custom_task_without_circuits_reads_without_match():
    task = Task("sum3", lambda a, b, c: a + b + c, 3, "a + b + c", (3, 2, 1))
    weights = [torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]), torch.tensor([[1.0, -1.0]])]
    readout = read_circuit(weights, task)
    assert readout.formula == "y = 1.000·r(x1 + x2 + x3) − 1.000·r(−x1 − x2 − x3)"
    assert readout.match is not None and readout.match.index is None  # exact, through the fallback


# ---------------------------------------------------------------------------------------------
# Really trained networks
# ---------------------------------------------------------------------------------------------

def test_trained_members_read_as_the_circuit_or_as_stuck():
    """16 seeds of abs on 1-2-1, plain autograd SGD (lr 0.1, 1500 steps): roughly half find
    |x| = r(x) + r(−x); the rest sit on the MSE 1/6 plateau and must match nothing."""
    task = BUILTIN_TASKS["abs"]
    net = ReLUMLP((1, 2, 1), members=16, seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(1500):
        x = torch.rand(1000, 1, generator=gen) * 2 - 1
        loss = (net(x) - task(x)).square().mean(dim=(1, 2)).sum()  # each member's own MSE
        grads = torch.autograd.grad(loss, list(net.weights))
        with torch.no_grad():
            for w, g in zip(net.weights, grads, strict=True):
                w -= 0.1 * g
    x = inputs(1, n=1000) / 3
    solved = stuck = 0
    for k in range(net.members):
        weights = [w[k] for w in net.weights]
        readout = read_circuit(weights, task, x=x.float(), fn=lambda z, k=k: net(z, member=k))
        if readout.solved:
            solved += 1
            assert readout.match is not None and readout.match.index == 0, readout.text()
            assert readout.formula == "y = 1.000·r(x) + 1.000·r(−x)" and readout.sparsity_error < 1e-3
        elif readout.test_mse > 0.01:
            stuck += 1
            assert readout.match is None, readout.text()
    assert solved >= 3 and stuck >= 3, (solved, stuck)


# ---------------------------------------------------------------------------------------------
# Units along one line, and nets not yet solved
# ---------------------------------------------------------------------------------------------

def _stuck_add(split: float) -> list[torch.Tensor]:
    """A stuck add: two units a little apart along a + b (as trained nets leave them), coefficients
    ``split`` and ``1 − split``, incoming weights scaled differently (the readout must undo that)."""
    return [torch.tensor([[0.5, 0.4905], [2 * 0.997, 2.0]], dtype=torch.float64),
            torch.tensor([[2 * split, (1 - split) / 2]], dtype=torch.float64)]


def test_units_along_one_line_merge_in_the_rough_formula_that_groups_stuck_members():
    from circuits_pl.readout import describe_member

    task = BUILTIN_TASKS["add"]
    members = [describe_member(_stuck_add(split), task) for split in (0.117, 0.303, 0.803)]
    # 3 decimals tell the units apart; at 1 decimal they are one unit, the coefficients summed
    assert members[0].formula == "y = 0.117·r(a + 0.981·b) + 0.883·r(0.997·a + b)"
    assert {m.rough_formula for m in members} == {"y = 1.0·r(a + b)"}
    # units exactly along one line, with different scales: one unit in every formula
    parallel = [torch.tensor([[0.5, 0.5], [-2.0, -2.0], [3.0, 3.0]]), torch.tensor([[0.4, -1.0, 0.2]])]
    canonical = canonicalize(parallel)
    assert formula(canonical) == "y = 0.800·r(a + b) − 2.000·r(−a − b)"
    assert formula(canonical, decimals=1) == "y = 0.8·r(a + b) − 2.0·r(−a − b)"
    # inspect prints the rounded form when it merges units the 3-decimal formula keeps
    text = read_circuit(_stuck_add(0.117), task).text()
    assert "Rounded (1 decimal, units that print alike merged; how report.md groups stuck members): " \
           "y = 1.0·r(a + b)\n" in text
    assert "Rounded" not in read_circuit(circuit_weights("add", 0), task).text()


def test_a_net_above_the_threshold_is_approaching_its_listed_circuit_not_exact():
    """The 100-step add fit's best member: MSE 1.9e-5, weights 0.013 from r(a + b) − r(−a − b)."""
    task = BUILTIN_TASKS["add"]
    near = [torch.tensor([[1.0, 0.987], [-0.994, -1.0]], dtype=torch.float64),
            torch.tensor([[1.003, -1.002]], dtype=torch.float64)]
    readout = read_circuit(near, task)
    assert not readout.solved and readout.test_mse > 1e-6
    assert not readout.exact and readout.label == "r(a + b) \u2212 r(\u2212a \u2212 b)"
    assert readout.circuit_text().startswith("approaching the exact circuit r(a + b) \u2212 r(\u2212a \u2212 b) ")
    assert "exactly" not in readout.text() and "not one listed" not in readout.text()
    solved = read_circuit(circuit_weights("add", 0), task)
    assert solved.exact and solved.circuit_text().startswith("matches the exact circuit r(a + b)")
    # an unlisted exact circuit, not solved: approaching, never "exactly"
    unlisted = [torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64),
                torch.tensor([[1.004, -1.0, 1.0, -1.0]], dtype=torch.float64)]
    readout = read_circuit(unlisted, task)
    assert not readout.solved and not readout.exact
    assert readout.circuit_text().startswith("approaching an equivalent exact circuit, not one listed")
