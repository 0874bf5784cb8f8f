import math

import pytest
import torch

from circuits_pl.init_weights import (
    init_linear_members,
    kernel_fuses_multiply_add,
    mt19937_outputs,
    uniform_from_outputs,
)
from circuits_pl.network import ReLUMLP


def _reference(sizes, bias, seed):
    """The notebook's layers, built one member at a time with torch's own generator."""
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(i, o, bias=bias) for i, o in zip(sizes[:-1], sizes[1:])]
    return [t for lin in layers for t in ([lin.weight, lin.bias] if bias else [lin.weight])]


@pytest.mark.parametrize("sizes", [(1, 2, 1), (2, 3, 1), (2, 3, 2, 1), (3, 40, 1), (2, 16, 16, 1), (2, 30, 30, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_member_k_is_nn_linear_after_manual_seed_plus_k(sizes, bias):
    # (2, 16, 16, 1): 304 draws, past mt19937's first 227 words; (2, 30, 30, 1): 1020, past one twist
    members, seed = 7, 1234
    net = ReLUMLP(sizes, members=members, bias=bias, seed=seed)
    for k in range(members):
        for got, want in zip(net.parameters_of(k), _reference(sizes, bias, seed + k), strict=True):
            assert torch.equal(got, want), (k, got, want)


def test_members_across_chunks_and_odd_seeds():
    for seed in (0, 2**32 - 3, 2**40 + 5, -4):  # the 32-bit wrap between members, huge and negative seeds
        weights = [torch.empty(9, 3, 2), torch.empty(9, 1, 3)]
        biases = [torch.empty(9, 3, 1), torch.empty(9, 1, 1)]
        init_linear_members(weights, biases, seed, members_per_chunk=4)
        for k in range(9):
            gen = torch.Generator().manual_seed((seed + k) % 2**64)
            for w, b in zip(weights, biases):
                expected_w = torch.empty(w.shape[1:])
                torch.nn.init.kaiming_uniform_(expected_w, a=math.sqrt(5), generator=gen)
                bound = 1 / math.sqrt(w.shape[2])
                expected_b = torch.empty(b.shape[1]).uniform_(-bound, bound, generator=gen)
                assert torch.equal(w[k], expected_w) and torch.equal(b[k, :, 0], expected_b)


@pytest.mark.parametrize("n", [1, 226, 227, 228, 623, 624, 625, 1300])
def test_raw_outputs_match_torchs_generator(n):
    seeds = torch.tensor([0, 5, 2**31 + 7])
    r = mt19937_outputs(seeds, n)
    assert r.shape == (n, 3) and int(r.min()) >= 0 and int(r.max()) < 2**32
    for i, s in enumerate(seeds.tolist()):
        want = torch.empty(n).uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(s))
        assert torch.equal(uniform_from_outputs(r[:, i], 0.3), want)


def test_rounding_of_this_build_is_detected():
    fused = kernel_fuses_multiply_add()
    r = mt19937_outputs(torch.tensor([3]), 500)[:, 0]
    want = torch.empty(500).uniform_(-0.6, 0.6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(uniform_from_outputs(r, 0.6, fused), want)
    assert not torch.equal(uniform_from_outputs(r, 0.6, not fused), want)  # the choice matters


def test_other_dtypes_keep_the_member_loop():
    net = ReLUMLP((2, 3, 1), members=3, seed=2).double()
    net.reset_parameters(2)
    torch.manual_seed(3)
    want = torch.nn.Linear(2, 3, bias=False, dtype=torch.float64).weight
    assert net.weights[0].dtype == torch.float64 and torch.equal(net.weights[0][1], want)
