"""The private Lightning, jsonargparse and torch APIs circuits_pl relies on, in one place.

Each shim says why no public API does the job. ``tests/test_compat.py`` checks every one against
the installed versions, by what it does (not by reading their source), so an upgrade that changes
them fails there, loudly, not somewhere deep in a run. Where circuits_pl must override a private
method, the override lives here, in a base class that hands over to a public-named hook
(:class:`HookedLightningCLI`, :class:`HookedModelCheckpoint`, :class:`HookedCSVLogger`,
:class:`HookedDDPStrategy`); the subclasses elsewhere override only those hooks.

Importing this module changes no process state: the warnings Lightning gives that circuits_pl's
commands silence are silenced by :func:`quiet_lightning_warnings`, and Lightning's logging is shortened
by :func:`fast_result_logging`, around a command only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.strategies import DDPStrategy

# Lightning's warnings that say nothing to a user of circuits_pl's commands (regular expressions of
# their messages), silenced by quiet_lightning_warnings.
LIGHTNING_NOISE = (
    # Lightning 2.6 calls an API that torch 2.13 deprecates, once per fit, from code a user cannot change
    r".*isinstance\(treespec, LeafSpec\)",
    # Under MemberParallelStrategy every rank holds every member's values when CircuitModule logs (synced
    # before it logs): Lightning's advice to log its keys with sync_dist=True (one line per key and run, on
    # every rank) does not apply, and following it would add a collective per key per validation.
    r"It is recommended to use `self\.log\('((val|test|train)/\w+|step)', \.\.\., sync_dist=True\)`",
    # The predict grid is served as an iterable of ready batches (circuits_pl.data.Batches: every DDP rank
    # predicts every point), which has no sampler to read batch indices from; PredictionWriter needs none.
    r"Couldn't infer the batch indices fetched from your dataloader",
    # Every run writes into a new version directory, so a restored ModelCheckpoint always "moves".
    r"The dirpath has changed from",
)


@contextlib.contextmanager
def quiet_lightning_warnings() -> Iterator[None]:
    """Silence :data:`LIGHTNING_NOISE` inside the block; the warning filters are as before after it."""
    with warnings.catch_warnings():
        for message in LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield


@contextlib.contextmanager
def fast_result_logging() -> Iterator[None]:
    """Inside the block, ``self.log`` no longer walks a logged metric's state when it is already where
    the value is; the class is as before after it.

    Lightning's ``_ResultCollection.log`` calls ``_ResultMetric.to(value.device)`` for every key at every
    call, and ``to`` walks the metric's whole ``__dict__`` with ``apply_to_collection`` (deep-copying its
    metadata dataclasses) even when nothing moves: Lightning issue #20388; open PR #21769 short-circuits
    it the same way. Measured in a K = 128 ``fit`` here (20k steps, 60 calls of ``_log_metrics`` of 3-6
    keys): 3.5-3.8 ms per call with Lightning's, 1.1-1.3 ms with this. A ``.to`` with another device, a
    dtype or keywords, or on a metric whose value is not a tensor, is Lightning's own.
    """
    import torch
    from lightning.pytorch.trainer.connectors.logger_connector import result

    cls = getattr(result, "_ResultMetric", None)
    original = cls.__dict__.get("to") if cls is not None else None
    if original is None:  # a Lightning without it: nothing to shorten
        yield
        return

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == 1 and isinstance(args[0], (str, torch.device)):
            value = self.__dict__.get("value")
            if isinstance(value, torch.Tensor) and value.device == torch.device(args[0]):
                return self
        return original(self, *args, **kwargs)

    cls.to = to
    try:
        yield
    finally:
        cls.to = original


def record_resolved(obj: pl.LightningModule | pl.LightningDataModule, **values: Any) -> None:
    """Store defaults resolved at init (``None`` -> a value) in the saved hyper-parameters.

    LightningCLI makes ``save_hyperparameters`` record the parsed config as given (``None``), but a
    checkpoint must say which sizes and seeds it holds, and so must hparams.yaml. hparams.yaml is
    written from ``_hparams_initial`` (private: no public setter exists), so both copies are
    updated. LightningCLI's ``_instantiator`` entry (its own bookkeeping, meaningless to a reader of
    hparams.yaml or results.json) is dropped from both: circuits_pl's classes are built directly.
    """
    obj.hparams.update(values)
    obj.hparams.pop("_instantiator", None)
    initial = getattr(obj, "_hparams_initial", None)
    if initial is not None:
        initial.update(values)
        initial.pop("_instantiator", None)


def count_optimizer_steps(lightning_optimizer: Any, steps: int) -> None:
    """Make Lightning count ``steps`` optimizer steps taken outside ``LightningOptimizer.step``.

    The hot path applies its updates itself (``LightningOptimizer.step`` runs a closure, precision and
    strategy hooks at every step: many times a tiny network's step), but ``global_step``, ``max_steps``
    and checkpoint resume must count SGD steps. Under manual optimization Lightning's ``_ManualOptimization`` installs
    ``_on_before_step``/``_on_after_step`` on each LightningOptimizer (private: no public API bumps
    ``optim_step_progress``); these are the exact calls ``LightningOptimizer.step`` makes around
    the real step. Calling them after a block of steps is equivalent: nothing reads the counter
    inside the block. The pair runs once (the profiler's "optimizer_step" span); the other steps are
    added to the same counter (``optim_step_progress.increment_by``): a pair per step would show in a block.
    """
    if steps <= 0:
        return
    before, after = lightning_optimizer._on_before_step, lightning_optimizer._on_after_step
    before()
    after()
    progress = getattr(getattr(before, "__self__", None), "optim_step_progress", None)
    if progress is not None and hasattr(progress, "increment_by"):
        progress.increment_by(steps - 1)
        return
    for _ in range(steps - 1):
        before()
        after()


def restored_batches(trainer: Any) -> int:
    """Lightning batches counted before this fit (restored from a checkpoint): the fit loop's
    progress counter, which has no public accessor. The resumed stream aligns its first block on it."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)


# --- LightningCLI: the points between Lightning's steps where circuits_pl's CLI acts ---------------

class HookedLightningCLI(LightningCLI):
    """LightningCLI with a public-named hook where Lightning has only a private step, and commands of
    its own beside Lightning's on the same root parser.

    :meth:`after_parse` runs after parsing, before the seed is set and any class is built. It replaces
    ``LightningCLI._parse_ckpt_path`` (no public hook runs there), which would ``torch.load`` a
    ``--ckpt_path`` a second time, unchecked, to read its hyper-parameters.

    :meth:`command_functions` names commands that are plain functions: each is a subcommand of the
    root parser (``LightningCLI._add_subcommands`` adds only the Trainer's methods; the subcommands
    action it makes is jsonargparse's private ``_subcommands_action``) whose options are the function's
    typed parameters (a dataclass parameter ``model`` gives ``--model.<field>``) and whose help is its
    docstring. Such a command runs right after parsing (:meth:`run_command_function`); nothing of
    Lightning's is seeded or built for it.
    """

    def command_functions(self) -> dict[str, Callable[..., Any]]:
        """Commands beside fit/validate/test/predict: name -> function (its typed parameters are the
        command's options, its docstring the help)."""
        return {}

    def run_command_function(self, name: str, function: Callable[..., Any], options: dict[str, Any]) -> None:
        """Run the command ``name`` with its parsed options (dataclass options built)."""
        function(**options)

    def after_parse(self) -> None:
        """``self.config`` is parsed; nothing is seeded or built yet."""

    def _add_subcommands(self, parser: Any, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        for name, function in self.command_functions().items():
            parser._subcommands_action.add_subcommand(name, function_parser(function, name),
                                                      help=summary_line(function))

    def _parse_ckpt_path(self) -> None:
        name = self.config.get("subcommand")
        functions = self.command_functions()
        if name in functions:
            self.subcommand = name
            self.run_command_function(name, functions[name], call_options(functions[name], self.config[name]))
            raise _CommandRan
        self.after_parse()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except _CommandRan:  # a command of command_functions ran: LightningCLI's seeding and building are not its
            pass


def subcommand_parsers(parser: Any) -> dict[str, Any]:
    """A jsonargparse parser's subcommands and their parsers, in order (its private ``_subcommands_action``)."""
    return dict(parser._subcommands_action.choices)


class _CommandRan(Exception):
    """Raised after a command of HookedLightningCLI.command_functions ran, to end LightningCLI's constructor."""


def summary_line(function: Callable[..., Any]) -> str:
    """The first line of a function's docstring: its line in the list of commands."""
    lines = (inspect.getdoc(function) or "").strip().splitlines()
    return lines[0] if lines else ""


def function_parser(function: Callable[..., Any], name: str) -> Any:
    """A jsonargparse parser of ``function``'s typed parameters (required ones positional; keyword-only
    ones are not options: the caller passes them), helped by its docstring; one line per usage error
    (``exit_on_error=False``: the CLI says it)."""
    from jsonargparse import ArgumentParser

    paragraphs = (inspect.getdoc(function) or "").split("\n\nArgs:")[0].split("\n\n")
    description = "\n\n".join(paragraphs[1:] or paragraphs)  # the first line is the command's line in the list
    parser = ArgumentParser(prog=name, description=description, exit_on_error=False, default_env=False)
    passed = {key for key, p in inspect.signature(function).parameters.items() if p.kind == p.KEYWORD_ONLY}
    parser.add_function_arguments(function, as_group=False, as_positional=True, skip=passed)
    return parser


def call_options(function: Callable[..., Any], options: Any) -> dict[str, Any]:
    """The keyword arguments of ``function`` from its parsed options: a dataclass parameter's group of
    options (``--model.member``) built into the dataclass."""
    hints = typing.get_type_hints(function)
    values = options.as_dict() if hasattr(options, "as_dict") else dict(options)
    for key, value in values.items():
        kind = hints.get(key)
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            values[key] = kind(**value)
    return values


def parser_actions(parser: Any) -> list[Any]:
    """The options of an (argparse or jsonargparse) parser: argparse's ``_actions``, which has no public
    accessor. The CLI rewrites the help of the Trainer options whose unit it changes, or whose default."""
    return list(parser._actions)


def cli_parser(cli: Any, subcommand: str | None) -> Any:
    """The parser of a subcommand (``LightningCLI._parser``): its callback keys name the callbacks
    given as options (``--checkpoint.*``, ``--stop.*``)."""
    return cli._parser(subcommand)


def cli_get(cli: Any, config: Any, key: str, default: Any = None) -> Any:
    """A value of the running subcommand's config (``LightningCLI._get``)."""
    return cli._get(config, key, default=default)


def cli_instantiate_trainer(cli: Any, config: dict[str, Any], callbacks: list[Any]) -> Any:
    """Build the Trainer with the CLI's own callbacks added (``LightningCLI._instantiate_trainer``):
    ``instantiate_trainer`` is the public override point, and this is what it calls."""
    return cli._instantiate_trainer(config, callbacks)


# --- Checkpoints -----------------------------------------------------------------------------------

def module_from_checkpoint(cls: type[pl.LightningModule], checkpoint: dict[str, Any], **kwargs: Any) -> Any:
    """``cls.load_from_checkpoint(path, map_location="cpu", **kwargs)`` for a checkpoint already read
    and checked (circuits_pl.checkpoint_checks), so that a command reads its file once: Lightning's
    own steps after its ``torch.load`` (``_pl_migrate_checkpoint``, the hyper-parameters given as
    ``kwargs`` over the saved ones, ``_load_state``), which have no public entry taking a loaded
    checkpoint. ``checkpoint`` is updated as Lightning updates its own copy."""
    from lightning.pytorch.core.saving import _load_state
    from lightning.pytorch.utilities.migration.utils import _pl_migrate_checkpoint

    checkpoint = _pl_migrate_checkpoint(checkpoint)
    checkpoint.setdefault(cls.CHECKPOINT_HYPER_PARAMS_KEY, {})
    checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY].update(kwargs)
    return _load_state(cls, checkpoint, **kwargs)


class HookedModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose every save goes through :meth:`write_checkpoint` (``_save_checkpoint``,
    the one method every save of Lightning's ModelCheckpoint calls, is private)."""

    def write_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Save the checkpoint file ``filepath`` (Lightning's way: ``trainer.save_checkpoint``, then the
        bookkeeping that :func:`last_save` reads)."""
        super()._save_checkpoint(trainer, filepath)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        self.write_checkpoint(trainer, filepath)


def last_save(callback: Any) -> tuple[str, int]:
    """The file a ``ModelCheckpoint`` last wrote and the global step it wrote it at.

    ``LastCheckpoint`` links last.ckpt to the best checkpoint saved at the same step. Lightning's
    own ``save_last="link"`` reads these private fields; no public accessor exists
    (``last_model_path`` is only set by ``save_last``, ``best_model_path`` names the best, not the
    latest).
    """
    return str(getattr(callback, "_last_checkpoint_saved", "") or ""), int(callback._last_global_step_saved)


def set_last_save(callback: Any, path: str, step: int) -> None:
    """Record a save made without Lightning's ``ModelCheckpoint._save_checkpoint`` (see :func:`last_save`)."""
    callback._last_checkpoint_saved = path
    callback._last_global_step_saved = step


# --- The CSV logger ------------------------------------------------------------------------------

class HookedCSVLogger(CSVLogger):
    """CSVLogger with public-named hooks for what circuits_pl's RunLogger changes: the version it picks
    (``CSVLogger._get_next_version``) and the class of its writer (built inside the ``experiment``
    property, from the private ``_experiment`` and ``_fs``)."""

    writer_class: type = ExperimentWriter

    def next_version(self, version: int) -> int:
        """The version to use, given the one Lightning picked (one more than the largest on disk)."""
        return version

    def started_writer(self) -> Any:
        """The writer, if this logger has made one (else None: nothing was logged)."""
        return self._experiment

    def _get_next_version(self) -> int:
        return self.next_version(super()._get_next_version())

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = self.writer_class(log_dir=self.log_dir)
        return self._experiment


def record_new_keys(writer: ExperimentWriter) -> None:
    """Add the columns of the rows waiting in ``writer.metrics`` to ``writer.metrics_keys``, sorted
    (``ExperimentWriter._record_new_keys``: Lightning's order of metrics.csv's columns)."""
    writer._record_new_keys()


# --- DDP -----------------------------------------------------------------------------------------

class HookedDDPStrategy(DDPStrategy):
    """DDPStrategy whose launcher can be replaced (:meth:`replace_launcher`): Lightning chooses it in
    the private ``_configure_launcher`` and keeps it in the private ``_launcher``."""

    def replace_launcher(self, launcher: Any) -> Any:
        """The launcher to use instead of ``launcher`` (Lightning's choice)."""
        return launcher

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        self._launcher = self.replace_launcher(self._launcher)


def script_launcher() -> type:
    """Lightning's ``_SubprocessScriptLauncher`` (``--trainer.strategy ddp`` re-runs the command per rank):
    circuits_pl.interrupts.RankLauncher subclasses it to watch the ranks it starts its own way."""
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    return _SubprocessScriptLauncher


def start_child_ranks(launcher: Any) -> list[Any]:
    """Start ranks 1.. of a ``_SubprocessScriptLauncher`` (its ``_call_children_scripts``: the command
    again, with the rank in the environment); their ``Popen`` objects."""
    launcher._call_children_scripts()
    return list(launcher.procs)


def set_num_threads_if_needed(num_processes: int) -> None:
    """What the launcher does after starting the ranks (``_set_num_threads_if_needed``): torch threads
    per process when OMP_NUM_THREADS is unset (the CLI sets it, from --threads)."""
    from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

    _set_num_threads_if_needed(num_processes=num_processes)
