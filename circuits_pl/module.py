"""The LightningModule: K ReLU MLPs trained on MSE, per-member metrics, solved/diverged state.

Flow of one training batch (a block of S steps, see ``circuits_pl.data`` and ``circuits_pl.train_block``)::

    x (S, B, in), y (S, B, 1)
      -> for each chunk of members (cache-sized), for each step s:
                           grads = member_gradients(chunk, x[s], y[s])   hand-derived, equal to autograd
                           [DDP: grads averaged over ranks; one chunk]
                           optimizer.update(chunk, grads)      sgd | momentum | adam (circuits_pl.optim)
      -> global_step += S                                      Lightning's own step counter
      -> after the block:  frozen members are put back; members whose weights became non-finite are
                           reset to their weights and rule state before that step and frozen
                           ("diverged"); train/mse is logged.

Why by hand (one thread, 2-2-1, batch 1000): the notebook's autograd loop costs 112.7 µs per step,
the hand-derived step of 128 members 1.69 µs per network (README "Speed", ``benchmarks/speed.py``;
per rule and chunk ``benchmarks/hotpath.py``). Lightning's per-batch machinery is paid once per block
of S steps; ``LightningOptimizer.step()`` would add its closure, precision and strategy hooks to every
step, so the update is applied directly by the MemberOptimizer that configure_optimizers returns, and
only Lightning's step bookkeeping is called (``compat.count_optimizer_steps``), keeping
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

from circuits_pl.compat import count_optimizer_steps, record_resolved
from circuits_pl.errors import CircuitsError, TrainingDiverged
from circuits_pl.network import ReLUMLP
from circuits_pl.optim import RULES, MemberOptimizer
from circuits_pl.strategy import MemberParallelStrategy, member_share, sync_members
from circuits_pl.success import success_threshold
from circuits_pl.tasks import get_task
from circuits_pl.train_block import ENGINES, chunk_members, resolve_engine, train_block

HISTORY = 8  # validations of per-member MSE kept, to tell a stuck member from a slow one


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
        engine: what runs the training steps: ``fused`` (one compiled CPU loop per block, numba),
            ``torch`` (tensor ops: the reference, and the GPU path) or ``auto`` (fused on the CPU when
            numba imports, else torch); the resolved one is saved. See ``circuits_pl.train_block``.
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
        optimizer: str = "sgd",
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        betas: list[float] | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        engine: str = "auto",
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
        betas = check_optimizer_args(optimizer, momentum, dampening, nesterov, betas, eps, weight_decay)
        if engine not in ENGINES:
            raise CircuitsError(f"model.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        init_seed = int(torch.initial_seed() if init_seed is None else init_seed)  # seed_everything's
        self.save_hyperparameters(ignore=["member"])
        record_resolved(self, layer_sizes=list(sizes), init_seed=init_seed, betas=betas)
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
        if stage == "fit":  # the engine that trains, as hparams.yaml, the checkpoint and results.json say
            device = self.trainer.strategy.root_device.type
            record_resolved(self, engine=resolve_engine(self.hparams.engine, device, self.hparams.layer_sizes))
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
                   f"{members}, {hp.optimizer} lr {hp.lr:g}; solved when validation MSE < {self.success_mse:.3g}")
        if self.member is not None:  # easily typed for --model.members: say what it does
            self.print(f"Reporting member {self.member} of {self.members} (--model.member; --model.members sets "
                       "how many train)")
        if self.trainer.ckpt_path is None:
            self.print(f"Initial weights{' of member 0' if self.members > 1 else ''}:")
            self.print(self.weights_text(0))
        else:  # weights are restored by now, the step counter only after this hook
            self.print(f"Resuming from {self.trainer.ckpt_path}")

    def on_train_start(self) -> None:
        # A resumed run restores the optimizer's hyper-parameters from the checkpoint; --model.* decide.
        hp, group = self.hparams, self._member_optimizer().param_groups[0]
        if group["rule"] != hp.optimizer:
            raise CircuitsError(f"the checkpoint was trained with --model.optimizer {group['rule']}, not "
                                f"{hp.optimizer}: its optimizer state cannot continue another rule")
        group.update(lr=float(hp.lr), momentum=float(hp.momentum), dampening=float(hp.dampening),
                     nesterov=bool(hp.nesterov), betas=tuple(hp.betas), eps=float(hp.eps),
                     weight_decay=float(hp.weight_decay))

    # ------------------------------------------------------------------------------------------
    # Training: the hot path
    # ------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> MemberOptimizer:
        # The one optimizer the hot path drives (training_step): it holds the rule's state, so
        # Lightning saves it in the checkpoint's optimizer_states and restores it on resume.
        hp = self.hparams
        return MemberOptimizer(self.net.parameters(), rule=hp.optimizer, lr=hp.lr, momentum=hp.momentum,
                               dampening=hp.dampening, nesterov=hp.nesterov, betas=hp.betas, eps=hp.eps,
                               weight_decay=hp.weight_decay)

    def _member_optimizer(self) -> MemberOptimizer:
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)  # unwrap the LightningOptimizer
        if not isinstance(optimizer, MemberOptimizer):
            raise CircuitsError(f"configure_optimizers must return one circuits_pl.optim.MemberOptimizer (choose the "
                                f"rule with --model.optimizer sgd|momentum|adam), got {type(optimizer).__name__}")
        return optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # (S, B, in), (S, B, 1)
        start = self.global_step
        n = x.shape[0]
        if self.trainer.max_steps >= 0:
            n = min(n, self.trainer.max_steps - start)
        optimizer = self._member_optimizer()
        tensors = self._trained_tensors(optimizer)
        snapshot = [t.detach().clone() for t in tensors]  # the last state known to be finite
        self._sgd_steps(optimizer, x, y, n)
        count_optimizer_steps(self.optimizers(), n)  # global_step counts SGD steps
        self._handle_divergence(optimizer, snapshot, x, y, n, start)
        # Is the validation after this block a regular one? circuits_pl.data aligns blocks so that batch
        # b ends at SGD step (b + 1)·S, resumed or not: regular validations fall on multiples of
        # val_check_interval·S steps, and only when the block ran whole (not cut short by max_steps).
        val_every = self.trainer.val_check_batch
        self._scheduled_validation = (isinstance(val_every, int) and (batch_idx + 1) % val_every == 0
                                      and self.global_step == start + x.shape[0])
        if self.trainer.max_steps >= 0 and self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True  # Lightning then validates, so the last step is checkpointed
        log_every = self.trainer.log_every_n_steps  # in Lightning batches; 0 turns train logging off
        if n > 0 and log_every and (batch_idx + 1) % log_every == 0:
            self._sync_population()  # under DDP: other ranks' members, for their loss
            loss = self.net.mse(x[n - 1], y[n - 1])  # each member's loss on the block's last step
            live = loss[self.alive & torch.isfinite(loss)]
            self._log_metrics({"train/mse": live.min() if live.numel() else torch.tensor(math.nan),
                               "train/median_mse": live_median(loss, self.alive)})

    def _trained_tensors(self, optimizer: MemberOptimizer) -> list[torch.Tensor]:
        """Everything a step changes, member dimension first: parameters, then the rule's state."""
        return list(optimizer.params) + [t for ts in optimizer.state_tensors() for t in ts]

    def _sgd_steps(self, optimizer: MemberOptimizer, x: torch.Tensor, y: torch.Tensor, n: int,
                   chunk: int | None = None) -> None:
        """``n`` steps of this rank's members (all, on one process; frozen ones too: the caller
        restores them), in member chunks."""
        if chunk is None:
            chunk = chunk_members(self.hparams.layer_sizes, x.shape[1], self.members)
        with torch.no_grad():
            xt = x[:n].transpose(1, 2).contiguous()  # (n, in, B): the hot path is batch-last
            yt = y[:n].transpose(1, 2)  # (n, 1, B), a view
            train_block(optimizer, len(self.net.weights), xt, yt, chunk, self.share, self.hparams.engine)

    def _handle_divergence(self, optimizer: MemberOptimizer, snapshot: list[torch.Tensor], x: torch.Tensor,
                           y: torch.Tensor, n: int, start: int) -> None:
        """Keep frozen members frozen; reset members whose weights became non-finite to their
        weights and rule state before the step where they diverged, and freeze them.

        Frozen members are stepped with the others (every op is per member, so they cannot touch
        another member's values) and put back to their snapshot here, under every rule. The block
        is replayed from its snapshot one step at a time to find each diverged member's exact step;
        this costs one block, and only when something diverged.
        """
        tensors = self._trained_tensors(optimizer)
        with torch.no_grad():
            frozen = ~self.alive
            if bool(frozen.any()):
                for t, s in zip(tensors, snapshot):
                    t[frozen] = s[frozen]
        bad = self.alive & ~self._finite_members()
        if not bool(bad.any()):
            return
        with torch.no_grad():
            result = [t.detach().clone() for t in tensors]  # healthy members keep exactly the real run's values
            for t, s in zip(tensors, snapshot):
                t.copy_(s)
            optimizer.set_steps(start)
            step_of = torch.full_like(self.diverged_at, -1)
            for s in range(n):
                before = [t.detach().clone() for t in tensors]
                self._sgd_steps(optimizer, x[s : s + 1], y[s : s + 1], 1, chunk=self.members)
                loss = self.net.mse(x[s], y[s])
                now_bad = bad & (step_of < 0) & ~(self._finite_members() & torch.isfinite(loss))
                if bool(now_bad.any()):
                    step_of[now_bad] = start + s + 1
                    for r, b in zip(result, before):
                        r[now_bad] = b[now_bad]  # weights and rule state before the diverging step
                if bool((step_of[bad] >= 0).all()):
                    break
            for t, r in zip(tensors, result):
                t.copy_(r)
            optimizer.set_steps(start + n)
            self.diverged_at[bad] = step_of[bad]  # frozen from now on
        newly = bad.nonzero().flatten().tolist()
        first = int(step_of[bad].min())
        if self.trainer.world_size > 1:  # other ranks' members may live: decided at the next validation
            print(f"warning: member(s) {newly} diverged (non-finite loss) at step {first} on rank "
                  f"{self.global_rank}; reset to their last finite weights and frozen", flush=True)
            return
        self._raise_if_all_diverged(int(self.diverged_at.max()))  # the last to go, as under DDP
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
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._sync_population()
        self._announce_member()

    def _sync_population(self) -> None:
        """Under MemberParallelStrategy, give every rank every member's weights, rule state and
        divergence marks, once per step count: from then on (the train loss, validation, the best
        member, early stopping, the checkpoint) all ranks see the whole population (the rule's state
        too: the checkpoint holds rank 0's optimizer state). A no-op on one process."""
        if self.trainer.world_size == 1 or self._synced_at == self.global_step:
            return
        tensors = self._trained_tensors(self._member_optimizer())
        sync_members([*tensors, self.diverged_at], self.members, self.trainer.strategy)
        self._synced_at = self.global_step
        self._raise_if_all_diverged(int(self.diverged_at.max()))

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
        """The one place that calls Lightning's logger (every ``self.log`` goes through its logger
        connector: call it rarely).

        Summaries over members only, never K columns; ``*/median_mse`` only with several members.
        ``step`` makes metrics.csv count SGD steps (Lightning would write its batch count). Under
        MemberParallelStrategy every rank holds every member's values when it logs (synced before the
        train loss and before each validation), so no ``sync_dist``: it would add one collective per key
        per validation.
        """
        if self.members == 1:
            metrics = {k: v for k, v in metrics.items() if not k.endswith("median_mse")}
        self._record_history(metrics)
        if self.global_step > 0 or self.trainer.state.fn == "fit":
            metrics["step"] = float(self.global_step)
        sync = False
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


def check_optimizer_args(optimizer: str, momentum: float, dampening: float, nesterov: bool,
                         betas: list[float] | None, eps: float, weight_decay: float) -> list[float]:
    """One-line errors for impossible update-rule settings (torch.optim's ranges); the betas to use."""
    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if optimizer not in RULES:
        raise CircuitsError(f"model.optimizer must be one of {', '.join(RULES)}, got {optimizer!r}")
    if not number(momentum) or not 0 <= momentum < 1:
        raise CircuitsError(f"model.momentum must be in [0, 1), got {momentum!r}")
    if not number(dampening) or not 0 <= dampening <= 1:
        raise CircuitsError(f"model.dampening must be in [0, 1], got {dampening!r}")
    if nesterov and (optimizer != "momentum" or momentum <= 0 or dampening != 0):
        raise CircuitsError("model.nesterov needs --model.optimizer momentum, a momentum > 0 and dampening 0")
    betas = [0.9, 0.999] if betas is None else list(betas)
    if len(betas) != 2 or not all(number(b) and 0 <= b < 1 for b in betas):
        raise CircuitsError(f"model.betas must be two numbers in [0, 1), got {betas!r}")
    if not number(eps) or not eps > 0:
        raise CircuitsError(f"model.eps must be a positive number, got {eps!r}")
    if not number(weight_decay) or weight_decay < 0:
        raise CircuitsError(f"model.weight_decay must be a number >= 0, got {weight_decay!r}")
    return [float(b) for b in betas]


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
