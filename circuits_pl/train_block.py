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

Members whose cells differ (``circuits_pl.sweep``) train in groups of one architecture and lr: one
:func:`train_block` call per group and block, with that group's scalar hyper-parameters and its own
kernel (the fused engine's are specialised per layer sizes), so each member trains as in a run of its
own cell under the same engine. ``auto`` is resolved per group, as it would be for that cell alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.network import GroupedMLPs, step_gradients
from circuits_pl.optim import MemberOptimizer

# Bytes of one chunk's per-step working set (activations, gradients, masks) aimed at: small chunks pay
# per-op dispatch, one chunk of every member spills out of the cache; in between the time per
# network-step is flat (benchmarks/hotpath.py prints it by members per chunk). 8 MiB stays in the L3
# cache and gives a few hundred members per chunk for the notebook's sizes.
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


def run_engine(engine: str, device: str, layer_sizes: Sequence[Sequence[int]]) -> str:
    """The engine a run records (hparams, checkpoint, results.json): :func:`resolve_engine` of each group's
    ``layer_sizes``, the one they all resolve to, or ``auto`` when ``auto`` picks differently per group
    (a resumed run resolves them alike again)."""
    engines = {resolve_engine(engine, device, sizes) for sizes in layer_sizes}
    return engines.pop() if len(engines) == 1 else "auto"


def train_block(optimizer: MemberOptimizer, n_weights: int, xt: torch.Tensor, yt: torch.Tensor,
                chunk: int | None = None, members: slice | None = None, group: int = 0,
                engine: str = "torch") -> None:
    """``xt.shape[0]`` training steps of every member of one parameter group, in place.

    Args:
        optimizer: holds the parameters (per group: all weights, then all biases, member dimension
            first), the rule's state and each group's scalar hyper-parameters; ``group``'s step
            counters advance by the number of steps.
        n_weights: how many of the group's parameters are weights (the rest are biases).
        xt: inputs ``(S, in, B)``; yt: targets ``(S, 1, B)`` (batch-last).
        chunk: members per chunk; default all members.
        members: train only these members of the group (a process's share under
            MemberParallelStrategy); default all. The others do not move.
        group: the parameter group (a sweep's group of cells: one architecture, one lr).
        engine: ``torch``, ``fused`` (CPU tensors; members split over ``torch.get_num_threads()``
            threads, which changes nothing in their values) or ``auto`` (see the module docstring).
    """
    params = optimizer.group_params(group)
    if engine == "auto":
        sizes = [params[0].shape[2]] + [p.shape[1] for p in params[:n_weights]]
        engine = resolve_engine(engine, params[0].device.type, sizes)
    first = optimizer.steps_done_of(group) + 1
    states = optimizer.state_tensors(group)
    if engine == "fused":
        from circuits_pl.fused import train_members

        hyper = optimizer.param_groups[group]
        train_members(params, states, n_weights, hyper["rule"], hyper, xt, yt, first, members or slice(None),
                      threads=torch.get_num_threads())
        optimizer.set_steps(first - 1 + xt.shape[0], group)
        return
    first_member, end, _ = (members or slice(None)).indices(params[0].shape[0])
    chunk = end - first_member if chunk is None else chunk
    xt = xt.contiguous()  # batch-last in memory: the per-member products run over long rows
    ys = yt.unbind(0)  # one C++ call instead of an indexing per step
    with torch.no_grad():
        for lo in range(first_member, end, chunk):
            hi = min(lo + chunk, end)
            ps = [p[lo:hi] for p in params]  # views: updated in place
            st = [[s[lo:hi] for s in ss] for ss in states]
            weights, biases = ps[:n_weights], ps[n_weights:]
            # The views step_gradients would make at every step, made once per chunk:
            # each step's inputs expanded to the chunk (K, in, B) and transposed, the weights transposed.
            xs = xt.unsqueeze(1).expand(-1, hi - lo, -1, -1)  # (S, K, in, B)
            steps = list(zip(xs.unbind(0), xs.transpose(2, 3).unbind(0), ys))
            weights_t = [w.transpose(1, 2) for w in weights]
            update = optimizer.updater(ps, st, group)
            for s, (x, x_t, y) in enumerate(steps):
                update(step_gradients(weights, weights_t, biases, x, x_t, y), first + s)
    optimizer.set_steps(first - 1 + xt.shape[0], group)


class TrainedMembers:
    """K networks and the update rule that trains them, a block of steps at a time.

    The networks come in groups (``network.GroupedMLPs``: one architecture and lr each, members
    contiguous), each trained by its own parameter group of the optimizer: a block is one
    :func:`train_block` call per group. Everything a step changes has the member dimension first
    (:meth:`group_tensors`: the parameters, then the rule's state), so a member can be put back,
    replayed or exchanged between processes (``strategy.sync_members``) without knowing what the
    tensors are.

    Args:
        net: the K networks, in groups.
        optimizer: their update rule, holding its state (built over each group's parameters, one
            parameter group per network group).
        engine: what runs the steps: ``torch``, ``fused`` or ``auto`` (resolved per group: see the
            module docstring).
    """

    def __init__(self, net: GroupedMLPs, optimizer: MemberOptimizer, engine: str = "torch"):
        self.net, self.optimizer, self.engine = net, optimizer, engine
        self._engines: dict[int, str] = {}  # per group, the engine ``auto`` resolved to

    def group_tensors(self, group: int) -> list[torch.Tensor]:
        """Everything a step changes in ``group``, member dimension first: parameters, then the rule's state."""
        return list(self.optimizer.group_params(group)) + [t for ts in self.optimizer.state_tensors(group) for t in ts]

    def tensors_by_start(self) -> list[tuple[int, list[torch.Tensor]]]:
        """Per group: the run's index of its first member, and :meth:`group_tensors`."""
        return [(start, self.group_tensors(g)) for g, start in enumerate(self.net.starts)]

    def _shares(self, share: slice | None) -> list[tuple[int, slice]]:
        """(group, slice of the group's members) trained for the run's members ``share`` (default all)."""
        share = share or slice(0, self.net.members)
        return self.net.sweep.shares(share.start, share.stop)

    def steps(self, x: torch.Tensor, y: torch.Tensor, n: int, share: slice | None = None,
              chunk: int | None = None) -> None:
        """The first ``n`` steps of a block ``x (S, B, in)``, ``y (S, B, 1)`` for the members in
        ``share`` (default all), group by group, in member chunks (default: as many as stay in cache)."""
        first = self.optimizer.steps_done
        with torch.no_grad():
            xt = x[:n].transpose(1, 2)  # (n, in, B), a view: each engine lays it out as it reads it
            yt = y[:n].transpose(1, 2)  # (n, 1, B), a view
            for g, members in self._shares(share):
                self._train_group(g, xt, yt, members, chunk)
        self.optimizer.set_steps(first + n)  # every group's, also those trained by other processes

    def _train_group(self, g: int, xt: torch.Tensor, yt: torch.Tensor, members: slice, chunk: int | None) -> None:
        net = self.net.groups[g]
        if chunk is None:
            chunk = chunk_members(net.layer_sizes, xt.shape[-1], net.members)
        train_block(self.optimizer, len(net.weights), xt, yt, chunk, members, g, self.engine_of(g))

    def engine_of(self, group: int) -> str:
        """The engine (``fused`` or ``torch``) that trains ``group``."""
        if group not in self._engines:
            net = self.net.groups[group]
            self._engines[group] = resolve_engine(self.engine, net.weights[0].device.type, net.layer_sizes)
        return self._engines[group]

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
        step_of = None
        with torch.no_grad():
            xt = x[:n].transpose(1, 2)  # (n, in, B), a view: each engine lays it out as it reads it
            yt = y[:n].transpose(1, 2)  # (n, 1, B), a view
            for g, members in self._shares(share):
                lo = self.net.starts[g]
                part = slice(lo, lo + self.net.groups[g].members)
                diverged = self._guarded_group(g, x, y, xt, yt, n, start, frozen[part], members)
                if diverged is not None:
                    if step_of is None:
                        step_of = torch.full(frozen.shape, -1, dtype=torch.long, device=frozen.device)
                    step_of[part] = diverged
        self.optimizer.set_steps(start + n)  # every group's, also those trained by other processes
        return step_of

    def _guarded_group(self, g: int, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, n: int,
                       start: int, frozen: torch.Tensor, members: slice) -> torch.Tensor | None:
        """:meth:`guarded_steps` for group ``g`` (its members ``members``, ``frozen`` its own ``(K_g,)``;
        ``xt``, ``yt``: the block ``x``, ``y`` batch-last)."""
        net = self.net.groups[g]
        tensors = self.group_tensors(g)
        snapshot = [t.detach().clone() for t in tensors]  # the last state known to be finite
        self._train_group(g, xt, yt, members, None)
        if bool(frozen.any()):
            for t, s in zip(tensors, snapshot):
                t[frozen] = s[frozen]
        bad = ~frozen & ~net.finite()
        if not bool(bad.any()):
            return None
        step_of = torch.full(frozen.shape, -1, dtype=torch.long, device=frozen.device)
        result = [t.detach().clone() for t in tensors]  # healthy members keep exactly the real run's values
        for t, s in zip(tensors, snapshot):
            t.copy_(s)
        self.optimizer.set_steps(start, g)
        for s in range(n):
            before = [t.detach().clone() for t in tensors]
            self._train_group(g, xt[s : s + 1], yt[s : s + 1], members, net.members)
            loss = net.mse(x[s], y[s])
            now_bad = bad & (step_of < 0) & ~(net.finite() & torch.isfinite(loss))
            if bool(now_bad.any()):
                step_of[now_bad] = start + s + 1
                for r, b in zip(result, before):
                    r[now_bad] = b[now_bad]  # weights and rule state before the diverging step
            if bool((step_of[bad] >= 0).all()):
                break
        for t, r in zip(tensors, result):
            t.copy_(r)
        self.optimizer.set_steps(start + n, g)
        return step_of
