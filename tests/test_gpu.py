"""The GPU path: a short fit, its resume and inspect on cuda, checked against the CPU run.

Skipped where torch sees no CUDA device (this project's CI has none); run on a GPU machine.
"""

import pytest
import torch
from conftest import results, run_dirs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false", "--stop.when", "never"]


def test_fit_resume_and_inspect_on_cuda_agree_with_the_cpu(run_cli, tmp_path, capsys):
    args = ["--task", "min", "--model.members", 16, "--data.batch_size", 500, *QUIET]
    run_cli("fit", *args, "--trainer.max_steps", 1000, "--trainer.accelerator", "cpu")
    run_cli("fit", *args, "--trainer.max_steps", 500, "--trainer.accelerator", "gpu", "--trainer.devices", 1)
    half = run_dirs(tmp_path)[1]
    run_cli("fit", "--config", half / "config.yaml", "--ckpt_path", half / "checkpoints" / "last.ckpt",
            "--trainer.max_steps", 1000)
    cpu, _, gpu = run_dirs(tmp_path)
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu") for r in (cpu, gpu))
    for key in ("net.groups.0.weights.0", "net.groups.0.weights.1"):
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-3, atol=1e-4)
    assert results(cpu)["solved"] == results(gpu)["solved"]
    capsys.readouterr()
    run_cli("inspect", gpu, "--figures", "false")
    assert "Circuit:" in capsys.readouterr().out
