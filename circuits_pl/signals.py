"""SIGINT and SIGTERM for the whole life of a circuits_pl process (plain Python: installed before torch).

``fit`` stops gracefully through :class:`circuits_pl.interrupts.GracefulInterrupt`; this module covers
everything around it, for ``python -m circuits_pl`` (:func:`install`):

- **importing** (torch and Lightning take seconds): exit at once, 130/143 and one line. Nothing is
  written yet; raising there would leave half-imported C extensions, which later broke the exit with
  "cannot load module more than once" or a RecursionError, or was swallowed and the run went on.
- **running**, outside fit's handlers (parsing, checks, building, validate/test/predict, report): raise
  ``SystemExit(128 + signal)``, so ``finally`` blocks run (a half-written temporary file is removed).
- **exiting** (the command has returned; atexit handlers run): exit at once with 128 + signal and one
  line. Raising there printed an "Exception ignored in atexit callback" traceback and exited 0.

A signal that the parent process ignores (``cmd &`` in a non-interactive shell ignores SIGINT) stays
ignored, here and in fit (:func:`ignored_at_start`).

A handler runs only when the main thread is between Python bytecodes; a process blocked in C (DDP's
rendezvous waiting for a rank that is gone) would never run it. The C-level handler also writes the
signal number to a wakeup file descriptor (``signal.set_wakeup_fd``): a watchdog thread reads it and,
if no handler has acknowledged the signal after :data:`GRACE` seconds, stops the process itself
(:func:`hard_exit`), taking the child DDP ranks with it (:func:`stop_children`). A rank waiting in a
collective during training is left to it: the ranks stop together at the next block.

Child DDP ranks (``LOCAL_RANK`` > 0) stay quiet: rank 0 speaks for the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
IMPORTING, RUNNING, EXITING = "importing", "running", "exiting"
GRACE = 5.0  # seconds a handler has to acknowledge a signal before the watchdog stops the process

# Recorded when this module is first imported, before circuits_pl installs any handler.
_IGNORED = {sig for sig in STOP_SIGNALS if signal.getsignal(sig) == signal.SIG_IGN}
_state: dict = {"phase": RUNNING, "acks": 0, "ending": False, "describe": None, "rank_message": None}
_children: list[subprocess.Popen] = []


def ignored_at_start(sig: int) -> bool:
    """Was ``sig`` ignored when this process started (by its parent)? Then it stays ignored."""
    return sig in _IGNORED


def is_child_rank() -> bool:
    """A DDP rank that Lightning's launcher started (rank 0 speaks for the run)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0
    except ValueError:
        return False


def acknowledge() -> None:
    """Called by every handler of circuits_pl: this process has seen the signal and is acting on it."""
    _state["acks"] += 1


def acknowledged() -> bool:
    """Has a handler of this process seen a signal?"""
    return _state["acks"] > 0


def set_phase(phase: str) -> None:
    _state["phase"] = phase


def set_ending() -> None:
    """This process is on its way out (an error, an interrupt, or the end): the rank watcher stands down."""
    _state["ending"] = True


def ending() -> bool:
    return bool(_state["ending"])


def set_describer(describe: Callable[[int], str] | None) -> None:
    """What a hard exit says (the disk's state and how to resume), while fit runs."""
    _state["describe"] = describe
    if describe is not None:  # kept after fit's teardown: a child rank whose rank 0 was killed says it then
        _state["described"] = describe


def say(line: str, child_too: bool = False) -> None:
    """One line on stderr, unless this is a child DDP rank (``child_too``: also there); safe from any thread."""
    if is_child_rank() and not child_too:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream must not stop the exit
            pass
    try:
        os.write(2, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def hard_exit(code: int, line: str | None) -> None:
    """Say ``line``, stop the child ranks, and exit with ``code`` at once (no handlers, no atexit)."""
    if line:
        say(line)
    stop_children(code - 128 if code > 128 else signal.SIGTERM)
    os._exit(code)


# -------------------------------------------------------------------------------------------------
# Child DDP ranks (started by rank 0 through Lightning's launcher)
# -------------------------------------------------------------------------------------------------
def register_children(procs: list[subprocess.Popen]) -> None:
    _children[:] = procs


def stop_children(signum: int, patience: float = 0.0) -> None:
    """No child rank outlives rank 0: wait up to ``patience`` seconds for the children to exit on their
    own (they stop or finish with rank 0), then send ``signum`` to those still running (each exits
    128 + signum, by its handler or its watchdog), and kill what is left after GRACE + 2 seconds."""
    deadline = time.monotonic() + patience
    for p in _children:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    alive = [p for p in _children if p.poll() is None]
    for p in alive:
        try:
            p.send_signal(signum)
        except OSError:
            pass
    deadline = time.monotonic() + GRACE + 2.0
    for p in alive:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -------------------------------------------------------------------------------------------------
# The handlers and the watchdog
# -------------------------------------------------------------------------------------------------
def install() -> None:
    """The handlers of ``python -m circuits_pl`` before fit's own (see the module docstring) and the
    watchdog; phase ``importing`` until :func:`set_phase`."""
    set_phase(IMPORTING)
    for sig in STOP_SIGNALS:
        if not ignored_at_start(sig):
            signal.signal(sig, _stop)
    _start_watchdog()
    if is_child_rank():
        _watch_parent()


def _stop(signum: int, frame: object) -> None:
    acknowledge()
    name = signal.Signals(signum).name
    if _state["phase"] == IMPORTING:
        hard_exit(128 + signum, f"{name}: interrupted while starting; nothing was written")
    if _state["phase"] == EXITING:
        hard_exit(128 + signum, f"{name}: interrupted while exiting; every file of the run is complete")
    set_ending()
    say(f"{name}: interrupted outside training (starting or finishing); every file on disk is complete")
    stop_children(signum)
    raise SystemExit(128 + signum)


def _start_watchdog() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read)
        os.close(write)
        return
    threading.Thread(target=_watch_signals, args=(read,), daemon=True, name="circuits_pl-signals").start()


def _watch_signals(read: int) -> None:
    # The C-level handler writes the byte before the Python-level handler runs, but this thread may
    # read it after (it needs the GIL): a handler call since the last look counts, whenever it came.
    seen = _state["acks"]
    while True:
        try:
            data = os.read(read, 64)
        except OSError:
            return
        if not any(signum in STOP_SIGNALS and not ignored_at_start(signum) for signum in data):
            continue
        signum = next(s for s in data if s in STOP_SIGNALS)
        received = time.monotonic()
        while _state["acks"] == seen and (time.monotonic() - received < GRACE or _in_collective()):
            time.sleep(0.05)
        if _state["acks"] == seen:  # the main thread is blocked in C code: stop here
            try:
                line = _state["describe"](signum) if _state["describe"] else None
            except Exception:  # noqa: BLE001 - the exit must happen; the generic line says enough
                line = None
            hard_exit(128 + signum, line or f"{signal.Signals(signum).name}: interrupted (the process was blocked, "
                                             "waiting on the other DDP processes); every file on disk is complete")
        seen = _state["acks"]


# torch.distributed's collectives: a rank waiting in one waits for the others, who decide (they stop
# with it at the next block, or their loss is seen: circuits_pl.interrupts.RankLauncher, a gloo error).
COLLECTIVES = {"all_reduce", "broadcast", "barrier", "all_gather", "all_gather_object", "broadcast_object_list",
               "gather", "scatter", "reduce"}


def _in_collective() -> bool:
    """Is the main thread waiting in a torch.distributed collective (not the start-up rendezvous)?"""
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        code = frame.f_code
        if code.co_name in COLLECTIVES and code.co_filename.endswith("distributed_c10d.py"):
            return True
        frame = frame.f_back
    return False


def _watch_parent() -> None:
    """A child rank whose rank 0 is gone (killed outright) exits too, instead of waiting forever."""
    _state["parent"] = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if parent_gone():
                exit_without_rank_zero()

    threading.Thread(target=watch, daemon=True, name="circuits_pl-parent").start()


def parent_gone(wait: float = 0.0) -> bool:
    """Is this child rank's rank 0 gone (killed outright: SIGKILL, the OOM killer)? ``wait``: seconds to
    keep looking (its sockets close a moment before this process is re-parented)."""
    parent = _state.get("parent")
    deadline = time.monotonic() + wait
    while parent is not None:
        if os.getppid() != parent:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return False


_parent_lock = threading.Lock()


def exit_without_rank_zero() -> None:
    """A child rank whose rank 0 was killed: rank 0 can no longer speak for the run, so this rank says the one
    line (what is on disk, how to resume) and exits 1, from whichever of its threads sees it first. (gloo's
    "Connection closed by peer" traceback, ~50 lines, was all a user saw.)"""
    with _parent_lock:
        try:
            describe = _state["describe"] or _state.get("described")
            line = describe(signal.SIGTERM) if describe else None
        except Exception:  # noqa: BLE001 - the exit must happen; the generic line says enough
            line = None
        # "SIGTERM: interrupted during training; checkpoint ... holds step N\nResume with: ...": what is on disk
        on_disk = (line or "").partition(": ")[2].partition("; ")[2]
        say("error: DDP process 0 is gone (killed); this process stops too; "
            + (on_disk or "every file on disk is complete"), child_too=True)
        os._exit(1)


def _failed() -> tuple[int, int] | None:
    """The first child rank that has exited with a failure: (its rank, its status). Cheap: no message."""
    for rank, proc in enumerate(list(_children), start=1):
        status = proc.poll()
        if status:
            return rank, status
    return None


def failed_child(wait: float = 0.0) -> tuple[int, str | None] | None:
    """If a child rank has exited with a failure: the status this process should exit with, and the
    line saying why (an error here, such as gloo's "Connection closed by peer", is its consequence).

    ``wait``: seconds to keep looking while every child still runs. A rank's sockets close while it
    exits, a moment before its status can be read: rank 0's error may come first."""
    deadline = time.monotonic() + wait
    while (failed := _failed()) is None:
        if not _children or all(p.poll() == 0 for p in _children) or time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
    rank, status = failed
    signum = status_signal(status)
    code = 128 + signum if signum else (status if status > 0 else 1)
    message = _state.get("rank_message")
    return code, message(rank, status) if message else None


def watch_children(message: Callable[[int, int], str | None]) -> None:
    """Rank 0: when a child rank exits with a failure while this process is not itself stopping (a
    signal that reached that rank alone, before training; an error there), stop every rank with the
    same status and one line (``message(rank, status)``), instead of waiting forever in a collective.
    (Lightning's own observer SIGKILLs rank 0: exit 137 and a line about zombies.)

    The watching thread only polls the children's statuses: the line (which reads the trainer and its
    tensors) is made only when it stops the process. A daemon thread that held a tensor while the
    interpreter shut down aborted the exit ("terminate called without an active exception", exit -6)
    after a DDP run stopped by a signal had said its lines."""

    _state["rank_message"] = message

    def watch() -> None:
        while True:
            time.sleep(0.2)
            if _failed() is None:
                continue
            died = time.monotonic()
            while time.monotonic() - died < 2.0:  # a rank that stops with us exits first
                if ending() or acknowledged():
                    return
                time.sleep(0.05)
            hard_exit(*failed_child())

    threading.Thread(target=watch, daemon=True, name="circuits_pl-ranks").start()


def status_signal(status: int) -> int | None:
    """The signal an exit status means: -15 (killed by it) or 143 (exited 128 + it); else None."""
    if status < 0:
        return -status
    if status > 128 and status - 128 in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        return status - 128
    return None
