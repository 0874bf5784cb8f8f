"""One block of S training steps for K stacked networks: gradients by hand, then the update rule,
and what happens to a member whose weights become non-finite. Plain PyTorch, no Lightning.

:class:`TrainedMembers` (the networks and their update rule) is what ``CircuitModule.training_step``
drives, a block at a time, with one of two engines. ``torch`` (the reference, and the GPU path):
members are processed in chunks (:func:`train_block`), a chunk running all S steps of the block while
its weights, rule state and activations stay in cache, then the next chunk; every op is per member
(see ``network.step_gradients`` and ``optim``), so the result is bit-identical whatever the chunking.
``fused`` (CPU, numba: ``circuits_pl.fused``): one compiled loop per block, forward, gradients and
update of each member in one pass over the batch; member k is bit-identical whatever K, chunk or
member share too, and equal to the torch engine to float32 rounding. ``auto`` is fused on the CPU
where numba imports, torch elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.network import ReLUMLP, step_gradients
from circuits_pl.optim import MemberOptimizer

# Bytes of one chunk's per-step working set (activations, gradients, masks) aimed at. Measured
# (benchmarks/hotpath.py, one thread, batch 1000, K = 1024, SGD; 2 MiB L2 per core, 32 MiB L3;
# a shared machine, three runs agreed on the shape), µs per network-step by members per chunk:
#   chunk   4     8    16    32    64   128   256  1024 (no chunks)
#   2-2-1  6.3   3.8   2.7   2.3   2.0   1.8   1.8  14.7
#   2-3-1  6.8   4.7   3.4   2.8   2.6   2.4   2.3  22.1
# Flat from 128 to 256 members (5-12 MiB working set: L3, not L2), 6-9x slower unchunked: 8 MiB
# gives 233 members for 2-2-1 and 174 for 2-3-1.
CHUNK_BYTES = 8 << 20


def chunk_members(layer_sizes: Sequence[int], batch: int, members: int) -> int:
    """Members per chunk: as many as fit ``CHUNK_BYTES`` of float32 working set, at least 1.

    Per member and step the loop touches about 3 float32 values per unit and sample (activation,
    back-propagated gradient, ReLU mask) for every layer after the input.
    """
    per_member = 4 * batch * 3 * sum(layer_sizes[1:])
    return max(1, min(members, CHUNK_BYTES // per_member))


ENGINES = ("fused", "torch", "auto")


def engine_problem(engine: str, device: str, layer_sizes: Sequence[int]) -> str | None:
    """Why ``--model.engine fused`` cannot train this run here (one line naming the alternative), or None."""
    if engine != "fused":
        return None
    if device != "cpu":
        return (f"--model.engine fused runs on the CPU only, and this run trains on {device}: give --model.engine "
                "torch (or auto), or --trainer.accelerator cpu")
    from circuits_pl import fused

    error = fused.import_error()
    if error is not None:
        return (f"--model.engine fused needs numba, which does not import here ({error}): pip install numba, "
                "or give --model.engine torch (or auto)")
    reason = fused.unsupported(layer_sizes)
    if reason is not None:
        return f"--model.engine fused cannot train this network ({reason}): give --model.engine torch (or auto)"
    return None


def resolve_engine(engine: str, device: str, layer_sizes: Sequence[int]) -> str:
    """``fused`` or ``torch`` for ``engine`` (fused|torch|auto) on ``device`` (cpu, cuda, ...).

    ``auto`` is fused where it can run (the CPU, numba importable, one or two hidden layers) and is
    the faster (``fused.slower_than_torch``), else torch. An explicit ``fused`` that cannot run raises
    CircuitsError (:func:`engine_problem`).
    """
    if engine not in ENGINES:
        raise CircuitsError(f"model.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        if engine_problem("fused", device, layer_sizes):
            return "torch"
        from circuits_pl import fused

        return "torch" if fused.slower_than_torch(layer_sizes) else "fused"
    problem = engine_problem(engine, device, layer_sizes)
    if problem:
        raise CircuitsError(problem)
    return engine


def train_block(optimizer: MemberOptimizer, n_weights: int, xt: torch.Tensor, yt: torch.Tensor,
                chunk: int | None = None, members: slice | None = None, engine: str = "torch") -> None:
    """``xt.shape[0]`` training steps of every member, in place.

    Args:
        optimizer: holds the parameters (all weights, then all biases, member dimension first)
            and the rule's state; its step counters advance by the number of steps.
        n_weights: how many of the parameters are weights (the rest are biases).
        xt: inputs ``(S, in, B)``; yt: targets ``(S, 1, B)`` (batch-last).
        chunk: members per chunk; default all members.
        members: train only these members (a process's share under MemberParallelStrategy);
            default all. The others do not move.
        engine: ``torch``, ``fused`` (CPU tensors; members split over ``torch.get_num_threads()``
            threads, which changes nothing in their values) or ``auto`` (see the module docstring).
    """
    params = optimizer.params
    if engine == "auto":
        sizes = [params[0].shape[2]] + [p.shape[1] for p in params[:n_weights]]
        engine = resolve_engine(engine, params[0].device.type, sizes)
    if engine == "fused":
        from circuits_pl.fused import train_members

        first = optimizer.steps_done + 1
        group = optimizer.param_groups[0]
        train_members(params, optimizer.state_tensors(), n_weights, group["rule"], group, xt, yt, first,
                      members or slice(None), threads=torch.get_num_threads())
        optimizer.set_steps(first - 1 + xt.shape[0])
        return
    first_member, end, _ = (members or slice(None)).indices(params[0].shape[0])
    chunk = end - first_member if chunk is None else chunk
    xt = xt.contiguous()  # batch-last in memory: the per-member products run over long rows
    first = optimizer.steps_done + 1
    states = optimizer.state_tensors()
    ys = yt.unbind(0)  # one C++ call instead of an indexing per step
    with torch.no_grad():
        for lo in range(first_member, end, chunk):
            hi = min(lo + chunk, end)
            ps = [p[lo:hi] for p in params]  # views: updated in place
            st = [[s[lo:hi] for s in ss] for ss in states]
            weights, biases = ps[:n_weights], ps[n_weights:]
            # The views step_gradients would make at every step, made once per chunk (~0.8 µs each):
            # each step's inputs expanded to the chunk (K, in, B) and transposed, the weights transposed.
            xs = xt.unsqueeze(1).expand(-1, hi - lo, -1, -1)  # (S, K, in, B)
            steps = list(zip(xs.unbind(0), xs.transpose(2, 3).unbind(0), ys))
            weights_t = [w.transpose(1, 2) for w in weights]
            update = optimizer.updater(ps, st)
            for s, (x, x_t, y) in enumerate(steps):
                update(step_gradients(weights, weights_t, biases, x, x_t, y), first + s)
    optimizer.set_steps(first - 1 + xt.shape[0])


class TrainedMembers:
    """K networks and the update rule that trains them, a block of steps at a time.

    Everything a step changes has the member dimension first (:meth:`tensors`: the parameters, then
    the rule's state), so a member can be put back, replayed or exchanged between processes
    (``strategy.sync_members``) without knowing what the tensors are.

    Args:
        net: the K networks.
        optimizer: their update rule, holding its state (built over ``net.parameters()``).
        engine: what runs the steps: ``torch``, ``fused`` or ``auto`` (see the module docstring).
    """

    def __init__(self, net: ReLUMLP, optimizer: MemberOptimizer, engine: str = "torch"):
        self.net, self.optimizer, self.engine = net, optimizer, engine

    def tensors(self) -> list[torch.Tensor]:
        """Everything a step changes, member dimension first: parameters, then the rule's state."""
        return list(self.optimizer.params) + [t for ts in self.optimizer.state_tensors() for t in ts]

    def steps(self, x: torch.Tensor, y: torch.Tensor, n: int, share: slice | None = None,
              chunk: int | None = None) -> None:
        """The first ``n`` steps of a block ``x (S, B, in)``, ``y (S, B, 1)`` for the members in
        ``share`` (default all), in member chunks (default: as many as stay in cache)."""
        if chunk is None:
            chunk = chunk_members(self.net.layer_sizes, x.shape[1], self.net.members)
        with torch.no_grad():
            xt = x[:n].transpose(1, 2)  # (n, in, B), a view: each engine lays it out as it reads it
            yt = y[:n].transpose(1, 2)  # (n, 1, B), a view
            train_block(self.optimizer, len(self.net.weights), xt, yt, chunk, share, self.engine)

    @torch.no_grad()
    def guarded_steps(self, x: torch.Tensor, y: torch.Tensor, n: int, start: int, frozen: torch.Tensor,
                      share: slice | None = None) -> torch.Tensor | None:
        """:meth:`steps` from SGD step ``start``, keeping ``frozen`` members ``(K,)`` where they were and
        resetting members whose weights became non-finite to their weights and rule state before
        the step where they diverged. Returns per member the step it diverged at in this block
        (``-1``: it did not), or None when no member diverged.

        Frozen members are stepped with the others (every op is per member, so they cannot touch
        another member's values) and put back to their snapshot. The block is replayed from its
        snapshot one step at a time to find each diverged member's exact step; this costs one
        block, and only when something diverged.
        """
        tensors = self.tensors()
        snapshot = [t.detach().clone() for t in tensors]  # the last state known to be finite
        self.steps(x, y, n, share)
        if bool(frozen.any()):
            for t, s in zip(tensors, snapshot):
                t[frozen] = s[frozen]
        bad = ~frozen & ~self.net.finite()
        if not bool(bad.any()):
            return None
        step_of = torch.full(frozen.shape, -1, dtype=torch.long, device=frozen.device)
        result = [t.detach().clone() for t in tensors]  # healthy members keep exactly the real run's values
        for t, s in zip(tensors, snapshot):
            t.copy_(s)
        self.optimizer.set_steps(start)
        for s in range(n):
            before = [t.detach().clone() for t in tensors]
            self.steps(x[s : s + 1], y[s : s + 1], 1, share, chunk=self.net.members)
            loss = self.net.mse(x[s], y[s])
            now_bad = bad & (step_of < 0) & ~(self.net.finite() & torch.isfinite(loss))
            if bool(now_bad.any()):
                step_of[now_bad] = start + s + 1
                for r, b in zip(result, before):
                    r[now_bad] = b[now_bad]  # weights and rule state before the diverging step
            if bool((step_of[bad] >= 0).all()):
                break
        for t, r in zip(tensors, result):
            t.copy_(r)
        self.optimizer.set_steps(start + n)
        return step_of
