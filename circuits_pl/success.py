"""When is a network "solved", and how sure are we of a success rate.

The field's protocol (Madsen & Johansen, ICLR 2020, the NALM benchmark): a seed succeeds when its
MSE is below the MSE of the exact circuit with every weight perturbed by ε = 1e-5; report the success
rate over many seeds with a Wilson 95% interval and the step at which each success was first reached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.stats import binom, binomtest

from circuits_pl.network import layer_activations
from circuits_pl.stream import uniform_inputs
from circuits_pl.tasks import Task

EPSILON = 1e-5
FALLBACK_SUCCESS_MSE = 1e-10  # for a task with no exact circuit at the given layer sizes
_THRESHOLD_POINTS = 100_000
_THRESHOLD_SEED = 7


def perturbed_circuit_mse(task: Task, layer_sizes: Sequence[int], eps: float = EPSILON) -> float | None:
    """Expected MSE of the task's exact circuit with every weight (zeros too) moved by ±eps.

    The signs are independent and random; to first order the expected MSE is
    ``eps² · E_x ||∂f(x)/∂w||²``, computed here exactly (float64, 100k fixed points in [-1, 1]^n).
    A uniform ``+eps`` would be a poor yardstick: for ``negate`` its first-order error cancels and
    it gives 3e-21, below what float32 weights can represent; random signs give 6.7e-11.
    None if the task has no exact circuit that fits ``layer_sizes``.
    """
    weights = task.circuit_weights(layer_sizes)
    if weights is None:
        return None
    x = uniform_inputs(_THRESHOLD_POINTS, task.arity, _THRESHOLD_SEED, dtype=torch.float64)
    acts = layer_activations(weights, x)  # (units, N) per layer: inputs, hidden layers, output
    # per-sample gradient of f w.r.t. W_l is delta_l a_{l-1}^T, so its squared norm is
    # |delta_l|^2 |a_{l-1}|^2; delta_L = 1 (the output), delta_l = (W_{l+1}^T delta_{l+1}) * [a_l > 0]
    delta = torch.ones(1, x.shape[0], dtype=torch.float64)
    sq_norm = torch.zeros(x.shape[0], dtype=torch.float64)
    for layer in range(len(weights) - 1, -1, -1):
        sq_norm += delta.square().sum(0) * acts[layer].square().sum(0)
        if layer > 0:
            delta = (weights[layer].T @ delta) * (acts[layer] > 0)
    return float(eps**2 * sq_norm.mean())


def success_threshold(task: Task, layer_sizes: Sequence[int]) -> float:
    """The "solved" MSE threshold for a task at these sizes (see :func:`perturbed_circuit_mse`)."""
    mse = perturbed_circuit_mse(task, layer_sizes)
    return FALLBACK_SUCCESS_MSE if mse is None else mse


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate (scipy's ``binomtest(...).proportion_ci``)."""
    if trials <= 0:
        return (0.0, 1.0)
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """The median of ``values`` and a distribution-free interval for it: the order statistics x_(r) and
    x_(n+1−r) with r the largest rank whose binomial tail P(Bin(n, ½) < r) stays within (1 − confidence)/2
    (at least 1: with fewer than 6 values the interval is the range, below the confidence asked).
    None for no values."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        return None
    r = max(1, int(binom.ppf((1 - confidence) / 2, n, 0.5)))
    mid = xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])
    return mid, xs[r - 1], xs[n - r]
