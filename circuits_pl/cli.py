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

import functools
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from circuits_pl import inspection, preflight, report, signals
from circuits_pl.atomic_checkpoint_io import AtomicCheckpointIO
from circuits_pl.cadence import Cadence
from circuits_pl.callbacks import FrozenHeap, LastCheckpoint, PredictionWriter, StepProgressBar, StopWhenSolved
from circuits_pl.checkpoint_checks import check_finite, check_state_dict, load_checked_checkpoint, saved_sweep
from circuits_pl.compat import (
    HookedLightningCLI,
    cli_get,
    cli_instantiate_trainer,
    cli_parser,
    fast_result_logging,
    parser_actions,
    quiet_lightning_warnings,
    subcommand_parsers,
    summary_line,
)
from circuits_pl.data import CircuitDataModule
from circuits_pl.errors import CircuitsError, SaveFailed, TrainingDiverged
from circuits_pl.files import atomic_write_text
from circuits_pl.interrupts import GracefulInterrupt, RunInterrupted, interrupt_message, release_all
from circuits_pl.logger import claim_run_dir, run_dir
from circuits_pl.module import CircuitModule, check_precision
from circuits_pl.run_summary import RunSummary
from circuits_pl.sweep import Sweep
from circuits_pl.tasks import task_names
from circuits_pl.usage import RENAMED, current_spelling, front_door, program_name

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


# Lightning's commands, as circuits_pl's short help and each command's --help describe them (inspect's and
# report's lines are the first lines of their functions' docstrings).
LIGHTNING_COMMANDS = {
    "fit": "train --task NAME, many seeds at once; writes lightning_logs/version_N/",
    "validate": "validation MSE of a trained run: --ckpt_path RUN/checkpoints/last.ckpt",
    "test": "test MSE of a trained run: --ckpt_path CKPT",
    "predict": "predictions.csv (inputs, target, prediction) of a trained run: --ckpt_path CKPT",
}
# circuits_pl's commands beside Lightning's: plain functions whose typed parameters are the options
COMMAND_FUNCTIONS: dict[str, Callable[..., Any]] = {"inspect": inspection.inspect, "report": report.report}
# The options of fit the short help lists first, in its words: (option as typed, text, the parser key whose
# default and choices the short help quotes, or None). The quoted values are the parser's (short_help_module).
KEY_OPTIONS = (
    ("--task NAME", "the task to learn (with --ckpt_path: the checkpoint's)", None),
    ("--model.members K", "seeds trained at once", "model.members"),
    ("--model.lr LR", "SGD learning rate", "model.lr"),
    ('--model.layer_sizes "[2, 3, 1]"', "layer widths, input to output (default: the task's)", None),
    ("--trainer.max_steps N", "SGD step budget", "trainer.max_steps"),
    ("--stop.when", "stop once one member is solved, all are, or never", "stop.when"),
    ("--config FILE.yaml", "options from a file: configs/*.yaml, or a run's config.yaml", None),
    ("--ckpt_path FILE.ckpt", "resume (fit) or evaluate (validate, test, predict) a checkpoint", None),
)
SHORT_HELP_MODULE = os.path.join(os.path.dirname(__file__), "short_help.py")


# Hyper-parameters that define the weights in a checkpoint: they must match it (init_scale and
# cells: as a checkpoint from before sweeps has them when it lacks them).
ARCHITECTURE = ("layer_sizes", "bias", "members", "init_seed", "init_scale", "cells")
BEFORE_SWEEPS = {"init_scale": 1.0, "cells": None}
# --ckpt_path UNTRAINED: validate/test/predict the random initial weights, on purpose.
UNTRAINED = "untrained"


class CircuitsCLI(HookedLightningCLI):
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
                           "description": DESCRIPTION,
                           **{name: {"description": text} for name, text in LIGHTNING_COMMANDS.items()}},
            args=args,
            run=run,
        )

    def command_functions(self) -> dict[str, Callable[..., Any]]:
        """circuits_pl's commands beside Lightning's: their typed parameters are their options."""
        return dict(COMMAND_FUNCTIONS)

    def run_command_function(self, name: str, function: Callable[..., Any], options: dict[str, Any]) -> None:
        if name == "report":  # the study keeps its command line as typed (study.json, report.md)
            options["argv"] = self._command_argv
        function(**options)

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
        # Members that differ (circuits_pl.sweep): every combination is a cell, trained with
        # --model.members seeds; resolved into model.cells before anything is built (preflight.resolve_sweep).
        parser.add_argument("--sweep.sizes", type=str | list[list[int]] | None, default=None,
                            help="fit: train every one of these layer sizes side by side, e.g. 1-2-1,1-4-1,1-8-1 "
                                 "(with --sweep.lr and --sweep.init_scale: every combination is a cell, "
                                 "--model.members seeds each; model.cells lists cells one by one)")
        parser.add_argument("--sweep.lr", type=str | float | list[float] | None, default=None,
                            help="fit: learning rates to train side by side, e.g. 0.03,0.1,0.3")
        parser.add_argument("--sweep.init_scale", type=str | float | list[float] | None, default=None,
                            help="fit: initial-weight scales to train side by side (a factor on nn.Linear's "
                                 "init bound), e.g. 0.1,1")
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
        # Lightning's help for these counts batches and epochs; circuits_pl counts SGD steps. Elsewhere its
        # "Default: ``X``" is dropped where circuits_pl's default is another (the help ends with the real one).
        for action in parser_actions(parser):
            if action.dest in _STEP_HELP:
                action.help = _STEP_HELP[action.dest] + " (type: %(type)s, default: %(default)s)"
            elif action.dest in _OWN_HELP:
                action.help = _OWN_HELP[action.dest]
            elif isinstance(action.help, str) and action.default is not None:
                action.help = _STATED_DEFAULT.sub(
                    lambda m, real=action.default: m[0] if m[1] == str(real) else "", action.help)

    # ------------------------------------------------------------------------------------------
    def _active_config(self) -> Namespace:
        """The parsed options of the running subcommand (or all of them with ``run=False``)."""
        sub = self.config.get("subcommand")
        return self.config[sub] if sub else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Lightning's, after :mod:`circuits_pl.preflight` checked the config files and rewrote
        ``--model.layer_sizes 2-3-1`` as ``[2, 3, 1]``."""
        self._typed_config: Namespace | None = None
        # An option is its whole name. argparse's default accepts any unambiguous prefix: `report --model.member 3`
        # (the member to inspect, a user thought) ran a 3-seed study as --model.members 3, without a word.
        for each in (parser, *subcommand_parsers(parser).values()):
            each.allow_abbrev = False
        if args is None or isinstance(args, (list, tuple)):
            argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
            if argv and argv[0] in RENAMED:  # old spellings of inspect's and report's options, with one line each
                argv = [argv[0], *current_spelling(argv[0], argv[1:])]
            if argv and argv[0] in self.command_functions():
                self._command_argv = argv[1:]
                if argv[0] == "report":
                    argv = [argv[0], *report.normalise_argv(argv[1:])]
            else:
                argv = preflight.normalise_argv(argv)
                preflight.check_config_files(argv)
            self._argv = argv
            try:
                if args is None:  # Lightning's would warn that args and sys.argv are both given
                    self.config = parser.parse_args(argv)
                    return
                super().parse_arguments(parser, argv)
            except _argument_errors() as err:
                _raise_with_hint(err, parser, argv)
            return
        super().parse_arguments(parser, args)

    def _typed(self, section: str) -> Namespace:
        """The --model.* (or --data.*) options the user gave, on the command line or in a --config file,
        not the defaults: jsonargparse parses the same arguments again without defaults. With
        --ckpt_path every other one is taken from the checkpoint."""
        argv = getattr(self, "_argv", None)
        if argv is None:  # a dict or Namespace given in Python: everything in it was chosen
            return self._active_config().get(section) or Namespace()
        if getattr(self, "_typed_config", None) is None:
            sub = self.config.get("subcommand")
            seed = Namespace()
            seed[f"{sub}.task" if sub else "task"] = None  # the task links need a source, given or not
            typed = self.parser.parse_args(argv, namespace=seed, defaults=False)
            self._typed_config = typed.get(sub) if sub else typed
        return self._typed_config.get(section) or Namespace()

    def after_parse(self) -> None:
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
            if cfg.task is None:  # untrained weights of which task: there is no checkpoint to say
                raise CircuitsError(f"{sub} --ckpt_path {UNTRAINED} needs --task NAME (one of "
                                    f"{', '.join(task_names())}): the untrained net of which task")
        elif not cfg.get("ckpt_path") and sub in ("validate", "test", "predict"):
            raise CircuitsError(
                f"{sub} needs --ckpt_path RUN/checkpoints/last.ckpt (the weights to {sub}); "
                f"for untrained random weights, give --ckpt_path {UNTRAINED}"
            )
        if not cfg.get("ckpt_path"):
            self._check_task()
            self._resolve_sweep(cfg, cfg.task)
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
        saved_cells = saved_sweep(cfg.ckpt_path, hp)
        typed = self._typed("model")
        swept = self._resolve_sweep(cfg, hp["task"] if cfg.task is None else cfg.task)
        if swept is not None and swept.cells != saved_cells.cells:
            raise CircuitsError(f"checkpoint {cfg.ckpt_path} trains {_cells_text(saved_cells)}, not "
                                f"{_cells_text(swept)}: drop --sweep.* or match it")
        wanted = cfg.model.get("layer_sizes")
        if wanted is not None and (hp["layer_sizes"] is None or list(wanted) != list(hp["layer_sizes"])):
            held = (f"a {'-'.join(map(str, saved_cells.cells[0].layer_sizes))} network" if saved_cells.is_single
                    else _cells_text(saved_cells))
            raise CircuitsError(f"checkpoint {cfg.ckpt_path} holds {held}, not {'-'.join(map(str, wanted))}: "
                                "drop --model.layer_sizes or match it")
        cfg.task = cfg.model.task = cfg.data.task = hp["task"]
        if not saved_cells.is_single and typed.get("lr") is not None and cfg.model.lr != hp["lr"]:
            raise CircuitsError(f"checkpoint {cfg.ckpt_path} trains {_cells_text(saved_cells)}: its cells fix each "
                                "member's lr; drop --model.lr")
        for key, saved in {**BEFORE_SWEEPS, **hp}.items():
            if key not in cfg.model or key in ("member", "task"):
                continue
            given = cfg.model[key] if typed.get(key) is not None else None  # None: not chosen by the user
            if key == "cells" and given is not None:  # compared as cells, whatever their spelling
                given = [c.as_dict() for c in Sweep.of_run((), 0.1, 1.0, given, saved_cells.members_per_cell).cells]
                saved = [c.as_dict() for c in saved_cells.cells] if saved is not None else None
            if key in ARCHITECTURE and given is not None and given != saved:
                raise CircuitsError(
                    f"checkpoint {cfg.ckpt_path} has model.{key} {saved!r}, not {given!r}: "
                    f"drop --model.{key} or match it"
                )
            if given is None:
                cfg.model[key] = saved  # the checkpoint's, unless the user chose another lr etc.
        # the run's data (batch size, stream and validation seeds, ...), unless given; the block size may change
        typed_data = self._typed("data")
        for key, saved in (info.get("datamodule_hyper_parameters") or {}).items():
            if key in cfg.data and key not in ("task", "steps_per_batch") and typed_data.get(key) is None:
                cfg.data[key] = saved
        member, total = cfg.model.get("member"), saved_cells.members
        if member is not None and not 0 <= member < total:
            raise CircuitsError(f"model.member {member} is out of range: the checkpoint has {total} member(s)")
        groups = [g for state in info.get("optimizer_states") or [] if isinstance(state, dict)
                  for g in state.get("param_groups") or [] if isinstance(g, dict)]
        rule = groups[0].get("rule") if groups else None
        if self.config.get("subcommand") == "fit" and rule is not None and rule != cfg.model.optimizer:
            # the module says the same at the start of training; here no run directory exists yet
            raise CircuitsError(f"the checkpoint was trained with --model.optimizer {rule}, not {cfg.model.optimizer}: "
                                "its optimizer state cannot continue another rule")
        self._checkpoint = info

    def _resolve_sweep(self, cfg: Namespace, task: str) -> Sweep | None:
        """``--sweep.*`` as the run's cells (``preflight.resolve_sweep``); None without a sweep."""
        section = cfg.get("sweep")
        if section is None or all(section.get(axis) is None for axis in preflight.SWEEP_AXES):
            return None
        return preflight.resolve_sweep(cfg, task, self._typed("model"))

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
        fit = self.config.get("subcommand") == "fit"
        if fit and trainer.get("log_every_n_steps") == 0 and rank_zero_only.rank == 0:
            print("note: --trainer.log_every_n_steps 0: train/mse is not logged (metrics.csv and losses.png show "
                  "validation only)", file=sys.stderr)
        # Lightning logs "Seed set to N" next, before the classes are built: hold it until they are,
        # so that a refusal from a class's own checks is still the only line on stderr.
        self._held_seed_line = preflight.HoldLog("lightning.fabric.utilities.seed")

    def instantiate_classes(self) -> None:
        """Lightning's, with its option errors (MisconfigurationException, invalid strategy names)
        as one line, and the held "Seed set" line released once everything is built."""
        held = getattr(self, "_held_seed_line", None)
        try:
            super().instantiate_classes()
            self._check_checkpoint_against_model()
        except CircuitsError:
            raise
        except (MisconfigurationException, ValueError) as err:
            raise CircuitsError(preflight.one_line(err)) from None
        finally:
            if held is not None:
                held.release(replay=sys.exc_info()[0] is None)

    def _check_checkpoint_against_model(self) -> None:
        """Before any file is written: the checkpoint holds every buffer of the module built from its
        hyper-parameters, with its shape, and finite weights for the member(s) the command uses."""
        info = getattr(self, "_checkpoint", None)
        if info is None or not isinstance(getattr(self, "model", None), CircuitModule):
            return
        path, sub = self._active_config().ckpt_path, self.config.get("subcommand")
        check_state_dict(path, info["state_dict"], self.model.state_dict())
        if sub == "fit":
            check_finite(path, info["state_dict"], None, "train")
        else:
            best = next(v for k, v in info["state_dict"].items() if k.rsplit(".", 1)[-1] == "best_member")
            check_finite(path, info["state_dict"], int(best) if self.model.member is None else self.model.member, sub)
        self._checkpoint = None  # checked; the Trainer's checkpoint plugin holds it until Lightning restores it

    def _resolve_cadence(self, cfg: Namespace) -> None:
        """data.steps_per_batch, when not given: the cadence's choice, saved in config.yaml."""
        if self.cadence is None or cfg.data.get("steps_per_batch") is not None:
            return
        cfg.data.steps_per_batch = self.cadence.steps_per_batch
        if cfg.data.steps_per_batch < 10 and rank_zero_only.rank == 0:
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
            # saves never leave a partial file (issue 9); the --ckpt_path read and checked in after_parse is
            # the one Lightning restores (the file is read once)
            loaded = getattr(self, "_checkpoint", None)
            path = self._active_config().get("ckpt_path")
            plugins.append(AtomicCheckpointIO(loaded=(path, loaded) if loaded is not None and path else None))
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
        """validate / test / predict write into a version_N of their own (metrics.csv, predictions.csv):
        say which."""
        if self.trainer.logger is None:
            return
        directory = os.path.normpath(run_dir(self.trainer))  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero:
            print(f"Run directory: {directory}")

    before_validate = _announce_run_dir
    before_test = _announce_run_dir
    before_predict = _announce_run_dir

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


# Lightning's help of options that mean something else here.
_OWN_HELP = {
    "trainer.logger": "Logger (or loggers) of the run. null or true: circuits_pl's CSV logger (metrics.csv and "
                      "hparams.yaml in lightning_logs/version_N, claimed atomically); false: none; or a logger class, "
                      "e.g. lightning.pytorch.loggers.TensorBoardLogger (its save_dir: the run's root).",
}
# Lightning's way of stating a default in its help: "Default: ``True``."
_STATED_DEFAULT = re.compile(r"\s*Default: ``([^`]*)``\.?")


def _cells_text(sweep: Sweep) -> str:
    """``a 1-4-1 network at lr 0.1`` or ``6 cells (2 sizes (1-2-1, 1-4-1) × ...)``, for messages."""
    if sweep.is_single:
        cell = sweep.cells[0]
        scale = f", init scale {cell.init_scale:g}" if cell.init_scale != 1.0 else ""
        return f"a {'-'.join(map(str, cell.layer_sizes))} network at lr {cell.lr:g}{scale}"
    return f"{len(sweep.cells)} cells ({sweep.describe()})"


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


class _Parsers(Exception):
    def __init__(self, parser: LightningArgumentParser):
        self.parser = parser


class _ParserOnly(CircuitsCLI):
    """CircuitsCLI up to its parser: built, not parsed (what the short help is generated from)."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        raise _Parsers(parser)


def command_parsers() -> dict[str, Any]:
    """Every command's parser, in the order of the command root (fit, validate, test, predict, inspect, report)."""
    try:
        _ParserOnly(args=[])
    except _Parsers as built:
        return subcommand_parsers(built.parser)
    raise AssertionError("CircuitsCLI parsed without calling parse_arguments")


def short_help_module() -> str:
    """The text of circuits_pl/short_help.py: the commands, the built-in tasks and the key options of fit with
    their defaults, as the command root and the task registry have them today. ``python -m circuits_pl --help``
    reads that file (no torch, no Lightning); tests/test_front_door.py checks it equals this."""
    from circuits_pl.tasks import BUILTIN_TASKS

    parsers = command_parsers()
    commands = {name: LIGHTNING_COMMANDS.get(name) or _lower_first(summary_line(COMMAND_FUNCTIONS[name]))
                for name in parsers}
    fit = {action.dest: action for action in parser_actions(parsers["fit"])}
    options = []
    for option, text, key in KEY_OPTIONS:
        if key is not None:
            action = fit[key]  # a KeyError: a key option the parser no longer has
            choices = action.choices or (action.metavar or "").strip("{}").split(",")  # a Literal: {best,all,never}
            if option.count(" ") == 0 and any(choices):
                option = f"{option} {'|'.join(choices)}"
            text = f"{text} (default {action.default})"
        options.append((option, text))
    tasks = [(t.name, t.formula, "-".join(map(str, t.layer_sizes))) for t in BUILTIN_TASKS.values()]
    lines = ['"""The short help\'s facts: generated by circuits_pl.cli.short_help_module from the command root and',
             "the task registry. Do not edit; regenerate with",
             '    python -c "from circuits_pl.cli import write_short_help; write_short_help()"', "",
             "tests/test_front_door.py checks that this file is what the generator prints today.", '"""', "",
             "# command -> its line", "COMMAND_HELP = {",
             *(f"    {name!r}: {text!r}," for name, text in commands.items()), "}", "",
             "# circuits_pl.tasks.BUILTIN_TASKS as (name, target formula, default layer sizes)", "BUILTIN_TASKS = (",
             *(f"    {task!r}," for task in tasks), ")", "",
             "# (option, text): fit's options a user reaches for first, with the parser's defaults", "KEY_OPTIONS = (",
             *(f"    {option!r}," for option in options), ")", ""]
    return "\n".join(lines)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def write_short_help() -> None:
    """(Re)write circuits_pl/short_help.py from :func:`short_help_module`."""
    atomic_write_text(SHORT_HELP_MODULE, short_help_module())


def main(args: Sequence[str] | None = None) -> None:
    """Run a command (circuits_pl.__main__ is the entry and calls this); ``args`` for in-process use."""
    argv = list(sys.argv[1:] if args is None else args)
    if (status := front_door(argv)) is not None:  # --help, no command, an unknown command
        raise SystemExit(status)
    run = functools.partial(CircuitsCLI, args=args)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    handlers = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}
    threads, environment = torch.get_num_threads(), dict(os.environ)  # --threads sets OMP_NUM_THREADS
    for logger in loggers:
        logger.addFilter(_said_otherwise)
    try:
        with quiet_lightning_warnings(), fast_result_logging():
            return _run_guarded(run, whole_process=args is None, command=argv[0] if argv else None)
    finally:
        # what this command changed, as it was (a caller in Python goes on in the same process)
        for logger in loggers:
            logger.removeFilter(_said_otherwise)
        if args is not None:
            torch.set_num_threads(threads)
            os.environ.clear()
            os.environ.update(environment)
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)


# The Lightning loggers whose lines _said_otherwise filters.
_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed")


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


def _run_guarded(fn, whole_process: bool = True, command: str | None = None) -> Any:
    """Run ``fn``, turning circuits_pl's errors and interrupts into one line and an exit status.
    ``whole_process``: the process ends with this command (else :func:`main` restores the signal handlers)."""
    interrupted = False
    stop_with: int | None = None  # the signal the other DDP ranks get if they are still running
    try:
        return fn()
    except CircuitsError as err:
        stop_with = signal.SIGTERM
        _fail(str(err), 2)
    except TrainingDiverged as err:
        # under DDP every rank raises it at the same validation (the population is synced): one line
        stop_with = signal.SIGTERM
        _fail(str(err), 1, say=rank_zero_only.rank == 0)
    except SaveFailed as err:
        stop_with = signal.SIGTERM
        _fail(str(err), 1)
    except RunInterrupted as err:
        signals.set_ending()
        if err.announce:
            print(interrupt_message(err), file=sys.stderr)
        interrupted, stop_with = True, err.signum
        raise SystemExit(128 + err.signum) from None
    except KeyboardInterrupt:  # Ctrl-C outside fit (parsing, inspect, validate...): nothing half-written
        stop_with = signal.SIGINT
        print("Interrupted (SIGINT)", file=sys.stderr)
        raise SystemExit(130) from None
    except _argument_errors() as err:
        _fail(_one_line(str(err), command), 2)
    except BaseException:
        stop_with = signal.SIGTERM
        signals.set_ending()  # the rank watcher stands down: this branch says the one line
        # DDP: another rank is gone and this error follows; unless this process was stopped by a signal of
        # its own (its handler said its line and stopped the other ranks: their exit is its consequence)
        if not signals.acknowledged() and (failed := signals.failed_child(wait=signals.GRACE)) is not None:
            code, line = failed
            if line:
                print(line, file=sys.stderr)
            raise SystemExit(code) from None
        if signals.is_child_rank() and signals.parent_gone(wait=2.0):  # rank 0 was killed: this error follows
            signals.exit_without_rank_zero()
        raise
    finally:
        signals.set_ending()
        release_all()
        if interrupted and whole_process:  # stopped and said so: a further Ctrl-C must not turn the exit into a crash
            for sig in signals.STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        # DDP: the other ranks stop with this one (or finish, a moment behind it) before it goes
        signals.stop_children(stop_with or signal.SIGTERM, patience=signals.GRACE if stop_with else 60.0)
        _end_distributed()


def _end_distributed() -> None:
    """Close a DDP process group before the interpreter exits: gloo's threads otherwise die
    with "terminate called without an active exception" (an abort) at shutdown."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _raise_with_hint(err: BaseException, parser: LightningArgumentParser, argv: Sequence[str]) -> None:
    """An unrecognized option, in one line with the option the user likely meant: ``fit --members 4`` ->
    ``--model.members`` (fit's options are in sections; report's old spellings still work there)."""
    import difflib

    text = " ".join(str(err).split())
    # the command line's "unrecognized arguments: --x 1", or a config file's "... does not accept option 'x'"
    unknown = re.match(r"unrecognized arguments: (--[\w.-]+)", text) or \
        re.search(r"does not accept option '([\w.-]+)'", text)
    sub = subcommand_parsers(parser).get(argv[0]) if argv else None
    if not unknown or sub is None:
        raise err
    name = "--" + unknown[1].partition("=")[0].removeprefix("--")
    options = [o for action in parser_actions(sub) for o in action.option_strings
               if o.startswith("--") and not o.endswith("+") and o not in ("--help", "--print_config")]
    section, _, short = name[2:].rpartition(".")
    last: dict[str, list[str]] = {}  # the name within its section: --members is --model.members
    for option in options:
        where, _, key = option[2:].rpartition(".")
        if not section or where == section:  # --model.bogus: only --model.* options
            last.setdefault(key, []).append(option)
    close = [short] if short in last else difflib.get_close_matches(short, list(last), n=2, cutoff=0.8) or \
        sorted(key for key in last if len(short) >= 2 and key.startswith(short))  # --ta: --task (no abbreviations)
    meant = [option for key in close for option in last[key]]
    if not meant:
        raise err
    if not text.startswith("unrecognized"):  # a config file's key: said as a key
        text, meant = f"config key {name[2:]} is not an option of {argv[0]}", [m.removeprefix("--") for m in meant]
    raise CircuitsError(f"{text} (did you mean {' or '.join(sorted(meant)[:3])}? "
                        f"see {program_name()} {argv[0]} --help)") from None


def _argument_errors() -> tuple[type[BaseException], ...]:
    import argparse

    from jsonargparse import ArgumentError

    return (argparse.ArgumentError, ArgumentError)


_TYPE_NAMES = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
               "list[int]": "a list of integers like [2, 3]", "list[float]": "a list of numbers like [1.0, -0.5]",
               "NoneType": "null"}
# What an option takes, where its type alone says too little.
_OPTION_NAMES = {"model.layer_sizes": "a list of positive integers like [2, 3, 1] (or 2-3-1), or null for the task's",
                 "seed_everything": "an integer from 0 to 4294967295",
                 "data.cone": "a direction like [1.0, 1.0], or null",
                 "model.betas": "two numbers like [0.9, 0.999], or null"}


def _one_line(message: str, command: str | None = None) -> str:
    """jsonargparse's message as one line in the user's terms: which option, what it takes, what was given."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    if command in ("inspect", "report") and text.startswith(("argument ", "the following arguments are required")):
        # argparse's own words (inspect and report were argparse commands), and where the options are listed
        text = text.replace(f"required: {command}.", "required: ")
        return f"{text} (see {program_name()} {command} --help)"
    key = re.match(r'Parser key "([\w.]+)":', text)
    given = re.search(r"Given value: (.*)$", text)
    # 'Parser key "data.batch_size": Expected a <class 'int'>. Got value: 1000.0'
    m = re.fullmatch(r"""Parser key "([\w.]+)": Expected a <class '(\w+)'>\. Got value: (.*)""", text)
    if m and m[2] in _TYPE_NAMES:
        return f"--{m[1]} must be {_OPTION_NAMES.get(m[1], _TYPE_NAMES[m[2]])}, got {m[3]}"
    m = re.fullmatch(r"""Parser key "([\w.]+)": Expected a typing\.Literal\[(.*)\]\. Got value: (.*)""", text)
    if m:
        return f"--{m[1]} must be one of {m[2].replace(chr(39), '')}, got {m[3]}"
    m = re.search(r"Problem with given class_path '([^']+)': (.*?)(?: - Expected a |$)", text)
    if key and m:
        return f"--{key[1]} {m[1]}: {m[2].rstrip('. ')}"
    if key and "Expected a dot import path string" in text:
        return f"--{key[1]}: {given[1] if given else 'the value'} is not a class to import (package.module.Class)"
    if key and given and "Union subtypes" in text:
        subtypes = re.search(r"Subtypes: \[(.*?)\] Errors:", text)
        names = [_TYPE_NAMES.get(re.sub(r"<class '(\w+)'>", r"\1", t.strip()), t.strip())
                 for t in (subtypes[1].split(", ") if subtypes else [])]
        what = _OPTION_NAMES.get(key[1]) or " or ".join(names) or "another value"
        return f"--{key[1]} must be {what}, got {given[1][:60]}"
    return text[:400] if lines else "invalid arguments"


def _fail(message: str, code: int, say: bool = True) -> None:
    if say:
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)

