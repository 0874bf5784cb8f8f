import numpy as np
import pytest
import torch
from scipy.stats import kstest

from circuits_pl.stream import STEPS_PER_DRAW, UniformBlocks, mix_seed, uniform_inputs
from circuits_pl.tasks import get_task

ADD, NEGATE = get_task("add"), get_task("negate")


def _mt19937_uniform(seed: int, n: int, dtype=np.float32) -> np.ndarray:
    """``n`` values of torch's CPU ``uniform_(-1, 1)`` after ``manual_seed(seed)``, rebuilt independently
    of torch from numpy's MT19937 and torch's documented transform: torch seeds its mt19937 with the low
    32 bits of the seed (the classic init_genrand, numpy's legacy integer seeding too); a float32 takes
    the low 24 bits of one 32-bit output, a float64 the low 53 bits of two (the first one high), as
    ``bits / 2^digits``, scaled to [-1, 1)."""
    rs = np.random.RandomState(seed & 0xFFFFFFFF)
    if dtype == np.float32:
        raw = rs.randint(0, 2**32, size=n, dtype=np.uint64)
        return ((raw & 0xFFFFFF).astype(np.float64) / 2**23 - 1).astype(np.float32)
    hi, lo = rs.randint(0, 2**32, size=2 * n, dtype=np.uint64).reshape(n, 2).T
    return (((hi << np.uint64(32)) | lo) & np.uint64(2**53 - 1)).astype(np.float64) / 2**52 - 1


def _steps(stream: UniformBlocks, total: int) -> torch.Tensor:
    """The first ``total`` steps' inputs, whatever the block sizes."""
    blocks, n = [], 0
    for x, _ in stream:
        blocks.append(x)
        n += x.shape[0]
        if n >= total:
            return torch.cat(blocks)[:total]
    raise AssertionError("unreachable: the stream is endless")


@pytest.mark.parametrize("seed, rank, batch", [(0, 0, 1000), (7, 1, 3), (2**40 + 5, 0, 17)])
def test_every_step_is_mt19937_of_its_draws_seed(seed, rank, batch):
    """The documented stream, rebuilt without circuits_pl.stream's sampler: the draw holding steps
    [d*C, (d+1)*C) is one mt19937 sequence seeded with mix_seed(seed, rank, d), read in (step, B, in)
    order. A change here changes every run's inputs."""
    stream = UniformBlocks(ADD, batch, 7, seed=seed, rank=rank)
    got = stream.inputs(0, 3 * STEPS_PER_DRAW + 4).numpy()  # three whole draws and part of a fourth
    for d in range(4):
        want = _mt19937_uniform(mix_seed(seed, rank, d), STEPS_PER_DRAW * batch * 2).reshape(STEPS_PER_DRAW, batch, 2)
        part = got[d * STEPS_PER_DRAW : (d + 1) * STEPS_PER_DRAW]
        assert np.array_equal(part, want[: len(part)]), d
    # a block read from the middle of a draw, as a resumed run reads it
    assert np.array_equal(stream.inputs(123, 5).numpy(), _mt19937_uniform(
        mix_seed(seed, rank, 12), STEPS_PER_DRAW * batch * 2).reshape(STEPS_PER_DRAW, batch, 2)[3:8])


def test_step_t_is_the_same_for_every_block_size():
    ref = _steps(UniformBlocks(ADD, 40, 1, seed=3), 230)
    for size in (37, 100, STEPS_PER_DRAW, 3, 230):
        assert torch.equal(_steps(UniformBlocks(ADD, 40, size, seed=3), 230), ref), size
    # and every step equals its random-access read
    stream = UniformBlocks(ADD, 40, 37, seed=3)
    for t in (0, 9, 10, 11, 229):
        assert torch.equal(stream.inputs(t, 1)[0], ref[t])


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_sets_are_mt19937_of_their_seed(dtype):
    x = uniform_inputs(500, 3, seed=9, dtype=dtype)
    want = _mt19937_uniform(9, 1500, np.float32 if dtype == torch.float32 else np.float64).reshape(500, 3)
    assert x.dtype == dtype and np.array_equal(x.numpy(), want)
    assert not np.array_equal(uniform_inputs(500, 3, seed=10, dtype=dtype).numpy(), want)
    # restricted to a cone: the same points, those with u·x < 0 mirrored through the origin
    u = np.array([1.0, -2.0, 0.5])
    folded = uniform_inputs(500, 3, seed=9, cone=u.tolist(), dtype=dtype).numpy()
    flip = (want.astype(np.float64) @ u < 0)[:, None]
    assert np.array_equal(folded, np.where(flip, -want, want)) and flip.any() and (folded @ u >= 0).all()


def test_mix_seed_gives_unrelated_seeds_to_neighbouring_seed_rank_and_draw():
    """Python arithmetic on the seeds it gives: 16 seeds x 4 ranks x 256 draws are all distinct, also in
    the low 32 bits that torch's mt19937 keeps (so ``seed + draw`` collisions cannot happen here), each
    output bit is set about half the time, and flipping one input bit flips about half the output bits."""
    tuples = [(s, r, d) for s in range(16) for r in range(4) for d in range(256)]
    seeds = [mix_seed(*t) for t in tuples]
    assert all(0 <= v < 2**64 for v in seeds)
    assert len(set(seeds)) == len({v & 0xFFFFFFFF for v in seeds}) == len(tuples)
    for bit in range(64):
        assert 0.47 < sum(v >> bit & 1 for v in seeds) / len(seeds) < 0.53, bit
    flipped = []
    for t, base in zip(tuples[::37], seeds[::37]):
        for part in range(3):
            for bit in range(64):
                other = list(t)
                other[part] ^= 1 << bit
                flipped.append(bin(base ^ mix_seed(*other)).count("1"))
    assert 31 < sum(flipped) / len(flipped) < 33 and min(flipped) > 0
