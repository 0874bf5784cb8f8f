"""nn.Linear's initialisation for K members at once, member k bit-identical to ``manual_seed(seed + k)``.

Member k of a run must start exactly as the notebook's network would after
``torch.manual_seed(seed + k)``: each ``nn.Linear`` draws ``kaiming_uniform_(a=sqrt(5))`` for its
weight, then U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for its bias, layer after layer, from torch's CPU
generator. A Python loop over members (a Generator and two ``uniform_`` calls per layer each)
would take minutes for millions of members (benchmarks/init_speed.py).

Here the generator itself is reproduced in int64 torch ops vectorised over members: torch's CPU
generator is a standard mt19937 (``ATen/core/MT19937RNGEngine.h``: seeded with the low 32 bits of
the seed by ``s[j] = 1812433253 * (s[j-1] ^ s[j-1] >> 30) + j``, twisted all at once before the
first output, tempered), and a float32 ``uniform_(lo, hi)`` takes one 32-bit output ``r`` per value:
``u = (r & 0xFFFFFF) * 2^-24``, value ``u * (hi - lo) + lo`` in float32
(``ATen/core/TransformationHelper.h``'s ``uniform_real``); this build's AVX2 kernel fuses the
multiply-add into one rounding, which :func:`kernel_fuses_multiply_add` checks against torch once.
Only the first P outputs of each member are needed (P = parameters per member), and output i < 227
depends only on the seeded words i, i + 1 and i + 397, so for small nets the seeding stops at word
P + 396.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

_M32 = 0xFFFFFFFF
_N, _M = 624, 397
_MATRIX_A, _UPPER, _LOWER = 0x9908B0DF, 0x80000000, 0x7FFFFFFF
MEMBERS_PER_CHUNK = 4096  # the (624, chunk) int64 state: 20 MB


def _seeded_state(seeds: torch.Tensor, words: int) -> torch.Tensor:
    """mt19937's initial state words ``0 .. words - 1`` for each seed: ``(words, K)`` int64 (uint32 values)."""
    state = torch.empty(words, seeds.shape[0], dtype=torch.int64)
    state[0] = seeds & _M32
    for j in range(1, words):
        prev = state[j - 1]
        # 1812433253 < 2^31 times a value < 2^32 stays below 2^63: no int64 overflow
        torch.bitwise_xor(prev, prev >> 30, out=state[j])
        state[j].mul_(1812433253).add_(j).bitwise_and_(_M32)
    return state


def _twist(upper: torch.Tensor, lower: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    y = (upper & _UPPER) | (lower & _LOWER)
    return far ^ (y >> 1) ^ ((y & 1) * _MATRIX_A)


def _next_state(s: torch.Tensor, words: int = _N) -> torch.Tensor:
    """The first ``words`` words of mt19937's ``next_state`` (the whole twist) of ``(624, K)`` states,
    in its three dependent runs: word i takes old words i, i + 1 and word i + 397 mod 624, which is
    old for i < 227 and already new after."""
    new = torch.empty(words, s.shape[1], dtype=s.dtype)
    for lo, hi in ((0, 227), (227, 454), (454, 623)):
        hi = min(hi, words)
        if lo < hi:
            far = s[lo + _M : hi + _M] if lo == 0 else new[lo - (_N - _M) : hi - (_N - _M)]
            new[lo:hi] = _twist(s[lo:hi], s[lo + 1 : hi + 1], far)
    if words == _N:
        new[623] = _twist(s[623], new[0], new[396])
    return new


def _temper(y: torch.Tensor) -> torch.Tensor:
    """mt19937's output tempering, in place."""
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y


def mt19937_outputs(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` 32-bit outputs of torch's CPU generator after ``manual_seed(seed)``, per seed.

    Args:
        seeds: ``(K,)`` int64 (only the low 32 bits matter, as in torch).
    Returns:
        ``(n, K)`` int64 holding uint32 values.
    """
    if n <= _N - _M:  # outputs 0 .. n-1 need seeded words 0 .. n + 396 only
        s = _seeded_state(seeds, n + _M)
        return _temper(_twist(s[:n], s[1 : n + 1], s[_M : _M + n]))
    s = _seeded_state(seeds, _N)
    out, left = [], n
    while left > 0:
        if left < _N:
            out.append(_temper(_next_state(s, left)))
            break
        s = _next_state(s)
        out.append(_temper(s.clone()))
        left -= _N
    return torch.cat(out) if len(out) > 1 else out[0]


def uniform_from_outputs(r: torch.Tensor, bound: float, fused: bool | None = None) -> torch.Tensor:
    """float32 ``uniform_(-bound, bound)`` from 32-bit outputs ``r``, as torch's CPU kernel computes it.

    ``fused``: whether the kernel fuses ``u * (hi - lo) + lo`` into one rounding (the AVX2 build of
    this machine does: 150 of 300 values differ otherwise); None: find out once, from torch itself.
    """
    lo, hi = torch.tensor(-bound, dtype=torch.float32), torch.tensor(bound, dtype=torch.float32)
    if fused is None:
        fused = kernel_fuses_multiply_add()
    if not fused:
        return ((r & 0xFFFFFF).to(torch.float32) * 2.0**-24) * (hi - lo) + lo
    u = (r & 0xFFFFFF).to(torch.float64) * 2.0**-24  # exact: 24 bits
    # u * (hi - lo) has at most 48 significant bits and adding lo stays within 53, so float64 is exact
    # here and the single rounding to float32 is the fused multiply-add's.
    return (u * float(hi - lo) + float(lo)).to(torch.float32)


@functools.cache
def kernel_fuses_multiply_add() -> bool:
    """Which rounding torch's float32 ``uniform_`` uses on this CPU, checked on 1000 draws of seed 0."""
    reference = torch.empty(1000).uniform_(-0.75, 0.75, generator=torch.Generator().manual_seed(0))
    r = mt19937_outputs(torch.zeros(1, dtype=torch.int64), 1000)[:, 0]
    for fused in (True, False):
        if torch.equal(uniform_from_outputs(r, 0.75, fused), reference):
            return fused
    raise RuntimeError("torch's CPU uniform_ no longer matches mt19937 + uniform_real: "
                       "update circuits_pl/init_weights.py")


def linear_bounds(layer_sizes: Sequence[int]) -> list[tuple[float, float]]:
    """(weight bound, bias bound) per layer, computed with nn.init's own expressions."""
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    return [(math.sqrt(3.0) * (gain / math.sqrt(fan_in)), 1 / math.sqrt(fan_in)) for fan_in in layer_sizes[:-1]]


@torch.no_grad()
def init_linear_members(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], seed: int,
                        members_per_chunk: int = MEMBERS_PER_CHUNK) -> None:
    """Fill ``weights[l]`` ``(K, out, in)`` and ``biases[l]`` ``(K, out, 1)`` (empty list: no biases)
    as nn.Linear would after ``torch.manual_seed(seed + k)`` for member k. float32 only."""
    if any(t.dtype != torch.float32 for t in [*weights, *biases]):
        raise TypeError("init_linear_members reproduces float32 uniform_ only")
    k_total = weights[0].shape[0]
    sizes = [weights[0].shape[2]] + [w.shape[1] for w in weights]
    bounds = linear_bounds(sizes)
    counts = []  # outputs consumed per tensor, in draw order
    for layer, w in enumerate(weights):
        counts.append(w[0].numel())
        if biases:
            counts.append(biases[layer][0].numel())
    base = int(seed) & _M32  # torch seeds mt19937 with the low 32 bits
    for start in range(0, k_total, members_per_chunk):
        stop = min(start + members_per_chunk, k_total)
        seeds = torch.arange(base + start, base + stop, dtype=torch.int64)
        parts = iter(mt19937_outputs(seeds, sum(counts)).split(counts))
        for layer, w in enumerate(weights):
            w_bound, b_bound = bounds[layer]
            w[start:stop] = uniform_from_outputs(next(parts).T, w_bound).reshape(stop - start, *w.shape[1:])
            if biases:
                b = biases[layer]
                b[start:stop] = uniform_from_outputs(next(parts).T, b_bound).reshape(stop - start, *b.shape[1:])
