"""Kill ``fit`` at random moments, including in the middle of checkpoint saves, and check what is on disk.

    python benchmarks/fault_injection.py              # 30 kills, ~5 minutes on 2 busy cores
    python benchmarks/fault_injection.py --trials 6   # a quick look

Each trial starts ``python -m circuits_pl fit`` (2-64-1 ``add`` nets, 1024 members, so a checkpoint
is ~0.8 MB and a save takes measurable time; validation and last.ckpt every 200 SGD steps) and then:

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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    mount = mount_tmpfs()
    root = Path(tempfile.mkdtemp(prefix="circuits_pl_fi_", dir=mount))
    print(f"run directories under {root} ({'tmpfs, another filesystem than /tmp' if mount else 'same fs as /tmp'})")
    kinds = (["save", "random", "signal"] * args.trials)[: args.trials]
    rows = []
    try:
        for i, kind in enumerate(kinds):
            r = trial(root, kind, rng)
            rows.append(r)
            print(f"{i + 1:2d} {r['kind']:6s} {r['signal']:7s} at {r['at']:5.2f}s rc={r['rc']:4d} "
                  f"val_printed={r['last_val_printed']:5d} last.ckpt={r['last_ckpt_step']} lost={r['lost']} "
                  f"corrupt={r['corrupt']} strays={r['strays']} during_save={r['during_save']}"
                  f"{'' if r['rc_ok'] and not r['traceback'] else '  <-- bad exit: ' + ' | '.join(r['stderr_tail'])}",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if mount:
            subprocess.run(["umount", str(mount)])
            mount.rmdir()
    bad_exit = sum(not r["rc_ok"] or r["traceback"] for r in rows)
    total = {key: sum(r[key] for r in rows) for key in ("during_save", "strays", "corrupt", "stale",
                                                         "stray_after_cleanup")}
    print(f"kills_during_save={total['during_save']} strays_left_by_kills={total['strays']} bad_exits={bad_exit}")
    print(f"corrupt_checkpoints={total['corrupt']} stale_last={total['stale']} "
          f"lost_steps_max={max(r['lost'] for r in rows)} stray_after_cleanup={total['stray_after_cleanup']} "
          f"val_interval={VAL}")


if __name__ == "__main__":
    main()
