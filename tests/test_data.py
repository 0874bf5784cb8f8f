import pytest
import torch

from circuits_pl.data import CircuitDataModule, UniformBlocks, fold_into_cone
from circuits_pl.errors import CircuitsError
from circuits_pl.tasks import get_task

ADD = get_task("add")


def _steps(stream: UniformBlocks, n_blocks: int) -> torch.Tensor:
    it = iter(stream)
    return torch.cat([next(it)[0] for _ in range(n_blocks)])


def test_blocks_are_uniform_with_targets():
    x, y = next(iter(UniformBlocks(ADD, batch_size=1000, steps_per_batch=20, seed=0)))
    assert x.shape == (20, 1000, 2) and y.shape == (20, 1000, 1)
    assert x.min() >= -1 and x.max() <= 1 and abs(float(x.mean())) < 0.01
    assert float(x.var()) == pytest.approx(1 / 3, rel=0.02)
    torch.testing.assert_close(y, x.sum(-1, keepdim=True))


def test_step_t_depends_only_on_seed_rank_and_t():
    a = _steps(UniformBlocks(ADD, 50, steps_per_batch=10, seed=3), 6)  # 60 steps
    b = _steps(UniformBlocks(ADD, 50, steps_per_batch=7, seed=3), 9)  # block size changes nothing
    assert torch.equal(a, b[:60])
    resumed = iter(UniformBlocks(ADD, 50, steps_per_batch=10, seed=3, start_step=34))
    first = next(resumed)[0]
    assert first.shape[0] == 6  # completes its block: validation stays on multiples of 10 steps
    assert torch.equal(first, a[34:40]) and torch.equal(next(resumed)[0], a[40:50])


def test_cone_folding_keeps_the_half_space_uniform():
    x = torch.rand(200_000, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    u = torch.tensor([1.0, 2.0])
    inside = fold_into_cone(x, u.tolist())
    assert bool(((inside @ u) >= 0).all())
    # P(x1 > 1/2) on the half-box {x1 + 2 x2 >= 0}: for x1 in (1/2, 1), x2 runs from -x1/2 to 1, so the
    # area is the integral of (1 + x1/2) = 0.6875, over the half-box's area 2: 0.34375
    assert inside[:, 0].gt(0.5).float().mean().item() == pytest.approx(0.34375, abs=0.005)
    # and it matches rejection sampling from independent draws, on both coordinates
    y = torch.rand(400_000, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref = y[(y @ u) >= 0]
    for stat in (lambda q: q[:, 0].mean(), lambda q: q[:, 1].mean(), lambda q: q[:, 1].gt(0.5).float().mean()):
        assert stat(inside).item() == pytest.approx(stat(ref).item(), abs=0.01)
    outside = fold_into_cone(x, u.tolist(), inside=False)
    assert bool(((outside @ u) < 0).all())


def test_val_and_test_sets_are_fixed_and_distinct():
    dm, dm2 = CircuitDataModule(task="min", stream_seed=0), CircuitDataModule(task="min", stream_seed=99)
    val, test = dm.fixed_set("val").tensors[0], dm.fixed_set("test").tensors[0]
    assert val.shape == (1000, 2) and not torch.equal(val, test)
    assert torch.equal(val, dm2.fixed_set("val").tensors[0])  # same for every run: runs compare


def test_cone_must_match_the_task():
    with pytest.raises(CircuitsError, match=r"data.cone must be a non-zero direction with 2 entries"):
        CircuitDataModule(task="add", cone=[1.0])


@pytest.mark.parametrize("key", ["batch_size", "steps_per_batch", "val_size"])
def test_sizes_must_be_positive(key):
    with pytest.raises(CircuitsError, match=rf"data.{key} must be a positive integer, got 0"):
        CircuitDataModule(task="add", **{key: 0})
