import pytest
import torch

from circuits_pl.network import ReLUMLP, step_gradients

# The notebook's printed initial weights (each layer transposed), for its seeds.
NOTEBOOK_INIT = [
    ((1, 2, 1), 0, [[[-0.0075, 0.5364]], [[-0.5820], [-0.5204]]]),  # identity
    ((1, 2, 1), 1, [[[0.5153, -0.4414]], [[-0.1371], [0.3319]]]),  # negate, abs
    ((2, 2, 1), 0, [[[-0.0053, -0.5820], [0.3793, -0.5204]], [[-0.2723], [0.1896]]]),  # add, subtract
]


@pytest.mark.parametrize("sizes, seed, expected", NOTEBOOK_INIT)
def test_member_zero_starts_as_the_notebooks_network(sizes, seed, expected):
    net = ReLUMLP(sizes, members=3, seed=seed)
    for w, e in zip(net.weights, expected):
        torch.testing.assert_close(w[0].detach().T, torch.tensor(e), rtol=0, atol=5e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_member_k_is_nn_linear_after_manual_seed_plus_k(bias):
    sizes = (2, 3, 2, 1)
    net = ReLUMLP(sizes, members=4, bias=bias, seed=10)
    for k in range(4):
        torch.manual_seed(10 + k)
        layers = [torch.nn.Linear(i, o, bias=bias) for i, o in zip(sizes[:-1], sizes[1:])]
        expected = [t for lin in layers for t in ([lin.weight, lin.bias] if bias else [lin.weight])]
        for got, want in zip(net.parameters_of(k), expected):
            assert torch.equal(got, want)


def _step_gradients(net: ReLUMLP, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """network.step_gradients on one batch ``x (B, in)``, ``y (B, 1)``, called as train_block calls it."""
    weights, biases = [w.detach() for w in net.weights], [b.detach() for b in net.biases]
    xs = x.T.unsqueeze(0).expand(net.members, -1, -1)  # (K, in, B)
    return step_gradients(weights, [w.transpose(1, 2) for w in weights], biases, xs, xs.transpose(1, 2), y.T)


@pytest.mark.parametrize("sizes", [(1, 2, 1), (2, 3, 1), (2, 3, 2, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_hand_derived_gradients_equal_autograd(sizes, bias):
    net = ReLUMLP(sizes, members=5, bias=bias, seed=0)
    x = torch.rand(300, sizes[0]) * 2 - 1
    y = x.sum(-1, keepdim=True).abs()
    grads = _step_gradients(net, x, y)
    loss = (net(x) - y).square().mean(dim=(1, 2)).sum()  # each member's own MSE
    loss.backward()
    for g, p in zip(grads, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-6, atol=1e-7)


def _reference_forward(weights, biases, x):
    """The forward before the shared one: stacked matmul on batch-last activations, layer by layer."""
    a = x.T  # (in, N)
    for layer, w in enumerate(weights):
        a = torch.matmul(w, a)  # (K, out, N)
        if biases:
            a = a + biases[layer]
        if layer < len(weights) - 1:
            a = a.relu()
    return a.transpose(-1, -2)  # (K, N, 1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("sizes", [(2, 3, 1), (3, 5, 4, 1)])
def test_forward_is_bit_identical_to_the_explicit_loop(sizes, bias):
    net = ReLUMLP(sizes, members=5, bias=bias, seed=3)
    x = torch.rand(1000, sizes[0], generator=torch.Generator().manual_seed(1)) * 2 - 1
    weights, biases = [w.detach() for w in net.weights], [b.detach() for b in net.biases]
    with torch.no_grad():
        assert torch.equal(net(x), _reference_forward(weights, biases, x))
        for k in (0, 3):
            one = _reference_forward([w[k : k + 1] for w in weights], [b[k : k + 1] for b in biases], x)[0]
            assert torch.equal(net(x, member=k), one)


def _train(members, seed, chunk, steps, rule="sgd", sizes=(2, 3, 1), **hp):
    """Plain-torch block loop (no Lightning): ``steps`` steps on a fixed stream."""
    from circuits_pl.optim import MemberOptimizer
    from circuits_pl.train_block import train_block

    net = ReLUMLP(sizes, members=members, seed=seed)
    opt = MemberOptimizer(net.parameters(), rule=rule, lr=0.05, **hp)
    gen = torch.Generator().manual_seed(123)
    for _ in range(steps // 50):
        xt = torch.rand(50, sizes[0], 200, generator=gen) * 2 - 1
        yt = xt.amin(1, keepdim=True)
        train_block(opt, len(net.weights), xt, yt, chunk, engine="torch")  # the fused engine: test_fused.py
    return net, opt


@pytest.mark.parametrize("rule, hp", [("sgd", {}), ("momentum", {"momentum": 0.9}), ("adam", {})])
def test_member_k_is_bit_identical_whatever_k(rule, hp):
    """Issue 13.5: member k of a K = 5 run equals a K = 1 run of seed k, bit for bit."""
    ensemble, _ = _train(5, 0, None, 300, rule, **hp)
    for k in (0, 3):
        single, _ = _train(1, k, None, 300, rule, **hp)
        for a, b in zip(ensemble.parameters(), single.parameters()):
            assert torch.equal(a[k], b[0])


def test_member_chunks_are_bit_identical_to_one_chunk():
    """Issue 14.1: K = 1000 in chunks of 64 (last one partial) equals all members at once."""
    whole, opt_w = _train(1000, 0, None, 200, "momentum", momentum=0.9)
    chunked, opt_c = _train(1000, 0, 64, 200, "momentum", momentum=0.9)
    for a, b in zip(whole.parameters(), chunked.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(opt_w.state_tensors(), opt_c.state_tensors()):
        assert torch.equal(a[0], b[0])
    assert opt_w.steps_done == opt_c.steps_done == 200


def test_gradients_with_bias_do_not_depend_on_k():
    net = ReLUMLP((2, 3, 2, 1), members=6, bias=True, seed=0)
    x = torch.rand(300, 2) * 2 - 1
    y = x.sum(-1, keepdim=True)
    full = _step_gradients(net, x, y)
    one = ReLUMLP((2, 3, 2, 1), members=1, bias=True, seed=4)
    for g, h in zip(full, _step_gradients(one, x, y), strict=True):
        assert torch.equal(g[4], h[0])


def test_a_member_share_trains_only_its_members_exactly_as_the_whole():
    """MemberParallelStrategy: a process trains members[share]; those end as in a one-process run."""
    from circuits_pl.optim import MemberOptimizer
    from circuits_pl.train_block import train_block

    whole, _ = _train(7, 0, 3, 100, "adam")
    net = ReLUMLP((2, 3, 1), members=7, seed=0)
    start = [p.detach().clone() for p in net.parameters()]
    opt = MemberOptimizer(net.parameters(), rule="adam", lr=0.05)
    gen = torch.Generator().manual_seed(123)
    for _ in range(2):
        xt = torch.rand(50, 2, 200, generator=gen) * 2 - 1
        train_block(opt, 2, xt, xt.amin(1, keepdim=True), chunk=2, members=slice(2, 5), engine="torch")
    for p, w, s in zip(net.parameters(), whole.parameters(), start):
        assert torch.equal(p[2:5], w[2:5]) and torch.equal(p[:2], s[:2]) and torch.equal(p[5:], s[5:])


@pytest.mark.parametrize("args, message", [
    (((2, 0, 1),), "at least two positive integers"), (((2,),), "at least two positive integers"),
    (((2, 3, 1), 0), "members must be a positive integer"), (((2, 3, 1), -1), "members must be a positive integer"),
])
def test_relu_mlp_checks_its_arguments_as_the_cli_does(args, message):
    from circuits_pl.errors import CircuitsError

    with pytest.raises(CircuitsError, match=message):
        ReLUMLP(*args)
