"""The bad-input matrix: each case is one line ``error: ...`` naming the fix, a non-zero exit, no
traceback, and not one file or directory created or touched (a snapshot of the tree before/after).

One trained checkpoint of a built-in task and one of a user task are made once per session; each
case gets copies of them (and of damaged files) in its own working directory.
"""

from __future__ import annotations

import collections
import os
import pickle
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
    adam_root = tmp_path_factory.mktemp("adam")
    assert call(["fit", "--task", "abs", "--model.members", 2, "--model.optimizer", "adam", "--trainer.max_steps", 100,
                 *QUIET], adam_root) == 0
    # user task modules that cannot be imported (outside the case's directory: importing writes __pycache__)
    broken = tmp_path_factory.mktemp("broken_tasks")
    (broken / "syntax_task.py").write_text("def f(a:\n    return a\n")
    (broken / "raising_task.py").write_text("raise RuntimeError('no settings file found')\ndef f(a):\n    return a\n")
    (broken / "exiting_task.py").write_text("import sys\nsys.exit(3)\ndef f(a):\n    return a\n")
    return {"good": good / "checkpoints" / "last.ckpt", "run": good, "user": user_run / "checkpoints" / "last.ckpt",
            "user_root": user_root, "adam": run_dirs(adam_root)[0] / "checkpoints" / "last.ckpt", "broken": broken}


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
    for w in (k for k in state["state_dict"] if k.startswith("net.groups.0.weights.")):
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
    (tmp_path / "adam.ckpt").write_bytes(trained["adam"].read_bytes())
    for name, damage in DAMAGES.items():
        state = torch.load(trained["good"], weights_only=True)
        damage(state)
        torch.save(state, tmp_path / f"{name}.ckpt")
    (tmp_path / "flipped.ckpt").write_bytes(flip_a_bit(ckpt, "net.groups.0.weights.0"))
    (tmp_path / "pickle.ckpt").write_bytes(pickle.dumps(_Exploit()))  # a plain pickle that runs code
    torch.save({"state_dict": {}, "x": _Exploit()}, tmp_path / "pickle_zip.ckpt")  # the same, in torch's zip
    monkeypatch.syspath_prepend(str(trained["broken"]))
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "unknown_key.yaml").write_text("model:\n  bogus: 3\n")
    (tmp_path / "broken.yaml").write_text("model:\n  lr: [0.1\n")
    (tmp_path / "empty.yaml").write_text("# nothing here\n")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "list.yaml").write_text("- task\n- add\n")
    (tmp_path / "afile").write_text("a file, not a directory\n")
    return tmp_path


class _Exploit:
    """Unpickling it calls print (any callable could be os.system): weights_only=True must refuse it."""

    def __reduce__(self):
        return (print, ("PWNED: code from a checkpoint ran",))


def _nan_weights(state: dict) -> None:
    for key in [k for k in state["state_dict"] if k.startswith("net.groups.0.weights.")]:
        state["state_dict"][key].fill_(float("nan"))


DAMAGES = {  # name -> what a damaged (or edited) checkpoint has wrong
    "members_two": lambda s: s["hyper_parameters"].update(members="two"),
    "sizes_none": lambda s: s["hyper_parameters"].update(layer_sizes=None),
    "state_list": lambda s: s.update(state_dict=list(s["state_dict"].values())),
    "missing_key": lambda s: s["state_dict"].pop("population.val_history"),
    "extra_key": lambda s: s["state_dict"].update(bogus=torch.zeros(2)),
    "bad_shape": lambda s: s["state_dict"].update({"population.val_history": torch.zeros(3, 2)}),
    "all_nan": _nan_weights,
}


def flip_a_bit(data: bytes, key: str) -> bytes:
    """The checkpoint ``data`` with one bit flipped inside the stored bytes of state_dict[``key``]."""
    import io
    import struct
    import zipfile

    state = torch.load(io.BytesIO(data), weights_only=True)["state_dict"][key]
    wanted = state.numpy().tobytes()
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = next(i for i in archive.infolist() if "/data/" in i.filename and archive.read(i) == wanted)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + 2  # the third byte of the first weight
    out = bytearray(data)
    out[at] ^= 0x40
    return bytes(out)


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
    ([*ADD, "--model.lr", "inf"], 2, r"^error: --model.lr must be a finite number, got inf$"),  # said "a number"
    ([*ADD, "--data.batch_size", "0"], 2, r"data.batch_size must be a positive integer, got 0"),
    ([*ADD, "--model.members", "0"], 2, r"model.members must be a positive integer, got 0"),
    ([*ADD, "--model.bogus", "1"], 2, r"unrecognized arguments: --model.bogus 1$"),  # nothing close: no guess
    # an option's name without its section, or misspelt: the option meant (fit has sections, report old names)
    ([*ADD, "--members", "4"], 2, r"unrecognized arguments: --members 4 \(did you mean --model.members\? see "),
    ([*ADD, "--max_steps=300"], 2, r"--max_steps=300 \(did you mean --trainer.max_steps\?"),
    ([*ADD, "--lr", "0.1"], 2, r"did you mean --model.lr or --sweep.lr\?"),
    ([*ADD, "--trainer.max_stepz", "3"], 2, r"did you mean --trainer.max_steps\?"),
    (["validate", "--member", "3"], 2, r"did you mean --model.member\? see .* validate --help\)"),
    # no abbreviations: `report --model.member 3` ran a 3-seed study as --model.members 3
    (["report", "--tasks", "abs", "--model.member", "3"], 2, r"--model.member 3 \(did you mean --model.members\?"),
    (["fit", "--ta", "abs"], 2, r"unrecognized arguments: --ta abs \(did you mean --task\?"),
    ([*ADD, "--trainer.max_step", "3"], 2, r"did you mean --trainer.max_steps\?"),
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
    (["report", "--model.members", "100000000"], 2,
     r"needs about .* TiB of memory.*that fit, the rest unchanged: --model.members \d"),
    # --- report's study (issue 22): sweep values, launchers, resume
    (["report", "--tasks", "abs", "--sweep.lr", "0"], 2, r"--sweep.lr '0' must be positive numbers joined by commas"),
    (["report", "--tasks", "abs", "--sweep.lr", "-0.1,0.1"], 2,
     r"argument --sweep.lr: expected one argument \(see .*--help\)"),
    (["report", "--tasks", "abs", "--sweep.lr=-0.1,0.1"], 2, r"--sweep.lr '-0.1,0.1' must be positive numbers"),
    (["report", "--tasks", "abs", "--sweep.sizes", "1-0-1"], 2, r"--sweep.sizes item '1-0-1' needs input-hidden...-1"),
    (["report", "--tasks", "abs", "--sweep.sizes", "1-4"], 2, r"--sweep.sizes item '1-4' needs input-hidden...-1"),
    (["report", "--tasks", "abs", "--sweep.sizes", "3-4-1"], 2,
     r"--sweep.sizes item 3-4-1 starts with 3 inputs; the tasks take 1"),
    (["report", "--tasks", "abs", "--sweep.init_scale", "0"], 2, r"--sweep.init_scale '0' must be positive numbers"),
    (["report", "--tasks", "abs", "--sweep.init_scale", "0.5,nan"], 2,
     r"--sweep.init_scale '0.5,nan' must be positive"),
    (["report", "--tasks", "abs", "--ci_width", "1.5"], 2, r"--ci_width must be a width between 0 and 1"),
    (["report", "--tasks", "abs", "--max_members", "8"], 2, r"--max_members caps the rounds of --ci_width"),
    (["report", "--tasks", "abs", "--launcher", "pbs"], 2, r"argument --launcher: invalid choice: 'pbs'"),
    (["report", "--tasks", "abs", "--launcher", "slurm", "--slurm.time", "0"], 2, r"--slurm.time must be a positive"),
    (["report", "--resume", "nowhere"], 2, r"--resume nowhere: no study.json there"),
    (["report", "--resume", "nowhere", "--sweep.sizes", "1-4-1"], 2, r"--resume continues the study as it was started; "
                                                                r"drop --sweep.sizes"),
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
    (["validate", "--ckpt_path", "untrained"], 2,  # said "needs --task NAME ... or --ckpt_path", which was given
     r"validate --ckpt_path untrained needs --task NAME \(one of abs, .*\): the untrained net of which task$"),
    (["report", "--config", "nowhere.yaml"], 2, r"config nowhere.yaml does not exist; give a YAML file"),
    (["report", "--config", "."], 2, r"config \. is a directory; give a YAML file"),  # said "does not exist"
    (["inspect", "nan.ckpt"], 2, r"member 0 has non-finite \(NaN/inf\) weights.*members with finite weights: 1"),
    # --- loggers (10.7)
    ([*ADD, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.save_dir", "."], 2,
     r"TensorBoardLogger needs the tensorboard package.*pip install tensorboard"),
    # --- round 3 (issue 19): values that ended in tracebacks or ran silently
    ([*ADD, "--seed_everything", "-1"], 2, r"--seed_everything -1 is out of range; give an integer from 0 to "
                                           r"4294967295"),
    ([*ADD, "--seed_everything", "99999999999999999999"], 2, r"--seed_everything 99999999999999999999 is out of range"),
    ([*ADD, "--seed_everything", "abc"], 2, r"--seed_everything must be an integer from 0 to 4294967295, got abc"),
    ([*ADD, "--trainer.devices", "-5"], 2, r"--trainer.devices -5 is not a number of devices; give a positive"),
    ([*ADD, "--trainer.devices", "many"], 2, r"--trainer.devices many is not a number of devices"),
    ([*ADD, "--trainer.accumulate_grad_batches", "4"], 2,
     r"accumulate_grad_batches 4: circuits_pl takes every SGD step itself.*--data.batch_size \(e.g. 4000\)"),
    ([*ADD, "--trainer.gradient_clip_val", "1.0"], 2,
     r"gradient_clip_val 1.0: circuits_pl's hand-derived SGD step does not clip gradients"),
    ([*ADD, "--trainer.limit_train_batches", "10"], 2, r"limit_train_batches 10(\.0)?: the training stream is endless"),
    ([*ADD, "--trainer.overfit_batches", "1"], 2, r"overfit_batches 1(\.0)?: circuits_pl trains on fresh inputs"),
    ([*ADD, "--trainer.barebones", "true"], 2, r"barebones true turns off the logging and the checkpoints"),
    (["fit", "--task", "syntax_task:f"], 2,
     r"importing module 'syntax_task' of task 'syntax_task:f' raised SyntaxError: '\(' was never closed \(line 1 of "
     r".*syntax_task.py\)"),
    (["fit", "--task", "raising_task:f"], 2,
     r"importing module 'raising_task' .* raised RuntimeError: no settings file"),
    (["fit", "--task", "exiting_task:f"], 2, r"importing module 'exiting_task' of task 'exiting_task:f' called "
                                             r"sys.exit\(3\)"),
    ([*ADD, "--trainer.max_steps", "-1", "--stop.when", "never"], 2,
     r"max_steps -1 with --stop.when never would train forever; give a number of SGD steps, or --stop.when best"),
    ([*ADD, "--trainer.limit_val_batches", "0"], 2, r"limit_val_batches 0(\.0)?: the validation set is one batch"),
    ([*ADD, "--trainer.limit_val_batches", "0.5"], 2, r"limit_val_batches 0.5: the validation set is one batch"),
    ([*ADD, "--trainer.log_every_n_steps", "-5"], 2, r"log_every_n_steps -5 is negative; .*\(0: no train logging\)"),
    ([*ADD, "--trainer.max_steps", "0"], 2, r"max_steps 0 trains nothing; .*with --stop.when best or all\)$"),
    ([*ADD, "--trainer.val_check_interval", "1e9"], 2,
     r"val_check_interval 1e\+09 is a float, which Lightning reads as a fraction of an epoch .*: 1000000000$"),
    ([*ADD, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"], 2,  # no save_dir: the run's root
     r"TensorBoardLogger needs the tensorboard package"),
    ([*ADD, "--model.layer_sizes", "abc"], 2,
     r"--model.layer_sizes must be a list of positive integers like \[2, 3, 1\] \(or 2-3-1\).*, got abc$"),
    ([*ADD, "--model.layer_sizes", "[2,3.5,1]"], 2, r"--model.layer_sizes must be a list of positive integers.*got "
                                                  r"\[2, 3.5, 1\]$"),
    ([*ADD, "--stop.when", "solved"], 2, r"--stop.when must be one of best, all, never, got solved"),
    # --- damaged, tampered and non-finite checkpoints: refused before anything is written
    (["validate", "--ckpt_path", "members_two.ckpt"], 2, r"members_two.ckpt is damaged: its members is 'two', not a "
                                                         r"positive integer"),
    (["validate", "--ckpt_path", "sizes_none.ckpt"], 2, r"sizes_none.ckpt is damaged: its layer_sizes are None"),
    (["inspect", "state_list.ckpt"], 2, r"state_list.ckpt is damaged: its state_dict is not a mapping"),
    (["validate", "--ckpt_path", "missing_key.ckpt"], 2,
     r"missing_key.ckpt is damaged: its state_dict lacks population.val_history"),
    (["test", "--ckpt_path", "extra_key.ckpt"], 2,
     r"extra_key.ckpt is damaged: its state_dict has unknown entries bogus"),
    (["fit", "--ckpt_path", "bad_shape.ckpt"], 2,
     r"bad_shape.ckpt is damaged: population.val_history has shape \(3, 2\), not \(8, 2\)"),
    (["inspect", "bad_shape.ckpt"], 2, r"bad_shape.ckpt is damaged: population.val_history has shape \(3, 2\)"),
    (["validate", "--ckpt_path", "flipped.ckpt"], 2,
     r"checkpoint flipped.ckpt is damaged: its record archive/data/\d+ fails its CRC-32 check"),
    (["inspect", "flipped.ckpt"], 2, r"flipped.ckpt is damaged: its record .* fails its CRC-32 check"),
    (["validate", "--ckpt_path", "all_nan.ckpt"], 2,
     r"all_nan.ckpt: member \d has non-finite \(NaN/inf\) weights, so nothing to validate; no member has finite"),
    (["predict", "--ckpt_path", "nan.ckpt"], 2,
     r"nan.ckpt: member 0 has non-finite .* so nothing to predict; members with finite weights: 1 \(pick one with "
     r"--model.member\)"),
    (["fit", "--ckpt_path", "all_nan.ckpt", "--trainer.max_steps", "400"], 2,
     r"all_nan.ckpt: every member has non-finite \(NaN/inf\) weights, so there is nothing to train"),
    (["validate", "--ckpt_path", "notes.txt"], 2, r"notes.txt is not a readable checkpoint: not a zip archive"),
    (["validate", "--ckpt_path", "pickle.ckpt"], 2, r"pickle.ckpt is not a readable checkpoint: not a zip archive"),
    (["inspect", "pickle_zip.ckpt"], 2,
     r"pickle_zip.ckpt is not a readable checkpoint \(truncated, or not a .ckpt file: Weights only load failed"),
    # --- typed options win on resume, or are refused in one line
    (["fit", "--ckpt_path", "adam.ckpt", "--model.optimizer", "sgd", "--trainer.max_steps", "400"], 2,
     r"the checkpoint was trained with --model.optimizer adam, not sgd: its optimizer state cannot continue"),
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
    assert "PWNED" not in captured.out + captured.err  # no code from a checkpoint ran
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
    said = float(re.search(r"test/mse\s+([-\d.e]+)", capsys.readouterr().out).group(1))
    # member 0 as the notebook builds it (manual_seed(0), nn.Linear layers) on the run's test set, untrained
    from circuits_pl.data import CircuitDataModule

    x, y = CircuitDataModule(task="add").fixed_set("test").tensors
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        assert said == pytest.approx(float((net(x) - y).square().mean()), rel=1e-6)


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


def test_predict_says_its_run_directory_and_a_finite_member_can_be_chosen(workdir, capsys):
    assert call(["predict", "--ckpt_path", "nan.ckpt", "--model.member", 1, *QUIET], workdir) == 0
    out = capsys.readouterr().out
    assert "Run directory: lightning_logs/version_0" in out
    assert (workdir / "lightning_logs" / "version_0" / "predictions.csv").is_file()


@pytest.mark.parametrize("missing, message", [
    ("submitit", r"--launcher slurm needs submitit, which is not installed: pip install 'circuits_pl\[slurm\]'"),
    ("sbatch", r"--launcher slurm needs SLURM's sbatch and srun on PATH, which are not here: run report on the "
               r"cluster's login node, or use --launcher local"),
])
def test_launcher_slurm_without_submitit_or_sbatch_is_one_line_and_writes_nothing(workdir, capsys, monkeypatch,
                                                                                 missing, message):
    if missing == "submitit":
        monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError, as when absent
    else:
        pytest.importorskip("submitit")
        monkeypatch.setenv("PATH", str(workdir / "no_slurm_here"))
    before = snapshot(workdir)
    capsys.readouterr()
    assert call(["report", "--tasks", "abs", "--launcher", "slurm"], workdir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert snapshot(workdir) == before


def test_a_directory_given_as_a_checkpoint_names_the_last_ckpt_inside_it(tmp_path):
    """A run's checkpoints/ directory was answered with .../checkpoints/checkpoints/last.ckpt (fresh-user check)."""
    from circuits_pl.checkpoint_checks import load_checked_checkpoint

    ckpts = tmp_path / "lightning_logs" / "version_3" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"")
    for given in (ckpts, ckpts.parent, tmp_path):
        with pytest.raises(CircuitsError, match=rf"^{re.escape(str(given))} is a directory; give a checkpoint file, "
                                                rf"e.g. {re.escape(str(ckpts / 'last.ckpt'))}$"):
            load_checked_checkpoint(given)
    with pytest.raises(CircuitsError, match=r"e\.g\. .*/empty/checkpoints/last\.ckpt$"):  # nothing inside: the layout
        load_checked_checkpoint((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_an_unknown_key_in_a_config_file_names_the_option_meant(tmp_path, capsys, monkeypatch):
    """'Subcommand 'fit' does not accept option 'model.memberz'' said nothing of what is valid (fresh-user check)."""
    from circuits_pl.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["circuits_pl"])  # else pytest's own arguments reach LightningCLI
    (tmp_path / "typo.yaml").write_text("task: abs\nmodel:\n  memberz: 3\n")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "typo.yaml"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: config key model.memberz is not an option of fit (did you mean model.member or model.members? "
        "see python -m circuits_pl fit --help)"]
    assert list(tmp_path.iterdir()) == [tmp_path / "typo.yaml"]  # nothing written
