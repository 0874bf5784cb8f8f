"""DDP on CPU (gloo): two ranks of batch B train exactly like one rank of batch 2B."""

import subprocess
import sys

import torch
from conftest import reference_sgd, results, run_dirs

from circuits_pl.data import UniformBlocks
from circuits_pl.module import CircuitModule
from circuits_pl.tasks import get_task


def test_two_ranks_of_batch_b_train_like_one_of_batch_2b(tmp_path):
    steps, batch, lr = 300, 100, 0.05
    cmd = [sys.executable, "-m", "circuits_pl", "fit", "--task", "add", "--model.members", "2",
           "--model.lr", str(lr), "--data.batch_size", str(batch), "--trainer.max_steps", str(steps),
           "--stop.when", "never", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr  # the process group is closed before exit
    (run,) = run_dirs(tmp_path)
    assert results(run)["steps"] == steps
    trained = CircuitModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")

    task = get_task("add")
    ranks = [iter(UniformBlocks(task, batch, steps_per_batch=1, seed=0, rank=r)) for r in (0, 1)]
    batches = []
    for _ in range(steps):
        (x0, y0), (x1, y1) = next(ranks[0]), next(ranks[1])
        assert not torch.equal(x0, x1)  # each rank draws its own inputs
        batches.append((torch.cat([x0[0], x1[0]]), torch.cat([y0[0], y1[0]])))
    for k in range(2):
        torch.manual_seed(k)
        init = [torch.nn.Linear(2, 2, bias=False).weight.detach(), torch.nn.Linear(2, 1, bias=False).weight.detach()]
        want = reference_sgd(init, batches, lr)
        for got, w in zip([w[k] for w in trained.net.weights], want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)
