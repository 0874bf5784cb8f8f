"""The population record: what circuits_pl knows of each of the K members, and how a validation
updates it. Plain PyTorch, no Lightning.

The networks hold the weights (``circuits_pl.network``); this record holds the facts about each
member that the run accumulates, as buffers with the member dimension first, so they travel with the
module (device, checkpoint; tensors only: checkpoints load with ``weights_only=True``)::

    success_mse   (K,)            below this validation MSE a member is solved (from the run's settings)
    cell_of       (K,)            the member's cell of the sweep (``circuits_pl.sweep``; 0 in a plain run)
    val_mse       (K,)            at the last validation (NaN once diverged)
    val_history   (HISTORY, K)    the last HISTORY regular validations, oldest first
    solved_at     (K,)            SGD step of the first regular validation below success_mse; -1: not yet
    diverged_at   (K,)            SGD step at which the weights became non-finite; -1: alive
    best_member   ()              lowest val_mse at the last validation

and, beside them, the loss curves of the whole population (``loss_history``: train/val MSE of the
best and the median member by SGD step, in checkpoints), which the figures draw whatever the logger,
and each member's test MSE once tested.

Only regular validations (on the ``val_check_interval`` grid) enter the history and solved-at: the
extra one Lightning runs where a run stops off-schedule does not, so a run resumed from there keeps
exactly the record of a run that never stopped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from circuits_pl.errors import CircuitsError, TrainingDiverged

HISTORY = 8  # validations of per-member MSE kept, to tell a stuck member from a slow one
BUFFERS = ("val_mse", "val_history", "solved_at", "diverged_at", "best_member")
CURVES = ("train/mse", "train/median_mse", "val/mse", "val/median_mse")  # what the loss figure draws


class Population(nn.Module):
    """Per-member state of K members and its update at each validation.

    Args:
        members: K.
        success_mse: validation MSE below which a member counts as solved: one number, or one per
            member ``(K,)`` (a sweep's cells of different sizes have different thresholds).
        cell_of: per member its cell of the sweep ``(K,)``; default all in cell 0.
    """

    def __init__(self, members: int, success_mse: float | torch.Tensor, cell_of: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(members, int) or isinstance(members, bool) or members <= 0:
            raise CircuitsError(f"model.members must be a positive integer, got {members!r}")
        threshold = torch.as_tensor(success_mse, dtype=torch.float64).expand(members).clone()
        if not bool((threshold > 0).all()):
            raise CircuitsError(f"model.success_mse must be a positive number, got {success_mse!r}")
        self.members = members
        # derived from the hyper-parameters, so not saved (persistent=False): they move with the module
        self.register_buffer("success_mse", threshold, persistent=False)
        cell_of = torch.zeros(members, dtype=torch.long) if cell_of is None else cell_of.long()
        self.register_buffer("cell_of", cell_of, persistent=False)
        self.cells = int(cell_of.max()) + 1
        self.register_buffer("val_mse", torch.full((members,), math.nan))
        self.register_buffer("val_history", torch.full((HISTORY, members), math.nan))
        self.register_buffer("solved_at", torch.full((members,), -1, dtype=torch.long))
        self.register_buffer("diverged_at", torch.full((members,), -1, dtype=torch.long))
        self.register_buffer("best_member", torch.zeros((), dtype=torch.long))
        # column -> (steps, values); in checkpoints as plain lists (they load with weights_only=True)
        self.loss_history: dict[str, tuple[list[float], list[float]]] = {}
        self.test_mse: torch.Tensor | None = None  # (K,) on the test set, after test (not in checkpoints)
        self.heldout_mse: torch.Tensor | None = None  # (K,) on the held-out directions of a cone run

    @property
    def alive(self) -> torch.Tensor:
        """Per member: not diverged. ``(K,)`` bool."""
        return self.diverged_at < 0

    @property
    def solved(self) -> torch.Tensor:
        """Per member: validation MSE below the success threshold at the last validation."""
        return self.below_threshold(self.val_mse) & self.alive

    # --- updates -----------------------------------------------------------------------------------
    def below_threshold(self, mse: torch.Tensor) -> torch.Tensor:
        """Per member: ``mse < success_mse``, compared in ``mse``'s dtype (float32: as a Python-float
        threshold always was)."""
        return mse < self.success_mse.to(mse.dtype)

    def solved_per_cell(self) -> torch.Tensor:
        """Solved members per cell: ``(cells,)``."""
        return torch.bincount(self.cell_of[self.solved], minlength=self.cells)

    def record_validation(self, mse: torch.Tensor, step: int | None = None, scheduled: bool = False) -> None:
        """Per-member validation MSE ``(K,)`` measured at SGD step ``step`` of fit: diverged members
        get NaN, the best member is updated, and a ``scheduled`` (regular) validation also enters the
        history and the first step solved. ``step`` None (``validate``: no training): the MSE alone."""
        if step is None:
            self.val_mse = mse
            return
        mse = torch.where(self.alive, mse, torch.full_like(mse, math.nan))
        self.val_mse = mse
        ranked = torch.where(torch.isfinite(mse), mse, torch.full_like(mse, math.inf))
        self.best_member.fill_(int(ranked.argmin()))
        if scheduled:
            self.val_history = torch.cat([self.val_history[1:], mse.unsqueeze(0)])
            newly = self.below_threshold(mse) & (self.solved_at < 0)
            self.solved_at[newly] = step

    def record_divergence(self, diverged_at: torch.Tensor) -> list[int]:
        """Mark the members whose step in ``diverged_at`` is set (>= 0; -1: not diverged) as
        diverged from then on; the members newly marked."""
        newly = self.alive & (diverged_at >= 0)
        self.diverged_at[newly] = diverged_at[newly]
        return newly.nonzero().flatten().tolist()

    def raise_if_all_diverged(self, lr: float | str, task: str, init_scale: float | str | None = None) -> None:
        """TrainingDiverged, at the step the last member went, once no member is alive. ``init_scale``: the
        run's init scale when above 1 (then a cause too: 1e30 gave a non-finite loss at the first step)."""
        if bool(self.alive.any()):
            return
        cause = f"the learning rate {_number(lr)}" + (f" or the init scale {_number(init_scale)}" if init_scale else "")
        smaller = "--model.lr" + (" or --model.init_scale" if init_scale else "")
        raise TrainingDiverged(
            f"training diverged at step {int(self.diverged_at.max())}: the loss became non-finite (inf/NaN) "
            f"for {'the network' if self.members == 1 else 'every member'}; {cause} is likely too large for task "
            f"{task!r} (try a smaller {smaller}). Checkpoints on disk hold only finite weights."
        )

    def record_losses(self, metrics: dict[str, Any], step: int) -> None:
        """Append the loss columns among ``metrics`` (logged at SGD step ``step`` of fit) to ``loss_history``."""
        for key in CURVES:
            if key in metrics:
                steps, values = self.loss_history.setdefault(key, ([], []))
                steps.append(float(step))
                values.append(float(metrics[key]))

    def losses_state(self) -> dict[str, list[list[float]]]:
        """``loss_history`` for a checkpoint (lists only)."""
        return {k: [list(s), list(v)] for k, (s, v) in self.loss_history.items()}

    def load_losses(self, state: dict[str, Any]) -> None:
        self.loss_history = {k: (list(s), list(v)) for k, (s, v) in state.items()}

    # --- reading it --------------------------------------------------------------------------------
    def median(self, values: torch.Tensor) -> torch.Tensor:
        """The median of per-member ``values`` over live members (see :func:`live_median`)."""
        return live_median(values, self.alive)

    def validation_line(self, step: int) -> str:
        """The line fit prints at each validation."""
        return (f"step {step:>8}  val MSE {self.describe(self.val_mse)}  "
                f"solved {int(self.solved.sum())}/{self.members}")

    def divergence_warning(self, newly: list[int], step: int, rank: int | None = None) -> str:
        """What fit says when members diverge at ``step`` (on DDP rank ``rank``: the others are
        decided at the next validation, when the ranks exchange their members)."""
        text = f"warning: member(s) {newly} diverged (non-finite loss) at step {step}"
        if rank is not None:
            return f"{text} on rank {rank}; reset to their last finite weights and frozen"
        return (f"{text}; reset to their last finite weights and frozen; the other {int(self.alive.sum())} "
                "member(s) go on training")

    def describe(self, mse: torch.Tensor) -> str:
        """Per-member MSE in one phrase: ``best 1.3e-11 (member 23), median 7e-10`` (one member: its value)."""
        if self.members == 1:
            return f"{float(mse[0]):.4g}"
        ranked = torch.where(torch.isfinite(mse), mse, math.inf)
        if not bool(torch.isfinite(ranked).any()):
            return "nan"
        best = int(ranked.argmin())
        return f"best {float(mse[best]):.3g} (member {best}), median {float(self.median(mse)):.3g}"


def _number(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def live_median(values: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Median over live members with a finite value (the mean of the middle two for an even count)."""
    live = values[alive & torch.isfinite(values)]
    return live.double().quantile(0.5).to(values.dtype) if live.numel() else torch.tensor(math.nan)


def upgrade_state_dict(state_dict: dict[str, Any], prefix: str = "population.") -> None:
    """Checkpoints written before the record had a module of its own hold its buffers at the
    LightningModule's top level (``val_mse``, ...): move them under ``prefix``, in place."""
    for name in BUFFERS:
        if name in state_dict and prefix + name not in state_dict:
            state_dict[prefix + name] = state_dict.pop(name)
