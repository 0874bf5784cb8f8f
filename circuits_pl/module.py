"""The LightningModule: Lightning's hooks around K ReLU MLPs learning one task with SGD and MSE.

What it wires lives below it, in plain PyTorch: the networks (``network.GroupedMLPs``: one
``ReLUMLP`` per group of the run's cells, ``circuits_pl.sweep``), their update
rule (``optim``), a block of S steps and the reset of members that diverge
(``train_block.TrainedMembers``), what the run knows of each member (``population.Population``) and
SGD steps against Lightning batches (``cadence.Cadence``). One training batch is a block of S steps,
run by hand-derived gradients and the MemberOptimizer that configure_optimizers returns, applied
directly: ``LightningOptimizer.step()`` would add its closure, precision and strategy hooks to every
step (docs/speed.md). Only Lightning's step bookkeeping is called (``compat.count_optimizer_steps``),
so ``global_step``, ``max_steps`` and checkpoint resume count SGD steps. Not run on this path:
``on_before_optimizer_step`` hooks, gradient clipping, mixed precision.
"""

from __future__ import annotations

import math
import os

import lightning.pytorch as pl
import torch
from torchmetrics import MeanSquaredError

from circuits_pl.cadence import Cadence
from circuits_pl.compat import count_optimizer_steps, record_resolved
from circuits_pl.errors import CircuitsError
from circuits_pl.network import GroupedMLPs, upgrade_group_keys
from circuits_pl.optim import MemberOptimizer, OptimizerSettings
from circuits_pl.population import Population, upgrade_state_dict
from circuits_pl.strategy import check_strategy, member_share, sync_members
from circuits_pl.success import success_threshold
from circuits_pl.sweep import Sweep
from circuits_pl.tasks import Task, get_task
from circuits_pl.timeline import Timeline
from circuits_pl.train_block import ENGINES, TrainedMembers, run_engine


class CircuitModule(pl.LightningModule):
    """K independently initialised ReLU MLPs learning one task with SGD and MSE.

    Args:
        task: task name (linked from the top-level ``--task``).
        layer_sizes: sizes from input to output; default: the task's (e.g. 2-3-1 for min).
        bias: give every layer a bias (the notebook's study uses none).
        lr: SGD learning rate (the notebook: 1e-4; its author later used 0.1, which solves every task).
        members: K, networks trained at once (per cell, with ``cells``). Member k starts as a single
            run with seed ``init_seed + k``. 64 by default: a seed finds the exact circuit with
            probability 0.35 (abs) to 0.66 (add) at lr 0.1 (512 seeds per task), so 64 seeds all
            fail with probability below 1e-11.
        init_seed: seed of member 0's initial weights; default: the run's ``seed_everything``.
        success_mse: validation MSE below which a member counts as solved; default: the MSE of the
            task's exact circuit with every weight perturbed by ±1e-5 (about 1e-10).
        optimizer: update rule, ``sgd`` (the notebook's), ``momentum`` or ``adam`` (``circuits_pl.optim``,
            each bit-identical to torch.optim's step per member).
        momentum, dampening, nesterov: for ``momentum`` (torch.optim.SGD's meanings).
        betas, eps: for ``adam`` (default betas ``[0.9, 0.999]``, torch.optim.Adam's).
        weight_decay: L2 penalty added to the gradient, every rule (torch.optim's, not AdamW's).
        init_scale: a factor on nn.Linear's initial weights (and biases), U(−s/√fan_in, s/√fan_in);
            at 1 (the default) the weights are nn.Linear's bit for bit.
        cells: members that differ: a list of cells ``{"layer_sizes": [1, 4, 1], "lr": 0.1,
            "init_scale": 1}``, each trained with ``members`` seeds (``init_seed + k``, as the cell
            alone would be); member m is of cell m // members (cells sorted by sizes, lr, scale:
            ``circuits_pl.sweep``). Replaces layer_sizes, lr and init_scale. The CLI's ``--sweep.*``
            options write it.
        engine: what runs the training steps: ``fused`` (one compiled CPU loop per block, numba),
            ``torch`` (tensor ops: the reference, and the GPU path) or ``auto`` (fused on the CPU when
            numba imports, else torch; per group of cells); the resolved one is saved. See
            ``circuits_pl.train_block``.
        member: member used by ``forward``, ``validate``/``test``/``predict`` metrics and readout;
            default: the best (lowest validation MSE). Not a hyper-parameter: not saved.
    """

    def __init__(self, task: str = "identity", layer_sizes: list[int] | None = None, bias: bool = False,
                 lr: float = 0.1, members: int = 64, init_seed: int | None = None, success_mse: float | None = None,
                 member: int | None = None, optimizer: str = "sgd", momentum: float = 0.9, dampening: float = 0.0,
                 nesterov: bool = False, betas: list[float] | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.0, init_scale: float = 1.0, cells: list[dict] | None = None,
                 engine: str = "auto"):
        super().__init__()
        self.task = get_task(task)
        self.optim = OptimizerSettings(optimizer, lr, momentum, dampening, nesterov,
                                       OptimizerSettings.betas if betas is None else betas, eps, weight_decay)
        self.sweep = run_sweep(self.task, layer_sizes, lr, init_scale, cells, members)
        if success_mse is not None and not (isinstance(success_mse, (int, float)) and success_mse > 0):
            raise CircuitsError(f"model.success_mse must be a positive number, got {success_mse!r}")
        cell_of = torch.tensor(self.sweep.cell_index(), dtype=torch.long)
        thresholds = torch.tensor([success_threshold(self.task, c.layer_sizes) if success_mse is None else success_mse
                                   for c in self.sweep.cells], dtype=torch.float64)
        # per-member state, in checkpoints
        self.population = Population(self.sweep.members, thresholds[cell_of], cell_of)
        total = self.sweep.members
        if member is not None and not 0 <= member < total:
            raise CircuitsError(f"model.member must be in 0..{total - 1} ({total} members), got {member!r}")
        if engine not in ENGINES:
            raise CircuitsError(f"model.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        init_seed = int(torch.initial_seed() if init_seed is None else init_seed)  # seed_everything's
        self.save_hyperparameters(ignore=["member"])
        sizes = list(self.sweep.cells[0].layer_sizes) if cells is None else None  # given by the cells
        record_resolved(self, layer_sizes=sizes, init_seed=init_seed, betas=list(self.optim.betas))
        self.member = member
        self.automatic_optimization = False  # S SGD steps per Lightning batch: see the module docstring

        self.net = GroupedMLPs(self.sweep, bias, init_seed)
        # every member's circuit per validation, each group's members by its own sizes
        self.timeline = Timeline(self.task, [(g.layer_sizes, g.members) for g in self.sweep.groups()], bias)
        self._cadence = Cadence()  # the Trainer's, read at on_train_start
        self._scheduled_validation = False  # is the validation after this block a regular one
        self._synced_at = -1  # the global_step at which the ranks last exchanged their members
        # sync_on_compute off: under MemberParallelStrategy every rank evaluates every member itself
        self.val_metric = MeanSquaredError(num_outputs=total, sync_on_compute=False)
        self.test_metrics = torch.nn.ModuleList(
            [MeanSquaredError(num_outputs=total, sync_on_compute=False) for _ in range(2)])

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's ``load_from_checkpoint``, but a checkpoint of your own task needs
        ``task='package.module:function'``: loading a checkpoint never imports code it names."""
        from circuits_pl.checkpoint_checks import load_checked_checkpoint

        if isinstance(checkpoint_path, (str, os.PathLike)):
            load_checked_checkpoint(checkpoint_path, task=kwargs.get("task"), option="task=")
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, **kwargs)

    @property
    def members(self) -> int:
        return self.net.members

    def cell_text(self, member: int) -> str:
        """``cell 3: 1-4-1 lr 0.1 init×0.1, seed 11`` (the member's cell and seed); "" in a run of one cell."""
        if self.sweep.is_single:
            return ""
        c = self.sweep.cell_of(member)
        return f"cell {c}: {self.sweep.cells[c].label}, seed {self.hparams.init_seed + self.sweep.seed_offset(member)}"

    def lr_text(self) -> str:
        """The learning rate(s) of the run, for messages: ``0.1`` or ``0.03–0.3``."""
        lrs = sorted({c.lr for c in self.sweep.cells})
        return f"{lrs[0]:g}" if len(lrs) == 1 else f"{lrs[0]:g}–{lrs[-1]:g}"

    def init_scale_text(self) -> str | None:
        """The init scale(s) above 1 of the run, for the divergence message (None: every cell's is at most 1)."""
        scales = sorted({c.init_scale for c in self.sweep.cells if c.init_scale > 1})
        if not scales:
            return None
        return f"{scales[0]:g}" if len(scales) == 1 else f"{scales[0]:g}–{scales[-1]:g}"

    @property
    def selected_member(self) -> int:
        """The member that ``forward`` uses: ``member`` if given, else the best by validation MSE."""
        return int(self.population.best_member) if self.member is None else self.member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(N, 1)`` of the selected member for inputs ``(N, in)``."""
        return self.net(x, member=self.selected_member)

    # --- fit -----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        check_precision(self.trainer.precision)
        check_strategy(self.trainer.strategy)
        if stage == "fit":  # the engine that trains, as hparams.yaml, the checkpoint and results.json say
            device = self.trainer.strategy.root_device.type
            sizes = [g.layer_sizes for g in self.sweep.groups()]
            record_resolved(self, engine=run_engine(self.hparams.engine, device, sizes))

    def on_fit_start(self) -> None:
        hp, k, sweep = self.hparams, self.members, self.sweep
        per = sweep.members_per_cell
        seeds = f"{per} members (seeds {hp.init_seed}..{hp.init_seed + per - 1})" if per > 1 else f"seed {hp.init_seed}"
        if sweep.is_single:
            cell = sweep.cells[0]
            scale = f", init scale {cell.init_scale:g}" if cell.init_scale != 1.0 else ""
            sizes = "-".join(map(str, cell.layer_sizes))
            self.print(f"Task {self.task.name}: f = {self.task.formula}; network {sizes}, "
                       f"bias {'on' if hp.bias else 'off'}, {seeds}{scale}, {self.optim.rule} lr {cell.lr:g}; solved "
                       f"when validation MSE < {float(self.population.success_mse[0]):.3g}")
        else:
            low, high = (f"{float(t):.3g}" for t in self.population.success_mse.aminmax())
            self.print(f"Task {self.task.name}: f = {self.task.formula}; {len(sweep.cells)} cells, {sweep.describe()}; "
                       f"{seeds} each, {k} in all; bias {'on' if hp.bias else 'off'}, {self.optim.rule}; solved when "
                       f"validation MSE < {low if low == high else f'{low}–{high} (by sizes)'}")
        if self.member is not None:  # easily typed for --model.members: say what it does
            self.print(f"Reporting member {self.member} of {k} (--model.member; --model.members sets how many train)")
        if self.trainer.ckpt_path is None:
            self.print(f"Initial weights{' of member 0' if k > 1 else ''}:\n{self.weights_text(0)}")
        else:  # weights are restored by now, the step counter only after this hook
            self.print(f"Resuming from {self.trainer.ckpt_path}")

    def on_train_start(self) -> None:
        # a restored optimizer takes --model.*'s values, and each group its cells' lr
        self.optim.apply_to(self._trained().optimizer, [g.lr for g in self.sweep.groups()])
        datamodule = getattr(self.trainer, "datamodule", None)
        if "readout" in self.timeline.modes and hasattr(datamodule, "fixed_set"):
            # two hidden layers: units dead on the test set, as the readout finds them
            self.timeline.inputs = datamodule.fixed_set("test").tensors[0]
        data = getattr(datamodule, "hparams", None)
        self._cadence = Cadence.of_trainer(self.trainer, getattr(data, "steps_per_batch", None))

    def configure_optimizers(self) -> MemberOptimizer:
        # The one optimizer the hot path drives: Lightning saves its state (the rule's) in checkpoints.
        # One parameter group per group of cells, each with its scalar lr.
        return self.optim.build([list(net.parameters()) for net in self.net.groups],
                                [g.lr for g in self.sweep.groups()])

    def _trained(self) -> TrainedMembers:
        """The networks and the optimizer Lightning holds for them (checked: the hot path drives it)."""
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)  # unwrap the LightningOptimizer
        if not isinstance(optimizer, MemberOptimizer):
            raise CircuitsError(f"configure_optimizers must return one circuits_pl.optim.MemberOptimizer (choose the "
                                f"rule with --model.optimizer sgd|momentum|adam), got {type(optimizer).__name__}")
        return TrainedMembers(self.net, optimizer, self.hparams.get("engine", "auto"))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # (S, B, in), (S, B, 1)
        start, cadence, population = self.global_step, self._cadence, self.population
        n = cadence.steps_in_block(start, x.shape[0])
        share = member_share(self.members, self.trainer.world_size, self.global_rank)  # all, on one process
        diverged = self._trained().guarded_steps(x, y, n, start, ~population.alive, share)
        count_optimizer_steps(self.optimizers(), n)  # global_step counts SGD steps
        if diverged is not None and (newly := population.record_divergence(diverged)):
            first = int(diverged[newly].min())
            if self.trainer.world_size > 1:  # other ranks' members may live: decided at the next validation
                print(population.divergence_warning(newly, first, rank=self.global_rank), flush=True)
            else:
                population.raise_if_all_diverged(self.lr_text(), self.task.name, self.init_scale_text())
                self.print(population.divergence_warning(newly, first))
        self._scheduled_validation = cadence.validates_on_schedule(batch_idx, self.global_step == start + x.shape[0])
        if cadence.reached_max_steps(self.global_step):
            self.trainer.should_stop = True  # Lightning then validates, so the last step is checkpointed
        if n > 0 and cadence.logs_after(batch_idx):
            self._sync_population()  # under DDP: other ranks' members, for their loss
            loss = self.net.mse(x[n - 1], y[n - 1])  # each member's loss on the block's last step
            live = loss[population.alive & torch.isfinite(loss)]
            self._log_metrics({"train/mse": live.min() if live.numel() else torch.tensor(math.nan),
                               "train/median_mse": population.median(loss)})

    def _sync_population(self) -> None:
        """Under MemberParallelStrategy, give every rank every member's weights, rule state and
        divergence marks, once per step count: from then on (the train loss, validation, the best
        member, early stopping, the checkpoint) all ranks see the whole population (the rule's state
        too: the checkpoint holds rank 0's optimizer state). A no-op on one process."""
        if self.trainer.world_size == 1 or self._synced_at == self.global_step:
            return
        parts = [*self._trained().tensors_by_start(), (0, [self.population.diverged_at])]
        sync_members(parts, self.members, self.trainer.strategy)
        self._synced_at = self.global_step
        self.population.raise_if_all_diverged(self.lr_text(), self.task.name, self.init_scale_text())

    # --- validation, test, predict -------------------------------------------------------------------
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

    def _update(self, metric: MeanSquaredError, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        metric.update(self.net(x).squeeze(-1).T, y.expand(-1, self.members))  # (N, K): an "output" per member

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._update(self.val_metric, batch)

    def on_validation_epoch_end(self) -> None:
        mse = self.val_metric.compute().reshape(-1).detach()
        self.val_metric.reset()
        population, fit = self.population, self.trainer.state.fn == "fit"
        if self.trainer.sanity_checking:
            self.print(f"Starting validation MSE: {population.describe(mse)}")
            return
        population.record_validation(mse, self.global_step if fit else None, self._scheduled_validation)
        if fit and self._scheduled_validation:  # after the member sync: every rank names every member
            self.timeline.record(self.global_step, [net.weights for net in self.net.groups], population.val_mse)
        metrics = {"val/mse": population.val_mse[self.selected_member],
                   "val/median_mse": population.median(population.val_mse),
                   "val/solved": population.solved.sum().float(),
                   "val/unsolved": (population.alive & ~population.solved).sum().float()}
        if population.cells > 1:  # per cell, not per member: a column per cell
            digits = len(str(population.cells - 1))  # cell01 ... cell17: the CSV's columns in cell order
            per_cell = population.solved_per_cell()
            metrics.update({f"val/solved_cell{c:0{digits}d}": n.float() for c, n in enumerate(per_cell)})
            metrics["val/unsolved_cells"] = (per_cell == 0).sum().float()  # --stop.when best: until every cell
        self._log_metrics(metrics)
        if fit:
            self.print(population.validation_line(self.global_step))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(self.test_metrics[dataloader_idx], batch)

    def on_test_epoch_end(self) -> None:
        population, k = self.population, self.selected_member
        population.test_mse = self.test_metrics[0].compute().reshape(-1).detach()
        metrics = {"test/mse": population.test_mse[k], "test/median_mse": population.median(population.test_mse)}
        if self.test_metrics[1].update_count > 0:
            population.heldout_mse = self.test_metrics[1].compute().reshape(-1).detach()
            metrics["test/heldout_mse"] = population.heldout_mse[k]
        self._log_metrics(metrics)
        for m in self.test_metrics:
            m.reset()

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"x": x, "target": y, "prediction": self(x)}

    # --- checkpoints, logging, printing --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["loss_history"] = self.population.losses_state()
        checkpoint["timeline"] = self.timeline.state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        upgrade_state_dict(checkpoint["state_dict"])  # a checkpoint written before the population record
        upgrade_group_keys(checkpoint["state_dict"])  # ... or before the networks came in groups
        self.population.load_losses(checkpoint.get("loss_history", {}))
        self.timeline.load(checkpoint.get("timeline"))  # absent in checkpoints from before the timeline

    def _log_metrics(self, metrics: dict[str, torch.Tensor]) -> None:
        """The one call of Lightning's logger (costly: call it rarely), and the loss curves' record.

        Summaries over members only, never K columns; ``*/median_mse`` only with several members.
        ``step`` makes metrics.csv count SGD steps, not batches. No ``sync_dist``: every rank holds
        every member's values when it logs (synced before), and it would cost a collective per key.
        """
        if self.members == 1:
            metrics = {k: v for k, v in metrics.items() if not k.endswith("median_mse")}
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.population.record_losses(metrics, self.global_step)
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


def run_sweep(task: Task, layer_sizes: list[int] | None, lr: float, init_scale: float, cells: list[dict] | None,
              members: int) -> Sweep:
    """The run's cells: ``cells``, or the one cell of layer_sizes (default the task's), lr and
    init_scale; each checked against the task. One-line CircuitsError for bad values."""
    if not isinstance(members, int) or isinstance(members, bool) or members <= 0:
        raise CircuitsError(f"model.members must be a positive integer, got {members!r}")
    if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or not 0 < init_scale < math.inf:
        raise CircuitsError(f"model.init_scale must be a positive number, got {init_scale!r}")
    if cells is None:
        sizes = task.check_layer_sizes(task.layer_sizes if layer_sizes is None else layer_sizes)
        return Sweep.of_run(sizes, lr, init_scale, None, members)
    given = [f"model.{k}" for k, v, default in (("layer_sizes", layer_sizes, None), ("lr", lr, 0.1),
                                                ("init_scale", init_scale, 1.0)) if v != default]
    if given:
        raise CircuitsError(f"model.cells gives every cell's layer sizes, lr and init_scale: "
                            f"drop {' and '.join(given)}")
    if not isinstance(cells, (list, tuple)):
        raise CircuitsError(f"model.cells must be a list of cells, e.g. "
                            f'[{{"layer_sizes": [1, 4, 1], "lr": 0.1, "init_scale": 1}}], got {cells!r}')
    sweep = Sweep.of_run((), lr, init_scale, cells, members)
    for cell in sweep.cells:
        task.check_layer_sizes(list(cell.layer_sizes))
    return sweep


def check_precision(precision: object) -> None:
    """Only float32: exact circuits need MSE ~1e-10, beyond 16-bit floats, and the hot path runs
    outside Lightning's precision plugins."""
    if str(precision) not in ("32-true", "32", "None"):
        raise CircuitsError(f"trainer.precision {str(precision)!r} is not supported; circuits_pl trains in "
                            "float32 (32-true, the default): exact circuits need MSE ~1e-10")
