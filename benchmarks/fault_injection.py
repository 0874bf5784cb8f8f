"""Kill or signal circuits_pl at random moments, fill or remount its disk, and check what is on disk.

    python benchmarks/fault_injection.py              # 30 kills of fit, ~5 minutes on 2 busy cores
    python benchmarks/fault_injection.py --trials 6   # a quick look
    python benchmarks/fault_injection.py --mode figures --trials 10   # kills and signals at the end of fit
    python benchmarks/fault_injection.py --mode ddp --trials 8        # signals to either DDP rank while starting
    python benchmarks/fault_injection.py --mode readonly --trials 6   # the run's disk remounted read-only (root)
    python benchmarks/fault_injection.py --mode costs                 # what the CRC check and the writer cost

``--mode kills`` (the default). Each trial starts ``python -m circuits_pl fit`` (2-64-1 ``add`` nets, 1024
members, so a checkpoint is ~0.8 MB and a save takes measurable time; validation and last.ckpt every
200 SGD steps) and then:

- a third of the trials: SIGKILL while the k-th save (k random in 1..5) is writing its temporary file;
- a third: SIGKILL at a random moment in the first 20 s (import, sanity validation, training, saves);
- a third: SIGINT or SIGTERM at a random moment (must exit 130 / 143 unless it had not started fit).

The run directory is on a tmpfs mounted for the purpose when running as root (another filesystem
than /tmp, where Lightning's own save would stage its temporary file), else under /tmp. After each
kill: every ``*.ckpt`` must load with ``torch.load(weights_only=True)`` (``corrupt_checkpoints``);
``last.ckpt`` must hold the last validation printed, or the one before if the kill struck in the
middle of its save (``stale_last`` counts worse); ``lost_steps`` is the last validation printed minus
last.ckpt's step. Stray temporary files of the killed process must be removed by the next run's
cleanup (``stray_after_cleanup``). The last line is machine-readable:
``corrupt_checkpoints=C stale_last=S lost_steps_max=N stray_after_cleanup=T val_interval=I``

``--mode figures``: SIGKILL, SIGINT or SIGTERM while the end of fit writes results.json, metrics.csv and
the figures (at a random moment after a figure's temporary file appears): every PNG on disk must be whole
(its IEND chunk), metrics.csv and results.json must parse, a signal must exit 130/143 with no traceback,
and the next run started in the same tree must sweep the killed run's temporary files. Last line:
``broken_files=B bad_exits=X stray_after_next_start=T``.

``--mode ddp``: a 2-rank DDP fit; SIGINT or SIGTERM to rank 0 or rank 1 at a random moment from its start
to the first validations. Both ranks must be gone within the timeout (``hangs``), rank 0 must exit
128 + signal with one outcome line of its own (``bad_exits``: tracebacks, other statuses, more lines),
after at most one acknowledgement (``SIGINT received: stopping after the current block ...``) when the
signal came during training, and before ``Resume with:``.

``--mode readonly`` (root only): the run's tmpfs is remounted read-only at a random moment of training:
the exit must be one ``error:`` line (status 1, or 0 if the run had finished), every checkpoint must
load, no file may be partial.

``--mode costs``: the CRC-32 check of a checkpoint against its load, and an atomic write with and
without its fsyncs, on this machine's disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from circuits_pl.files import is_temp_file, remove_stray_temps  # noqa: E402

VAL = 200
ARGS = ["fit", "--task", "add", "--model.layer_sizes", "[2, 64, 1]", "--model.members", "1024",
        "--data.batch_size", "10", "--stop.when", "never", "--trainer.max_steps", "1000000",
        "--trainer.val_check_interval", str(VAL), "--trainer.enable_progress_bar", "false", "--figures", "false"]


def mount_tmpfs() -> Path | None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return None
    point = Path(tempfile.mkdtemp(prefix="circuits_pl_fi_mnt_"))
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(point)],
                        capture_output=True).returncode == 0
    if not ok:
        point.rmdir()
        return None
    return point


def trial(root: Path, kind: str, rng: random.Random) -> dict:
    cwd = root / f"trial_{kind}_{rng.randrange(10**9)}"
    cwd.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "circuits_pl", *ARGS], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    start = time.monotonic()
    sig = signal.SIGKILL
    during_save = False
    if kind == "save":  # wait for the k-th save (k = 1..5) to be in progress, then kill
        seen, target = 0, rng.randint(1, 5)
        while proc.poll() is None and time.monotonic() - start < 60:
            ckdir = cwd / "lightning_logs" / "version_0" / "checkpoints"
            temps = [e for e in os.scandir(ckdir) if is_temp_file(e.name)] if ckdir.exists() else []
            if temps:
                seen += 1
                if seen >= target:
                    proc.kill()
                    during_save = True
                    break
                while any(is_temp_file(e.name) for e in os.scandir(ckdir)):
                    time.sleep(0.0005)
            time.sleep(0.0005)
    else:
        time.sleep(rng.uniform(0.5, 20.0))
        if kind == "signal":
            sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        proc.send_signal(sig)
    at = time.monotonic() - start
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    err = proc.stderr.read()
    printed = [int(m.group(1)) for ln in lines if (m := re.match(r"step\s+(\d+)\s+val", ln))]
    last_val = max(printed, default=0)
    run = cwd / "lightning_logs" / "version_0"
    ckpts = sorted((run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").exists() else []
    corrupt, last_step = 0, None
    for path in ckpts:
        try:
            state = torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - any failure to load is corruption
            corrupt += 1
            continue
        if path.name == "last.ckpt":
            last_step = int(state["global_step"])
    strays = [p for p in (run / "checkpoints").iterdir() if is_temp_file(p)] if (run / "checkpoints").exists() else []
    remove_stray_temps(run / "checkpoints") if strays else None  # what the next run's save/load does
    left = [p for p in (run / "checkpoints").iterdir() if is_temp_file(p)] if (run / "checkpoints").exists() else []
    lost = last_val - (last_step or 0)
    stale = last_step is None and last_val > VAL or lost > VAL  # more than the one save in flight
    expected_rc = {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    rc_ok = proc.returncode == expected_rc or (sig != signal.SIGKILL and "Traceback" not in err
                                               and proc.returncode in (-sig, 128 + sig))
    result = {"kind": kind, "signal": signal.Signals(sig).name, "at": round(at, 2),
              "rc": proc.returncode, "rc_ok": rc_ok, "traceback": "Traceback" in err,
              "last_val_printed": last_val, "last_ckpt_step": last_step, "lost": lost, "corrupt": corrupt,
              "stale": bool(stale), "strays": len(strays), "stray_after_cleanup": len(left),
              "during_save": during_save, "stderr_tail": err.strip().splitlines()[-3:]}
    shutil.rmtree(cwd, ignore_errors=True)
    return result


PNG_END = b"IEND\xaeB`\x82"


def _fit(cwd: Path, args: list[str], **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "circuits_pl", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _own_lines(err: str) -> list[str]:
    """stderr without Lightning's DDP start-up lines."""
    return [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("Initializing distributed")
            and not set(ln) <= {"-"} and not ln.startswith(("distributed_backend", "All distributed processes"))]


def broken_files(run: Path) -> list[str]:
    """Files of a run that are not whole: PNGs without their end chunk, unparsable results.json/metrics.csv,
    checkpoints that do not load."""
    import csv
    import json

    bad = []
    for png in run.glob("*.png"):
        if not png.read_bytes().endswith(PNG_END):
            bad.append(png.name)
    if (run / "results.json").exists():
        try:
            json.loads((run / "results.json").read_text())
        except ValueError:
            bad.append("results.json")
    if (run / "metrics.csv").exists():
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.reader(f))
        if rows and any(len(r) != len(rows[0]) for r in rows):
            bad.append("metrics.csv")
    for ckpt in run.glob("checkpoints/*.ckpt"):
        try:
            torch.load(ckpt, weights_only=True)
        except Exception:  # noqa: BLE001 - any failure to load is damage
            bad.append(ckpt.name)
    return bad


def figures_trial(root: Path, rng: random.Random) -> dict:
    cwd = root / f"figures_{rng.randrange(10**9)}"
    cwd.mkdir()
    sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
    proc = _fit(cwd, ["fit", "--task", "min", "--model.members", "256", "--trainer.max_steps", "2000",
                      "--stop.when", "never", "--trainer.enable_progress_bar", "false"])
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    run = cwd / "lightning_logs" / "version_0"
    start, struck = time.monotonic(), None
    while proc.poll() is None and time.monotonic() - start < 120:
        temps = [e.name for e in os.scandir(run) if is_temp_file(e.name)] if run.exists() else []
        if any(".png.tmp-" in t for t in temps):
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(sig)
            struck = temps[0]
            break
        time.sleep(0.0005)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    lines = _own_lines(err)
    expected = {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    bad_exit = struck is not None and (proc.returncode not in (expected, 0) or "Traceback" in err
                                       or (sig != signal.SIGKILL and proc.returncode != 0 and len(lines) != 1))
    broken = broken_files(run) if run.exists() else []
    strays = [p.name for p in run.iterdir() if is_temp_file(p)] if run.exists() else []
    # the next run started in the same tree sweeps them (RunLogger, files.sweep_run_tree)
    after = _fit(cwd, ["fit", "--task", "add", "--model.members", "2", "--trainer.max_steps", "100",
                       "--trainer.enable_progress_bar", "false", "--figures", "false"])
    after.communicate(timeout=300)
    left = [p.name for p in run.iterdir() if is_temp_file(p)] if run.exists() else []
    shutil.rmtree(cwd, ignore_errors=True)
    return {"signal": signal.Signals(sig).name, "struck": struck, "rc": proc.returncode, "bad_exit": bad_exit,
            "broken": broken, "strays": strays, "left": left, "tail": lines[-2:]}


def ddp_trial(root: Path, rng: random.Random) -> dict:
    cwd = root / f"ddp_{rng.randrange(10**9)}"
    cwd.mkdir()
    sig, target = rng.choice([signal.SIGINT, signal.SIGTERM]), rng.choice(["rank0", "rank1"])
    delay = rng.uniform(0.0, 15.0)
    # 50M steps: longer than any trial (with the fused engine 1M steps of 8 members ended within 20-25 s,
    # before some signals came, and the trial counted the finished run's exit 0 as a bad exit)
    proc = _fit(cwd, ["fit", "--task", "add", "--model.members", "8", "--trainer.strategy", "ddp",
                      "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.max_steps", "50000000",
                      "--stop.when", "never", "--trainer.enable_progress_bar", "false", "--figures", "false"])
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    start, rank1 = time.monotonic(), None
    while rank1 is None and proc.poll() is None and time.monotonic() - start < 120:
        rank1 = next(iter(_children(proc.pid)), None)
        time.sleep(0.01)
    time.sleep(delay)
    at = time.monotonic() - start
    with contextlib.suppress(ProcessLookupError, TypeError):
        os.kill(proc.pid if target == "rank0" or rank1 is None else rank1, sig)
    hang = False
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        hang = True
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    lines = _own_lines(err)
    survivor = rank1 is not None and Path(f"/proc/{rank1}").exists() and \
        Path(f"/proc/{rank1}/stat").read_text().split()[2] != "Z"
    if survivor:
        os.kill(rank1, signal.SIGKILL)
        hang = True
    # The outcome: one line (SIGxxx: ... or error: ...), maybe followed by "Resume with:". A signal during
    # training is first acknowledged when it arrives ("SIGxxx received: stopping after the current block",
    # as Lightning says "Detected KeyboardInterrupt"): at most one such line, before the outcome.
    acks = [ln for ln in lines if re.match(r"SIG(INT|TERM) received( by another process)?:", ln)]
    ours = [ln for ln in lines if ln.startswith(("SIGINT", "SIGTERM", "error:")) and ln not in acks]
    bad_exit = proc.returncode != 128 + sig or "Traceback" in err or len(ours) != 1 or len(acks) > 1 or \
        any(ln not in ours + acks and not ln.startswith("Resume with:") for ln in lines)
    shutil.rmtree(cwd, ignore_errors=True)
    return {"signal": signal.Signals(sig).name, "target": target, "at": round(at, 2), "rc": proc.returncode,
            "hang": hang, "bad_exit": bad_exit, "tail": lines[-2:]}


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid and \
                    b"circuits_pl" in (stat.parent / "cmdline").read_bytes():
                out.append(int(stat.parent.name))
    return out


def readonly_trial(rng: random.Random) -> dict:
    point = Path(tempfile.mkdtemp(prefix="circuits_pl_ro_"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(point)],
                      capture_output=True).returncode != 0:
        point.rmdir()
        raise SystemExit("--mode readonly needs root (it mounts a tmpfs and remounts it read-only)")
    try:
        proc = _fit(point, ["fit", "--task", "min", "--model.members", "512", "--trainer.max_steps", "20000",
                            "--trainer.val_check_interval", "200", "--stop.when", "never",
                            "--trainer.enable_progress_bar", "false"])
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        run = point / "lightning_logs" / "version_0"
        start = time.monotonic()
        while not (run / "checkpoints").exists() and proc.poll() is None and time.monotonic() - start < 120:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 8.0))
        at = time.monotonic() - start
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read()
        lines = _own_lines(err)
        ok = proc.returncode == 0 or (proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "))
        broken = broken_files(run) if run.exists() else []
        return {"at": round(at, 2), "rc": proc.returncode, "bad_exit": not ok or "Traceback" in err, "broken": broken,
                "tail": lines[-1:]}
    finally:
        subprocess.run(["umount", "-l", str(point)])
        point.rmdir()


def costs() -> None:
    """The CRC-32 check against the load it guards, and the atomic writer with and without fsyncs."""
    import statistics

    from circuits_pl import files
    from circuits_pl.checkpoint_checks import damaged_record

    work = Path(tempfile.mkdtemp(prefix="circuits_pl_costs_", dir=REPO / "benchmarks"))
    try:
        for members in (64, 131072):  # the default; a 2-64-1 population of ~200 MB
            state = {"state_dict": {f"net.weights.{i}": torch.randn(members, 64, 2) for i in range(2)}}
            path = work / f"k{members}.ckpt"
            torch.save(state, path)
            n = 200 if members == 64 else 3
            load, check = [], []
            for _ in range(n):
                t = time.perf_counter()
                torch.load(path, weights_only=True)
                load.append(time.perf_counter() - t)
                with open(path, "rb") as f:
                    t = time.perf_counter()
                    assert damaged_record(f) is None
                    check.append(time.perf_counter() - t)
            size = path.stat().st_size / 2**20
            print(f"checkpoint {size:7.1f} MiB: torch.load {statistics.median(load) * 1e3:8.2f} ms, "
                  f"CRC check {statistics.median(check) * 1e3:8.2f} ms (median of {n})")
        text = "x" * 20_000  # a metrics.csv of ~300 rows
        for durable in (True, False):
            times = []
            for _ in range(50):
                t = time.perf_counter()
                files.atomic_write_text(work / "metrics.csv", text, durable=durable)
                times.append(time.perf_counter() - t)
            print(f"atomic write of 20 kB, durable={durable}: {statistics.median(times) * 1e3:.2f} ms (median of 50)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    # Started in the background of a non-interactive shell (`cmd &`), this process inherits SIGINT ignored,
    # and so would every fit it starts: circuits_pl keeps SIGINT ignored then, by design, and the SIGINT
    # trials would run to the end (exit 0). A Python handler here is reset to the default in each child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=["kills", "figures", "ddp", "readonly", "costs"], default="kills")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if args.mode == "costs":
        return costs()
    if args.mode == "readonly":
        rows = []
        for i in range(args.trials):
            r = readonly_trial(rng)
            rows.append(r)
            print(f"{i + 1:2d} remount at {r['at']:5.2f}s rc={r['rc']} broken={r['broken']} {r['tail']}"
                  f"{'  <-- bad exit' if r['bad_exit'] else ''}", flush=True)
        print(f"broken_files={sum(len(r['broken']) for r in rows)} bad_exits={sum(r['bad_exit'] for r in rows)}")
        return None
    mount = mount_tmpfs()
    root = Path(tempfile.mkdtemp(prefix="circuits_pl_fi_", dir=mount))
    print(f"run directories under {root} ({'tmpfs, another filesystem than /tmp' if mount else 'same fs as /tmp'})")
    try:
        if args.mode == "figures":
            rows = []
            for i in range(args.trials):
                r = figures_trial(root, rng)
                rows.append(r)
                print(f"{i + 1:2d} {r['signal']:7s} during {r['struck']} rc={r['rc']} broken={r['broken']} "
                      f"strays={len(r['strays'])} left_after_next_start={len(r['left'])}"
                      f"{'  <-- bad exit: ' + ' | '.join(r['tail']) if r['bad_exit'] else ''}", flush=True)
            print(f"broken_files={sum(len(r['broken']) for r in rows)} bad_exits={sum(r['bad_exit'] for r in rows)} "
                  f"stray_after_next_start={sum(len(r['left']) for r in rows)}")
            return None
        if args.mode == "ddp":
            rows = []
            for i in range(args.trials):
                r = ddp_trial(root, rng)
                rows.append(r)
                print(f"{i + 1:2d} {r['signal']:7s} to {r['target']} at {r['at']:5.2f}s rc={r['rc']} hang={r['hang']}"
                      f"{'  <-- bad exit: ' + ' | '.join(r['tail']) if r['bad_exit'] else ''}", flush=True)
            print(f"hangs={sum(r['hang'] for r in rows)} bad_exits={sum(r['bad_exit'] for r in rows)}")
            return None
        return kills(root, args.trials, rng)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if mount:
            subprocess.run(["umount", str(mount)])
            mount.rmdir()


def kills(root: Path, trials: int, rng: random.Random) -> None:
    kinds = (["save", "random", "signal"] * trials)[:trials]
    rows = []
    for i, kind in enumerate(kinds):
        r = trial(root, kind, rng)
        rows.append(r)
        print(f"{i + 1:2d} {r['kind']:6s} {r['signal']:7s} at {r['at']:5.2f}s rc={r['rc']:4d} "
              f"val_printed={r['last_val_printed']:5d} last.ckpt={r['last_ckpt_step']} lost={r['lost']} "
              f"corrupt={r['corrupt']} strays={r['strays']} during_save={r['during_save']}"
              f"{'' if r['rc_ok'] and not r['traceback'] else '  <-- bad exit: ' + ' | '.join(r['stderr_tail'])}",
              flush=True)
    bad_exit = sum(not r["rc_ok"] or r["traceback"] for r in rows)
    total = {key: sum(r[key] for r in rows) for key in ("during_save", "strays", "corrupt", "stale",
                                                         "stray_after_cleanup")}
    print(f"kills_during_save={total['during_save']} strays_left_by_kills={total['strays']} bad_exits={bad_exit}")
    print(f"corrupt_checkpoints={total['corrupt']} stale_last={total['stale']} "
          f"lost_steps_max={max(r['lost'] for r in rows)} stray_after_cleanup={total['stray_after_cleanup']} "
          f"val_interval={VAL}")


if __name__ == "__main__":
    main()
