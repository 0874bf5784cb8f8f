"""Where ``report``'s fits run: processes on this machine (``local``, the default), or SLURM jobs
through submitit (``slurm``: one job per fit, the fits of a round as one job array;
``submitit_local``: the same submitit path as local processes, to check it without a cluster).

Every fit is ``python -m circuits_pl fit ...`` in a root directory of its own (so its run directory,
``root/lightning_logs/version_N``, is known), and every launcher starts it the same way
(:func:`fit_command`): a fit whose results.json exists is not run again, and one cut mid-way resumes
from its newest ``last.ckpt``. So ``report --resume`` retrains nothing that finished, and a SLURM job
that is preempted or runs out of time continues where it stopped.

On SLURM, requeueing is submitit's checkpointing: submitit's sbatch script asks SLURM for a signal
(USR2) before the time limit (and at preemption); submitit's handler in the job calls
:meth:`FitJob.checkpoint`, which stops the fit the way a Ctrl-C does (SIGTERM: it saves its
last.ckpt and exits) and returns the same job for resubmission; submitit then requeues it
(``scontrol requeue``) and, when it runs again, the fit resumes from that last.ckpt. This is the
cleaner of the two ways Lightning and submitit offer: the alternative, Lightning's
``SLURMEnvironment(auto_requeue=True)`` catching SIGUSR1 inside the fit, writes a second kind of
checkpoint (``hpc_ckpt_N.ckpt``) outside the fit's atomic, checked last.ckpt, and requeues the sbatch
script behind submitit's back. Here the fit keeps its one graceful stop, submitit owns the signal and
the requeue, and the fit runs as a plain process (SLURM_* variables removed, so Lightning does not
take the job for a multi-task SLURM launch and install its own SIGUSR1 requeue).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from circuits_pl.errors import CircuitsError
from circuits_pl.signals import status_signal

LAUNCHERS = ("local", "slurm", "submitit_local")
POLL_SECONDS = 1.0  # how often the submitit launcher looks for finished jobs (a file check, no sacct call)
STOP_SECONDS = 60.0  # a fit stopped by a signal saves its last.ckpt within this (its own watchdog: far less)
# After the fit was stopped by a SIGTERM that was not ours (SLURM's preemption or scancel), the job waits
# this long for SLURM to end and requeue it before it reports the fit as stopped.
PREEMPTED_PATIENCE = 300.0
MAX_TIMEOUTS = 20  # requeues after running out of time (preemptions are not counted), as submitit counts them

Done = Callable[["FitSpec", dict, Path], None]


@dataclass(frozen=True)
class FitSpec:
    """One fit as a launcher sees it (picklable: submitit sends it to the job).

    Args:
        name: the fit's name in the report.
        root: its own root directory (``--trainer.default_root_dir``).
        log: the file its output goes to (appended: a resumed fit keeps its history).
        args: the command line after ``python -m circuits_pl``.
    """

    name: str
    root: str
    log: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class SlurmOptions:
    """report's ``--slurm.*`` options, as submitit's executor parameters (with --launcher slurm).

    Args:
        partition: SLURM partition (null: the cluster's default)
        time: minutes per job; a fit that needs longer is requeued and resumes from its last.ckpt
        cpus_per_task: CPUs per job (a fit uses one torch thread)
        gpus_per_node: GPUs per job (each fit, at --trainer.accelerator auto, trains on a GPU it finds)
        array_parallelism: jobs of a round running at once
        account: SLURM account to charge
        qos: SLURM quality of service
    """

    partition: str | None = None
    time: int = 60  # minutes per job; a fit that needs longer is requeued and resumes
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    array_parallelism: int = 256  # jobs of a round running at once (submitit's default)
    account: str | None = None
    qos: str | None = None

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"name": "circuits_pl", "timeout_min": self.time, "cpus_per_task": self.cpus_per_task,
                                  "slurm_array_parallelism": self.array_parallelism}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                params[f"slurm_{key}"] = getattr(self, key)
        return params


# -------------------------------------------------------------------------------------------------
# A fit's files
# -------------------------------------------------------------------------------------------------
def _versions(root: str | Path) -> list[Path]:
    logs = Path(root) / "lightning_logs"
    if not logs.is_dir():
        return []
    found = [p for p in logs.iterdir() if re.fullmatch(r"version_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def finished_run(root: str | Path) -> Path | None:
    """The newest run directory of the fit with a results.json (it finished), or None."""
    return next((v for v in reversed(_versions(root)) if (v / "results.json").is_file()), None)


def resume_point(root: str | Path) -> Path | None:
    """The newest last.ckpt of the fit (a fit stopped before its first checkpoint has none)."""
    return next((v / "checkpoints" / "last.ckpt" for v in reversed(_versions(root))
                 if (v / "checkpoints" / "last.ckpt").is_file()), None)


def fit_command(spec: FitSpec) -> list[str]:
    """``python -m circuits_pl fit ...``, continued from the fit's newest last.ckpt when it has one."""
    last = resume_point(spec.root)
    return [sys.executable, "-m", "circuits_pl", *spec.args, *(["--ckpt_path", str(last)] if last else [])]


class JobStopped(BaseException):
    """A fit of the report was stopped by a signal that did not come through the report (``kill`` of the
    fit, the OOM killer): the report stops too, as on its own signal (report.md says how to resume),
    rather than end as a failed job with exit 2, the status of a usage error."""

    def __init__(self, name: str, signum: int):
        super().__init__(f"report job {name} was stopped by {signal.Signals(signum).name}")
        self.name, self.signum = name, signum


def failure(spec: FitSpec, returncode: int) -> CircuitsError:
    """The one line saying why a fit failed: its own ``error:`` line, else its last line."""
    try:
        lines = Path(spec.log).read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    last = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
    return CircuitsError(f"report job {spec.name} failed (exit {returncode}): {last.removeprefix('error: ')} "
                         f"(log: {spec.log})")


def read_results(spec: FitSpec) -> tuple[dict, Path]:
    import json

    run = finished_run(spec.root)
    if run is None:
        raise CircuitsError(f"report job {spec.name} ended without a results.json (log: {spec.log})")
    return json.loads((run / "results.json").read_text()), run


# -------------------------------------------------------------------------------------------------
# local: fits forked from a process that has imported torch and Lightning once
# -------------------------------------------------------------------------------------------------
# A fit's own process spends most of a short fit importing torch, Lightning and circuits_pl (the
# default report's 14 fits: most of their CPU time; benchmarks/study.py). Forked from a forkserver that
# has imported them once, each fit is still a fresh process of its own (its own state, signals, exit
# code and log), without paying the imports again. Lightning re-runs ``sys.argv`` for DDP ranks; a fit
# forked here has ``python -m circuits_pl.__main__ fit ...`` as its command line, so that works too.
FORK_PRELOAD = ["circuits_pl.cli", "numba"]


def forkable(cmd: list[str]) -> bool:
    """Can ``cmd`` (a :func:`fit_command`) run forked from the forkserver? On Linux (macOS's system
    libraries are not safe to use in a child forked after they started: Python itself spawns there),
    unless CIRCUITS_PL_FORK=0 asks for plain processes."""
    import multiprocessing

    return (os.environ.get("CIRCUITS_PL_FORK", "1") != "0" and cmd[:3] == [sys.executable, "-m", "circuits_pl"]
            and sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods())


@functools.cache  # the preload list counts only before the server's first start: set it once
def _forkserver() -> Any:
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORK_PRELOAD)
    return ctx


def _run_forked_fit(args: list[str], log_path: str) -> None:
    """The forked fit: its own session (a Ctrl-C in the terminal reaches the report alone, which
    passes it on once), its output appended to its log, then ``python -m circuits_pl ARGS``."""
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    import runpy

    # as ``python -m circuits_pl``: __main__ is circuits_pl.__main__ (what Lightning re-runs for DDP ranks)
    sys.argv = ["circuits_pl", *args]
    runpy.run_module("circuits_pl", run_name="__main__", alter_sys=True)


class ForkedFit:
    """A fit forked from the forkserver, with the part of ``subprocess.Popen`` the launcher uses."""

    def __init__(self, args: list[str], log_path: str):
        self.process = _forkserver().Process(target=_run_forked_fit, args=(list(args), log_path), daemon=False)
        self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode  # as Popen's: -N after signal N

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"fit {self.pid}", timeout or 0.0)
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        if self.process.exitcode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.process.kill()


# -------------------------------------------------------------------------------------------------
# local: processes on this machine
# -------------------------------------------------------------------------------------------------
class LocalLauncher:
    """Up to ``jobs`` fits at once, each a process of its own. A signal to report reaches them through
    :meth:`stop` (each saves its last.ckpt and exits), and no queued fit starts after it."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.lock = threading.Lock()
        self.running: dict[str, subprocess.Popen] = {}
        self.stopped = False
        self.stopped_names: list[str] = []

    def _start(self, name: str, cmd: list[str], log: IO, env: dict[str, str]) -> subprocess.Popen | ForkedFit | None:
        with self.lock:
            if self.stopped:
                return None
            if forkable(cmd):
                proc: subprocess.Popen | ForkedFit = ForkedFit(cmd[3:], log.name)
            else:
                # its own session: a Ctrl-C in the terminal reaches the report alone, which passes it on once
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            self.running[name] = proc
            return proc

    def _run_one(self, spec: FitSpec) -> tuple[dict, Path] | None:
        if self.stopped:  # a queued fit picked up while the others stop: leaves no trace
            return None
        Path(spec.root).mkdir(parents=True, exist_ok=True)
        if finished_run(spec.root) is not None:  # resumed study: this fit is done
            return read_results(spec)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(spec.log, "a") as log:
            proc = self._start(spec.name, fit_command(spec), log, env)
            if proc is None:
                return None
            returncode = proc.wait()
        if self.stopped:
            return None
        with self.lock:
            self.running.pop(spec.name, None)
        if (signum := status_signal(returncode)) in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            raise JobStopped(spec.name, signum)  # -15 or 143: stopped from outside the report
        if returncode != 0:
            raise failure(spec, returncode)
        return read_results(spec)

    def run(self, specs: list[FitSpec], done: Done) -> None:
        """Run ``specs`` and call ``done(spec, results, run_dir)`` in this thread as each finishes. An
        exception (a failed fit, or report's signal exception, whose ``signum`` is passed on) stops the
        others first."""
        pool = ThreadPoolExecutor(max_workers=self.jobs)  # threads only wait for their fit's process
        try:
            futures = {pool.submit(self._run_one, spec): spec for spec in specs}
            for future in as_completed(futures):
                out = future.result()
                if out is not None:
                    done(futures[future], *out)
        except BaseException as err:
            self.stopped_names = self.stop(getattr(err, "signum", signal.SIGTERM))
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def stop(self, signum: int, wait: float = STOP_SECONDS) -> list[str]:
        """Send ``signum`` to every running fit (each saves its last.ckpt and exits 128 + signum), start
        no other, wait up to ``wait`` seconds, kill what is left; the names of the fits stopped."""
        with self.lock:
            self.stopped = True
            procs = dict(self.running)
        for proc in procs.values():
            with contextlib.suppress(OSError):
                proc.send_signal(signum)
        deadline = time.monotonic() + wait
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return list(procs)


# -------------------------------------------------------------------------------------------------
# slurm / submitit_local: submitit's executors
# -------------------------------------------------------------------------------------------------
def check_launcher(name: str) -> None:
    """Before anything is written: the launcher exists and what it needs is here (one line if not)."""
    if name not in LAUNCHERS:
        raise CircuitsError(f"--launcher {name!r} is not one of {', '.join(LAUNCHERS)}")
    if name == "local":
        return
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise CircuitsError(f"--launcher {name} needs submitit, which is not installed: pip install "
                            "'circuits_pl[slurm]' (or pip install submitit)") from None
    if name == "slurm":
        missing = [cmd for cmd in ("sbatch", "srun") if shutil.which(cmd) is None]
        if missing:
            raise CircuitsError(f"--launcher slurm needs SLURM's {' and '.join(missing)} on PATH, which "
                                f"{'is' if len(missing) == 1 else 'are'} not here: run report on the cluster's "
                                "login node, or use --launcher local")


class SubmititLauncher:
    """One submitit job per fit; the fits of a round go in as one job array (``--slurm.array_parallelism``
    of them at once). ``cluster``: ``slurm``, or ``local`` (submitit's local executor)."""

    def __init__(self, cluster: str, folder: Path, options: SlurmOptions):
        import submitit

        self.cluster = cluster
        # one folder for all jobs: submitit names every file by its job id (a "%j" folder would also leave
        # an empty literal "%j" directory behind, made before any job id exists)
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster,
                                              slurm_max_num_timeout=MAX_TIMEOUTS)
        self.executor.update_parameters(**options.parameters())
        self.pending: dict[str, Any] = {}
        self.stopped_names: list[str] = []

    def run(self, specs: list[FitSpec], done: Done) -> None:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        to_submit = []
        for spec in specs:
            Path(spec.root).mkdir(parents=True, exist_ok=True)
            if finished_run(spec.root) is not None:
                done(spec, *read_results(spec))
            else:
                to_submit.append(spec)
        try:
            with self.executor.batch():
                submitted = [(spec, self.executor.submit(FitJob(spec))) for spec in to_submit]
            self.pending = {spec.name: (spec, job) for spec, job in submitted}
            while self.pending:
                for name, (spec, job) in list(self.pending.items()):
                    if not job.done():
                        continue
                    del self.pending[name]
                    try:
                        job.result()
                    except (FailedJobError, UncompletedJobError) as err:
                        line = str(err).strip().splitlines()
                        raise CircuitsError(f"report job {spec.name} ({self.cluster} job {job.job_id}) failed: "
                                            f"{_last_error(line)} (log: {spec.log}; submitit's: {job.paths.stderr})"
                                            ) from None
                    done(spec, *read_results(spec))
                time.sleep(POLL_SECONDS)
        except BaseException:
            self.stopped_names = self.stop()
            raise

    def stop(self, signum: int = signal.SIGTERM, wait: float = STOP_SECONDS) -> list[str]:
        """Cancel every job not finished (scancel: SLURM sends SIGTERM, on which each fit saves its
        last.ckpt); the names of the fits cancelled."""
        names = list(self.pending)
        for _, job in self.pending.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        if self.cluster == "local":  # submitit's local controllers stop their jobs: wait for them
            deadline = time.monotonic() + wait
            for _, job in self.pending.values():
                while not job.done() and time.monotonic() < deadline:
                    time.sleep(0.1)
        self.pending = {}
        return names


def _last_error(lines: list[str]) -> str:
    """The fit's own ``error:`` line in submitit's trace, else the trace's last line."""
    for ln in reversed(lines):
        if "CircuitsError:" in ln:
            return ln.split("CircuitsError:", 1)[1].strip()
    return lines[-1] if lines else "no output"


class FitJob:
    """What a submitit job runs: one fit as a child process, resumed from its newest last.ckpt when there
    is one; returns the run directory. submitit calls :meth:`checkpoint` on its preemption/timeout
    signal (see the module docstring)."""

    def __init__(self, spec: FitSpec):
        self.spec = spec
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {"spec": self.spec}  # the running child stays here

    def __setstate__(self, state: dict) -> None:
        self.spec, self._proc = state["spec"], None

    def __call__(self) -> str:
        spec = self.spec
        Path(spec.root).mkdir(parents=True, exist_ok=True)
        run = finished_run(spec.root)
        if run is not None:
            return str(run)
        # The child is a plain process: no SLURM_* (see the module docstring), and submitit's signal
        # ignored (SLURM sends it to every process of the job; this process alone acts on it).
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["PYTHONUNBUFFERED"] = "1"
        usr = _submitit_signal()
        with open(spec.log, "a") as log:
            self._proc = subprocess.Popen(fit_command(spec), stdout=log, stderr=subprocess.STDOUT, env=env,
                                          stdin=subprocess.DEVNULL,
                                          preexec_fn=lambda: signal.signal(usr, signal.SIG_IGN))
            try:
                returncode = self._proc.wait()
            except KeyboardInterrupt:  # submitit's local controller cancels with SIGINT: stop the fit too
                _stop_child(self._proc)
                raise
        self._proc = None
        if returncode == 0:
            return str(read_results(spec)[1])
        if returncode - 128 in (signal.SIGTERM, signal.SIGINT):
            # stopped by SLURM's SIGTERM (preemption, scancel), last.ckpt saved: SLURM ends and requeues this
            # job, or it was stopped by hand and says so
            time.sleep(PREEMPTED_PATIENCE)
            raise CircuitsError(f"report job {spec.name} was stopped by {signal.Signals(returncode - 128).name} "
                                f"(its last.ckpt is kept: report --resume continues it; log: {spec.log})")
        raise failure(spec, returncode)

    def checkpoint(self) -> Any:
        """Stop the fit gracefully (it saves its last.ckpt) and hand submitit this job to requeue."""
        from submitit.helpers import DelayedSubmission

        if self._proc is not None:
            _stop_child(self._proc)
        return DelayedSubmission(FitJob(self.spec))


def _submitit_signal() -> int:
    from submitit import JobEnvironment

    return getattr(signal, "SIG" + JobEnvironment.USR_SIG)


def _stop_child(proc: subprocess.Popen, wait: float = STOP_SECONDS) -> None:
    """SIGTERM to the fit, then wait for it to exit (SIGKILL after ``wait`` s). Waits with ``os.waitpid``:
    this runs inside a signal handler that may have interrupted ``proc.wait()``, which holds the Popen's lock."""
    with contextlib.suppress(OSError):
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait
    while True:
        try:
            pid, _ = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return  # already reaped
        if pid:
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                proc.kill()
            deadline = float("inf")
        time.sleep(0.05)


def make_launcher(name: str, jobs: int, folder: Path, options: SlurmOptions) -> LocalLauncher | SubmititLauncher:
    if name == "local":
        return LocalLauncher(jobs)
    return SubmititLauncher("slurm" if name == "slurm" else "local", folder, options)
