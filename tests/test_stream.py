import pytest
import torch
from scipy.stats import kstest

from circuits_pl.stream import STEPS_PER_DRAW, UniformBlocks, fill_uniform, mix_seed, uniform_inputs
from circuits_pl.tasks import get_task

ADD, NEGATE = get_task("add"), get_task("negate")


def _steps(stream: UniformBlocks, total: int) -> torch.Tensor:
    """The first ``total`` steps' inputs, whatever the block sizes."""
    blocks, n = [], 0
    for x, _ in stream:
        blocks.append(x)
        n += x.shape[0]
        if n >= total:
            return torch.cat(blocks)[:total]
    raise AssertionError("unreachable: the stream is endless")


def test_step_0_is_pinned():
    # Regression pin, computed once with this stream (B = 1000, seed 0, rank 0): a change here
    # changes every run's inputs.
    x = UniformBlocks(ADD, 1000, 100, seed=0).step_inputs(0)
    expected = torch.tensor([[0.4246560335159302, 0.652341365814209], [-0.06261062622070312, 0.4154280424118042]])
    assert torch.equal(x[:2], expected)
    assert torch.equal(x[-1], torch.tensor([0.9247918128967285, 0.3100612163543701]))
    assert torch.equal(UniformBlocks(ADD, 1000, 7, seed=0).step_inputs(123)[5],
                       torch.tensor([0.05020773410797119, -0.35618114471435547]))


def test_step_t_is_the_same_for_every_block_size():
    ref = _steps(UniformBlocks(ADD, 40, 1, seed=3), 230)
    for size in (37, 100, STEPS_PER_DRAW, 3, 230):
        assert torch.equal(_steps(UniformBlocks(ADD, 40, size, seed=3), 230), ref), size
    # and every step equals its random-access draw
    stream = UniformBlocks(ADD, 40, 37, seed=3)
    for t in (0, 9, 10, 11, 229):
        assert torch.equal(stream.step_inputs(t), ref[t])


@pytest.mark.parametrize("start", [0, 5, 10, 34, 199])
def test_resume_continues_the_same_stream_and_realigns(start):
    ref = _steps(UniformBlocks(ADD, 30, 7, seed=1), 260)
    resumed = iter(UniformBlocks(ADD, 30, 25, seed=1, start_step=start))
    first = next(resumed)[0]
    assert first.shape[0] == 25 - start % 25  # completes its block: validation stays on multiples of S
    second = next(resumed)[0]
    assert second.shape[0] == 25
    assert torch.equal(torch.cat([first, second]), ref[start : start + first.shape[0] + 25])


def test_first_block_end_sets_only_the_first_block():
    ref = _steps(UniformBlocks(ADD, 30, 1, seed=2), 200)
    it = iter(UniformBlocks(ADD, 30, 25, seed=2, start_step=13, first_block_end=61))
    sizes, xs = [], []
    for _ in range(3):
        x = next(it)[0]
        sizes.append(x.shape[0])
        xs.append(x)
    assert sizes == [48, 14, 25]  # 13 -> 61, then 61 -> 75 (a multiple of 25), then 75 -> 100
    assert torch.equal(torch.cat(xs), ref[13:100])
    with pytest.raises(ValueError, match="first_block_end must be after start_step 13"):
        UniformBlocks(ADD, 30, 25, seed=2, start_step=13, first_block_end=13)


def test_uniform_on_the_box_mean_var_and_ks():
    x = _steps(UniformBlocks(ADD, 1000, 50, seed=5), 100).reshape(-1, 2)  # 100k points
    assert float(x.min()) >= -1 and float(x.max()) < 1
    for col in x.T.double():
        assert abs(float(col.mean())) < 0.01
        assert float(col.var()) == pytest.approx(1 / 3, rel=0.02)
        assert kstest(col.numpy(), "uniform", args=(-1, 2)).pvalue > 1e-3
    a, b = x.T.double()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.02  # the two inputs of a point


def test_steps_seeds_and_ranks_are_independent():
    base = UniformBlocks(NEGATE, 1000, 100, seed=3)
    steps = base.inputs(0, 100).reshape(100, -1)
    assert len({tuple(s.tolist()) for s in steps}) == 100  # no two steps equal
    flat = steps.reshape(-1)
    pairs = [(steps[:-1].reshape(-1), steps[1:].reshape(-1)),  # step t against step t + 1
             (flat, UniformBlocks(NEGATE, 1000, 100, seed=4).inputs(0, 100).reshape(-1)),
             (flat, UniformBlocks(NEGATE, 1000, 100, seed=3, rank=1).inputs(0, 100).reshape(-1))]
    for a, b in pairs:
        assert not torch.equal(a, b)
        corr = float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])
        assert abs(corr) < 0.01  # 1e5 pairs: |r| ~ 0.003 by chance


def test_one_sampler_for_fixed_sets():
    x = uniform_inputs(500, 3, seed=9, dtype=torch.float64)
    assert x.dtype == torch.float64 and x.shape == (500, 3)
    assert torch.equal(x, fill_uniform(torch.empty(500, 3, dtype=torch.float64), 9))
    assert torch.equal(uniform_inputs(500, 3, seed=9), uniform_inputs(500, 3, seed=9))
    assert not torch.equal(uniform_inputs(500, 3, seed=9), uniform_inputs(500, 3, seed=10))
    folded = uniform_inputs(500, 2, seed=9, cone=[1.0, 0.0])
    assert bool((folded[:, 0] >= 0).all())


def test_mix_seed_separates_neighbours():
    assert mix_seed(0, 0, 1) != mix_seed(0, 1, 0) != mix_seed(1, 0, 0)
    assert mix_seed(0, 0, 1) == mix_seed(0, 0, 1) < 2**64
