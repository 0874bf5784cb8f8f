"""The notebook's cells, run from configs/notebook: same initial weights, same final weights.

The training batches differ from the notebook's (it drew them from torch's global RNG), yet at
lr 1e-4 every cell ends where the notebook printed, to its 4 decimals: SGD noise averages out
over 300k steps. Slow: ~25-60 s per cell.
"""

from pathlib import Path

import pytest
import torch
from conftest import run_dirs

from circuits_pl.module import CircuitModule

ROOT = Path(__file__).resolve().parents[1]

# The notebook's printed final weights (each layer transposed) after 300k batches.
NOTEBOOK_FINAL = {
    "identity": ([[-0.9192, 1.0035]], [[-1.0872], [0.9957]]),
    "negate": ([[1.0627, -1.0206]], [[-0.9403], [0.9790]]),
    "abs": ([[1.0627, -1.0206]], [[0.9403], [0.9790]]),
    "add": ([[0.8511, -0.9304], [0.8522, -0.9291]], [[1.1742], [-1.0755]]),
    "subtract": ([[-0.8519, 0.9296], [0.8508, -0.9309]], [[-1.1746], [1.0750]]),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(NOTEBOOK_FINAL))
def test_notebook_cell_ends_where_the_notebook_did(run_cli, tmp_path, task):
    run_cli("fit", "--config", ROOT / "configs" / "notebook" / f"{task}.yaml",
            "--trainer.enable_progress_bar", "false", "--figures", "false")
    ckpt = run_dirs(tmp_path)[0] / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 300_000
    module = CircuitModule.load_from_checkpoint(ckpt)
    for got, want in zip(module.net.groups[0].weights, NOTEBOOK_FINAL[task]):
        torch.testing.assert_close(got[0].detach().T, torch.tensor(want), rtol=0, atol=2e-4)
