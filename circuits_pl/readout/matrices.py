"""Weights as a list of ``(out, in)`` matrices: checking, forward pass, input names, printing.

Weights are lists of ``(out, in)`` matrices (PyTorch's Linear layout), input layer first, no biases,
one output; e.g. ``[w[k] for w in net.weights]`` for member k of a :class:`~circuits_pl.network.ReLUMLP`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.network import layer_activations
from circuits_pl.stream import uniform_inputs

MINUS = "\u2212"  # "−", as in r(−x): a typographic minus reads better than "-" in formulas

Fn = Callable[[torch.Tensor], torch.Tensor]  # inputs (N, arity) -> outputs (N, 1)


def as_matrices(weights: Sequence) -> list[torch.Tensor]:
    """Float64 CPU copies of ``(out, in)`` weight matrices, checked to chain into a one-output net.

    Raises CircuitsError for a 1-D tensor (a bias: the readout is for bias-free nets) or for
    shapes that do not chain.
    """
    mats = [torch.as_tensor(w).detach().to("cpu", torch.float64).clone() for w in weights]
    if not mats:
        raise CircuitsError("no weights given: need one (out, in) matrix per layer")
    for layer, w in enumerate(mats):
        if w.dim() != 2:
            raise CircuitsError(
                f"weights[{layer}] has shape {tuple(w.shape)}, not (out, in): the readout is for bias-free "
                "nets; pass the weight matrices only, e.g. [w[k] for w in net.weights]"
            )
        if layer and w.shape[1] != mats[layer - 1].shape[0]:
            raise CircuitsError(
                f"weights[{layer}] has {w.shape[1]} inputs, but layer {layer - 1} has "
                f"{mats[layer - 1].shape[0]} units"
            )
    if mats[-1].shape[0] != 1:
        raise CircuitsError(f"the last layer has {mats[-1].shape[0]} outputs; the readout needs one")
    return mats


def layer_sizes(weights: Sequence[torch.Tensor]) -> tuple[int, ...]:
    return (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)


def forward(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The bias-free ReLU MLP of ``weights`` on inputs ``(N, in)``: outputs ``(N, 1)``, float64
    (:func:`circuits_pl.network.layer_activations`)."""
    return layer_activations(weights, x.to(torch.float64))[-1].T


def input_names(arity: int) -> list[str]:
    """``x`` for one input, ``a, b`` for two (as in the task formulas), ``x1..xn`` otherwise."""
    return {1: ["x"], 2: ["a", "b"]}.get(arity, [f"x{i + 1}" for i in range(arity)])


def weights_text(weights: Sequence, biases: Sequence | None = None) -> str:
    """Weights in the notebook's layout: each layer transposed (in, out), 4 decimals, named
    ``hidden_layer_0: ... output_layer:``, so a readout compares line by line with the notebook.
    Biases, if any, follow their layer as ``<layer>_bias:``."""
    def text(t) -> str:
        arr = torch.as_tensor(t).detach().to("cpu", torch.float64).numpy()
        return np.array2string(arr, precision=4, floatmode="fixed", separator=", ", suppress_small=True)

    lines = []
    for layer, w in enumerate(weights):
        name = "output_layer" if layer == len(weights) - 1 else f"hidden_layer_{layer}"
        lines += [f"{name}:", text(torch.as_tensor(w).T)]
        if biases:
            lines += [f"{name}_bias:", text(biases[layer])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def random_inputs(n: int, arity: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` points uniform in [-1, 1)^arity from one seed (the default test set of the readout): drawn
    in float64 by :func:`circuits_pl.stream.uniform_inputs`, then cast to ``dtype``."""
    return uniform_inputs(n, arity, seed, dtype=torch.float64).to(dtype)


def join_signed(parts: Sequence[tuple[bool, str]]) -> str:
    """``[(negative, body), ...]`` as ``a − b + c`` with typographic minus signs; ``0`` if empty."""
    if not parts:
        return "0"
    text = (MINUS if parts[0][0] else "") + parts[0][1]
    for negative, body in parts[1:]:
        text += f" {MINUS if negative else '+'} {body}"
    return text
