"""Update rules for K stacked networks at once: SGD, SGD with momentum, Adam. Plain PyTorch.

Every tensor here has the leading member dimension K (weights ``(K, out, in)``, and the rule's
state likewise), so one elementwise op updates every member. Each rule replicates, op for op and
in the same order, torch.optim's *single-tensor* implementation (``_single_tensor_sgd``,
``_single_tensor_adam`` in torch 2.13: the path torch.optim takes by default on CPU), so a member
ends bit-identical to ``torch.optim.SGD``/``Adam`` stepping that member alone on the same
gradients (tests/test_optim.py, 300 steps, ``torch.equal``). All ops are elementwise, so member
k's values never depend on K or on how members are split into chunks.

Hyper-parameters (torch.optim's names and meanings):
    sgd       lr, weight_decay (L2: grad + wd * w)
    momentum  lr, momentum, dampening, nesterov, weight_decay
    adam      lr, betas, eps, weight_decay (L2, as torch.optim.Adam; not AdamW's decoupled decay)
Left out: maximize, amsgrad, and fused/foreach/capturable (implementation switches, not rules).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from circuits_pl.errors import CircuitsError

RULES = ("sgd", "momentum", "adam")
STATE_KEYS = {"sgd": (), "momentum": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}


@dataclass(frozen=True)
class OptimizerSettings:
    """The update rule and its hyper-parameters (``--model.*``), checked once, here.

    torch.optim's names, meanings and valid ranges; a bad value is a one-line CircuitsError naming
    the option. Every rule's fields are kept (an sgd run records momentum 0.9 too), so the
    checkpoint's param group always has the same keys.
    """

    rule: str = "sgd"  # the notebook's plain SGD; momentum and adam for comparison
    lr: float = 0.1  # the notebook: 1e-4; its author later used 0.1, which solves every task
    momentum: float = 0.9  # for momentum (torch.optim.SGD's)
    dampening: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # for adam (torch.optim.Adam's)
    eps: float = 1e-8
    weight_decay: float = 0.0  # L2 added to the gradient, every rule (torch.optim's, not AdamW's)

    def __post_init__(self) -> None:
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise CircuitsError(f"model.lr must be a positive number, got {self.lr!r}")
        if self.rule not in RULES:
            raise CircuitsError(f"model.optimizer must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not number(self.momentum) or not 0 <= self.momentum < 1:
            raise CircuitsError(f"model.momentum must be in [0, 1), got {self.momentum!r}")
        if not number(self.dampening) or not 0 <= self.dampening <= 1:
            raise CircuitsError(f"model.dampening must be in [0, 1], got {self.dampening!r}")
        if self.nesterov and (self.rule != "momentum" or self.momentum <= 0 or self.dampening != 0):
            raise CircuitsError("model.nesterov needs --model.optimizer momentum, a momentum > 0 and dampening 0")
        betas = list(self.betas)
        if len(betas) != 2 or not all(number(b) and 0 <= b < 1 for b in betas):
            raise CircuitsError(f"model.betas must be two numbers in [0, 1), got {betas!r}")
        if not number(self.eps) or not self.eps > 0:
            raise CircuitsError(f"model.eps must be a positive number, got {self.eps!r}")
        if not number(self.weight_decay) or self.weight_decay < 0:
            raise CircuitsError(f"model.weight_decay must be a number >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))

    def build(self, params: Iterable[torch.Tensor], lrs: Sequence[float] | None = None) -> MemberOptimizer:
        """The optimizer of these settings over ``params`` (member dimension first): one parameter
        group, or with ``lrs`` one group per entry of ``params`` (a sequence of parameter lists: a
        sweep's groups), each with its own lr."""
        if lrs is None:
            return MemberOptimizer(params, **asdict(self))
        groups = [{"params": list(p), "lr": float(lr)} for p, lr in zip(params, lrs, strict=True)]
        return MemberOptimizer(groups, **asdict(self))

    def apply_to(self, optimizer: MemberOptimizer, lrs: Sequence[float] | None = None) -> None:
        """Make a restored optimizer (its state and hyper-parameters from a checkpoint) use these
        settings, with ``lrs`` per parameter group (default this lr in every group); its rule cannot
        change (the state of one rule cannot continue another)."""
        groups = optimizer.param_groups
        if groups[0]["rule"] != self.rule:
            raise CircuitsError(f"the checkpoint was trained with --model.optimizer {groups[0]['rule']}, not "
                                f"{self.rule}: its optimizer state cannot continue another rule")
        lrs = [self.lr] * len(groups) if lrs is None else lrs
        for group, lr in zip(groups, lrs, strict=True):
            group.update(lr=float(lr), momentum=float(self.momentum), dampening=float(self.dampening),
                         nesterov=bool(self.nesterov), betas=self.betas, eps=float(self.eps),
                         weight_decay=float(self.weight_decay))


class MemberOptimizer(torch.optim.Optimizer):
    """One update rule for stacked members, holding its state where torch.optim keeps it.

    One parameter group per group of a sweep's cells (``circuits_pl.sweep``: one architecture, one
    lr), each with its own scalar hyper-parameters, as torch.optim's groups: a member's update then
    rounds exactly as in a run of its cell alone (a per-member lr tensor would not). The rule is one
    for all groups.

    ``state[p]`` holds tensors shaped like ``p`` (member dimension first) and ``step``, a float32
    scalar tensor counting the updates, as torch.optim's own: ``state_dict()`` therefore holds
    tensors and plain values only (checkpoints load with ``weights_only=True``) and Lightning saves
    and restores it like any optimizer's. The state is created at construction (zeros, step 0), so
    a chunk of members can be updated through views of it.

    ``step()`` with no argument is not how it is driven: the training loop computes gradients itself
    (no autograd) and calls :meth:`update` with them, for all members or a chunk of them.
    """

    def __init__(self, params: Iterable[torch.Tensor], rule: str = "sgd", lr: float = 0.1,
                 momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if rule not in RULES:
            raise ValueError(f"optimizer must be one of {', '.join(RULES)}, got {rule!r}")
        defaults = dict(rule=rule, lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                        nesterov=bool(nesterov), betas=tuple(float(b) for b in betas), eps=float(eps),
                        weight_decay=float(weight_decay))
        super().__init__(params, defaults)
        if len({g["rule"] for g in self.param_groups}) != 1:
            raise ValueError("MemberOptimizer takes one rule for all its parameter groups")
        for p in self.params:
            self.state[p]["step"] = torch.tensor(0.0)
            for key in STATE_KEYS[rule]:
                self.state[p][key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @property
    def params(self) -> list[torch.Tensor]:
        """Every parameter, group after group."""
        return [p for g in self.param_groups for p in g["params"]]

    def group_params(self, group: int = 0) -> list[torch.Tensor]:
        return self.param_groups[group]["params"]

    @property
    def steps_done(self) -> int:
        return self.steps_done_of(0)

    def steps_done_of(self, group: int = 0) -> int:
        params = self.group_params(group)
        return int(self.state[params[0]]["step"]) if params else 0

    def state_tensors(self, group: int | None = None) -> list[list[torch.Tensor]]:
        """Per parameter (of ``group``, default all), its rule state tensors (member dimension
        first), in ``STATE_KEYS`` order."""
        keys = STATE_KEYS[self.param_groups[0]["rule"]]
        params = self.params if group is None else self.group_params(group)
        return [[self.state[p][k] for k in keys] for p in params]

    def update(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
               states: Sequence[Sequence[torch.Tensor]], step: int, group: int = 0) -> None:
        """Apply update number ``step`` (1-based) to ``params`` of parameter group ``group`` (all its
        members or a chunk of them).

        ``states`` are the matching (possibly chunked) views of :meth:`state_tensors`. The caller sets
        the ``step`` counters once the block is done (:meth:`set_steps`), so every chunk sees the
        same step numbers. Gradients may be overwritten (they are scratch).
        """
        with torch.no_grad():
            self.updater(params, states, group)(grads, step)

    def updater(self, params: Sequence[torch.Tensor], states: Sequence[Sequence[torch.Tensor]],
                group: int = 0) -> Callable[[Sequence[torch.Tensor], int], None]:
        """:meth:`update` bound to ``params`` and ``states`` (of parameter group ``group``, whose
        hyper-parameters it takes) for a block of steps: ``fn(grads, step)``, to be called under
        ``torch.no_grad()`` (the hot loop is). The hyper-parameters are read once per block instead
        of at every step, as is the grad-mode switch :meth:`update` makes."""
        group = self.param_groups[group]
        rule, lr, wd = group["rule"], group["lr"], group["weight_decay"]
        momentum, dampening, nesterov = group["momentum"], group["dampening"], group["nesterov"]
        betas, eps = group["betas"], group["eps"]
        pairs = list(zip(params, states))

        def apply(grads: Sequence[torch.Tensor], step: int) -> None:
            for (p, st), g in zip(pairs, grads):
                if wd != 0:
                    g = g.add(p, alpha=wd)
                if rule == "sgd":
                    p.add_(g, alpha=-lr)
                elif rule == "momentum":
                    momentum_update(p, g, st[0], step, lr, momentum, dampening, nesterov)
                else:
                    adam_update(p, g, st[0], st[1], step, lr, betas, eps)

        return apply

    def set_steps(self, steps: int, group: int | None = None) -> None:
        """Set the step counters of ``group``'s parameters (default every group's)."""
        for p in self.params if group is None else self.group_params(group):
            self.state[p]["step"].fill_(float(steps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch.optim's signature
        """torch.optim's interface, for completeness: one update from the ``.grad`` of each param."""
        loss = closure() if closure is not None else None
        if all(p.grad is not None for p in self.params):
            step = self.steps_done + 1
            for g in range(len(self.param_groups)):
                params = self.group_params(g)
                self.update(params, [p.grad for p in params], self.state_tensors(g), step, g)
            self.set_steps(step)
        return loss


def momentum_update(p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor, step: int, lr: float,
                    momentum: float, dampening: float, nesterov: bool) -> None:
    """torch 2.13 ``_single_tensor_sgd`` with momentum: the buffer starts as the first gradient."""
    if step == 1:
        buf.copy_(g)
    else:
        buf.mul_(momentum).add_(g, alpha=1 - dampening)
    g = g.add(buf, alpha=momentum) if nesterov else buf
    p.add_(g, alpha=-lr)


def adam_update(p: torch.Tensor, g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                step: int, lr: float, betas: Sequence[float], eps: float) -> None:
    """torch 2.13 ``_single_tensor_adam`` (not capturable, no amsgrad): same ops, same Python scalars."""
    beta1, beta2 = betas
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    step = float(step)  # torch: step_t (float32 tensor) += 1, then .item()
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    p.addcdiv_(exp_avg, denom, value=-step_size)
