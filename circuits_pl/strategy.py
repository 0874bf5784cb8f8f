"""Member parallelism: Lightning's DDP launcher and process group, each rank training its own members.

The members of a run are independent networks, so circuits_pl spreads *members* over processes,
not batches: under ``--trainer.strategy ddp`` with world size W, rank r trains a contiguous share of
the K members (:func:`member_share`; uneven shares allowed) on the same training stream as every
other rank. Nothing is communicated per SGD step. After a block that is followed by a validation
or logs the train loss (once per step count: ``CircuitModule._sync_population``), the ranks exchange
their members' weights, rule state and divergence marks (:func:`sync_members`), so every rank then holds
the whole population: validation, the best member, early stopping, the printed lines and the
checkpoint (written by rank 0, holding all K members) are those of the whole run, and a run saved
on W ranks resumes on any other number.

Why not DDP's wrapper: ``DistributedDataParallel`` all-reduces gradients after every backward (there
is no autograd backward here: the step is hand-derived) and broadcasts rank 0's buffers before every
forward, which would overwrite the per-member state of the members other ranks train. The
strategy keeps DDP's launcher, process group and collectives and leaves the module unwrapped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed import ReduceOp

from circuits_pl.compat import HookedDDPStrategy, script_launcher
from circuits_pl.errors import CircuitsError
from circuits_pl.interrupts import RankLauncher


class MemberParallelStrategy(HookedDDPStrategy):
    """DDPStrategy without the DistributedDataParallel wrapper (see the module docstring)."""

    strategy_name = "ddp_members"

    def configure_ddp(self) -> None:
        pass  # no wrapper: members are independent, and the module syncs them at each validation

    def replace_launcher(self, launcher: Any) -> Any:
        if type(launcher) is script_launcher():  # popen: watch the ranks (circuits_pl.interrupts)
            return RankLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
        return launcher

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: ReduceOp | str | None = "mean") -> Any:
        """``DDPStrategy.reduce`` without the barrier Lightning runs before every all_reduce (an
        all_reduce synchronises the ranks by itself). The per-block decisions (the interrupt vote,
        ModelCheckpoint's top-k vote) go through here, once per block: a barrier each time would be
        a visible share of a fast block."""
        if not isinstance(tensor, torch.Tensor) or not (dist.is_available() and dist.is_initialized()):
            return tensor
        group = dist.group.WORLD if group is None else group
        divide = False
        if isinstance(reduce_op, str):
            name = "avg" if reduce_op.lower() in ("mean", "avg") else reduce_op.lower()
            if name == "avg" and dist.get_backend(group) == "gloo":  # gloo has no AVG
                op, divide = ReduceOp.SUM, True
            else:
                op = getattr(ReduceOp, name.upper())
        else:
            op = ReduceOp.SUM if reduce_op is None else reduce_op
        dist.all_reduce(tensor, op=op, group=group)
        if divide:
            size = dist.get_world_size(group)
            return tensor.div_(size) if torch.is_floating_point(tensor) else tensor.copy_(tensor / size)
        return tensor


def check_strategy(strategy: Any) -> None:
    """Refuse a DDP strategy that would wrap the module: it would average gradients of independent members."""
    if isinstance(strategy, DDPStrategy) and not isinstance(strategy, MemberParallelStrategy):
        raise CircuitsError(
            f"strategy {type(strategy).__name__} would average gradients of independent members; use "
            "circuits_pl.strategy.MemberParallelStrategy() (the CLI's --trainer.strategy ddp does), which "
            "gives each process its own members")


def is_member_parallel(strategy: Any) -> bool:
    """Does a Trainer's ``strategy`` (an instance, or a config's ``class_path`` entry) name
    MemberParallelStrategy (several processes, each training its share of the members)?"""
    if isinstance(strategy, MemberParallelStrategy):
        return True
    path = strategy.get("class_path", "") if callable(getattr(strategy, "get", None)) else ""
    return "MemberParallelStrategy" in str(path)


def member_share(members: int, world_size: int, rank: int) -> slice:
    """The contiguous members rank ``rank`` trains: the first ``members % world_size`` ranks get one more."""
    base, extra = divmod(members, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def sync_members(parts: list[tuple[int, list[torch.Tensor]]], members: int, strategy) -> None:
    """Make every rank hold every member's values, in place.

    ``parts``: (start, tensors) pairs; each tensor's leading dimension holds the run's members
    ``start, start + 1, ...`` (a group of a sweep's cells, or all ``members``). Each rank broadcasts
    what it holds of its own share (:func:`member_share` of the ``members`` of the run), as float64,
    which holds every float32 weight and every step count exactly; the others receive it: one
    broadcast per rank whatever the number of parts (with gloo a broadcast costs a fraction of an
    ``all_reduce`` of the same values). One broadcast per rank suits the few ranks of a CPU host or a
    GPU node; it grows with W.
    """
    world = strategy.world_size
    parts = [(start, tensors) for start, tensors in parts if tensors]
    if not parts or world == 1:
        return
    device = parts[0][1][0].device
    for rank in range(world):
        share = member_share(members, world, rank)
        # per part: the slice of its own members that lie in this rank's share
        pieces = [(t, slice(max(share.start - start, 0), min(share.stop - start, t.shape[0])))
                  for start, tensors in parts for t in tensors]
        pieces = [(t, s) for t, s in pieces if s.start < s.stop]
        sizes = [(s.stop - s.start) * t[0].numel() for t, s in pieces]
        if not pieces:
            continue
        if rank == strategy.global_rank:
            buf = torch.cat([t[s].reshape(-1).to(torch.float64) for t, s in pieces])
        else:
            buf = torch.empty(sum(sizes), dtype=torch.float64, device=device)
        dist.broadcast(buf, src=rank)
        if rank != strategy.global_rank:
            with torch.no_grad():  # parameters: written in place, not a step of autograd
                for (t, s), part in zip(pieces, buf.split(sizes)):
                    mine = t[s]  # a view: written in place
                    mine.copy_(part.view(mine.shape))
