"""``python -m circuits_pl fit --task add``: LightningCLI with circuits_pl's defaults.

Subcommands ``fit``, ``validate``, ``test``, ``predict`` (Lightning's), ``inspect`` and ``report``
(circuits_pl's). ``--task`` is given once and linked into model and data. A run writes everything
under ``<default_root_dir>/lightning_logs/version_N/``: config.yaml, hparams.yaml, metrics.csv,
checkpoints/ (best and last), results.json and figures. Each run gets a new version directory, so
no run overwrites another.

Every check of the options (:mod:`circuits_pl.preflight`: task targets, sizes, memory, directories,
Lightning values) runs before anything is built or written. ``validate``/``test``/``predict`` need
``--ckpt_path``; ``--ckpt_path untrained`` evaluates the random initial weights on purpose.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from circuits_pl import preflight
from circuits_pl.cadence import Cadence
from circuits_pl.callbacks import FrozenHeap, LastCheckpoint, PredictionWriter, StepProgressBar, StopWhenSolved
from circuits_pl.checkpoint_io import AtomicCheckpointIO
from circuits_pl.checkpoints import load_checked_checkpoint
from circuits_pl.compat import cli_get, cli_instantiate_trainer, cli_parser
from circuits_pl.data import CircuitDataModule
from circuits_pl.errors import CircuitsError, SaveFailed, TrainingDiverged
from circuits_pl.files import atomic_write_text
from circuits_pl.interrupts import END, SANITY, GracefulInterrupt, RunInterrupted, release_all
from circuits_pl.logger import claim_run_dir, run_dir
from circuits_pl.module import CircuitModule, check_precision
from circuits_pl.results import RunSummary
from circuits_pl.tasks import task_names
from circuits_pl.usage import front_door, program_name

TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "max_steps": 20_000,
    # An endless stream never ends an epoch: validate every N SGD steps, never per epoch. The CLI
    # counts both options below in SGD steps and passes them to Lightning in blocks of
    # data.steps_per_batch (circuits_pl.cadence).
    "val_check_interval": 1000,
    "check_val_every_n_epoch": None,
    "log_every_n_steps": 500,  # SGD steps: train metrics every 500 steps
    "enable_model_summary": False,  # the notebook-style weights print instead
}


DESCRIPTION = (
    "Train tiny bias-free ReLU MLPs (many seeds at once) and read the exact circuit they learn. "
    "Subcommands: fit, validate, test, predict (Lightning's), and inspect PATH (read a run's circuit) "
    "and report (the success-rate study), each with --help."
)


# Hyper-parameters that define the weights in a checkpoint: they must match it.
ARCHITECTURE = ("layer_sizes", "bias", "members", "init_seed")
# --ckpt_path UNTRAINED: validate/test/predict the random initial weights, on purpose.
UNTRAINED = "untrained"


class CircuitsCLI(LightningCLI):
    """LightningCLI for circuits_pl (see the module docstring)."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True):
        self.cadence: Cadence | None = None  # SGD steps against Lightning batches: decided in _preflight
        super().__init__(
            CircuitModule,
            CircuitDataModule,
            seed_everything_default=0,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,  # the fast path is plain SGD with model.lr
            save_config_callback=AtomicSaveConfig,
            parser_kwargs={"exit_on_error": False, "default_env": False, "prog": program_name(),
                           "description": DESCRIPTION},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--task", type=str | None, default=None,
            help=f"Task to learn: {', '.join(task_names())}, or 'package.module:function'. "
                 "Given once, used by model and data. With --ckpt_path: a built-in task is taken from the "
                 "checkpoint; your own must be given again (a checkpoint never imports code).",
        )
        parser.add_argument("--threads", type=int, default=1,
                            help="torch threads; one is fastest for these tiny networks")
        parser.add_argument("--figures", type=bool, default=True,
                            help="fit: write losses.png and the best member's function and circuit PNGs")
        parser.link_arguments("task", "model.task")
        parser.link_arguments("task", "data.task")
        parser.add_lightning_class_args(StopWhenSolved, "stop")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/mse",
            "checkpoint.mode": "min",
            "checkpoint.save_last": True,  # last.ckpt at every validation, by LastCheckpoint
            "checkpoint.save_top_k": 1,
            "checkpoint.filename": "best-{step}",
            # every run writes into a fresh version_N, so best-step=N.ckpt cannot collide; the
            # collision check costs a collective per validation under DDP
            "checkpoint.enable_version_counter": False,
        })
        # Lightning's help for these counts batches and epochs; circuits_pl counts SGD steps
        for action in parser._actions:  # argparse's list of options: no public accessor
            if action.dest in _STEP_HELP:
                action.help = _STEP_HELP[action.dest] + " (type: %(type)s, default: %(default)s)"

    # ------------------------------------------------------------------------------------------
    def _active_config(self) -> Namespace:
        """The parsed options of the running subcommand (or all of them with ``run=False``)."""
        sub = self.config.get("subcommand")
        return self.config[sub] if sub else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Lightning's, after :mod:`circuits_pl.preflight` checked the config files and rewrote
        ``--model.layer_sizes 2-3-1`` as ``[2, 3, 1]``."""
        if args is None or isinstance(args, (list, tuple)):
            argv = preflight.normalise_argv(sys.argv[1:] if args is None else [str(a) for a in args])
            preflight.check_config_files(argv)
            if args is None:  # Lightning's would warn that args and sys.argv are both given
                self.config = parser.parse_args(argv)
                return
            args = argv
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before Lightning reads it; take task and sizes from it.

        ``validate``/``test``/``predict`` need a checkpoint: without one they would report untrained
        random weights. ``--ckpt_path untrained`` asks for exactly that. A checkpoint of a user task
        loads only with the same ``--task`` (reading a checkpoint never imports code it names).
        """
        cfg = self._active_config()
        sub = self.config.get("subcommand")
        if cfg.get("ckpt_path") == UNTRAINED:
            if sub == "fit":
                raise CircuitsError(f"--ckpt_path {UNTRAINED} is for validate/test/predict; fit starts "
                                    "untrained without --ckpt_path")
            cfg.ckpt_path = None
        elif not cfg.get("ckpt_path") and sub in ("validate", "test", "predict"):
            raise CircuitsError(
                f"{sub} needs --ckpt_path RUN/checkpoints/last.ckpt (the weights to {sub}); "
                f"for untrained random weights, give --ckpt_path {UNTRAINED}"
            )
        if not cfg.get("ckpt_path"):
            self._check_task()
        else:
            self._take_from_checkpoint(cfg)
        # Here, not in before_instantiate_classes: Lightning's "Seed set to 0" line comes in between,
        # and a refusal must be the only line on stderr.
        self._preflight()

    def _take_from_checkpoint(self, cfg: Namespace) -> None:
        info = load_checked_checkpoint(cfg.ckpt_path, task=cfg.task)
        hp = info["hyper_parameters"]
        if self.config.get("subcommand") == "fit" and "optimizer_states" not in info:
            raise CircuitsError(
                f"{cfg.ckpt_path} holds weights only (--checkpoint.save_weights_only): it cannot resume "
                "training (no optimizer or loop state); resume from the run's last.ckpt, or use this one "
                "with validate, test, predict or inspect"
            )
        wanted = cfg.model.get("layer_sizes")
        if wanted is not None and list(wanted) != list(hp["layer_sizes"]):
            raise CircuitsError(
                f"checkpoint {cfg.ckpt_path} holds a {'-'.join(map(str, hp['layer_sizes']))} network, "
                f"not {'-'.join(map(str, wanted))}: drop --model.layer_sizes or match it"
            )
        cfg.task = cfg.model.task = cfg.data.task = hp["task"]
        defaults = cli_parser(self, self.config.get("subcommand")).get_defaults()
        for key, saved in hp.items():
            if key not in cfg.model or key in ("member", "task"):
                continue
            given, default = cfg.model[key], defaults.model.get(key)
            if key in ARCHITECTURE and given not in (None, default) and given != saved:
                raise CircuitsError(
                    f"checkpoint {cfg.ckpt_path} has model.{key} {saved!r}, not {given!r}: "
                    f"drop --model.{key} or match it"
                )
            if key in ARCHITECTURE or given == default:
                cfg.model[key] = saved  # the checkpoint's, unless the command line chose another lr etc.
        member = cfg.model.get("member")
        if member is not None and not 0 <= member < hp["members"]:
            raise CircuitsError(f"model.member {member} is out of range: the checkpoint has {hp['members']} member(s)")

    def _check_task(self) -> None:
        if self._active_config().task is None:
            sub = self.config.get("subcommand") or "circuits_pl"
            raise CircuitsError(f"{sub} needs --task NAME (one of {', '.join(task_names())}) or --ckpt_path")

    def _preflight(self) -> None:
        """Every check of the parsed options, before anything is built or written (no run directory)."""
        cfg = self._active_config()
        if cfg.threads < 1:
            raise CircuitsError(f"--threads must be a positive integer, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
        # Lightning's DDP sets torch's threads to cores / local processes unless OMP_NUM_THREADS is
        # set: a node of one process would then train with 2 threads and round differently.
        os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
        trainer = cfg.trainer
        check_precision(trainer.precision)  # before any run directory exists
        trainer.strategy = member_parallel(trainer.strategy, trainer.devices, trainer.num_nodes)
        if trainer.logger in (None, True):
            trainer.logger = Namespace(
                class_path="circuits_pl.logger.RunLogger",
                init_args=Namespace(save_dir=trainer.default_root_dir or ".", name="lightning_logs"),
            )
        # SGD steps against Lightning batches, decided once: data.steps_per_batch (given, or chosen here),
        # the memory estimate's block, the Trainer's batch counts (instantiate_trainer)
        self.cadence = preflight.run_cadence(cfg)
        preflight.check_run(cfg, self.config.get("subcommand"), self.cadence)  # targets, values, memory, directories
        self._resolve_cadence(cfg)
        # Lightning logs "Seed set to N" next, before the classes are built: hold it until they are,
        # so that a refusal from a class's own checks is still the only line on stderr.
        self._held_seed_line = preflight.HoldLog("lightning.fabric.utilities.seed")

    def instantiate_classes(self) -> None:
        """Lightning's, with its option errors (MisconfigurationException, invalid strategy names)
        as one line, and the held "Seed set" line released once everything is built."""
        held = getattr(self, "_held_seed_line", None)
        try:
            super().instantiate_classes()
        except CircuitsError:
            raise
        except (MisconfigurationException, ValueError) as err:
            raise CircuitsError(preflight.one_line(err)) from None
        finally:
            if held is not None:
                held.release(replay=sys.exc_info()[0] is None)

    def _resolve_cadence(self, cfg: Namespace) -> None:
        """data.steps_per_batch, when not given: the cadence's choice, saved in config.yaml."""
        if self.cadence is None or cfg.data.get("steps_per_batch") is not None:
            return
        cfg.data.steps_per_batch = self.cadence.steps_per_batch
        if cfg.data.steps_per_batch < 10 and rank_zero_only.rank == 0:
            # measured, 4 members: 3000 steps in 4.0 s with blocks of 1 against 0.13 s with 500
            print(f"note: training in blocks of {cfg.data.steps_per_batch} SGD step(s), the largest that divides "
                  f"--trainer.val_check_interval {cfg.trainer.get('val_check_interval')} and fits "
                  f"--trainer.log_every_n_steps {cfg.trainer.get('log_every_n_steps')}; Lightning's cost per block "
                  "then dominates: round intervals (e.g. 1000 and 500) train much faster", file=sys.stderr)

    def instantiate_trainer(self, **kwargs: Any):
        config = {**cli_get(self, self.config_init, "trainer", default={}), **kwargs}
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(StepProgressBar())
        callbacks += [GracefulInterrupt(keep_after_fit=True), PredictionWriter()]
        config["callbacks"] = callbacks
        if self.cadence is not None:  # Lightning counts batches: blocks of steps_per_batch
            config.update(self.cadence.batch_counts())
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # saves never leave a partial file (issue 9)
        config["plugins"] = plugins
        if (config.get("logger") is False or config.get("fast_dev_run")) and rank_zero_only.rank == 0:
            config["default_root_dir"] = claim_run_dir(config.get("default_root_dir") or ".")
        # The ModelCheckpoint of --checkpoint.* is always built; --trainer.enable_checkpointing false
        # means the user wants none (Lightning would refuse the combination). Its save_last is done
        # by LastCheckpoint, which rewrites last.ckpt at every validation (Lightning's only when the
        # monitored metric improves).
        extra = [cli_get(self, self.config_init, key) for key in cli_parser(self, self.subcommand).callback_keys]
        if config.get("enable_checkpointing") is False:
            extra = [c for c in extra if not isinstance(c, ModelCheckpoint)]
        for c in list(extra):
            if isinstance(c, ModelCheckpoint) and not isinstance(c, LastCheckpoint) and c.save_last:
                c.save_last = False
                extra.append(LastCheckpoint(dirpath=c.dirpath))
        extra.append(FrozenHeap())
        return cli_instantiate_trainer(self, config, extra)

    # ------------------------------------------------------------------------------------------
    def before_fit(self) -> None:
        directory = os.path.normpath(run_dir(self.trainer))  # as every later line prints it
        if self.trainer.is_global_zero:
            print(f"Run directory: {directory}")
            print(device_line(self.trainer, self._active_config().trainer.accelerator, self.model.members))
        if not any(isinstance(c, RunSummary) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(RunSummary(figures=self._active_config().figures))

    def _announce_run_dir(self) -> None:
        """validate / test write into a version_N of their own (metrics.csv): say which."""
        if self.trainer.is_global_zero and self.trainer.logger is not None:
            print(f"Run directory: {os.path.normpath(run_dir(self.trainer))}")

    before_validate = _announce_run_dir
    before_test = _announce_run_dir

    def after_fit(self) -> None:
        # The end of fit (RunSummary: test, results.json, figures) ran inside trainer.fit, in
        # GracefulInterrupt's END phase: a signal there stopped it at once, last.ckpt holding the run.
        guards = [c for c in self.trainer.callbacks if isinstance(c, GracefulInterrupt)]
        try:
            for guard in guards:
                if stop := guard.interruption(self.trainer):
                    raise stop
        finally:
            for guard in guards:
                guard.release()


class AtomicSaveConfig(SaveConfigCallback):
    """LightningCLI's SaveConfigCallback, writing config.yaml atomically (circuits_pl.files)."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            log_dir = trainer.log_dir  # a collective under DDP: every rank asks
            path = os.path.join(log_dir, self.config_filename)
            exists = trainer.strategy.broadcast(os.path.isfile(path) if trainer.is_global_zero else False)
            if exists and not self.overwrite:
                raise RuntimeError(f"{path} exists: refusing to overwrite the config of another run")
            if trainer.is_global_zero:
                atomic_write_text(path, self.parser.dump(self.config, skip_none=False))
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


_STEP_HELP = {
    "trainer.max_steps": "Stop training after this number of SGD steps (-1: no limit).",
    "trainer.val_check_interval": "Validate every this many SGD steps (an integer; validation at steps N, 2N, "
                                  "..., resumed or not, and where the run stops).",
    "trainer.log_every_n_steps": "Log train/mse every this many SGD steps, rounded to whole blocks of "
                                 "data.steps_per_batch (0: no train logging).",
}


def device_line(trainer, accelerator: Any, members: int) -> str:
    """Which device trains, and why: ``Device: cpu (...)``."""
    device = trainer.strategy.root_device
    ranks = f", {trainer.world_size} processes" if trainer.world_size > 1 else ""
    if accelerator != "auto":
        return f"Device: {device}{ranks} (--trainer.accelerator {accelerator})"
    if device.type == "cpu":
        return f"Device: cpu{ranks} (--trainer.accelerator auto found no GPU)"
    return (f"Device: {device}{ranks} (--trainer.accelerator auto found a GPU; with {members} members of a "
            "network this small, a CPU may be as fast: compare with --trainer.accelerator cpu)")


DDP_NAMES = {"ddp": None, "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


def member_parallel(strategy: Any, devices: Any, num_nodes: int) -> Any:
    """``--trainer.strategy ddp`` (or ``auto`` on several devices or nodes) means member parallelism:
    circuits_pl.strategy.MemberParallelStrategy, with the start method the name asks for."""
    if not isinstance(strategy, str):  # a class_path (config.yaml of a DDP run) or an instance: as given
        return strategy
    several = str(devices) not in ("1", "auto", "None") or (num_nodes or 1) > 1
    if strategy in DDP_NAMES or (strategy == "auto" and several):
        method = DDP_NAMES.get(strategy)
        init = Namespace(start_method=method) if method else Namespace()
        return Namespace(class_path="circuits_pl.strategy.MemberParallelStrategy", init_args=init)
    return strategy


def main(args: Sequence[str] | None = None) -> None:
    """Run a command (circuits_pl.__main__ is the entry and calls this); ``args`` for in-process use."""
    argv = list(sys.argv[1:] if args is None else args)
    if (status := front_door(argv)) is not None:  # --help, no command, an unknown command
        raise SystemExit(status)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).addFilter(_said_otherwise)
    # Every run writes into a new version directory, so a restored ModelCheckpoint always "moves".
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    if argv and argv[0] in ("inspect", "report"):
        from circuits_pl import inspection, report

        command = {"inspect": inspection.main, "report": report.main}[argv[0]]
        return _run_guarded(lambda: command(argv[1:]))
    return _run_guarded(lambda: CircuitsCLI(args=args))


# Lightning's info lines that circuits_pl says in its own words, or that mislead with its SGD-step cadence:
# the "Device:" line (GPU/TPU), the task line (its seed), "Resuming from", the end-of-fit summary
# ("stopped: max_steps"), and "val_check_interval=1 ... after every batch" (a batch is a block of steps).
_SAID_OTHERWISE = ("Tip: For seamless cloud logging", "GPU available:", "TPU available:", "HPU available:",
                   "Seed set to", "Restoring states from the checkpoint", "Restored all states from the checkpoint",
                   "`Trainer.fit` stopped: `max_steps=", "so validation will run after every batch")


def _said_otherwise(record: logging.LogRecord) -> bool:
    if record.levelno > logging.INFO:
        return True
    message = record.getMessage()
    return not any(text in message for text in _SAID_OTHERWISE)


def _run_guarded(fn) -> Any:
    interrupted = False
    try:
        return fn()
    except CircuitsError as err:
        _fail(str(err), 2)
    except TrainingDiverged as err:
        # under DDP every rank raises it at the same validation (the population is synced): one line
        _fail(str(err), 1, say=rank_zero_only.rank == 0)
    except SaveFailed as err:
        _fail(str(err), 1)
    except RunInterrupted as err:
        if err.announce:
            print(interrupt_message(err), file=sys.stderr)
        interrupted = True
        raise SystemExit(128 + err.signum) from None
    except KeyboardInterrupt:  # Ctrl-C outside fit (parsing, inspect, validate...): nothing half-written
        print("Interrupted (SIGINT)", file=sys.stderr)
        raise SystemExit(130) from None
    except _argument_errors() as err:
        _fail(_one_line(str(err)), 2)
    finally:
        release_all()
        if interrupted:  # the run is stopped and said so: a further Ctrl-C must not turn the exit into a crash
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        _end_distributed()


def interrupt_message(err: RunInterrupted) -> str:
    """What is on disk after an interrupt, and the command that continues from it."""
    prog = program_name()
    name = f"{__import__('signal').Signals(err.signum).name}"
    if err.path is None:
        where = f"resume from {err.resumed_from} again" if err.resumed_from else "run the command again"
        nothing = ("nothing was trained yet" if err.phase == SANITY
                   else "no checkpoint was written (checkpointing is off)")
        return f"{name}: interrupted during {err.phase} at step {err.step}; {nothing}: {where}"
    path = Path(err.path)  # prints without a leading ./
    run = path.parent.parent
    step = _checkpoint_step(err.path)
    at = f"step {step}" if step is not None else "its last validation"
    if err.phase == END:
        return (f"{name}: interrupted at the end of fit (test, readout, results.json, figures); training is "
                f"complete: {path} holds {at}; no results.json was written. To write results.json and the "
                f"figures (no more training; a new run directory): {prog} fit --config {run / 'config.yaml'} "
                f"--ckpt_path {path}; the readout alone: {prog} inspect {run}")
    return (f"{name}: interrupted during {err.phase}; checkpoint {path} holds {at}\n"
            f"Resume with: {prog} fit --config {run / 'config.yaml'} --ckpt_path {path}")


def _checkpoint_step(path: str) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - the message still names the file
        return None


def _end_distributed() -> None:
    """Close a DDP process group before the interpreter exits: gloo's threads otherwise die
    with "terminate called without an active exception" (an abort) at shutdown."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _argument_errors() -> tuple[type[BaseException], ...]:
    import argparse

    from jsonargparse import ArgumentError

    return (argparse.ArgumentError, ArgumentError)


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _one_line(message: str) -> str:
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    # jsonargparse: 'Parser key "data.batch_size": Expected a <class 'int'>. Got value: 1000.0'
    m = re.fullmatch(r"""Parser key "([\w.]+)": Expected a <class '(\w+)'>\. Got value: (.*)""", text)
    if m and m[2] in _TYPE_NAMES:
        return f"--{m[1]} must be {_TYPE_NAMES[m[2]]}, got {m[3]}"
    return text[:400] if lines else "invalid arguments"


def _fail(message: str, code: int, say: bool = True) -> None:
    if say:
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)

