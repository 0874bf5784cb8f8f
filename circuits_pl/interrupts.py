"""Ctrl-C (SIGINT) and SIGTERM at any moment of ``fit``: stop cleanly, keep the newest state.

Phases and what a first signal does (``GracefulInterrupt`` installs the handler at ``setup``, before
the sanity validation, and keeps it until the CLI has written results.json and the figures):

- before training (sanity validation): stop at once; nothing new was trained, nothing is written.
- training: finish the current block of SGD steps, then stop the way Lightning stops early
  (``trainer.should_stop``): Lightning validates and the last-checkpoint callback writes
  ``last.ckpt`` with every loop counter complete, so a resume continues exactly.
- end of fit (test, readout, results.json, figures): stop at once; training is complete and
  ``last.ckpt`` holds it; results.json and figures are written atomically, so they are either
  complete or absent (the message says whether results.json was written).
- after the end of fit (everything written): stop at once, saying the run is complete.

A second signal stops at once in any phase. Saves are atomic (``circuits_pl.atomic_checkpoint_io``), so
an abort in the middle of one keeps the previous checkpoint. The CLI turns :class:`RunInterrupted`
into exit status 128 + signal (130 for SIGINT, 143 for SIGTERM) and a message saying what is on
disk and how to resume (:func:`interrupt_message`). Before and after fit, and when a process is
blocked in C, :mod:`circuits_pl.signals` takes over; under DDP, :class:`RankLauncher` watches the
ranks rank 0 starts.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.distributed import ReduceOp

from circuits_pl import signals
from circuits_pl.compat import script_launcher, set_num_threads_if_needed, start_child_ranks
from circuits_pl.usage import program_name

SANITY, TRAINING, END, DONE = "sanity validation", "training", "end of fit", "after the end of fit"


class RunInterrupted(BaseException):
    """A signal stopped ``fit``. ``path``: the newest complete checkpoint (None if none);
    ``phase``: where it struck (``SANITY``, ``TRAINING`` or ``END``).

    A BaseException, like KeyboardInterrupt: raised from the signal handler at an arbitrary line, it
    must not be swallowed by an ``except Exception`` in library code (benchmarks/fault_injection.py's
    kills caught such a case: an Exception left fit running).
    """

    def __init__(self, signum: int, step: int, path: str | None, announce: bool = True,
                 phase: str = TRAINING, resumed_from: str | None = None, results: str | None = None):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step} ({phase})")
        self.signum, self.step, self.path, self.announce = signum, step, path, announce
        self.phase, self.resumed_from, self.results = phase, resumed_from, results


class GracefulInterrupt(pl.Callback):
    """Handle SIGINT/SIGTERM during the whole of ``fit`` (see the module docstring).

    ``release()`` restores the previous handlers; the CLI calls it after the end-of-fit outputs
    (in plain ``Trainer.fit`` use the handlers are restored at ``teardown``).
    """

    def __init__(self, keep_after_fit: bool = False) -> None:
        self.signum: int | None = None
        self.stopped = False
        self.keep_after_fit = keep_after_fit
        self.phase = SANITY
        self._raised = False
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}

    # ---------------------------------------------------------------------------------------- #
    def _handler(self, signum: int, frame: Any) -> None:
        signals.acknowledge()
        first = self.signum is None
        self.signum = self.signum or signum
        name = signal.Signals(signum).name
        if first and self.phase == TRAINING:
            if self._trainer is None or self._trainer.is_global_zero:  # said once, not by every DDP rank
                print(f"\n{name} received: stopping after the current block of steps and saving a checkpoint "
                      "(a second Ctrl-C stops at once, keeping the last complete checkpoint)", file=sys.stderr,
                      flush=True)
            return
        if self._raised:
            return  # already stopping at once: further signals must not interrupt the clean-up
        self._raised = True
        raise self.interruption(self._trainer, signum=signum, force=True)

    def install(self) -> None:
        """Handle SIGINT/SIGTERM from now on (again, if Lightning has put its own handler in front).

        Lightning's signal connector, registered after ``setup``, would turn SIGTERM into its
        ``SIGTERMException`` (a SystemExit with status 0, no checkpoint) at the next validation.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in signals.STOP_SIGNALS:
            if signals.ignored_at_start(sig):  # ignored by the parent (a background job): stays ignored
                continue
            if sig not in self._previous:
                self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        if self not in _INSTALLED:
            _INSTALLED.append(self)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if self in _INSTALLED:
            _INSTALLED.remove(self)
            signals.set_describer(None)

    release = _restore

    # ---------------------------------------------------------------------------------------- #
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer, self.phase = trainer, SANITY
            self.install()
            # what the watchdog says if a signal finds this process blocked in C (circuits_pl.signals)
            signals.set_describer(lambda signum: interrupt_message(self.interruption(trainer, signum, force=True)))

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install()
        self.phase = TRAINING
        if self.signum is not None and not self._raised:  # a signal during the sanity validation
            self._raised = True
            raise self.interruption(trainer, force=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        requested = self.signum is not None
        if trainer.world_size > 1:  # every rank stops after the same block, or DDP would hang
            # one all_reduce, as reduce_boolean_decision, of the signal itself: a SIGTERM that reached
            # rank 1 only is reported (and exits 143) as SIGTERM by rank 0
            got = torch.tensor(int(self.signum or 0), device=trainer.strategy.root_device)
            got = int(trainer.strategy.reduce(got, reduce_op=ReduceOp.MAX))
            requested = got > 0
            if requested and self.signum is None:
                self.signum = got
                signals.set_ending()  # the ranks stop together: rank 0's watcher of the others stands down
                if trainer.is_global_zero:  # only another rank got it: say so here, once
                    print(f"\n{signal.Signals(got).name} received by another process: stopping after this block "
                          "and saving a checkpoint", file=sys.stderr, flush=True)
        if requested and not trainer.should_stop:
            self.stopped = True
            self.signum = self.signum or signal.SIGINT
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.phase = END

    def done(self) -> None:
        """The end of fit has written everything (results.json, figures): a signal now says so."""
        self.phase = DONE

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not self.keep_after_fit:
            self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not (isinstance(exception, RunInterrupted) and self.keep_after_fit):
            self._restore()  # else the CLI restores them (release_all) once it has said what is on disk

    # ---------------------------------------------------------------------------------------- #
    def interruption(self, trainer: pl.Trainer | None, signum: int | None = None,
                     force: bool = False) -> RunInterrupted | None:
        """The RunInterrupted to raise if a signal stopped the run (``force``: one arrived now)."""
        if not (self.stopped or force) or trainer is None:
            return None
        path = latest_checkpoint(trainer)
        step = trainer.global_step
        phase = self.phase
        if self.stopped:  # training was stopping on the first signal: the run is to be resumed
            phase = TRAINING
        elif phase == TRAINING:
            phase = TRAINING + " (at once, by a second signal)"
        return RunInterrupted(signum or self.signum or signal.SIGINT, step, path, trainer.is_global_zero, phase,
                              resumed_from=str(trainer.ckpt_path) if trainer.ckpt_path else None,
                              results=written_results(trainer) if phase in (END, DONE) else None)


_INSTALLED: list[GracefulInterrupt] = []


def release_all() -> None:
    """Give SIGINT/SIGTERM back to the handlers they had before ``fit`` (the CLI's last act)."""
    for guard in reversed(list(_INSTALLED)):
        guard.release()


def written_results(trainer: pl.Trainer) -> str | None:
    """The results.json the end of this fit wrote, if it got that far (no collective: the logger's own
    directory, not ``trainer.log_dir``, which broadcasts: a signal handler runs on one rank only)."""
    directory = getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir
    path = os.path.join(directory, "results.json") if directory else None
    return os.path.normpath(path) if path and os.path.isfile(path) else None


def latest_checkpoint(trainer: pl.Trainer) -> str | None:
    """The path of the newest complete ``last.ckpt`` this fit wrote (None if it wrote none)."""
    paths = [cb.last_model_path for cb in trainer.checkpoint_callbacks
             if isinstance(cb, ModelCheckpoint) and cb.last_model_path]
    paths += [cb.best_model_path for cb in trainer.checkpoint_callbacks
              if isinstance(cb, ModelCheckpoint) and cb.best_model_path and cb.best_model_path.endswith("last.ckpt")]
    paths = [p for p in paths if os.path.exists(p)]
    return paths[0] if paths else None


def interrupt_message(err: RunInterrupted) -> str:
    """What is on disk after an interrupt, and the command that continues from it (shell-quoted)."""
    prog = program_name()
    name = signal.Signals(err.signum).name
    if err.path is None:
        where = f"resume from {err.resumed_from} again" if err.resumed_from else "run the command again"
        nothing = ("nothing was trained yet" if err.phase == SANITY
                   else "no checkpoint was written (checkpointing is off)")
        return f"{name}: interrupted during {err.phase} at step {err.step}; {nothing}: {where}"
    path = Path(err.path)  # prints without a leading ./
    run = path.parent.parent
    step = _checkpoint_step(err.path)
    at = f"step {step}" if step is not None else "its last validation"
    again = f"{prog} fit --config {shlex.quote(str(run / 'config.yaml'))} --ckpt_path {shlex.quote(str(path))}"
    if err.phase == DONE:
        return (f"{name}: interrupted after the end of fit; the run is complete: {path} holds {at}"
                + (f"; {err.results} is written" if err.results else ""))
    if err.phase == END:
        if err.results:
            written = f"{err.results} was written, figures may be missing"
            todo = "To write the figures too"
        else:
            written = "no results.json was written"
            todo = "To write results.json and the figures"
        return (f"{name}: interrupted at the end of fit (test, readout, results.json, figures); training is "
                f"complete: {path} holds {at}; {written}. {todo} (no more training; a new run directory): "
                f"{again}; the readout alone: {prog} inspect {shlex.quote(str(run))}")
    return (f"{name}: interrupted during {err.phase}; checkpoint {path} holds {at}\n"
            f"Resume with: {again}")


def _checkpoint_step(path: str) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - the message still names the file
        return None


# ---------------------------------------------------------------------------------------------- #
# DDP: the ranks rank 0 starts
# ---------------------------------------------------------------------------------------------- #
class RankLauncher(script_launcher()):
    """Lightning's launcher of ``--trainer.strategy ddp`` (it starts the command again per rank), with
    circuits_pl's watch over the ranks (:func:`circuits_pl.signals.watch_children`) instead of Lightning's:
    when a rank stops on its own before training (a signal that reached it alone, an error), every
    rank stops with its status and one line; Lightning's observer SIGKILLed rank 0 (exit 137), or the
    ranks waited in the rendezvous. Rank 0's exit stops the others (:func:`circuits_pl.signals.stop_children`).
    """

    def launch(self, function: Any, *args: Any, trainer: pl.Trainer | None = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            signals.register_children(start_child_ranks(self))
            signals.watch_children(lambda rank, status: rank_stopped_message(trainer, rank, status))
        set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


def rank_stopped_message(trainer: pl.Trainer | None, rank: int, status: int) -> str:
    """Rank 0's line when another rank stopped on its own."""
    signum = signals.status_signal(status)
    if signum is None:
        return (f"error: DDP process {rank} stopped with exit status {status} (its error is above); every process "
                "stops; every file on disk is complete")
    name = signal.Signals(signum).name
    guard = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, GracefulInterrupt)), None)
    if trainer is None or guard is None or guard._trainer is None:
        return (f"{name}: DDP process {rank} was stopped while starting; every process stops; nothing was trained: "
                "run the command again")
    stopped = guard.interruption(trainer, signum, force=True)
    stopped.phase = guard.phase  # this process was not signalled: it stops where it was
    return f"{name} (DDP process {rank}): " + interrupt_message(stopped).split(": ", 1)[1]
