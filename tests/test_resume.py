"""Never lose a run: exact resume, interrupts, determinism, no non-finite checkpoints."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import results, run_dirs

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]


def _ckpt(run: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical weights, member state, optimizer state, step and per-member metrics."""
    ca, cb = _ckpt(a), _ckpt(b)
    assert ca["global_step"] == cb["global_step"]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][key], cb["state_dict"][key]) or (
            torch.isnan(ca["state_dict"][key]).any() and torch.equal(
                ca["state_dict"][key].nan_to_num(-7.0), cb["state_dict"][key].nan_to_num(-7.0))), key
    assert ca["optimizer_states"][0]["param_groups"] == cb["optimizer_states"][0]["param_groups"]
    assert str(ca["optimizer_states"][0]["state"]) == str(cb["optimizer_states"][0]["state"])
    assert_same_timeline(ca, cb)
    ra, rb = results(a), results(b)
    assert ra["per_member"] == rb["per_member"] and ra["steps"] == rb["steps"]
    assert ra["timeline"] == rb["timeline"]
    assert (a / "circuits.csv").read_text() == (b / "circuits.csv").read_text()


def assert_same_timeline(ca: dict, cb: dict) -> None:
    """The checkpoints' timelines: the same validations, circuits, MSE and names."""
    ta, tb = ca["timeline"], cb["timeline"]
    assert ta.keys() == tb.keys()
    for key in ta:
        if isinstance(ta[key], torch.Tensor):
            assert torch.equal(ta[key].nan_to_num(-7.0), tb[key].nan_to_num(-7.0)), key
        elif key == "read":  # per group: the weights last read (empty for groups not read member by member)
            assert len(ta[key]) == len(tb[key]) and all(map(torch.equal, ta[key], tb[key])), key
        else:
            assert ta[key] == tb[key], key


@pytest.mark.parametrize("members", [1, 6])
def test_resume_from_half_way_is_bit_identical(run_cli, tmp_path, members):
    common = ["--task", "abs", "--model.members", members, "--model.lr", 0.02, "--stop.when", "never",
              "--data.batch_size", 200, *QUIET]
    run_cli("fit", *common, "--trainer.max_steps", 3000)
    run_cli("fit", *common, "--trainer.max_steps", 1500)  # stops mid-way between validations (every 1000)
    half = run_dirs(tmp_path)[1]
    assert _ckpt(half)["global_step"] == 1500
    run_cli("fit", "--config", half / "config.yaml", "--ckpt_path", half / "checkpoints" / "last.ckpt",
            "--trainer.max_steps", 3000)
    full, _, resumed = run_dirs(tmp_path)
    assert_same_run(full, resumed)
    # the regular validations of the two halves are those of the whole run
    assert _val_rows(full) == {k: v for k, v in {**_val_rows(half), **_val_rows(resumed)}.items() if k % 1000 == 0}


def test_resume_at_or_past_max_steps_says_nothing_is_trained(run_cli, tmp_path, capsys):
    common = ["--task", "add", "--model.members", 2, "--stop.when", "never", "--data.batch_size", 200, *QUIET]
    run_cli("fit", *common, "--trainer.max_steps", 1000)
    (first,) = run_dirs(tmp_path)
    capsys.readouterr()
    run_cli("fit", *common, "--trainer.max_steps", 500, "--ckpt_path", first / "checkpoints" / "last.ckpt")
    out = capsys.readouterr().out
    assert "Nothing to train: the checkpoint is at step 1000, at or past --trainer.max_steps 500" in out
    assert "Trained " not in out  # no training-speed line: nothing ran
    assert results(run_dirs(tmp_path)[1])["steps"] == 1000


def _val_rows(run: Path) -> dict[int, dict[str, str]]:
    import csv

    rows = csv.DictReader((run / "metrics.csv").open())
    return {int(r["step"]): {k: v for k, v in r.items() if k.startswith("val/")} for r in rows if r["val/mse"]}


def test_same_seed_and_config_give_identical_runs(run_cli, tmp_path):
    args = ["fit", "--task", "min", "--model.members", 5, "--trainer.max_steps", 1200, "--stop.when", "never",
            *QUIET]
    run_cli(*args)
    run_cli(*args)
    a, b = run_dirs(tmp_path)
    assert_same_run(a, b)
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "circuits_pl", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_a_checkpoint_and_resuming_equals_never_stopping(run_cli, tmp_path, sig):
    common = ["--task", "min", "--model.members", 64, "--stop.when", "never", *QUIET]
    proc = _start(["fit", *common, "--trainer.max_steps", 100_000], tmp_path)
    for line in proc.stdout:  # wait until training runs: the first validation line
        if line.startswith("step "):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    (stopped,) = run_dirs(tmp_path)
    assert f"Resume with: python -m circuits_pl fit --config {Path('lightning_logs/version_0/config.yaml')}" in err
    assert "Traceback" not in err
    step = _ckpt(stopped)["global_step"]
    assert 1000 <= step < 100_000 and step % 100 == 0  # a whole block, after the first validation
    assert step in _val_rows(stopped)  # Lightning validated where it stopped, then saved last.ckpt
    assert f"checkpoint {Path('lightning_logs/version_0/checkpoints/last.ckpt')} holds step {step}" in err
    target = step + 1000
    run_cli("fit", "--config", stopped / "config.yaml", "--ckpt_path", stopped / "checkpoints" / "last.ckpt",
            "--trainer.max_steps", target)
    run_cli("fit", *common, "--trainer.max_steps", target)
    _, resumed, never_stopped = run_dirs(tmp_path)
    assert_same_run(never_stopped, resumed)
    # validation stays on its schedule (every 1000 steps) after the resume
    assert sorted(_val_rows(resumed)) == [s for s in sorted(_val_rows(never_stopped)) if s > step]
    scheduled = {k: v for k, v in _val_rows(stopped).items() if k % 1000 == 0}  # not the one at the stop
    assert _val_rows(never_stopped) == {**scheduled, **_val_rows(resumed)}


def test_checkpoints_never_hold_non_finite_weights(tmp_path):
    """A run that blows up after its first checkpoints: last.ckpt keeps the last finite state."""
    import lightning.pytorch as pl

    from circuits_pl.callbacks import StopWhenSolved
    from circuits_pl.data import CircuitDataModule
    from circuits_pl.errors import TrainingDiverged
    from circuits_pl.module import CircuitModule

    class BlowUp(pl.Callback):  # what a too-large learning rate does, on cue at step 1500
        def on_train_batch_start(self, trainer, module, *args):
            if trainer.global_step == 1500:
                module.optimizers().param_groups[0]["lr"] = 1e6

    ckpt = pl.callbacks.ModelCheckpoint(monitor="val/mse", save_last=True, dirpath=tmp_path)
    trainer = pl.Trainer(max_steps=4000, val_check_interval=10, check_val_every_n_epoch=None, logger=False,
                         enable_progress_bar=False, callbacks=[ckpt, BlowUp(), StopWhenSolved("never")])
    module = CircuitModule(task="add", members=1, lr=0.01, init_seed=0)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 15\d\d"):
        trainer.fit(module, CircuitDataModule(task="add", stream_seed=0))
    for path in tmp_path.glob("*.ckpt"):
        state = torch.load(path, weights_only=True)
        assert state["global_step"] == 1000
        assert all(bool(torch.isfinite(v).all()) for k, v in state["state_dict"].items() if k.startswith("net."))
    assert all(bool(torch.isfinite(w).all()) for w in module.net.parameters())  # reset to its last finite state


# Written by main at 7174282 (before the per-member state moved into circuits_pl.population):
#   fit --task abs --model.members 6 --model.optimizer momentum --model.momentum 0.5 --model.lr 3
#       --data.batch_size 200 --stop.when never --trainer.max_steps 1500
# Members 3 and 4 diverged (steps 11 and 14), the others were solved at step 1000.
OLD_CHECKPOINT = Path(__file__).parent / "data" / "main_7174282_abs_momentum_step1500.ckpt"
OLD_ARGS = ["--task", "abs", "--model.members", 6, "--model.optimizer", "momentum", "--model.momentum", 0.5,
            "--model.lr", 3, "--data.batch_size", 200, "--stop.when", "never", *QUIET]


def test_a_checkpoint_of_the_previous_layout_loads_and_resumes_exactly(run_cli, tmp_path):
    from circuits_pl.module import CircuitModule

    old = torch.load(OLD_CHECKPOINT, weights_only=True)["state_dict"]
    module = CircuitModule.load_from_checkpoint(OLD_CHECKPOINT)
    now = module.state_dict()
    assert len(now) == len(old)
    for key, value in old.items():  # every value of the old file, wherever it lives now
        (match,) = [k for k in now if k == key or k.endswith("." + key.removeprefix("net."))]
        assert torch.equal(now[match].nan_to_num(-7.0), value.nan_to_num(-7.0)), key
    assert module.sweep.is_single and module.net.groups[0].members == 6  # one cell, as it was trained
    assert module.population.diverged_at.tolist() == [-1, -1, -1, 11, 14, -1]
    run_cli("fit", *OLD_ARGS, "--ckpt_path", OLD_CHECKPOINT, "--trainer.max_steps", 2000)
    # the old file was trained by the torch engine (before --model.engine), and resumes with it
    run_cli("fit", *OLD_ARGS, "--trainer.max_steps", 2000, "--model.engine", "torch")
    resumed, never_stopped = run_dirs(tmp_path)
    # everything but the timeline: the old checkpoint has none, so the resumed run records none either
    # (its first validations are lost) and says so; results.json and verdicts read as before it existed
    timeline = ("formed_at", "projected_solved_at")
    ra, rb = results(never_stopped), results(resumed)
    assert {k: v for k, v in ra["per_member"].items() if k not in timeline} == \
        {k: v for k, v in rb["per_member"].items() if k not in timeline}
    assert rb["timeline"] is None and rb["per_member"]["formed_at"] is None
    assert not (resumed / "circuits.csv").exists()
    assert _ckpt(resumed)["timeline"] is None
    assert rb["per_member"]["solved_at"] == [1000, 1000, 1000, None, None, 1000]
    assert rb["engine"] == "torch"
