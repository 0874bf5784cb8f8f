"""A stand-in for SLURM's commands, enough to run submitit's generated sbatch scripts on this machine.

Installed under the names ``sbatch``, ``srun``, ``sacct``, ``squeue``, ``scontrol`` and ``scancel``
(symlinks to this file, see :func:`install`); the state lives in ``$SLURM_STUB_DIR``:

- ``sbatch SCRIPT`` reads its ``#SBATCH --array=A-B%P`` line, runs every task of the array as SLURM
  would (the script under bash with ``SLURM_JOB_ID``, ``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID``,
  ``SLURM_PROCID`` ..., in a detached supervisor) and prints ``Submitted batch job N``;
- ``srun --output O --error E CMD`` runs CMD as the job step (its own process group, recorded);
- ``scancel ID --signal SIG`` sends SIG to the job step's processes (SLURM's preemption is SIGTERM
  then submitit's USR2, as ``submitit.SlurmJob._interrupt`` sends them); ``scancel ID`` cancels;
- ``scontrol requeue ID`` runs the task's script again once its current run ends;
- ``sacct -j N`` and ``squeue`` report the tasks' states (submitit's ``--parsable2`` format).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scontrol", "scancel")


def install(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {name} \"$@\"\n")
        path.chmod(0o755)


def _state() -> Path:
    d = Path(os.environ["SLURM_STUB_DIR"])
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sbatch(args: list[str]) -> None:
    script = Path(args[-1])
    text = script.read_text()
    counter = _state() / "counter"
    job = int(counter.read_text()) + 1 if counter.exists() else 1
    _write(counter, str(job))
    array = re.search(r"^#SBATCH --array=(\d+)-(\d+)", text, re.M)
    tasks = range(int(array.group(1)), int(array.group(2)) + 1) if array else [None]
    for n, task in enumerate(tasks):
        tid = f"{job}_{task}" if task is not None else str(job)
        _write(_state() / f"{tid}.state", "PENDING")
        env = {**os.environ, "SLURM_JOB_ID": str(job * 1000 + n), "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
               "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "localhost"}
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(task))
        subprocess.Popen([sys.executable, __file__, "_supervise", tid, str(script)], env=env, start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job}")


def _supervise(tid: str, script: str) -> None:
    """Run the task's script; again while ``scontrol requeue`` asked for it (SLURM_RESTART_COUNT counts)."""
    runs = 0
    while True:
        os.environ["SLURM_RESTART_COUNT"] = str(runs)
        _write(_state() / f"{tid}.state", "RUNNING")
        _write(_state() / f"{tid}.runs", str(runs + 1))
        rc = subprocess.call(["bash", script])
        requeue = _state() / f"{tid}.requeue"
        if requeue.exists() and not (_state() / f"{tid}.cancelled").exists():
            requeue.unlink()
            runs += 1
            _write(_state() / f"{tid}.state", "REQUEUED")
            continue
        state = "CANCELLED" if (_state() / f"{tid}.cancelled").exists() else ("COMPLETED" if rc == 0 else "FAILED")
        _write(_state() / f"{tid}.state", state)
        return


def _tid() -> str:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def srun(args: list[str]) -> None:
    out = err = None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("--output", "--error"):
            path = _expand(args[i + 1])
            out, err = (path, err) if args[i] == "--output" else (out, path)
            i += 2
        else:
            i += 1
    command = args[i:]
    os.setpgid(0, 0)  # the job step: what scancel --signal reaches
    _write(_state() / f"{_tid()}.step", str(os.getpid()))
    for fd, path in ((1, out), (2, err)):
        if path:
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(f, fd)
    os.execvp(command[0], command)


def _expand(path: str) -> str:
    env = os.environ
    return (path.replace("%A", env.get("SLURM_ARRAY_JOB_ID", "")).replace("%a", env.get("SLURM_ARRAY_TASK_ID", ""))
            .replace("%j", env["SLURM_JOB_ID"]).replace("%t", "0"))


def scancel(args: list[str]) -> None:
    sig = None
    ids = []
    i = 0
    while i < len(args):
        if args[i] == "--signal":
            sig, i = args[i + 1], i + 2
        elif args[i].startswith("--signal="):
            sig, i = args[i].split("=", 1)[1], i + 1
        else:
            ids.append(args[i])
            i += 1
    for tid in ids:
        if sig is None:
            _write(_state() / f"{tid}.cancelled", "")
        step = _state() / f"{tid}.step"
        if step.exists():
            num = getattr(signal, sig if sig and sig.startswith("SIG") else f"SIG{sig or 'TERM'}")
            try:
                os.killpg(int(step.read_text()), num)
            except ProcessLookupError:
                pass


def scontrol(args: list[str]) -> None:
    if args[:1] == ["requeue"]:
        for tid in args[1].split(","):
            _write(_state() / f"{tid}.requeue", "")
    else:
        sys.exit(f"scontrol stub: {args} not supported")


def _tasks(prefixes: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for path in sorted(_state().glob("*.state")):
        tid = path.name[: -len(".state")]
        if prefixes is None or tid.split("_")[0] in prefixes:
            out.append((tid, path.read_text()))
    return out


def sacct(args: list[str]) -> None:
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for tid, state in _tasks([i.split("_")[0] for i in ids]):
        print(f"{tid}|{state}|localhost")


def squeue(args: list[str]) -> None:
    print("JOBID STATE")
    for tid, state in _tasks(None):
        if state in ("PENDING", "RUNNING", "REQUEUED"):
            print(f"{tid} {state}")


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "_supervise":
        _supervise(*rest)
    else:
        globals()[command](rest)
