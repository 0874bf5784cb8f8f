import pytest
import torch

from circuits_pl.network import ReLUMLP

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


@pytest.mark.parametrize("sizes", [(1, 2, 1), (2, 3, 1), (2, 3, 2, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_hand_derived_gradients_equal_autograd(sizes, bias):
    net = ReLUMLP(sizes, members=5, bias=bias, seed=0)
    x = torch.rand(300, sizes[0]) * 2 - 1
    y = x.sum(-1, keepdim=True).abs()
    grads = net.gradients(x.T, y.T)
    loss = (net(x) - y).square().mean(dim=(1, 2)).sum()  # each member's own MSE
    loss.backward()
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-6, atol=1e-7)


def test_alive_mask_freezes_members():
    net = ReLUMLP((1, 2, 1), members=3, seed=0)
    x = torch.rand(100, 1)
    grads = net.gradients(x.T, x.T, alive=torch.tensor([True, False, True]).view(-1, 1, 1))
    assert all(bool((g[1] == 0).all()) and bool((g[0] != 0).any()) for g in grads)


def test_forward_one_member_matches_all_members():
    net = ReLUMLP((2, 3, 1), members=4, seed=3)
    x = torch.rand(10, 2)
    torch.testing.assert_close(net(x, member=2), net(x)[2])
