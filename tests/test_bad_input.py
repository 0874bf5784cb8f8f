"""The bad-input matrix: each case is one line ``error: ...`` naming the fix, a non-zero exit, no
traceback, and not one file or directory created or touched (a snapshot of the tree before/after).

One trained checkpoint of a built-in task and one of a user task are made once per session; each
case gets copies of them (and of damaged files) in its own working directory.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_dirs

from circuits_pl import preflight
from circuits_pl.cli import main
from circuits_pl.errors import CircuitsError
from circuits_pl.module import CircuitModule

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]
GIB = 2**30
MARKER_TASK = '''
"""A user's task that leaves a marker file each time it is imported."""
from pathlib import Path

Path(__file__).with_name("IMPORTED").write_text("this module ran\\n")


def double(a, b):
    return 2 * (a + b)
'''


def call(argv: list, cwd: Path) -> int:
    """``python -m circuits_pl ARGV`` in-process in ``cwd``; the exit code."""
    old, old_argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["circuits_pl"]
    try:
        main([str(a) for a in argv])
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        os.chdir(old)
        sys.argv = old_argv


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A 2-member abs run and a 2-member run of a user task (module ``marker_tasks`` in its folder)."""
    root = tmp_path_factory.mktemp("trained")
    assert call(["fit", "--task", "abs", "--model.members", 2, "--trainer.max_steps", 200, *QUIET], root) == 0
    (good,) = run_dirs(root)
    user_root = tmp_path_factory.mktemp("user_task")
    (user_root / "marker_tasks.py").write_text(MARKER_TASK)
    assert call(["fit", "--task", "marker_tasks:double", "--model.members", 2, "--trainer.max_steps", 100, *QUIET],
                user_root) == 0
    (user_run,) = run_dirs(user_root)
    sys.modules.pop("marker_tasks", None)  # so any later import would run the module again
    (user_root / "IMPORTED").unlink()
    return {"good": good / "checkpoints" / "last.ckpt", "run": good, "user": user_run / "checkpoints" / "last.ckpt",
            "user_root": user_root}


@pytest.fixture
def workdir(tmp_path, trained, monkeypatch) -> Path:
    """The case's working directory: good, user-task, damaged and foreign checkpoints, odd configs."""
    monkeypatch.setattr(preflight, "available_bytes", lambda: 4 * GIB)  # the memory cases, on any machine
    monkeypatch.delitem(sys.modules, "this", raising=False)  # so an import of `this` would print again
    ckpt = trained["good"].read_bytes()
    (tmp_path / "good.ckpt").write_bytes(ckpt)
    (tmp_path / "truncated.ckpt").write_bytes(ckpt[:2000])
    (tmp_path / "user.ckpt").write_bytes(trained["user"].read_bytes())
    state = torch.load(trained["good"], weights_only=True)
    for w in (k for k in state["state_dict"] if k.startswith("net.weights.")):
        state["state_dict"][w][0].fill_(float("nan"))  # member 0: NaN weights, member 1 intact
    state["state_dict"]["population.best_member"] = torch.tensor(0)
    torch.save(state, tmp_path / "nan.ckpt")
    zen = torch.load(trained["good"], weights_only=True)
    zen["hyper_parameters"]["task"] = "this:s"  # importing it prints the Zen of Python
    torch.save(zen, tmp_path / "zen.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.ckpt")
    weights = torch.load(trained["good"], weights_only=True)  # what --checkpoint.save_weights_only writes
    for key in ("optimizer_states", "lr_schedulers", "loops", "callbacks"):
        weights.pop(key, None)
    torch.save(weights, tmp_path / "weights_only.ckpt")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "unknown_key.yaml").write_text("model:\n  bogus: 3\n")
    (tmp_path / "broken.yaml").write_text("model:\n  lr: [0.1\n")
    (tmp_path / "empty.yaml").write_text("# nothing here\n")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "list.yaml").write_text("- task\n- add\n")
    (tmp_path / "afile").write_text("a file, not a directory\n")
    return tmp_path


def snapshot(root: Path) -> dict[str, int | None]:
    """Every path under root: files with their modification time, directories as None."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns if p.is_file() else None) for p in root.rglob("*")}


ADD = ["fit", "--task", "add"]
CASES = [
    # (argv, exit code, the one line must match)
    # --- tasks, sizes, model and data values
    (["fit", "--task", "mul"], 2, r"unknown task 'mul'; valid tasks: abs, add, identity, max, min, negate, subtract"),
    ([*ADD, "--model.layer_sizes", "[1, 2, 1]"], 2, r"the first size must be 2"),
    ([*ADD, "--model.layer_sizes", "[2, 2, 2]"], 2, r"the last size must be 1"),
    ([*ADD, "--model.layer_sizes", "[2, -1, 1]"], 2, r"must be positive integers"),
    ([*ADD, "--model.layer_sizes", "2-3"], 2, r"the last size must be 1"),  # the dashed notation is parsed
    ([*ADD, "--model.lr", "0"], 2, r"model.lr must be a positive number, got 0"),
    ([*ADD, "--data.batch_size", "0"], 2, r"data.batch_size must be a positive integer, got 0"),
    ([*ADD, "--model.members", "0"], 2, r"model.members must be a positive integer, got 0"),
    ([*ADD, "--model.bogus", "1"], 2, r"unrecognized arguments: --model.bogus"),
    (["fit"], 2, r"fit needs --task NAME"),
    # --- user tasks: bad targets (10.3)
    (["fit", "--task", "custom_tasks:nan_target"], 2,
     r"task 'custom_tasks:nan_target' .*returned nan at input .*finite"),
    (["fit", "--task", "custom_tasks:wrong_shape"], 2,
     r"returned a tensor of shape \(64, 2\) for inputs of shape \(64,\)"),
    (["fit", "--task", "custom_tasks:int_target"], 2, r"returned a torch.int64 tensor; it must return a floating"),
    (["fit", "--task", "custom_tasks:python_scalar"], 2, r"returned float 1.0, not a tensor"),
    (["fit", "--task", "custom_tasks:raises"], 2, r"custom_tasks:raises' .*raised ZeroDivisionError: integer division"),
    (["fit", "--task", "custom_tasks:star_args"], 2, r"takes \*args, so its number of inputs is unknown; give it one"),
    # --- checkpoints
    ([*ADD, "--ckpt_path", "missing.ckpt"], 2, r"checkpoint missing.ckpt does not exist"),
    ([*ADD, "--checkpoint.every_n_train_steps", "700"], 2,
     r"--checkpoint.every_n_train_steps 700: circuits_pl writes checkpoints at every validation; to save every "
     r"700 SGD steps give --trainer.val_check_interval 700"),
    (["fit", "--ckpt_path", "weights_only.ckpt", "--trainer.max_steps", "400"], 2,
     r"weights_only.ckpt holds weights only \(--checkpoint.save_weights_only\): it cannot resume training"),
    (["validate", "--ckpt_path", "truncated.ckpt"], 2, r"truncated.ckpt is not a readable checkpoint"),
    (["validate", "--ckpt_path", "notes.txt"], 2, r"notes.txt is not a readable checkpoint"),
    (["validate", "--ckpt_path", "foreign.ckpt"], 2, r"is a checkpoint, but not of circuits_pl"),
    (["validate", "--ckpt_path", "good.ckpt", "--task", "add"], 2, r"is of task 'abs', not 'add': give --task abs"),
    (["validate", "--ckpt_path", "good.ckpt", "--model.layer_sizes", "[1, 4, 1]"], 2,
     r"holds a 1-2-1 network, not 1-4-1"),
    (["fit", "--ckpt_path", "good.ckpt", "--model.members", "5"], 2, r"has model.members 2, not 5"),
    # --- no code from checkpoints (10.1)
    (["validate", "--ckpt_path", "user.ckpt"], 2,
     r"user.ckpt is of your own task 'marker_tasks:double'; .*never imports code.*give --task marker_tasks:double"),
    (["predict", "--ckpt_path", "user.ckpt", "--task", "add"], 2,
     r"is of task 'marker_tasks:double', not 'add': give --task marker_tasks:double"),
    (["inspect", "user.ckpt"], 2, r"own task 'marker_tasks:double'.*give --task marker_tasks:double"),
    (["validate", "--ckpt_path", "zen.ckpt"], 2, r"zen.ckpt is of your own task 'this:s'; .*give --task this:s"),
    (["inspect", "zen.ckpt"], 2, r"zen.ckpt is of your own task 'this:s'"),
    # --- no silent untrained runs (10.2)
    (["test", "--task", "add"], 2, r"test needs --ckpt_path RUN/checkpoints/last.ckpt .*--ckpt_path untrained"),
    (["predict", "--task", "add"], 2, r"predict needs --ckpt_path .*--ckpt_path untrained"),
    (["validate", "--task", "abs"], 2, r"validate needs --ckpt_path"),
    ([*ADD, "--ckpt_path", "untrained"], 2, r"--ckpt_path untrained is for validate/test/predict"),
    # --- memory (10.4), against 4 GiB available
    ([*ADD, "--model.members", "10000000"], 2,
     r"needs about 33\d GiB of memory .* but 4 GiB is available; .*--model.members \d"),
    ([*ADD, "--model.members", "200000"], 2,
     r"needs about \d+(\.\d+)? GiB .*4 GiB is available.*--model.members [\d,]+"),
    ([*ADD, "--data.batch_size", "1000000000"], 2, r"needs about 5.\d+ TiB .*--data.batch_size \d"),
    ([*ADD, "--model.layer_sizes", "[2,100000,1]"], 2,
     r"needs about [\d.]+ GiB .*\(64 members of 2-100000-1, .*hidden width [\d,]+"),
    (["report", "--members", "100000000"], 2,
     r"needs about .* TiB of memory.*that fit, the rest unchanged: --members \d"),
    # --- file system (10.5)
    ([*ADD, "--trainer.default_root_dir", "afile"], 2, r"--trainer.default_root_dir afile is a file, not a directory"),
    ([*ADD, "--trainer.default_root_dir", "afile/runs"], 2, r"afile/runs is a file, not a directory \(its parent"),
    ([*ADD, "--checkpoint.dirpath", "afile"], 2, r"--checkpoint.dirpath afile is a file, not a directory"),
    (["report", "--tasks", "add", "--out", "afile"], 2, r"--out afile is a file, not a directory"),
    # --- Lightning-level values and configs (10.6)
    ([*ADD, "--trainer.val_check_interval", "0"], 2, r"interval 0 is not positive; give the number of SGD"),
    ([*ADD, "--trainer.val_check_interval", "0.5"], 2, r"val_check_interval 0.5 is a fraction of an epoch"),
    ([*ADD, "--trainer.val_check_interval", "1.0"], 2, r"val_check_interval 1.0 is a fraction of an epoch"),
    ([*ADD, "--trainer.max_steps", "-5"], 2, r"max_steps -5 is not a step count; give a positive number"),
    ([*ADD, "--trainer.max_steps", "0"], 2, r"max_steps 0 trains nothing; give a positive number"),
    ([*ADD, "--trainer.accelerator", "gpu"], 2, r"accelerator gpu: this machine has no CUDA GPU.*accelerator cpu"),
    ([*ADD, "--trainer.max_epochs", "-3"], 2, r"`max_epochs` must be a non-negative integer or -1"),
    ([*ADD, "--trainer.strategy", "bogus"], 2, r"invalid strategy name: `strategy='bogus'`.*Example choices: auto"),
    ([*ADD, "--checkpoint.every_n_train_steps", "-1"], 2, r"every_n_train_steps=-1. Must be >= 0"),
    ([*ADD, "--data.cone", "[1]"], 2, r"data.cone must be a non-zero direction with 2 entries"),
    ([*ADD, "--config", "unknown_key.yaml"], 2, r"does not accept option 'model.bogus'"),
    ([*ADD, "--config", "broken.yaml"], 2, r"Problems parsing config"),
    ([*ADD, "--config", "empty.yaml"], 2, r"config empty.yaml is empty; a config is a YAML mapping"),
    ([*ADD, "--config", "binary.yaml"], 2, r"config binary.yaml is not a text file"),
    ([*ADD, "--config=list.yaml"], 2, r"config list.yaml holds a list, not a YAML mapping"),
    ([*ADD, "--config", "nowhere.yaml"], 2, r"config nowhere.yaml does not exist"),
    (["inspect", "nan.ckpt"], 2, r"member 0 has non-finite \(NaN/inf\) weights.*members with finite weights: 1"),
    # --- loggers (10.7)
    ([*ADD, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.save_dir", "."], 2,
     r"TensorBoardLogger needs the tensorboard package.*pip install tensorboard"),
]


@pytest.mark.parametrize("argv, code, message", CASES, ids=[" ".join(a)[:70] for a, _, _ in CASES])
def test_bad_input_is_one_line_nonzero_and_touches_nothing(workdir, trained, capsys, monkeypatch, argv, code, message):
    if "gpu" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if "TensorBoardLogger" in " ".join(argv):  # as on a machine without it, wherever the test runs
        monkeypatch.setattr(preflight, "module_available", lambda name: False)
    before = snapshot(workdir)
    capsys.readouterr()
    assert call(argv, workdir) == code
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert "Traceback" not in captured.out + captured.err
    assert "Beautiful is better than ugly" not in captured.out  # `import this` never ran
    assert snapshot(workdir) == before  # nothing created, nothing touched
    assert not (trained["user_root"] / "IMPORTED").exists()  # no checkpoint imported the user's module


def test_a_user_task_checkpoint_loads_only_when_named(workdir, trained, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(trained["user_root"]))
    with pytest.raises(CircuitsError, match=r"own task 'marker_tasks:double'.*give task='marker_tasks:double'"):
        CircuitModule.load_from_checkpoint(workdir / "user.ckpt")
    assert not (trained["user_root"] / "IMPORTED").exists()
    module = CircuitModule.load_from_checkpoint(workdir / "user.ckpt", task="marker_tasks:double")  # named: imported
    assert module.task.name == "marker_tasks:double" and (trained["user_root"] / "IMPORTED").exists()
    (trained["user_root"] / "IMPORTED").unlink()
    sys.modules.pop("marker_tasks", None)
    assert call(["inspect", "user.ckpt", "--task", "marker_tasks:double", "--figures", "false"], workdir) == 0
    assert "Task marker_tasks:double" in capsys.readouterr().out
    (trained["user_root"] / "IMPORTED").unlink()
    sys.modules.pop("marker_tasks", None)


def test_untrained_weights_only_on_request(workdir, capsys):
    assert call(["test", "--task", "add", "--ckpt_path", "untrained", *QUIET], workdir) == 0
    assert "test/mse" in capsys.readouterr().out


def test_dashed_layer_sizes_are_the_readme_notation(workdir, capsys):
    assert call(["fit", "--task", "min", "--model.layer_sizes", "2-5-1", "--print_config"], workdir) == 0
    printed = capsys.readouterr().out
    assert re.search(r"layer_sizes:\n\s*- 2\n\s*- 5\n\s*- 1\n", printed), printed


def test_default_root_dir_wins_over_the_configs_logger(workdir, trained):
    config = trained["run"] / "config.yaml"
    assert call(["fit", "--config", config, "--trainer.default_root_dir", "other", "--trainer.max_steps", 100, *QUIET],
                workdir) == 0
    assert len(run_dirs(workdir / "other")) == 1 and not (workdir / "lightning_logs").exists()
    assert len(run_dirs(trained["run"].parent.parent)) == 1  # the first run's root got no new run


# ---------------------------------------------------------------------------------------------
# A read-only or full file system: a real one (a tmpfs mount) where we may mount, else permissions
# ---------------------------------------------------------------------------------------------
def _mount(path: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def read_only_dir(tmp_path, trained):
    """A read-only directory holding good.ckpt: a read-only tmpfs as root (root ignores permissions),
    else chmod 0555."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = _mount(ro, "size=4m")
    shutil.copy(trained["good"], ro / "good.ckpt")
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    else:
        ro.chmod(0o555)
        if os.access(ro, os.W_OK):
            pytest.skip("cannot make a read-only directory here (root without mount)")
    yield ro
    if mounted:
        subprocess.run(["umount", str(ro)], check=True)
    else:
        ro.chmod(0o755)


@pytest.mark.parametrize("argv", [
    ["fit", "--task", "add"],
    ["validate", "--ckpt_path", "good.ckpt"],
    ["report", "--tasks", "add"],
], ids=["fit", "validate", "report"])
def test_read_only_working_directory_is_one_line(read_only_dir, capsys, argv):
    before = snapshot(read_only_dir)
    capsys.readouterr()
    assert call(argv, read_only_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"error: cannot write to .*ro \((read-only file system|permission denied)\)",
                                       err[0]), err
    assert snapshot(read_only_dir) == before


def test_full_disk_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    if _mount(full, "size=64k"):  # a real, tiny file system: a run's checkpoints need more
        pass
    else:
        usage = collections.namedtuple("usage", "total used free")  # shutil.disk_usage's fields
        monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**20, 2**20 - 4096, 4096))
    try:
        capsys.readouterr()
        assert call(["fit", "--task", "add", *QUIET], full) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(r"error: .*full has \d+ KiB free, and --trainer.default_root_dir \. needs "
                                           r"about .* MiB", err[0]), err
        assert list(full.iterdir()) == []
    finally:
        if os.path.ismount(full):
            subprocess.run(["umount", str(full)], check=True)
