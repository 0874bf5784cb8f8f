"""Never lose a run, part 2 (issue 9): last.ckpt always current, atomic saves, signals anywhere,
validation cadence in SGD steps."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_drawn, results, run_dirs

from circuits_pl.atomic_checkpoint_io import AtomicCheckpointIO
from circuits_pl.cadence import default_steps_per_batch, trainer_cadence
from circuits_pl.errors import CircuitsError, SaveFailed
from circuits_pl.files import atomic_write_text, is_temp_file, remove_stray_temps

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]
TESTS = Path(__file__).parent


def _ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if is_temp_file(p)]


# ---------------------------------------------------------------------------------------------- #
# 9.1 last.ckpt always current
# ---------------------------------------------------------------------------------------------- #
def test_last_ckpt_holds_the_last_step_when_val_mse_plateaus(run_cli, tmp_path):
    # 8 members of add at lr 0.1: those that solve it do so by step 1000, so the monitored solved
    # count stops improving then (ModelCheckpoint saves a "best" only on a strict improvement)
    run_cli("fit", "--task", "add", "--model.members", 8, "--stop.when", "never", "--trainer.max_steps", 3000,
            "--checkpoint.monitor", "val/solved", "--checkpoint.mode", "max", *QUIET)
    (run,) = run_dirs(tmp_path)
    best = [p for p in (run / "checkpoints").glob("best-*.ckpt")]
    assert [p.name for p in best] == ["best-step=1000.ckpt"]  # the plateau: no better value after 1000
    assert _ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 3000 == results(run)["steps"]


def test_last_ckpt_is_a_hard_link_to_a_best_saved_at_the_same_step(run_cli, tmp_path):
    # lr 1e-4: val/mse improves at every validation, so the best is saved at each one; last.ckpt is
    # then the same file (one serialisation), and keeps its content when the best file is replaced
    run_cli("fit", "--task", "add", "--model.members", 1, "--model.lr", 1e-4, "--stop.when", "never",
            "--trainer.max_steps", 2000, *QUIET)
    (run,) = run_dirs(tmp_path)
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "best-step=2000.ckpt"
    assert sorted(p.name for p in last.parent.iterdir()) == ["best-step=2000.ckpt", "last.ckpt"]
    assert last.stat().st_ino == best.stat().st_ino and last.stat().st_nlink == 2
    before = last.read_bytes()
    best.unlink()  # what ModelCheckpoint does to an old best
    assert last.read_bytes() == before and _ckpt(last)["global_step"] == 2000


def test_checkpoint_save_last_false_writes_no_last_ckpt(run_cli, tmp_path):
    run_cli("fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 1000, "--checkpoint.save_last",
            "false", *QUIET)
    (run,) = run_dirs(tmp_path)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-step=1000.ckpt"]


# ---------------------------------------------------------------------------------------------- #
# 9.2 atomic saves
# ---------------------------------------------------------------------------------------------- #
class _BrokenIO(AtomicCheckpointIO):
    """Writes half a checkpoint, then fails the way ``fail`` says."""

    def __init__(self, fail: BaseException):
        super().__init__()
        self.fail = fail

    def write(self, checkpoint, f):
        import io

        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        raise self.fail


@pytest.mark.parametrize("fail, raised", [(RuntimeError("writer failed"), SaveFailed),
                                          (RuntimeError("a bug"), RuntimeError),
                                          (OSError(errno.ENOSPC, "No space left on device"), SaveFailed),
                                          (KeyboardInterrupt(), KeyboardInterrupt)],
                         ids=["write-fails", "raises", "disk-full", "ctrl-c"])
def test_a_failed_save_keeps_the_previous_complete_checkpoint(tmp_path, fail, raised):
    path = tmp_path / "checkpoints" / "last.ckpt"
    old = {"global_step": 1000, "state_dict": {"w": torch.arange(6.0)}}
    AtomicCheckpointIO().save_checkpoint(old, path)
    new = {"global_step": 2000, "state_dict": {"w": torch.zeros(100_000)}}
    with pytest.raises(raised):
        _BrokenIO(fail).save_checkpoint(new, path)
    state = _ckpt(path)
    assert state["global_step"] == 1000 and torch.equal(state["state_dict"]["w"], torch.arange(6.0))
    assert _temps(path.parent) == []


def test_atomic_write_text_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text(path, '{"old": true}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, '{"new": true}' * 1000)
    assert path.read_text() == '{"old": true}'
    assert _temps(tmp_path) == []
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


@pytest.mark.parametrize("failure", ["oserror", "torch", "torch-end"])
def test_a_full_disk_during_fit_is_one_line_and_keeps_the_last_checkpoint(run_cli, tmp_path, monkeypatch, capsys,
                                                                          failure):
    """The disk fills up at the third save (step 3000; last.ckpt is a hard link to the best saved at the
    same step): exit 1 with one line naming the file and the cause; last.ckpt still holds step 2000,
    complete; no temporary file is left behind."""
    saves = []

    def write(self, checkpoint, f):
        saves.append(checkpoint["global_step"])
        if len(saves) >= 3:
            if failure == "oserror":
                raise OSError(errno.ENOSPC, "No space left on device")
            if failure == "torch-end":  # a real full tmpfs: ENOSPC in a record, then the zip's end fails
                try:
                    raise OSError(errno.ENOSPC, "No space left on device")
                except OSError:
                    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 584256 vs "
                                       "584208") from None
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
        torch.save(checkpoint, f)

    monkeypatch.setattr(AtomicCheckpointIO, "write", write)
    run_cli("fit", "--task", "add", "--model.members", 2, "--model.lr", 1e-4, "--stop.when", "never",
            "--trainer.max_steps", 3000, *QUIET, expect=1)
    err = capsys.readouterr().err.strip().splitlines()
    (run,) = run_dirs(tmp_path)
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("error: could not write lightning_logs/version_0/checkpoints/best-step=3000.ckpt: ")
    reason = "PytorchStreamWriter failed writing file" if failure == "torch" else "No space left on device"
    assert reason in err[0] and "previous version (if any) is intact" in err[0]
    assert _ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 2000
    assert _temps(run / "checkpoints") == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stray_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stray = tmp_path / f".last.ckpt.tmp-{int(dead.stdout)}-abc123"
    stray.write_bytes(b"half a checkpoint")
    live = tmp_path / f".last.ckpt.tmp-{os.getpid()}-def456"  # a save in progress in this process
    live.write_bytes(b"in progress")
    assert is_temp_file(stray) and not stray.name.endswith(".ckpt")  # never mistaken for a checkpoint
    assert remove_stray_temps(tmp_path) == [stray]
    assert live.exists()


SLOW_SAVE_SCRIPT = textwrap.dedent('''
    import sys, time
    import lightning.pytorch as pl
    from circuits_pl.callbacks import LastCheckpoint, StopWhenSolved
    from circuits_pl.atomic_checkpoint_io import AtomicCheckpointIO
    from circuits_pl.data import CircuitDataModule
    from circuits_pl.module import CircuitModule

    class SlowIO(AtomicCheckpointIO):
        saves = 0
        def write(self, checkpoint, f):
            import io, torch
            buf = io.BytesIO(); torch.save(checkpoint, buf); data = buf.getvalue()
            SlowIO.saves += 1
            if SlowIO.saves == 2:
                print("SAVING", checkpoint["global_step"], flush=True)
                for i in range(0, len(data), 512):  # ~seconds: plenty of time to be killed mid-write
                    f.write(data[i:i + 512]); f.flush(); time.sleep(0.05)
            else:
                f.write(data)

    trainer = pl.Trainer(max_steps=3000, val_check_interval=10, check_val_every_n_epoch=None, logger=False,
                         enable_progress_bar=False, default_root_dir=sys.argv[1], plugins=[SlowIO()],
                         callbacks=[LastCheckpoint(dirpath=sys.argv[1]), StopWhenSolved("never")])
    trainer.fit(CircuitModule(task="min", members=64), CircuitDataModule(task="min", stream_seed=0))
''')


def test_a_kill_during_a_save_leaves_the_previous_last_ckpt(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE_SCRIPT, str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("SAVING"):
            break
    else:
        pytest.fail(proc.stderr.read())
    time.sleep(0.3)  # into the middle of the write
    assert _temps(tmp_path), "the save should be in progress"
    proc.kill()
    proc.communicate(timeout=60)
    state = _ckpt(tmp_path / "last.ckpt")  # a complete checkpoint, loadable safely
    assert state["global_step"] == 1000  # the previous one: the save at 2000 never landed
    AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt", weights_only=True)  # the next run cleans up
    assert _temps(tmp_path) == []


# ---------------------------------------------------------------------------------------------- #
# 9.3 signals anywhere in fit
# ---------------------------------------------------------------------------------------------- #
def _start(args: list, cwd: Path, **env: str) -> subprocess.Popen:
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "circuits_pl", *map(str, args)], cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_when(proc: subprocess.Popen, prefix: str, sig: int) -> tuple[str, str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            break
    else:
        pytest.fail("".join(seen) + proc.stderr.read())
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return "".join(seen) + out, err


SLEEPY = ["--task", "slow_tasks:sleepy_add", "--model.members", 4, "--stop.when", "never", *QUIET]


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_during_sanity_validation(tmp_path, sig):
    proc = _start(["fit", *SLEEPY, "--trainer.max_steps", 2000], tmp_path, CIRCUITS_PL_TEST_SLOW="sanity")
    out, err = _signal_when(proc, "SLOW sanity", sig)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert "interrupted during sanity validation at step 0; nothing was trained yet: run the command again" in err
    (run,) = run_dirs(tmp_path)
    assert not (run / "checkpoints").exists() and not (run / "results.json").exists()


def test_signal_during_the_end_of_fit_readout(tmp_path):
    proc = _start(["fit", *SLEEPY, "--trainer.max_steps", 1500], tmp_path, CIRCUITS_PL_TEST_SLOW="end")
    out, err = _signal_when(proc, "SLOW end", signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    (run,) = run_dirs(tmp_path)
    last = Path("lightning_logs/version_0/checkpoints/last.ckpt")
    assert f"interrupted at the end of fit (test, readout, results.json, figures); training is complete: " \
           f"{last} holds step 1500" in err
    assert f"python -m circuits_pl inspect {last.parent.parent}" in err
    assert _ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 1500
    assert not (run / "results.json").exists() and _temps(run) == []


@pytest.mark.slow  # ~7 s, mostly process start
def test_second_ctrl_c_stops_at_once_with_the_last_complete_checkpoint(tmp_path):
    proc = _start(["fit", "--task", "min", "--model.members", 64, "--stop.when", "never", *QUIET,
                   "--trainer.max_steps", 100_000, "--trainer.val_check_interval", 500], tmp_path)
    for line in proc.stdout:
        if line.startswith("step "):
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # two signals at once would merge into one
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (run,) = run_dirs(tmp_path)
    step = _ckpt(run / "checkpoints" / "last.ckpt")["global_step"]
    assert step >= 500 and f"holds step {step}" in err and "Resume with:" in err


# ---------------------------------------------------------------------------------------------- #
# 9.4 exact resume at any step; cadence in SGD steps
# ---------------------------------------------------------------------------------------------- #
def _val_rows(run: Path) -> dict[int, dict[str, str]]:
    import csv

    rows = csv.DictReader((run / "metrics.csv").open())
    return {int(r["step"]): {k: v for k, v in r.items() if k.startswith("val/")} for r in rows if r["val/mse"]}


@pytest.mark.parametrize("stop, block, resume_block", [(550, None, None), (950, 100, 100), (1700, 100, 500),
                                                       (2000, 1000, 250)])
def test_stop_at_550_and_resume_equals_never_stopping(run_cli, tmp_path, stop, block, resume_block):
    """Stopped inside a block (550 with the default S = 500; 950 with S = 100, just before the
    validation at 1000), or resumed with another block size (1700 with S = 100 resumed with 500;
    2000 with S = 1000, as under DDP, resumed with 250), to 3000: the same run, with the same
    validations."""
    from test_resume import assert_same_run

    common = ["--task", "add", "--model.members", 16, "--stop.when", "never", *QUIET]
    run_cli("fit", *common, "--trainer.max_steps", 3000)
    run_cli("fit", *common, *(["--data.steps_per_batch", block] if block else []), "--trainer.max_steps", stop)
    half = run_dirs(tmp_path)[1]
    run_cli("fit", "--config", half / "config.yaml", "--ckpt_path", half / "checkpoints" / "last.ckpt",
            "--trainer.max_steps", 3000, *(["--data.steps_per_batch", resume_block] if resume_block else []))
    full, _, resumed = run_dirs(tmp_path)
    assert_same_run(full, resumed)  # every weight, solved_at, verdicts, per-member MSEs
    assert sorted(_val_rows(resumed)) == [v for v in (1000, 2000, 3000) if v > stop]
    assert {s: r for s, r in _val_rows(full).items() if s > stop} == _val_rows(resumed)
    assert results(full)["per_member"]["solved_at"] == results(resumed)["per_member"]["solved_at"]


def test_validation_interval_counts_sgd_steps(run_cli, tmp_path):
    run_cli("fit", "--task", "add", "--model.members", 2, "--stop.when", "never", "--trainer.max_steps", 1200,
            "--trainer.val_check_interval", 370, *QUIET)
    (run,) = run_dirs(tmp_path)
    assert sorted(_val_rows(run)) == [370, 740, 1110, 1200]  # the last: where the run stops
    # the largest divisor of 370 up to the block limit for 2 members (1000) and the log interval (500)
    assert results(run)["data"]["steps_per_batch"] == 370


def test_steps_per_batch_that_does_not_divide_the_validation_interval_is_refused(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "add", "--data.steps_per_batch", 37, "--trainer.max_steps", 100, expect=2)
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == ("error: data.steps_per_batch 37 does not divide trainer.val_check_interval 1000 "
                                    "(SGD steps): give a divisor of 1000 (e.g. 100) or omit data.steps_per_batch "
                                    "to have it chosen")
    assert run_dirs(tmp_path) == []


def test_trainer_cadence_helper():
    assert default_steps_per_batch(1000) == 100 and default_steps_per_batch(370) == 74
    assert default_steps_per_batch(97) == 97 and default_steps_per_batch(1009) == 1
    assert trainer_cadence(1000, 500) == {"val_check_interval": 10, "log_every_n_steps": 5,
                                          "check_val_every_n_epoch": None}
    assert trainer_cadence(370, 500)["log_every_n_steps"] == 7  # 7 blocks of 74 = every 518 steps
    with pytest.raises(CircuitsError, match="steps_per_batch 37 does not divide val_check_interval 1000"):
        trainer_cadence(1000, 500, steps_per_batch=37)
    with pytest.raises(CircuitsError, match=r"a config that counted blocks of 100 steps means 1000\)$"):
        trainer_cadence(10, 5, steps_per_batch=100)  # a config.yaml written before the cadence counted steps


# ---------------------------------------------------------------------------------------------- #
# Round 3 (issue 19): typed options on resume, every file atomic, signals from start to exit, DDP
# ---------------------------------------------------------------------------------------------- #
def test_options_typed_on_resume_win_even_when_equal_to_the_default(run_cli, tmp_path):
    common = ["--task", "add", "--model.members", 4, "--stop.when", "never", *QUIET]
    run_cli("fit", *common, "--model.lr", 0.02, "--trainer.max_steps", 1000)
    first = run_dirs(tmp_path)[0]
    last = first / "checkpoints" / "last.ckpt"
    run_cli("fit", *common, "--ckpt_path", last, "--trainer.max_steps", 2000)  # nothing typed: the checkpoint's
    run_cli("fit", *common, "--ckpt_path", last, "--model.lr", 0.1, "--trainer.max_steps", 2000)  # 0.1 is the default
    run_cli("fit", "--config", first / "config.yaml", "--ckpt_path", last, "--model.lr", 0.1,
            "--trainer.max_steps", 2000)  # the config says 0.02, the command line 0.1
    _, kept, typed, over_config = run_dirs(tmp_path)
    assert results(kept)["lr"] == 0.02 and results(typed)["lr"] == 0.1 == results(over_config)["lr"]
    assert _ckpt(typed / "checkpoints" / "last.ckpt")["hyper_parameters"]["lr"] == 0.1
    w = [_ckpt(r / "checkpoints" / "last.ckpt")["state_dict"]["net.groups.0.weights.0"]
         for r in (kept, typed, over_config)]
    assert not torch.equal(w[0], w[1]) and torch.equal(w[1], w[2])  # 0.1 really trained, the same both ways


def test_a_resume_without_its_config_takes_the_runs_data_from_the_checkpoint(run_cli, tmp_path):
    common = ["--model.members", 4, "--stop.when", "never", *QUIET]
    run_cli("fit", "--task", "add", *common, "--data.batch_size", 200, "--seed_everything", 3,
            "--trainer.max_steps", 1000)
    first = run_dirs(tmp_path)[0]
    last = first / "checkpoints" / "last.ckpt"
    run_cli("fit", "--config", first / "config.yaml", "--ckpt_path", last, "--trainer.max_steps", 2000)
    run_cli("fit", *common, "--ckpt_path", last, "--trainer.max_steps", 2000)  # batch size and stream seed: the run's
    _, with_config, without = run_dirs(tmp_path)
    assert results(without)["data"] == results(with_config)["data"] and results(without)["data"]["batch_size"] == 200
    a, b = (_ckpt(r / "checkpoints" / "last.ckpt")["state_dict"] for r in (with_config, without))
    for key in a:  # the same run (validation history: NaN before the first validations)
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)


def _no_space_for(name: str, monkeypatch) -> None:
    """The disk is full for the temporary file of ``name`` (its creation fails, as on a full or read-only disk)."""
    real = os.open

    def create(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.basename(path).startswith(f".{name}.tmp-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", create)


@pytest.mark.parametrize("name", ["metrics.csv", "losses.png", "function_member1.png", "hparams.yaml"])
def test_a_full_disk_at_any_file_of_the_run_is_one_line(run_cli, tmp_path, monkeypatch, capsys, name):
    """metrics.csv (its first write), hparams.yaml and every figure go through the atomic writer, whose
    temporary file's creation fails here: exit 1, one line naming the file; the files written are whole."""
    _no_space_for(name, monkeypatch)
    run_cli("fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 1000, "--trainer.enable_progress_bar",
            "false", expect=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert re.fullmatch(rf"error: could not write lightning_logs/version_0/{re.escape(name)}: No space left on device; "
                        r"its previous version \(if any\) is intact: every write is atomic\. Free space on that disk "
                        r"\(df -h lightning_logs/version_0\), then run again or resume from last\.ckpt", err[0]), err[0]
    (run,) = run_dirs(tmp_path)
    assert not (run / name).exists() and _temps(run) == []
    assert not (run / "checkpoints").exists() or _temps(run / "checkpoints") == []
    if name.endswith(".png"):  # training and results.json were done: complete
        assert results(run)["steps"] == 1000 and _ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 1000


def test_an_interrupted_figure_write_keeps_the_previous_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from circuits_pl.plots import save_figure

    path = tmp_path / "losses.png"
    save_figure(Figure(), path)
    before = path.read_bytes()

    def half_then_ctrl_c(self, f, **kwargs):
        f.write(b"\x89PNG\r\n\x1a\n half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_figure(Figure(), path)
    assert path.read_bytes() == before and _temps(tmp_path) == []


def test_temp_files_of_killed_runs_are_swept_when_the_next_run_starts(run_cli, tmp_path):
    run_cli("fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 100, *QUIET)
    (run,) = run_dirs(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    strays = [run / f".config.yaml.tmp-{pid}-a1", run / "checkpoints" / f".last.ckpt.tmp-{pid}-b2",
              run.parent / f".version_9.tmp-{pid}-c3"]
    live = run / "checkpoints" / f".best-step=100.ckpt.tmp-{os.getpid()}-d4"  # a write in progress
    for path in [*strays, live]:
        path.write_bytes(b"half a file")
    run_cli("fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 100, *QUIET)
    assert not any(p.exists() for p in strays) and live.exists()


def test_checkpoint_io_checks_every_crc_before_a_plain_trainer_loads(tmp_path):
    from test_bad_input import flip_a_bit

    good = tmp_path / "good.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"net.weights.0": torch.full((4, 3), 0.85)}}, good)
    assert AtomicCheckpointIO().load_checkpoint(good, weights_only=True)["state_dict"]["net.weights.0"][0, 0] == 0.85
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(flip_a_bit(good.read_bytes(), "net.weights.0"))
    assert torch.load(bad, weights_only=True)["state_dict"]["net.weights.0"][0, 0] != 0.85  # torch loads it silently
    with pytest.raises(CircuitsError, match=r"bad.ckpt is damaged: its record archive/data/0 fails its CRC-32 check"):
        AtomicCheckpointIO().load_checkpoint(bad, weights_only=True)


def test_the_resume_command_is_shell_quoted_and_the_end_of_fit_says_what_was_written():
    from circuits_pl.interrupts import END, RunInterrupted, interrupt_message

    stopped = RunInterrupted(signal.SIGINT, 500, "my runs/lightning_logs/version_0/checkpoints/last.ckpt")
    assert interrupt_message(stopped).splitlines()[1] == (
        "Resume with: python -m circuits_pl fit --config 'my runs/lightning_logs/version_0/config.yaml' "
        "--ckpt_path 'my runs/lightning_logs/version_0/checkpoints/last.ckpt'")
    end = RunInterrupted(signal.SIGTERM, 500, "runs/checkpoints/last.ckpt", phase=END, results="runs/results.json")
    assert "runs/results.json was written, figures may be missing. To write the figures too" in interrupt_message(end)
    end.results = None
    assert "no results.json was written. To write results.json and the figures" in interrupt_message(end)


def _one_line_exit(proc: subprocess.Popen, err: str, code: int, pattern: str) -> None:
    lines = err.strip().splitlines()
    assert proc.returncode == code, err
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines
    assert "Traceback" not in err and "Exception ignored" not in err


def _wait_for_circuits_pl_handlers(proc) -> None:
    """Until the process catches SIGTERM (the kernel's SigCgt mask): only circuits_pl.signals.install() sets
    a SIGTERM handler, on the first line of main. A signal before it meets Python's own start-up (a fixed sleep
    was too short on a loaded machine: exit -2)."""
    status = Path(f"/proc/{proc.pid}/status")
    for _ in range(6000):
        caught = next(int(line.split()[1], 16) for line in status.read_text().splitlines() if line.startswith("SigCgt"))
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)
    raise AssertionError("circuits_pl never installed its signal handlers")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_starting_exits_at_once_with_one_line(tmp_path, sig):
    proc = _start(["fit", "--task", "add", "--model.members", 2, *QUIET], tmp_path)
    _wait_for_circuits_pl_handlers(proc)  # then it imports torch and Lightning for seconds
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    name = signal.Signals(sig).name
    _one_line_exit(proc, err, 128 + sig, rf"^{name}: interrupted (while starting; nothing was written|outside "
                                         "training)")
    assert list(tmp_path.iterdir()) == []


def test_a_signal_after_the_end_of_fit_exits_with_one_line_and_a_complete_run(tmp_path):
    proc = _start(["fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 1000,
                   "--trainer.enable_progress_bar", "false"], tmp_path)
    out, err = _signal_when(proc, "Figure: lightning_logs/version_0/circuit_member", signal.SIGINT)
    _one_line_exit(proc, err, 130, r"^SIGINT: interrupted (after the end of fit; the run is complete|while exiting)")
    (run,) = run_dirs(tmp_path)
    assert results(run)["steps"] == 1000
    pngs = sorted(run.glob("*.png"))  # timeline, losses, the best member's function and circuit
    assert len(pngs) == 4 and run / "timeline.png" in pngs
    for png in pngs:
        assert_drawn(png)


def test_a_sigint_the_parent_ignores_stays_ignored(tmp_path):
    """``cmd &`` in a script starts cmd with SIGINT ignored: circuits_pl must not turn it back on."""
    path = os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    args = ["fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 2000, "--stop.when", "never", *QUIET]
    proc = subprocess.Popen([sys.executable, "-m", "circuits_pl", *map(str, args)], cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # while importing
    for line in proc.stdout:
        if line.startswith("step "):
            proc.send_signal(signal.SIGINT)  # while training
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (run,) = run_dirs(tmp_path)
    assert results(run)["steps"] == 2000


def _job_processes(marker: str) -> list[str]:
    """Processes writing their output under ``marker``: report's fits (forked from its forkserver or
    started as ``python -m circuits_pl fit``, each has its log as stdout), whatever their command line."""
    found = []
    for fd in Path("/proc").glob("[0-9]*/fd/1"):
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(marker):
                found.append(fd.parent.parent.name)
    return found


def test_report_stops_its_running_and_queued_jobs_on_a_signal_and_reports_what_finished(tmp_path):
    out = tmp_path / "study"
    proc = _start(["report", "--tasks", "abs,add,min", "--model.members", 4, "--trainer.max_steps", 10_000_000,
                   "--jobs", 2, "--out", out], tmp_path)
    log = out / "version_0" / "runs" / "abs_seeds0-1.log"  # 3 tasks on 2 jobs: 2 fits per task
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "step " in log.read_text()):
        time.sleep(0.1)  # abs is training
    assert len(_job_processes(str(out))) == 2  # both abs fits, each its own process
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    _one_line_exit(proc, err, 143, r"^SIGTERM: report interrupted; 0 of 6 jobs finished: .*study/version_0/report.md$")
    report = (out / "version_0" / "report.md").read_text()
    assert "**Interrupted by SIGTERM after" in report and "stopped while running: abs_seeds0-1, abs_seeds2-3" in report
    last = out / "version_0" / "runs" / "abs_seeds0-1" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"--ckpt_path {last}`" in report and _ckpt(last)["global_step"] > 0
    assert "SIGTERM: interrupted during training" in log.read_text()
    queued = out / "version_0" / "runs" / "min_seeds0-1"
    assert not queued.exists() or not any(queued.iterdir())
    assert _job_processes(str(out)) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds report's fits through /proc")
def test_a_fit_of_the_report_stopped_from_outside_stops_the_report_with_its_resume(tmp_path):
    """`kill -TERM` of one of report's fits (or the OOM killer): the report stops as on its own signal, with
    report.md saying how to continue, not "error: report job min failed (exit 143): Resume with: ..." and exit
    2, the status of a usage error (fresh-user check)."""
    out = tmp_path / "study"
    proc = _start(["report", "--tasks", "abs,min", "--model.members", 4, "--trainer.max_steps", 10_000_000,
                   "--jobs", 2, "--out", out], tmp_path)
    log = out / "version_0" / "runs" / "min.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "step " in log.read_text()):
        time.sleep(0.1)  # min is training
    (fit,) = _job_processes(str(log))
    os.kill(int(fit), signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    _one_line_exit(proc, err, 143, r"^SIGTERM: report interrupted \(job min was stopped by SIGTERM\); 0 of 2 jobs "
                                   r"finished: .*study/version_0/report.md$")
    report = (out / "version_0" / "report.md").read_text()
    last = out / "version_0" / "runs" / "min" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"--ckpt_path {last}`" in report and "report --resume" in report
    assert _job_processes(str(out)) == []  # the other fit was stopped too


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"circuits_pl" in cmdline:
            children.append(int(stat.parent.name))
    return children


DDP = ["fit", "--task", "add", "--model.members", 4, "--trainer.strategy", "ddp", "--trainer.devices", 2,
       "--trainer.accelerator", "cpu", "--stop.when", "never", *QUIET]


def _rank_one(proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if children := _children_of(proc.pid):
            return children[0]
        time.sleep(0.02)
    pytest.fail("rank 1 never started: " + proc.stderr.read())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the DDP ranks through /proc")
def test_ddp_a_signal_to_rank_one_while_starting_stops_every_rank_with_one_line(tmp_path):
    proc = _start([*DDP, "--trainer.max_steps", 100_000], tmp_path)
    rank1 = _rank_one(proc)
    os.kill(rank1, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("Initializing distributed")]
    assert proc.returncode == 143 and len(lines) == 1, err
    assert lines[0] == ("SIGTERM: DDP process 1 was stopped while starting; every process stops; nothing was trained: "
                        "run the command again"), lines
    assert "Traceback" not in err and _children_of(proc.pid) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the DDP ranks through /proc")
@pytest.mark.parametrize("target, sig", [("rank0", signal.SIGTERM), ("rank0", signal.SIGINT),
                                         ("rank1", signal.SIGINT)])
def test_ddp_a_signal_before_training_gives_128_plus_the_signal_on_every_rank(tmp_path, target, sig):
    proc = _start([*DDP, "--trainer.max_steps", 100_000], tmp_path)
    rank1 = _rank_one(proc)
    time.sleep(1.0)
    os.kill(proc.pid if target == "rank0" else rank1, sig)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("Initializing distributed")]
    assert proc.returncode == 128 + sig and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(signal.Signals(sig).name)
    assert not Path(f"/proc/{rank1}").exists() or "Z" in Path(f"/proc/{rank1}/stat").read_text().split()[2]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the DDP ranks through /proc")
def test_ddp_a_rank_killed_during_training_stops_rank_zero_with_one_line_and_its_checkpoint(tmp_path):
    proc = _start([*DDP, "--trainer.max_steps", 10_000_000, "--trainer.val_check_interval", 500], tmp_path)
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("step ") and "1000" in line:
            break
    os.kill(_children_of(proc.pid)[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 137 and "Traceback" not in err, err
    assert "SIGKILL (DDP process 1): interrupted during training; checkpoint" in err and "Resume with:" in err


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the DDP ranks through /proc")
def test_ddp_rank_zero_killed_during_training_leaves_rank_one_to_say_the_one_line(tmp_path):
    """Rank 0 SIGKILLed: it cannot speak, so rank 1 says what is on disk and how to resume, and exits; gloo's
    "Connection closed by peer" traceback (~50 lines, [rank1]:) was all a fresh user saw, in 4 of 5 trials."""
    proc = _start([*DDP, "--trainer.max_steps", 10_000_000, "--trainer.val_check_interval", 500], tmp_path)
    for line in proc.stdout:
        if line.startswith("step ") and "1000" in line:
            break
    rank1 = _children_of(proc.pid)[0]
    proc.kill()
    proc.wait(timeout=60)
    err = proc.stderr.read()  # to its end: rank 1 holds the same pipe until it exits
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("Initializing distributed")
             and not set(ln) <= {"-"} and not ln.startswith(("distributed_backend", "All distributed"))]
    assert "Traceback" not in err and len(lines) == 2, err
    assert re.fullmatch(r"error: DDP process 0 is gone \(killed\); this process stops too; checkpoint "
                        r"lightning_logs/version_0/checkpoints/last.ckpt holds step \d+", lines[0]), lines
    assert lines[1].startswith("Resume with: ")
    deadline = time.monotonic() + 30
    while Path(f"/proc/{rank1}").exists() and "Z" not in Path(f"/proc/{rank1}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "rank 1 still runs"
        time.sleep(0.1)


def test_a_child_rank_without_rank_zero_says_what_is_on_disk_from_fits_last_words(tmp_path):
    """The line of exit_without_rank_zero: fit's describer, kept after fit's teardown released it."""
    code = textwrap.dedent("""
        import os
        os.environ["LOCAL_RANK"] = "1"
        from circuits_pl import signals
        signals.set_describer(lambda signum: "SIGTERM: interrupted during training (at once, by a second signal); "
                              "checkpoint runs/last.ckpt holds step 500\\nResume with: fit --ckpt_path runs/last.ckpt")
        signals.set_describer(None)  # fit's teardown
        signals.say("a child rank stays quiet")
        signals.exit_without_rank_zero()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "error: DDP process 0 is gone (killed); this process stops too; checkpoint runs/last.ckpt holds step 500",
        "Resume with: fit --ckpt_path runs/last.ckpt"]


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs mounted at tmp_path/mnt (root only), unmounted afterwards."""
    point = tmp_path / "mnt"
    point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def _remount_read_only(mount) -> None:
    """The kernel refuses a read-only remount ("mount point is busy") while a file on it is open for writing,
    as one is for a moment at every save: try again until a moment when none is."""
    for _ in range(2000):
        done = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        assert "busy" in done.stderr, done.stderr
        time.sleep(0.005)
    raise AssertionError(f"{mount} stayed busy: no moment without a file open for writing")


def test_a_read_only_remount_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmpfs):
    proc = _start(["fit", "--task", "add", "--model.members", 2, "--trainer.max_steps", 1_000_000, "--stop.when",
                   "never", *QUIET], tmpfs)
    for line in proc.stdout:
        if line.startswith("step ") and line.split()[1] == "2000":
            _remount_read_only(tmpfs)
            break
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"error: could not write lightning_logs/version_0/\S+: Read-only file system; its previous "
                        r"version \(if any\) is intact: every write is atomic\. The file system turned read-only.*",
                        lines[0]), lines
    last = tmpfs / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert _ckpt(last)["global_step"] >= 1000  # 2000 when its save came before the remount


def test_the_watchdog_leaves_a_rank_waiting_in_a_collective_to_the_others(tmp_path, monkeypatch):
    """A signal's handler cannot run while the main thread waits in C; the watchdog stops such a process,
    except in a collective of torch.distributed (the ranks stop together at the next block)."""
    from circuits_pl import signals

    (tmp_path / "distributed_c10d.py").write_text("def all_reduce(event):\n    event.wait(5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import distributed_c10d

    seen, event = [], threading.Event()

    def look() -> None:
        time.sleep(0.2)
        seen.append(signals._in_collective())
        event.set()

    threading.Thread(target=look).start()
    assert not signals._in_collective()
    distributed_c10d.all_reduce(event)  # the main thread waits "in a collective" until the look is done
    assert seen == [True]
