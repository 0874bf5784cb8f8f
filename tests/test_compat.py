"""The private Lightning APIs in circuits_pl.compat still behave as relied on."""

import lightning.pytorch as pl
import torch

from circuits_pl.compat import count_optimizer_steps


class _Manual(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        count_optimizer_steps(self.optimizers(), 7)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(10, 1), batch_size=1)


def test_count_optimizer_steps_advances_global_step():
    trainer = pl.Trainer(max_steps=21, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(_Manual())
    assert trainer.global_step == 21  # three batches of 7 counted steps, then max_steps stops it
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 3
