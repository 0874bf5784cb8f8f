"""The LightningModule: Lightning's hooks around K ReLU MLPs learning one task with SGD and MSE.

The math and the bookkeeping live below it, in plain PyTorch: the networks (``network.ReLUMLP``),
their update rule (``optim``: settings checked once, ``MemberOptimizer``), a block of steps and what
happens to a member that diverges (``train_block.TrainedMembers``), and what the run knows of each
member (``population.Population``). This module wires them to Lightning's steps, metrics, logging,
checkpoints and DDP. Flow of one training batch (a block of S steps: ``circuits_pl.cadence``)::

    x (S, B, in), y (S, B, 1)
      -> for each chunk of members (cache-sized), for each step s:
                           grads = step_gradients(chunk, x[s], y[s])   hand-derived, equal to autograd
                           optimizer.update(chunk, grads)              sgd | momentum | adam
      -> global_step += S                                              Lightning's own step counter
      -> after the block:  frozen members are put back; members whose weights became non-finite are
                           reset to their weights and rule state before that step and frozen
                           ("diverged"); train/mse is logged.

Why by hand: the notebook's autograd loop costs many times the hand-derived step (README "Speed",
``benchmarks/speed.py``). Lightning's per-batch machinery is paid once per block of S steps;
``LightningOptimizer.step()`` would add its closure, precision and strategy hooks to every step, so
the MemberOptimizer that configure_optimizers returns is applied directly and only Lightning's step
bookkeeping is called (``compat.count_optimizer_steps``), keeping ``global_step``, ``max_steps`` and
checkpoint resume in SGD steps. Not run on this path: ``on_before_optimizer_step`` hooks, gradient
clipping, mixed precision.
"""

from __future__ import annotations

import math
import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from torchmetrics import MeanSquaredError

from circuits_pl.cadence import Cadence
from circuits_pl.compat import count_optimizer_steps, record_resolved
from circuits_pl.errors import CircuitsError
from circuits_pl.network import ReLUMLP
from circuits_pl.optim import MemberOptimizer, OptimizerSettings
from circuits_pl.population import Population, upgrade_state_dict
from circuits_pl.strategy import MemberParallelStrategy, member_share, sync_members
from circuits_pl.success import success_threshold
from circuits_pl.tasks import get_task
from circuits_pl.train_block import TrainedMembers


class CircuitModule(pl.LightningModule):
    """K independently initialised ReLU MLPs learning one task with SGD and MSE.

    Args:
        task: task name (linked from the top-level ``--task``).
        layer_sizes: sizes from input to output; default: the task's (e.g. 2-3-1 for min).
        bias: give every layer a bias (the notebook's study uses none).
        lr: SGD learning rate (the notebook: 1e-4; its author later used 0.1, which solves every task).
        members: K, networks trained at once. Member k starts as a single run with seed ``init_seed + k``.
            64 by default: a seed finds the exact circuit with probability 0.35 (abs) to 0.66
            (add) at lr 0.1 (512 seeds per task), so 64 seeds all fail with probability below 1e-11.
        init_seed: seed of member 0's initial weights; default: the run's ``seed_everything``.
        success_mse: validation MSE below which a member counts as solved; default: the MSE of the
            task's exact circuit with every weight perturbed by ±1e-5 (about 1e-10).
        optimizer: update rule, ``sgd`` (the notebook's), ``momentum`` or ``adam`` (``circuits_pl.optim``,
            each bit-identical to torch.optim's step per member).
        momentum, dampening, nesterov: for ``momentum`` (torch.optim.SGD's meanings).
        betas, eps: for ``adam`` (default betas ``[0.9, 0.999]``, torch.optim.Adam's).
        weight_decay: L2 penalty added to the gradient, every rule (torch.optim's, not AdamW's).
        member: member used by ``forward``, ``validate``/``test``/``predict`` metrics and readout;
            default: the best (lowest validation MSE). Not a hyper-parameter: not saved.
    """

    def __init__(self, task: str = "identity", layer_sizes: list[int] | None = None, bias: bool = False,
                 lr: float = 0.1, members: int = 64, init_seed: int | None = None, success_mse: float | None = None,
                 member: int | None = None, optimizer: str = "sgd", momentum: float = 0.9, dampening: float = 0.0,
                 nesterov: bool = False, betas: list[float] | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__()
        self.task = get_task(task)
        sizes = self.task.check_layer_sizes(self.task.layer_sizes if layer_sizes is None else layer_sizes)
        self.optim = OptimizerSettings(optimizer, lr, momentum, dampening, nesterov,
                                       OptimizerSettings.betas if betas is None else betas, eps, weight_decay)
        if not isinstance(members, int) or isinstance(members, bool) or members <= 0:
            raise CircuitsError(f"model.members must be a positive integer, got {members!r}")
        if success_mse is not None and not success_mse > 0:
            raise CircuitsError(f"model.success_mse must be a positive number, got {success_mse!r}")
        if member is not None and not 0 <= member < members:
            raise CircuitsError(f"model.member must be in 0..{members - 1} ({members} members), got {member!r}")
        init_seed = int(torch.initial_seed() if init_seed is None else init_seed)  # seed_everything's
        self.save_hyperparameters(ignore=["member"])
        record_resolved(self, layer_sizes=list(sizes), init_seed=init_seed, betas=list(self.optim.betas))
        self.member = member
        self.automatic_optimization = False  # S SGD steps per Lightning batch: see the module docstring

        self.net = ReLUMLP(sizes, members, bias, init_seed)
        self.success_mse = success_mse if success_mse is not None else success_threshold(self.task, sizes)
        self.population = Population(members, self.success_mse)  # per-member state, in checkpoints
        self._cadence = Cadence()  # the running Trainer's, from on_train_start
        self._scheduled_validation = False  # set by training_step for the validation that follows
        self._synced_at = -1  # the global_step at which the ranks last exchanged their members
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
        from circuits_pl.checkpoints import load_checked_checkpoint

        if isinstance(checkpoint_path, (str, os.PathLike)):
            load_checked_checkpoint(checkpoint_path, task=kwargs.get("task"), option="task=")
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, **kwargs)

    @property
    def members(self) -> int:
        return self.net.members

    @property
    def selected_member(self) -> int:
        """The member that ``forward`` uses: ``member`` if given, else the best by validation MSE."""
        return int(self.population.best_member) if self.member is None else self.member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(N, 1)`` of the selected member for inputs ``(N, in)``."""
        return self.net(x, member=self.selected_member)

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

    # ------------------------------------------------------------------------------------------
    # Fit: setup, optimizer, the training step
    # ------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        check_precision(self.trainer.precision)
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and not isinstance(strategy, MemberParallelStrategy):
            raise CircuitsError(
                f"strategy {type(strategy).__name__} would average gradients of independent members; use "
                "circuits_pl.strategy.MemberParallelStrategy() (the CLI's --trainer.strategy ddp does), which "
                "gives each process its own members")

    def on_fit_start(self) -> None:
        hp, k = self.hparams, self.members
        members = f"{k} members (seeds {hp.init_seed}..{hp.init_seed + k - 1})" if k > 1 else f"seed {hp.init_seed}"
        self.print(f"Task {self.task.name}: f = {self.task.formula}; network {'-'.join(map(str, hp.layer_sizes))}, "
                   f"bias {'on' if hp.bias else 'off'}, {members}, {self.optim.rule} lr {self.optim.lr:g}; solved "
                   f"when validation MSE < {self.success_mse:.3g}")
        if self.member is not None:  # easily typed for --model.members: say what it does
            self.print(f"Reporting member {self.member} of {k} (--model.member; --model.members sets how many train)")
        if self.trainer.ckpt_path is None:
            self.print(f"Initial weights{' of member 0' if k > 1 else ''}:\n{self.weights_text(0)}")
        else:  # weights are restored by now, the step counter only after this hook
            self.print(f"Resuming from {self.trainer.ckpt_path}")

    def on_train_start(self) -> None:
        self.optim.apply_to(self._trained().optimizer)  # a restored optimizer takes --model.*'s values
        datamodule = getattr(self.trainer, "datamodule", None)
        self._cadence = Cadence.of_trainer(self.trainer, getattr(getattr(datamodule, "hparams", None),
                                                                 "steps_per_batch", None))

    def configure_optimizers(self) -> MemberOptimizer:
        # The one optimizer the hot path drives (training_step): it holds the rule's state, so
        # Lightning saves it in the checkpoint's optimizer_states and restores it on resume.
        return self.optim.build(self.net.parameters())

    def _trained(self) -> TrainedMembers:
        """The networks and the optimizer Lightning holds for them (checked: the hot path drives it)."""
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)  # unwrap the LightningOptimizer
        if not isinstance(optimizer, MemberOptimizer):
            raise CircuitsError(f"configure_optimizers must return one circuits_pl.optim.MemberOptimizer (choose the "
                                f"rule with --model.optimizer sgd|momentum|adam), got {type(optimizer).__name__}")
        return TrainedMembers(self.net, optimizer)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # (S, B, in), (S, B, 1)
        start, cadence = self.global_step, self._cadence
        n = cadence.steps_in_block(start, x.shape[0])
        diverged = self._trained().guarded_steps(x, y, n, start, ~self.population.alive, self.share)
        count_optimizer_steps(self.optimizers(), n)  # global_step counts SGD steps
        if newly := self.population.record_divergence(diverged):
            self._say_diverged(newly, int(diverged[newly].min()))
        self._scheduled_validation = cadence.validates_on_schedule(batch_idx, self.global_step == start + x.shape[0])
        if cadence.reached_max_steps(self.global_step):
            self.trainer.should_stop = True  # Lightning then validates, so the last step is checkpointed
        if n > 0 and cadence.logs_after(batch_idx):
            self._sync_population()  # under DDP: other ranks' members, for their loss
            loss = self.net.mse(x[n - 1], y[n - 1])  # each member's loss on the block's last step
            live = loss[self.population.alive & torch.isfinite(loss)]
            self._log_metrics({"train/mse": live.min() if live.numel() else torch.tensor(math.nan),
                               "train/median_mse": self.population.median(loss)})

    def _say_diverged(self, newly: list[int], first: int) -> None:
        if self.trainer.world_size > 1:  # other ranks' members may live: decided at the next validation
            print(f"warning: member(s) {newly} diverged (non-finite loss) at step {first} on rank "
                  f"{self.global_rank}; reset to their last finite weights and frozen", flush=True)
            return
        self.population.raise_if_all_diverged(self.optim.lr, self.task.name)
        self.print(f"warning: member(s) {newly} diverged (non-finite loss) at step {first}; reset to their last "
                   f"finite weights and frozen; the other {int(self.population.alive.sum())} member(s) go on training")

    def _sync_population(self) -> None:
        """Under MemberParallelStrategy, give every rank every member's weights, rule state and
        divergence marks, once per step count: from then on (the train loss, validation, the best
        member, early stopping, the checkpoint) all ranks see the whole population (the rule's state
        too: the checkpoint holds rank 0's optimizer state). A no-op on one process."""
        if self.trainer.world_size == 1 or self._synced_at == self.global_step:
            return
        sync_members([*self._trained().tensors(), self.population.diverged_at], self.members, self.trainer.strategy)
        self._synced_at = self.global_step
        self.population.raise_if_all_diverged(self.optim.lr, self.task.name)

    # ------------------------------------------------------------------------------------------
    # Validation, test, predict
    # ------------------------------------------------------------------------------------------
    def _member_preds(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1).T  # (N, K): one "output" per member for torchmetrics

    def _announce_member(self) -> None:
        """validate/test --ckpt_path: say which member the metrics are of (fit reports its own)."""
        if self.members > 1 and self.trainer.state.fn in ("validate", "test"):
            why = "the best by validation MSE" if self.member is None else "--model.member"
            self.print(f"{self.trainer.state.fn.value}: member {self.selected_member} of {self.members} ({why})")

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._sync_population()
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
        population, fit = self.population, self.trainer.state.fn == "fit"
        if self.trainer.sanity_checking:
            self.print(f"Starting validation MSE: {population.describe(mse)}")
            return
        population.record_validation(mse, self.global_step if fit else None, self._scheduled_validation)
        self._log_metrics({
            "val/mse": population.val_mse[self.selected_member],
            "val/median_mse": population.median(population.val_mse),
            "val/solved": population.solved.sum().float(),
            "val/unsolved": (population.alive & ~population.solved).sum().float(),
        })
        if fit:
            self.print(f"step {self.global_step:>8}  val MSE {population.describe(population.val_mse)}  "
                       f"solved {int(population.solved.sum())}/{self.members}")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self.test_metrics[dataloader_idx].update(self._member_preds(x), y.expand(-1, self.members))

    def on_test_epoch_end(self) -> None:
        self.test_mse = self.test_metrics[0].compute().reshape(-1).detach()
        k = self.selected_member
        metrics = {"test/mse": self.test_mse[k], "test/median_mse": self.population.median(self.test_mse)}
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

    # ------------------------------------------------------------------------------------------
    # Checkpoints, logging, printing
    # ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["loss_history"] = {k: [list(s), list(v)] for k, (s, v) in self.loss_history.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        upgrade_state_dict(checkpoint["state_dict"])  # checkpoints written before the population record
        self.loss_history = {k: (list(s), list(v)) for k, (s, v) in checkpoint.get("loss_history", {}).items()}

    def _log_metrics(self, metrics: dict[str, torch.Tensor]) -> None:
        """The one place that calls Lightning's logger (every ``self.log`` goes through its logger
        connector: call it rarely), and that records the loss curves (``loss_history``).

        Summaries over members only, never K columns; ``*/median_mse`` only with several members.
        ``step`` makes metrics.csv count SGD steps (Lightning would write its batch count). Under
        MemberParallelStrategy every rank holds every member's values when it logs (synced before the
        train loss and before each validation), so no ``sync_dist``: it would add one collective per key
        per validation.
        """
        if self.members == 1:
            metrics = {k: v for k, v in metrics.items() if not k.endswith("median_mse")}
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            for key in ("train/mse", "train/median_mse", "val/mse", "val/median_mse"):
                if key in metrics:
                    steps, values = self.loss_history.setdefault(key, ([], []))
                    steps.append(float(self.global_step))
                    values.append(float(metrics[key]))
        if self.global_step > 0 or self.trainer.state.fn == "fit":
            metrics["step"] = float(self.global_step)
        shown = {k: v for k, v in metrics.items() if k in ("val/mse", "val/solved")}
        self.log_dict({k: v for k, v in metrics.items() if k not in shown}, sync_dist=False)
        if shown:
            self.log_dict(shown, sync_dist=False, prog_bar=True)

    def weights_text(self, member: int | None = None) -> str:
        """One member's weights (and biases) in the notebook's layout: each layer transposed, 4 decimals."""
        from circuits_pl.readout import weights_text

        member = self.selected_member if member is None else member
        return weights_text(self.net.weights_of(member), self.net.biases_of(member))


def check_precision(precision: object) -> None:
    """Only float32: exact circuits need MSE ~1e-10, beyond 16-bit floats, and the hot path runs
    outside Lightning's precision plugins."""
    if str(precision) not in ("32-true", "32", "None"):
        raise CircuitsError(f"trainer.precision {str(precision)!r} is not supported; circuits_pl trains in "
                            "float32 (32-true, the default): exact circuits need MSE ~1e-10")
