"""The update rules equal torch.optim's own step, bit for bit, member by member, in chunks or not."""

import pytest
import torch

from circuits_pl.optim import MemberOptimizer

CONFIGS = [
    ("sgd", {}, torch.optim.SGD, {}),
    ("sgd", {"weight_decay": 0.01}, torch.optim.SGD, {"weight_decay": 0.01}),
    ("momentum", {"momentum": 0.9}, torch.optim.SGD, {"momentum": 0.9}),
    ("momentum", {"momentum": 0.8, "dampening": 0.1, "weight_decay": 0.01}, torch.optim.SGD,
     {"momentum": 0.8, "dampening": 0.1, "weight_decay": 0.01}),
    ("momentum", {"momentum": 0.9, "nesterov": True}, torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    ("adam", {}, torch.optim.Adam, {}),
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01}, torch.optim.Adam,
     {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01}),
]
SHAPES = [(3, 2), (1, 3)]  # a 2-3-1 net, PyTorch Linear layout
K, STEPS = 7, 300


def _grads(step: int, members: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return [torch.randn(members, *s, generator=gen) * 10.0 ** (step % 5 - 2) for s in SHAPES]


@pytest.mark.parametrize("rule, ours, torch_cls, theirs", CONFIGS)
def test_each_member_steps_exactly_as_torch_optim(rule, ours, torch_cls, theirs):
    gen = torch.Generator().manual_seed(0)
    stacked = [torch.randn(K, *s, generator=gen) for s in SHAPES]
    singles = [[p[k].clone().requires_grad_() for p in stacked] for k in range(K)]
    refs = [torch_cls(ps, lr=0.01, **theirs) for ps in singles]  # default: the single-tensor path on CPU
    opt = MemberOptimizer(stacked, rule=rule, lr=0.01, **ours)
    for step in range(1, STEPS + 1):
        grads = _grads(step, K)
        # our update in two chunks of members (views), as the hot path does
        for lo, hi in ((0, 3), (3, K)):
            opt.update([p[lo:hi] for p in stacked], [g[lo:hi].clone() for g in grads],
                       [[s[lo:hi] for s in st] for st in opt.state_tensors()], step)
        opt.set_steps(step)
        for k, (ps, ref) in enumerate(zip(singles, refs)):
            for p, g in zip(ps, grads):
                p.grad = g[k].clone()
            ref.step()
    for k in range(K):
        for ours_p, ref_p in zip(stacked, singles[k]):
            assert torch.equal(ours_p[k], ref_p.detach()), (rule, k)
    state = opt.state_dict()["state"][0]
    assert float(state["step"]) == STEPS
    ref_state = refs[2].state_dict()["state"].get(0, {})  # plain SGD keeps no state
    for key, value in ref_state.items():
        if key != "step":
            assert torch.equal(state[key][2], value), key


def test_torch_step_interface_uses_grad():
    p = torch.ones(2, 3, 1, requires_grad=True)
    ref = torch.ones(3, 1, requires_grad=True)
    opt, topt = MemberOptimizer([p], rule="adam", lr=0.1), torch.optim.Adam([ref], lr=0.1)
    for _ in range(3):
        p.grad, ref.grad = torch.full_like(p, 0.5), torch.full_like(ref, 0.5)
        opt.step()
        topt.step()
    assert torch.equal(p[1].detach(), ref.detach())


def test_state_dict_round_trips_with_weights_only(tmp_path):
    p = torch.zeros(4, 2, 2)
    opt = MemberOptimizer([p], rule="momentum", momentum=0.9)
    opt.update([p], [torch.ones_like(p)], opt.state_tensors(), 1)
    opt.set_steps(1)
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    other = MemberOptimizer([torch.zeros(4, 2, 2)], rule="momentum", momentum=0.9)
    other.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    assert torch.equal(other.state_tensors()[0][0], torch.ones(4, 2, 2)) and other.steps_done == 1


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="one of sgd, momentum, adam"):
        MemberOptimizer([torch.zeros(1)], rule="rmsprop")
