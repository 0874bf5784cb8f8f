"""Member parallelism on CPU (gloo): each rank trains its own members; nothing depends on the world size."""

import subprocess
import sys
import time

import pytest
import torch
from conftest import results, run_dirs

from circuits_pl.strategy import member_share

FIT = ["fit", "--task", "add", "--model.members", "7", "--model.lr", "0.1", "--data.batch_size", "200",
       "--stop.when", "never", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
       "--figures", "false"]


def _fit(cwd, *args, devices=1):
    cmd = [sys.executable, "-m", "circuits_pl", *FIT, "--trainer.devices", str(devices), *map(str, args)]
    if devices > 1:
        cmd += ["--trainer.strategy", "ddp"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr  # the process group is closed before exit
    return proc


def _same(a, b):
    ca, cb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (a, b))
    assert ca["global_step"] == cb["global_step"]
    for key, value in ca["state_dict"].items():
        assert torch.equal(value.nan_to_num(-7.0), cb["state_dict"][key].nan_to_num(-7.0)), key
    sa, sb = (c["optimizer_states"][0]["state"] for c in (ca, cb))  # the rule's state: every member's
    assert sa.keys() == sb.keys()
    for p in sa:
        for key, value in sa[p].items():
            assert torch.equal(value, sb[p][key]), (p, key)
    ta, tb = ca["timeline"], cb["timeline"]  # recorded after the member sync, on every member
    assert ta["steps"].tolist() == tb["steps"].tolist() and ta["names"] == tb["names"]
    assert torch.equal(ta["codes"], tb["codes"]) and torch.equal(ta["val_mse"].nan_to_num(-7.0),
                                                                tb["val_mse"].nan_to_num(-7.0))
    ra, rb = results(a), results(b)
    assert ra["per_member"] == rb["per_member"]
    assert ra["timeline"] == rb["timeline"]


def test_member_shares_cover_every_member_once():
    for members in (1, 2, 7, 64):
        for world in (1, 2, 3, 8):
            shares = [member_share(members, world, r) for r in range(world)]
            covered = [k for s in shares for k in range(members)[s]]
            assert covered == list(range(members))
            sizes = [len(range(members)[s]) for s in shares]
            assert max(sizes) - min(sizes) <= 1


def test_a_strategy_given_by_class_path_is_kept():
    """config.yaml of a DDP run holds the strategy as a class_path: it passes through as it is."""
    from jsonargparse import Namespace

    from circuits_pl.cli import member_parallel

    given = Namespace(class_path="circuits_pl.strategy.MemberParallelStrategy", init_args=Namespace())
    for devices in ("2", "1", "auto"):
        assert member_parallel(given, devices, 1) is given
    assert member_parallel("ddp", "2", 1).class_path == "circuits_pl.strategy.MemberParallelStrategy"
    assert member_parallel("auto", "1", 1) == "auto"


@pytest.mark.parametrize("members", [7, pytest.param(8, marks=pytest.mark.slow)])  # uneven and even shares
def test_two_ranks_train_every_member_exactly_as_one_process(tmp_path, members):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _fit(tmp_path / "one", "--trainer.max_steps", 2000, "--model.members", members)
    two = _fit(tmp_path / "two", "--trainer.max_steps", 2000, "--model.members", members, devices=2)
    assert two.stdout.count("Final weights") == 1  # printed once, by rank 0
    (one_run,) = run_dirs(tmp_path / "one")
    (two_run,) = run_dirs(tmp_path / "two")  # results.json, metrics.csv written once
    _same(one_run, two_run)


@pytest.mark.slow
@pytest.mark.parametrize("resume_devices", [1, 2])
def test_a_run_saved_on_two_ranks_resumes_on_any_number(tmp_path, resume_devices):
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    rule = ["--model.optimizer", "momentum", "--model.momentum", 0.9]  # a rule with per-member state
    _fit(tmp_path / "whole", "--trainer.max_steps", 2000, *rule)
    _fit(tmp_path / "parts", "--trainer.max_steps", 1000, *rule, devices=2)
    (first,) = run_dirs(tmp_path / "parts")
    # each resume picks its own default block size (1000 steps under DDP, fewer on one process): the
    # weights, the rule's state, results and validation schedule are those of the run that never stopped
    # resumed the way an interrupt says to ("Resume with: ... fit --config RUN/config.yaml --ckpt_path ..."):
    # config.yaml names the strategy by class_path (it once crashed the CLI: an unhashable Namespace)
    # and holds the rule (momentum)
    cmd = [sys.executable, "-m", "circuits_pl", "fit", "--config", first / "config.yaml", "--ckpt_path",
           first / "checkpoints" / "last.ckpt", "--trainer.max_steps", 2000]
    if resume_devices == 1:
        cmd += ["--trainer.devices", 1]
    proc = subprocess.run(list(map(str, cmd)), cwd=tmp_path / "parts", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Device: cpu{', 2 processes' if resume_devices == 2 else ''} (" in proc.stdout
    (whole,) = run_dirs(tmp_path / "whole")
    _same(whole, run_dirs(tmp_path / "parts")[1])


@pytest.mark.slow
def test_two_nodes_of_one_process_each_train_like_one_process(tmp_path):
    """Multi-node as Lightning documents it (MASTER_ADDR/MASTER_PORT/NODE_RANK, --trainer.num_nodes),
    both "nodes" on this machine."""
    import os
    import socket

    (tmp_path / "one").mkdir()
    (tmp_path / "nodes").mkdir()
    _fit(tmp_path / "one", "--trainer.max_steps", 1000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "circuits_pl", *FIT, "--trainer.max_steps", "1000", "--trainer.devices", "1",
           "--trainer.num_nodes", "2", "--trainer.strategy", "ddp"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path / "nodes", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "NODE_RANK": str(node)})
             for node in (0, 1)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    (one,) = run_dirs(tmp_path / "one")
    (nodes,) = run_dirs(tmp_path / "nodes")  # node 1 shares node 0's directory here and writes nothing
    _same(one, nodes)


def test_a_divergence_every_rank_raises_is_said_once(capsys, monkeypatch):
    """Every rank raises TrainingDiverged at the same validation: only rank 0 prints the line."""
    from lightning.pytorch.utilities import rank_zero_only

    from circuits_pl.cli import _run_guarded
    from circuits_pl.errors import TrainingDiverged

    def diverge():
        raise TrainingDiverged("training diverged at step 3")

    for rank, said in ((1, ""), (0, "error: training diverged at step 3\n")):
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        with pytest.raises(SystemExit) as exit_:
            _run_guarded(diverge)
        assert exit_.value.code == 1
        assert capsys.readouterr().err == said


def test_a_collective_error_that_comes_before_the_dead_ranks_status_is_one_line(capsys, monkeypatch):
    """A DDP rank stopped by a signal while starting closes its sockets a moment before its exit status
    can be read: rank 0's collective fails first ("Connection closed by peer"). Rank 0 waits for the
    status and says the rank's one line with 128 + the signal, not gloo's traceback (fault_injection.py
    --mode ddp found it: exit 1 and a 60-line traceback)."""
    from circuits_pl import signals
    from circuits_pl.cli import _run_guarded

    child = subprocess.Popen([sys.executable, "-c", "import os, time; time.sleep(0.5); os._exit(143)"])
    monkeypatch.setattr(signals, "_children", [child])
    monkeypatch.setitem(signals._state, "rank_message", lambda rank, status: f"SIGTERM: rank {rank} exited {status}")
    monkeypatch.setitem(signals._state, "ending", False)

    def collective():
        raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:16768")

    assert signals.failed_child() is None  # the status is not there yet
    with pytest.raises(SystemExit) as exit_:
        _run_guarded(collective, whole_process=False)
    assert exit_.value.code == 143
    assert capsys.readouterr().err == "SIGTERM: rank 1 exited 143\n"


def test_the_rank_watcher_makes_no_line_while_the_run_stops_itself(monkeypatch):
    """Rank 0 stopped by a signal: rank 1 exits 130 with it. The watcher thread must only poll: the line
    (which reads the trainer's tensors) made in a daemon thread while the interpreter shut down aborted
    the exit ("terminate called without an active exception", exit -6; fault_injection.py --mode ddp,
    a core file showed the watcher's frame freeing a tensor during finalization)."""
    from circuits_pl import signals

    made = []
    child = subprocess.Popen([sys.executable, "-c", "import os; os._exit(130)"])
    child.wait()
    monkeypatch.setattr(signals, "_children", [child])
    monkeypatch.setitem(signals._state, "ending", True)  # this process is on its way out
    signals.watch_children(lambda rank, status: made.append((rank, status)) or "line")
    time.sleep(1.0)  # the watcher polls every 0.2 s
    assert made == []
    assert signals.failed_child() == (130, "line")  # the main thread's path still says it


def test_rank_zeros_own_error_is_not_blamed_on_ranks_that_finished(monkeypatch):
    """failed_child(wait=...) returns at once when every rank has finished well: nothing to blame."""
    from circuits_pl import signals

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    monkeypatch.setattr(signals, "_children", [child])
    start = time.monotonic()
    assert signals.failed_child(wait=30.0) is None
    assert time.monotonic() - start < 5.0


def test_fit_leaves_a_callers_gc_freeze_alone(run_cli):
    import gc

    args = ["fit", "--task", "add", "--model.members", "2", "--trainer.max_steps", "200",
            "--trainer.val_check_interval", "100", "--trainer.enable_progress_bar", "false", "--figures", "false"]
    run_cli(*args)
    assert gc.get_freeze_count() == 0  # fit's own freeze is undone
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        run_cli(*args)
        assert gc.get_freeze_count() > frozen // 2  # the caller's is not (a few frozen objects die)
    finally:
        gc.unfreeze()


@pytest.mark.slow
def test_every_member_diverging_on_two_ranks_is_one_line_and_exit_1(tmp_path):
    cmd = [sys.executable, "-m", "circuits_pl", *FIT, "--model.members", "4", "--model.lr", "50",
           "--trainer.max_steps", "2000", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.count("error: training diverged at step") == 1, proc.stderr[-3000:]
    assert "sync_dist" not in proc.stderr  # Lightning's advice does not apply: every rank holds every member
    assert "terminate called" not in proc.stderr
    one = subprocess.run(cmd[:-4], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert one.returncode == 1
    said = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert said == [line for line in one.stderr.splitlines() if line.startswith("error: ")]  # the same step


def test_the_predict_grid_is_served_in_the_same_batches_on_every_rank():
    from torch.utils.data import DataLoader, TensorDataset

    from circuits_pl.data import Batches

    x = torch.randn(10_000, 3)
    y = x.sum(1, keepdim=True)
    ours = list(DataLoader(Batches(x, y, batch_size=4096), batch_size=None))
    torch_s = list(DataLoader(TensorDataset(x, y), batch_size=4096, shuffle=False))
    assert len(ours) == len(torch_s) == 3
    for (a, b), (c, d) in zip(ours, torch_s):
        assert torch.equal(a, c) and torch.equal(b, d)


@pytest.mark.slow
def test_predict_on_two_ranks_writes_one_file_of_every_point(tmp_path):
    _fit(tmp_path, "--trainer.max_steps", 1000)
    (run,) = run_dirs(tmp_path)
    files = []
    for devices in (1, 2):
        cmd = [sys.executable, "-m", "circuits_pl", "predict", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
               "--trainer.accelerator", "cpu", "--trainer.devices", str(devices)]
        if devices > 1:
            cmd += ["--trainer.strategy", "ddp"]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("Predictions (1681 points") == 1, proc.stdout
        (out,) = run_dirs(tmp_path)[-1].glob("predictions*.csv")
        files.append(out.read_bytes())
    assert files[0] == files[1]


@pytest.mark.slow
def test_sigterm_to_rank_1_alone_stops_both_and_is_reported_as_sigterm(tmp_path):
    import os
    import signal
    from pathlib import Path

    cmd = [sys.executable, "-m", "circuits_pl", *FIT, "--model.members", "64", "--trainer.max_steps", "400000",
           "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                break
        (rank1,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(rank1), signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM: interrupted during training; checkpoint" in err and "Traceback" not in err
    assert err.count("SIGTERM received") == 1 and "SIGTERM received by another process" in err  # said once
    (run,) = run_dirs(tmp_path)
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 400_000 and f"holds step {step}" in err
