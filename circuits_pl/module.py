"""The LightningModule: K ReLU MLPs trained with SGD on MSE, per-member metrics, solved/diverged state.

Flow of one training batch (a block of S SGD steps, see ``circuits_pl.data``)::

    x (S, B, in), y (S, B, 1)
      -> for each step s:  grads = net.gradients(x[s], y[s])      hand-derived, equal to autograd
                           [DDP: grads averaged over ranks]
                           W -= lr * grad                           plain SGD, every member at once
                           global_step += 1                         Lightning's own step counter
      -> after the block:  members whose weights became non-finite are reset to their last finite
                           state and frozen ("diverged"); train/mse is logged.

Why by hand (one thread, 2-2-1, batch 1000, measured in this repo's benchmarks/speed.py): the
notebook's autograd loop costs ~200 µs per step; Lightning's batch machinery ~1.6 ms per batch; the
hand-derived step 40 µs. ``LightningOptimizer.step()`` adds ~65 µs per step (closure, precision and
strategy hooks), so the update is applied directly and only Lightning's step bookkeeping is called
(``_on_before_step``/``_on_after_step``, the exact calls ``LightningOptimizer.step`` makes), keeping
``global_step``, ``max_steps`` and checkpoint resume in SGD steps. Not run on this path:
``on_before_optimizer_step`` hooks, gradient clipping, mixed precision.
"""

from __future__ import annotations

import math
import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from torchmetrics import MeanSquaredError

from circuits_pl.compat import record_resolved
from circuits_pl.errors import CircuitsError, TrainingDiverged
from circuits_pl.network import ReLUMLP
from circuits_pl.strategy import MemberParallelStrategy, member_share, sync_members
from circuits_pl.success import success_threshold
from circuits_pl.tasks import get_task

HISTORY = 8  # validations of per-member MSE kept, to tell a stuck member from a slow one


class CircuitModule(pl.LightningModule):
    """K independently initialised ReLU MLPs learning one task with SGD and MSE.

    Args:
        task: task name (linked from the top-level ``--task``).
        layer_sizes: sizes from input to output; default: the task's (e.g. 2-3-1 for min).
        bias: give every layer a bias (the notebook's study uses none).
        lr: SGD learning rate (the notebook: 1e-4; its author later used 0.1, which solves every task).
        members: K, networks trained at once. Member k starts as a single run with seed ``init_seed + k``.
            64 by default: a seed finds the exact circuit with probability 0.31 (abs) to 0.66
            (subtract) at lr 0.1, so 64 seeds all fail with probability below 1e-10.
        init_seed: seed of member 0's initial weights; default: the run's ``seed_everything``.
        success_mse: validation MSE below which a member counts as solved; default: the MSE of the
            task's exact circuit with every weight perturbed by ±1e-5 (about 1e-10).
        member: member used by ``forward``, ``validate``/``test``/``predict`` metrics and readout;
            default: the best (lowest validation MSE). Not a hyper-parameter: not saved.
    """

    def __init__(
        self,
        task: str = "identity",
        layer_sizes: list[int] | None = None,
        bias: bool = False,
        lr: float = 0.1,
        members: int = 64,
        init_seed: int | None = None,
        success_mse: float | None = None,
        member: int | None = None,
    ):
        super().__init__()
        self.task = get_task(task)
        sizes = self.task.check_layer_sizes(self.task.layer_sizes if layer_sizes is None else layer_sizes)
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise CircuitsError(f"model.lr must be a positive number, got {lr!r}")
        if not isinstance(members, int) or isinstance(members, bool) or members <= 0:
            raise CircuitsError(f"model.members must be a positive integer, got {members!r}")
        if success_mse is not None and not success_mse > 0:
            raise CircuitsError(f"model.success_mse must be a positive number, got {success_mse!r}")
        if member is not None and not 0 <= member < members:
            raise CircuitsError(f"model.member must be in 0..{members - 1} ({members} members), got {member!r}")
        init_seed = int(torch.initial_seed() if init_seed is None else init_seed)  # seed_everything's
        self.save_hyperparameters(ignore=["member"])
        record_resolved(self, layer_sizes=list(sizes), init_seed=init_seed)
        self.member = member
        self.automatic_optimization = False  # S SGD steps per Lightning batch: see the module docstring

        self.net = ReLUMLP(sizes, members, bias, init_seed)
        self.success_mse = success_mse if success_mse is not None else success_threshold(self.task, sizes)
        # Per-member state, saved in checkpoints (tensors only: checkpoints load with weights_only=True).
        self.register_buffer("val_mse", torch.full((members,), math.nan))
        self.register_buffer("val_history", torch.full((HISTORY, members), math.nan))
        self.register_buffer("solved_at", torch.full((members,), -1, dtype=torch.long))
        self.register_buffer("diverged_at", torch.full((members,), -1, dtype=torch.long))
        self.register_buffer("best_member", torch.zeros((), dtype=torch.long))
        self._scheduled_validation = False
        # sync_on_compute off: under MemberParallelStrategy every rank evaluates every member itself
        self.val_metric = MeanSquaredError(num_outputs=members, sync_on_compute=False)
        self.test_metrics = torch.nn.ModuleList(
            [MeanSquaredError(num_outputs=members, sync_on_compute=False) for _ in range(2)])
        self.test_mse: torch.Tensor | None = None  # per member, after test
        self.heldout_mse: torch.Tensor | None = None
        # What the loss curves show, whatever the logger (or none): column -> (steps, values).
        # Kept in checkpoints (plain lists: they load with weights_only=True).
        self.loss_history: dict[str, tuple[list[float], list[float]]] = {}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's ``load_from_checkpoint``, but a checkpoint of your own task needs
        ``task='package.module:function'``: loading a checkpoint never imports code it names."""
        from circuits_pl.checkpoints import check_checkpoint

        if isinstance(checkpoint_path, (str, os.PathLike)):
            check_checkpoint(checkpoint_path, task=kwargs.get("task"), option="task=")
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, **kwargs)

    # ------------------------------------------------------------------------------------------
    # Using a trained module
    # ------------------------------------------------------------------------------------------
    @property
    def members(self) -> int:
        return self.net.members

    @property
    def selected_member(self) -> int:
        """The member that ``forward`` uses: ``member`` if given, else the best by validation MSE."""
        return int(self.best_member) if self.member is None else self.member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(N, 1)`` of the selected member for inputs ``(N, in)``."""
        return self.net(x, member=self.selected_member)

    @property
    def alive(self) -> torch.Tensor:
        return self.diverged_at < 0

    def setup(self, stage: str) -> None:
        check_precision(self.trainer.precision)
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and not isinstance(strategy, MemberParallelStrategy):
            raise CircuitsError(
                f"strategy {type(strategy).__name__} would average gradients of independent members; use "
                "circuits_pl.strategy.MemberParallelStrategy() (the CLI's --trainer.strategy ddp does), which "
                "gives each process its own members")

    @property
    def share(self) -> slice:
        """The members this process trains: its share under MemberParallelStrategy, else all."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer
            return slice(0, self.members)
        if trainer is None or trainer.world_size == 1:
            return slice(0, self.members)
        return member_share(self.members, trainer.world_size, trainer.global_rank)

    def on_fit_start(self) -> None:
        hp = self.hparams
        sizes = "-".join(map(str, hp.layer_sizes))
        members = f"{self.members} members (seeds {hp.init_seed}..{hp.init_seed + self.members - 1})" \
            if self.members > 1 else f"seed {hp.init_seed}"
        bias = "on" if hp.bias else "off"
        self.print(f"Task {self.task.name}: f = {self.task.formula}; network {sizes}, bias {bias}, "
                   f"{members}, SGD lr {hp.lr:g}; solved when validation MSE < {self.success_mse:.3g}")
        if self.trainer.ckpt_path is None:
            self.print(f"Initial weights{' of member 0' if self.members > 1 else ''}:")
            self.print(self.weights_text(0))
        else:  # weights are restored by now, the step counter only after this hook
            self.print(f"Resuming from {self.trainer.ckpt_path}")

    def on_train_start(self) -> None:
        # A resumed run restores the optimizer's lr from the checkpoint; --model.lr decides.
        for group in self.optimizers().param_groups:
            group["lr"] = self.hparams.lr

    # ------------------------------------------------------------------------------------------
    # Training: the hot path
    # ------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Plain SGD (no momentum, no weight decay): the update in _sgd_steps equals SGD.step exactly.
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # (S, B, in), (S, B, 1)
        start = self.global_step
        n = x.shape[0]
        if self.trainer.max_steps >= 0:
            n = min(n, self.trainer.max_steps - start)
        params = list(self.net.parameters())
        snapshot = [p.detach().clone() for p in params]  # the last state known to be finite
        self._sgd_steps(x, y, n)
        self._handle_divergence(snapshot, x, y, n, start)
        # Is the validation after this block the regular one (every val_check_interval batches)?
        # Blocks are aligned to steps, so this is the same test in SGD steps, resumed or not.
        val_every = self.trainer.val_check_batch
        self._scheduled_validation = isinstance(val_every, int) and (batch_idx + 1) % val_every == 0
        if self.trainer.max_steps >= 0 and self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True  # Lightning then validates, so the last step is checkpointed
        log_every = self.trainer.log_every_n_steps  # in Lightning batches; 0 turns train logging off
        if n > 0 and log_every and (batch_idx + 1) % log_every == 0:
            loss = self.net.mse(x[n - 1], y[n - 1])  # each member's loss on the block's last step
            if self.trainer.world_size > 1:  # each rank knows its own members' loss
                sync_members([loss], self.share, self.trainer.strategy)
            live = loss[self.alive & torch.isfinite(loss)]
            self._log_metrics({"train/mse": live.min() if live.numel() else torch.tensor(math.nan),
                               "train/median_mse": live_median(loss, self.alive)})

    def _sgd_steps(self, x: torch.Tensor, y: torch.Tensor, n: int, count_steps: bool = True) -> None:
        share = self.share  # this rank's members (all of them, on one process)
        params = [p[share] for p in self.net.parameters()]  # views: updates land in the parameters
        optimizer = self.optimizers()
        lr = optimizer.param_groups[0]["lr"]
        alive = self.alive[share]
        alive = None if bool(alive.all()) else alive.view(-1, 1, 1)
        with torch.no_grad():
            xt = x[:n].transpose(1, 2).contiguous()  # (n, in, B): the hot path is batch-last
            yt = y[:n].transpose(1, 2)  # (n, 1, B), a view
            for s in range(n):
                grads = self.net.gradients(xt[s], yt[s], alive, members=share)
                if count_steps:
                    optimizer._on_before_step()
                torch._foreach_add_(params, grads, alpha=-lr)
                if count_steps:
                    optimizer._on_after_step()

    def _handle_divergence(self, snapshot: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                           n: int, start: int) -> None:
        """Reset members whose weights became non-finite to their last finite state and freeze them.

        The block is replayed from its snapshot one step at a time to find each such member's
        exact step; this costs one block, and only when something diverged.
        """
        params = list(self.net.parameters())
        bad = self.alive & ~self._finite_members()
        if not bool(bad.any()):
            return
        final = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, snapshot):
                p.copy_(s)
            step_of = torch.full_like(self.diverged_at, -1)
            for s in range(n):
                before = [p.detach().clone() for p in params]
                self._sgd_steps(x[s : s + 1], y[s : s + 1], 1, count_steps=False)
                loss = self.net.mse(x[s], y[s])
                now_bad = bad & (step_of < 0) & ~(self._finite_members() & torch.isfinite(loss))
                if bool(now_bad.any()):
                    step_of[now_bad] = start + s + 1
                    for p, b in zip(params, before):
                        p[now_bad] = b[now_bad]
                    self.diverged_at[now_bad] = start + s + 1  # frozen from now on (see _sgd_steps)
            keep = ~bad
            for p, f in zip(params, final):
                p[keep] = f[keep]  # healthy members keep exactly the values of the real run
            self.diverged_at[bad] = step_of[bad]
        newly = bad.nonzero().flatten().tolist()
        first = int(step_of[bad].min())
        if self.trainer.world_size > 1:  # other ranks' members may live: decided at the next validation
            print(f"warning: member(s) {newly} diverged (non-finite loss) at step {first} on rank "
                  f"{self.global_rank}; reset to their last finite weights and frozen", flush=True)
            return
        self._raise_if_all_diverged(first)
        self.print(
            f"warning: member(s) {newly} diverged (non-finite loss) at step {first}; reset to their last "
            f"finite weights and frozen; the other {int(self.alive.sum())} member(s) go on training"
        )

    def _raise_if_all_diverged(self, step: int) -> None:
        if not bool(self.alive.any()):
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss became non-finite (inf/NaN) for "
                f"{'the network' if self.members == 1 else 'every member'}; the learning rate "
                f"{self.hparams.lr:g} is likely too large for task {self.task.name!r} "
                f"(try --model.lr 0.1 or smaller). Checkpoints on disk hold only finite weights."
            )

    def _finite_members(self) -> torch.Tensor:
        """Per member: are all its weights (and biases) finite? ``(K,)`` bool."""
        return torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.net.parameters()]).all(0)

    # ------------------------------------------------------------------------------------------
    # Validation and test
    # ------------------------------------------------------------------------------------------
    def _member_preds(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1).T  # (N, K): one "output" per member for torchmetrics

    def _announce_member(self) -> None:
        """validate/test --ckpt_path: say which member the metrics are of (fit reports its own)."""
        if self.members > 1 and self.trainer.state.fn in ("validate", "test"):
            why = "the best by validation MSE" if self.member is None else "--model.member"
            self.print(f"{self.trainer.state.fn.value}: member {self.selected_member} of {self.members} ({why})")

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "fit" and self.trainer.world_size > 1 and not self.trainer.sanity_checking:
            # every rank gets every member's weights and divergence marks: from here on (validation,
            # the best member, early stopping, the checkpoint) all ranks see the whole population
            sync_members([*self.net.parameters(), self.diverged_at], self.share, self.trainer.strategy)
            self._raise_if_all_diverged(int(self.diverged_at.max()))
        self._announce_member()

    def on_test_start(self) -> None:
        if self.trainer.ckpt_path is not None:
            self._announce_member()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metric.update(self._member_preds(x), y.expand(-1, self.members))

    def on_validation_epoch_end(self) -> None:
        mse = self.val_metric.compute().reshape(-1).detach()
        self.val_metric.reset()
        if self.trainer.sanity_checking:
            self.print(f"Starting validation MSE: {self._describe(mse)}")
            return
        self._update_member_state(mse)
        self._log_metrics({
            "val/mse": self.val_mse[self.selected_member],
            "val/median_mse": live_median(self.val_mse, self.alive),
            "val/solved": self.solved.sum().float(),
            "val/unsolved": (self.alive & ~self.solved).sum().float(),
        })
        if self.trainer.state.fn == "fit":
            self.print(
                f"step {self.global_step:>8}  val MSE {self._describe(self.val_mse)}  "
                f"solved {int(self.solved.sum())}/{self.members}"
            )

    def _update_member_state(self, mse: torch.Tensor) -> None:
        """Per-member validation MSE and best member; during fit, history and first step solved.

        History and solved-at change only at the regular validations, not at the extra one Lightning
        runs where a run stops off-schedule (max_steps between validations): a run resumed from
        there then keeps exactly the record of a run that never stopped.
        """
        if self.trainer.state.fn != "fit":
            self.val_mse = mse
            return
        mse = torch.where(self.alive, mse, torch.full_like(mse, math.nan))
        self.val_mse = mse
        ranked = torch.where(torch.isfinite(mse), mse, torch.full_like(mse, math.inf))
        self.best_member.fill_(int(ranked.argmin()))
        if self._scheduled_validation:
            self.val_history = torch.cat([self.val_history[1:], mse.unsqueeze(0)])
            newly = (mse < self.success_mse) & (self.solved_at < 0)
            self.solved_at[newly] = self.global_step

    @property
    def solved(self) -> torch.Tensor:
        """Per-member flag: validation MSE below the success threshold at the last validation."""
        return (self.val_mse < self.success_mse) & self.alive

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self.test_metrics[dataloader_idx].update(self._member_preds(x), y.expand(-1, self.members))

    def on_test_epoch_end(self) -> None:
        self.test_mse = self.test_metrics[0].compute().reshape(-1).detach()
        k = self.selected_member
        metrics = {"test/mse": self.test_mse[k], "test/median_mse": live_median(self.test_mse, self.alive)}
        if self.test_metrics[1].update_count > 0:
            self.heldout_mse = self.test_metrics[1].compute().reshape(-1).detach()
            metrics["test/heldout_mse"] = self.heldout_mse[k]
        self._log_metrics(metrics)
        for m in self.test_metrics:
            m.reset()

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"x": x, "target": y, "prediction": self(x)}

    @torch.no_grad()
    def members_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member MSE ``(K,)`` on inputs ``x (N, in)`` and targets ``y (N, 1)`` (torchmetrics)."""
        metric = MeanSquaredError(num_outputs=self.members).to(self.device)
        metric.update(self._member_preds(x.to(self.device)), y.to(self.device).expand(-1, self.members))
        return metric.compute().reshape(-1).detach()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["loss_history"] = {k: [list(s), list(v)] for k, (s, v) in self.loss_history.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.loss_history = {k: (list(s), list(v)) for k, (s, v) in checkpoint.get("loss_history", {}).items()}

    # ------------------------------------------------------------------------------------------
    # Logging and printing
    # ------------------------------------------------------------------------------------------
    def _record_history(self, metrics: dict[str, torch.Tensor]) -> None:
        """Append the loss columns of a fit's logging call to ``loss_history`` (at the SGD step)."""
        if self.trainer.state.fn != "fit" or self.trainer.sanity_checking:
            return
        for key in ("train/mse", "train/median_mse", "val/mse", "val/median_mse"):
            if key in metrics:
                steps, values = self.loss_history.setdefault(key, ([], []))
                steps.append(float(self.global_step))
                values.append(float(metrics[key]))

    def _log_metrics(self, metrics: dict[str, torch.Tensor]) -> None:
        """The one place that calls Lightning's logger (each ``self.log`` costs ~0.2 ms: call it rarely).

        Summaries over members only, never K columns; ``*/median_mse`` only with several members.
        ``step`` makes metrics.csv count SGD steps (Lightning would write its batch count). Under
        DDP, epoch-level values are identical on every rank; ``sync_dist`` averages them exactly.
        """
        if self.members == 1:
            metrics = {k: v for k, v in metrics.items() if not k.endswith("median_mse")}
        self._record_history(metrics)
        if self.global_step > 0 or self.trainer.state.fn == "fit":
            metrics["step"] = float(self.global_step)
        sync = not self.trainer.training and self.trainer.world_size > 1
        shown = {k: v for k, v in metrics.items() if k in ("val/mse", "val/solved")}
        self.log_dict({k: v for k, v in metrics.items() if k not in shown}, sync_dist=sync)
        if shown:
            self.log_dict(shown, sync_dist=sync, prog_bar=True)

    def _describe(self, mse: torch.Tensor) -> str:
        if self.members == 1:
            return f"{float(mse[0]):.4g}"
        ranked = torch.where(torch.isfinite(mse), mse, math.inf)
        if not bool(torch.isfinite(ranked).any()):
            return "nan"
        best = int(ranked.argmin())
        return f"best {float(mse[best]):.3g} (member {best}), median {float(live_median(mse, self.alive)):.3g}"

    def weights_text(self, member: int | None = None) -> str:
        """One member's weights in the notebook's layout: each layer transposed, 4 decimals."""
        member = self.selected_member if member is None else member
        return format_weights(self.net, member)


def check_precision(precision: object) -> None:
    """Only float32: exact circuits need MSE ~1e-10, beyond 16-bit floats, and the hot path runs
    outside Lightning's precision plugins."""
    if str(precision) not in ("32-true", "32", "None"):
        raise CircuitsError(f"trainer.precision {str(precision)!r} is not supported; circuits_pl trains in "
                            "float32 (32-true, the default): exact circuits need MSE ~1e-10")


def live_median(values: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Median over live members with a finite value (the mean of the middle two for an even count)."""
    live = values[alive & torch.isfinite(values)]
    return live.double().quantile(0.5).to(values.dtype) if live.numel() else torch.tensor(math.nan)


def format_weights(net: ReLUMLP, member: int) -> str:
    """One member's weights (and biases) in the notebook's layout."""
    from circuits_pl.readout import weights_text

    biases = [b[member, :, 0] for b in net.biases] if net.bias else None
    return weights_text([w[member] for w in net.weights], biases)
