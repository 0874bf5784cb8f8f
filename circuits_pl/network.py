"""K independent ReLU MLPs in one module, with a hand-derived SGD step. Plain PyTorch, no Lightning.
The notebook's ``Neural_Net(layer_sizes, bias=False)`` is ``nn.Sequential(Linear, ReLU, ..., Linear)``.
Here the same network exists K times ("members"), stacked on a leading member dimension so that
one forward and one backward serve all of them::

    weights[l]: (K, out_l, in_l)     biases[l]: (K, out_l, 1)     (PyTorch's Linear layout, per member)

Member k is initialised exactly as ``torch.manual_seed(seed + k)`` followed by building the
notebook's ``nn.Linear`` layers would initialise it, so member 0 of seed 0 is the notebook's net.

Activations are kept batch-last, ``(K, units, B)``: with B = 1000 contiguous along the last axis
every elementwise op runs over long rows rather than over rows of 2 or 3 units. Training
(``step_gradients``) uses only per-member ops, so member k's trajectory is bit-identical whatever
K and however members are chunked (``circuits_pl.train_block``).

A run whose members differ in architecture (a sweep's cells, ``circuits_pl.sweep``) holds one such
module per group of one architecture and lr: :class:`GroupedMLPs`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
from torch import nn

from circuits_pl.errors import CircuitsError
from circuits_pl.init_weights import init_linear_members
from circuits_pl.sweep import Sweep


class ReLUMLP(nn.Module):
    """K bias-free (by default) ReLU MLPs of one architecture.

    Args:
        layer_sizes: sizes from input to output, e.g. ``(2, 3, 1)``.
        members: number of independent networks K.
        bias: give every layer a bias (the notebook's study uses none).
        seed: member k is initialised as nn.Linear would be after ``torch.manual_seed(seed + k)``.
        init_scale: a factor on those initial weights and biases (U(−s/√fan_in, s/√fan_in)); at 1
            nothing is multiplied, so the weights are nn.Linear's bit for bit.
    """

    def __init__(self, layer_sizes: Sequence[int], members: int = 1, bias: bool = False, seed: int = 0,
                 init_scale: float = 1.0):
        super().__init__()
        sizes = list(layer_sizes)
        if len(sizes) < 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes):
            raise CircuitsError(f"layer_sizes must be at least two positive integers (input ... output), got {sizes}")
        if not isinstance(members, int) or isinstance(members, bool) or members < 1:
            raise CircuitsError(f"members must be a positive integer, got {members!r}")
        self.layer_sizes = tuple(sizes)
        self.members = int(members)
        self.bias = bool(bias)
        pairs = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(members, o, i)) for i, o in pairs])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.empty(members, o, 1)) for _, o in pairs] if bias else []
        )
        self.reset_parameters(seed, init_scale=init_scale)

    @torch.no_grad()
    def reset_parameters(self, seed: int, members: slice | None = None, init_scale: float = 1.0) -> None:
        """nn.Linear's initialisation, each member from its own seed: member ``start + k`` of the range
        ``members`` (default all) from ``seed + k``, then times ``init_scale`` (nothing at 1).

        float32: all members at once (``circuits_pl.init_weights``, torch's generator reproduced bit for bit;
        benchmarks/init_speed.py compares it with the loop); other dtypes member by member.
        """
        members = members or slice(0, self.members)
        if all(p.dtype == torch.float32 for p in self.parameters()):
            init_linear_members([w[members] for w in self.weights], [b[members] for b in self.biases], seed)
        else:
            self.reset_parameters_member_by_member(seed, members)
        if init_scale != 1.0:
            for p in self.parameters():
                p[members].mul_(init_scale)

    @torch.no_grad()
    def reset_parameters_member_by_member(self, seed: int, members: slice | None = None) -> None:
        """The same initialisation, one Generator and ``nn.init`` call per member and layer (the
        reference the vectorised init is tested and benchmarked against; used for other dtypes)."""
        start, stop, _ = (members or slice(None)).indices(self.members)
        for k in range(start, stop):
            gen = torch.Generator().manual_seed(seed + k - start)
            for layer, w in enumerate(self.weights):
                # nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(fan_in), +),
                # then the bias (if any) from the same stream, layer after layer.
                nn.init.kaiming_uniform_(w[k], a=math.sqrt(5), generator=gen)
                if self.bias:
                    bound = 1 / math.sqrt(w.shape[-1])
                    self.biases[layer][k].uniform_(-bound, bound, generator=gen)

    def parameters_of(self, member: int) -> list[torch.Tensor]:
        """Weights (and biases) of one member, PyTorch Linear layout, in notebook order."""
        out = []
        for layer, w in enumerate(self.weights):
            out.append(w[member])
            if self.bias:
                out.append(self.biases[layer][member, :, 0])
        return out

    def weights_of(self, member: int) -> list[torch.Tensor]:
        """One member's weight matrices ``(out, in)``, input layer first (views)."""
        return [w[member] for w in self.weights]

    def biases_of(self, member: int) -> list[torch.Tensor] | None:
        """One member's biases ``(out,)`` per layer (views); None without biases."""
        return [b[member, :, 0] for b in self.biases] if self.bias else None

    @torch.no_grad()
    def finite(self) -> torch.Tensor:
        """Per member: are all its weights (and biases) finite? ``(K,)`` bool."""
        return torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.parameters()]).all(0)

    def forward(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Outputs for inputs ``x`` of shape ``(N, in)``: ``(K, N, 1)``, or ``(N, 1)`` for one member."""
        weights = list(self.weights) if member is None else [w[member : member + 1] for w in self.weights]
        biases = list(self.biases) if member is None else [b[member : member + 1] for b in self.biases]
        out = layer_activations(weights, x, biases)[-1].transpose(-1, -2)  # (K, N, 1)
        return out[0] if member is not None else out

    @torch.no_grad()
    def mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member MSE on one batch: ``(K,)``."""
        return (self(x) - y).square().mean(dim=(1, 2))


class GroupedMLPs(nn.Module):
    """The members of a run whose cells differ (``circuits_pl.sweep``): one :class:`ReLUMLP` per group
    of cells that share layer sizes and lr, members contiguous, so member m of the run is member
    ``m - group.start`` of its group's net. No member is padded to a wider architecture.

    Member m of cell c starts as member ``m % K`` of a run of that cell alone (seed ``seed + m % K``,
    its ``init_scale``): a group of several cells (one architecture and lr, several scales) seeds each
    cell from ``seed`` again. The interface is ReLUMLP's where a run needs it: :attr:`members`,
    ``forward(x, member)``, :meth:`mse`, :meth:`finite`, :meth:`weights_of`, :meth:`biases_of`.

    Args:
        sweep: the run's cells and members per cell.
        bias: give every layer a bias.
        seed: the seed of each cell's member 0.
    """

    def __init__(self, sweep: Sweep, bias: bool = False, seed: int = 0):
        super().__init__()
        self.sweep = sweep
        self.members = sweep.members
        self.bias = bool(bias)
        self.starts = [group.start for group in sweep.groups()]
        nets = []
        k = sweep.members_per_cell
        for group in sweep.groups():
            scales = [sweep.cells[c].init_scale for c in group.cells]
            net = ReLUMLP(group.layer_sizes, group.members, bias, seed, scales[0])
            for i, scale in enumerate(scales[1:], 1):  # the group's other cells: their seeds start again
                net.reset_parameters(seed, slice(i * k, (i + 1) * k), scale)
            nets.append(net)
        self.groups = nn.ModuleList(nets)

    def locate(self, member: int) -> tuple[ReLUMLP, int]:
        """Member ``member``'s group net and its index there."""
        if not 0 <= member < self.members:
            raise IndexError(f"member {member} is out of range: the run has {self.members} members")
        g = bisect.bisect_right(self.starts, member) - 1
        return self.groups[g], member - self.starts[g]

    def layer_sizes_of(self, member: int) -> tuple[int, ...]:
        return self.locate(member)[0].layer_sizes

    def weights_of(self, member: int) -> list[torch.Tensor]:
        """One member's weight matrices ``(out, in)``, input layer first (views)."""
        net, k = self.locate(member)
        return net.weights_of(k)

    def biases_of(self, member: int) -> list[torch.Tensor] | None:
        net, k = self.locate(member)
        return net.biases_of(k)

    def parameters_of(self, member: int) -> list[torch.Tensor]:
        net, k = self.locate(member)
        return net.parameters_of(k)

    def forward(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Outputs for inputs ``x (N, in)``: ``(K, N, 1)`` for every member, or ``(N, 1)`` for one."""
        if member is not None:
            net, k = self.locate(member)
            return net(x, member=k)
        outs = [net(x) for net in self.groups]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    @torch.no_grad()
    def mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member MSE on one batch: ``(K,)``."""
        return torch.cat([net.mse(x, y) for net in self.groups])

    @torch.no_grad()
    def finite(self) -> torch.Tensor:
        """Per member: are all its weights (and biases) finite? ``(K,)`` bool."""
        return torch.cat([net.finite() for net in self.groups])


def upgrade_group_keys(state_dict: dict, prefix: str = "net.") -> None:
    """Checkpoints written before the networks came in groups hold one :class:`ReLUMLP` under
    ``prefix`` (``net.weights.l``): it is group 0 of a :class:`GroupedMLPs` (``net.groups.0.weights.l``).
    In place."""
    for key in [k for k in state_dict if k.startswith((prefix + "weights.", prefix + "biases."))]:
        state_dict[prefix + "groups.0." + key.removeprefix(prefix)] = state_dict.pop(key)


def layer_activations(weights: Sequence[torch.Tensor], x: torch.Tensor,
                      biases: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The forward pass of a ReLU MLP (bias-free unless ``biases``), every layer kept, batch-last.

    The one forward of the package: :class:`ReLUMLP`, the readout (``readout.matrices.forward``) and
    the success threshold (``success.perturbed_circuit_mse``) use it; training's hot path has its own
    (:func:`step_gradients`).

    Args:
        weights: per layer ``(out, in)`` for one network, or ``(K, out, in)`` for K stacked ones.
        x: inputs ``(N, in)``, shared by all members. No dtype or device conversion: cast first.
        biases: per layer ``(out, 1)`` or ``(K, out, 1)``; None or empty for none.

    Returns:
        ``[x^T, a_1, ..., a_L]``, each ``(units, N)`` (or ``(K, units, N)``): the inputs transposed
        (a view), the hidden layers after ReLU, and the output layer ``(…, out, N)`` without ReLU.
    """
    acts = [x.transpose(-1, -2)]
    last = len(weights) - 1
    for layer, w in enumerate(weights):
        a = torch.matmul(w, acts[-1])
        if biases:
            a = a + biases[layer]
        if layer < last:
            a = a.relu()
        acts.append(a)
    return acts


# threshold_backward's overload resolved once: torch.ops.aten.threshold_backward(...) resolves it at
# every call, a visible share of a call this small.
_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default


def step_gradients(weights: Sequence[torch.Tensor], weights_t: Sequence[torch.Tensor],
                   biases: Sequence[torch.Tensor], x: torch.Tensor, x_t: torch.Tensor,
                   yt: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of each member's MSE on one batch, derived by hand (equal to autograd's).

    This is the training hot path (``circuits_pl.train_block``), so it takes its batch *batch-last*,
    as the activations are kept, and the views it needs are made by the caller once per block and
    member chunk rather than at every step.

    Args:
        weights, biases: ``(K, out, in)`` and ``(K, out, 1)`` per layer (biases empty without bias),
            all members or a chunk of them (views).
        weights_t: ``weights[l].transpose(1, 2)`` per layer (views, so they see the in-place updates).
        x: the step's inputs expanded to ``(K, in, B)`` (a view of one ``(in, B)`` batch); x_t: its
            ``(K, B, in)`` transpose. yt: targets, transposed: ``(1, B)``.

    Returns:
        gradients in the order of ``ReLUMLP.parameters()``: all weights, then all biases.

    Loss of member k: ``mean_b (f_k(x_b) - y_b)^2``; d/d out = ``2 (out - y) / B``; back through
    each layer: ``dW = g @ a_prev^T``, ``db = sum_b g``, ``g_prev = W^T @ g * [a_prev > 0]``
    (ReLU's gradient at 0 is 0, as in autograd).

    Member k's gradients do not depend on K or on the chunk it is in, bit for bit: only per-member
    ``bmm`` (the shared input expanded, a view) and per-row reductions. ``matmul`` of ``(K, h, n)`` by
    a 2-D input folds into one ``(K*h, n) @ (n, B)`` GEMM whose blocking depends on K: member k of a
    K = 5 run then drifted from a K = 1 run by up to 5e-6 after 10k steps (issue 13.5).

    It is its own forward, not :func:`layer_activations`, because that one uses ``matmul`` (whose
    blocking depends on K) and fresh tensors, while this one needs member k bit-identical whatever K
    (per-member ``bmm``) and works in place (``+=``, ``relu_``), each choice measured
    (``benchmarks/hotpath.py``).
    """
    last = len(weights) - 1
    acts = [x]
    a = x
    for layer, w in enumerate(weights):
        a = torch.bmm(w, a)  # (K, out, B)
        if biases:
            a += biases[layer]
        if layer < last:
            a.relu_()
            acts.append(a)
    g = a.sub_(yt).mul_(2.0 / yt.shape[-1])  # (K, 1, B); in place: a is this step's own output
    grad_w: list[torch.Tensor] = [None] * len(weights)  # type: ignore[list-item]
    grad_b: list[torch.Tensor] = [None] * len(biases)  # type: ignore[list-item]
    for layer in range(last, -1, -1):
        prev = acts[layer]
        grad_w[layer] = torch.bmm(g, x_t if layer == 0 else prev.transpose(1, 2))  # (K, out, in)
        if biases:
            grad_b[layer] = g.sum(-1, keepdim=True)
        if layer > 0:
            w_t = weights_t[layer]  # (K, in, out)
            # out = 1 (the output layer): W^T g is a broadcast product, the same single product per
            # element as bmm's, without bmm's batched-matrix overhead.
            g = w_t * g if w_t.shape[-1] == 1 else torch.bmm(w_t, g)
            # ReLU's backward, the op autograd itself runs: g where a > 0, else 0 (one fused op; the
            # alternatives, g.mul_(a.sign()), g * (a > 0) and where(), each make temporaries).
            g = _THRESHOLD_BACKWARD(g, prev, 0)
    return grad_w + grad_b
