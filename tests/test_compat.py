"""Every private-API shim in circuits_pl.compat still works with the installed Lightning."""

import inspect

import lightning.pytorch as pl
import torch
import yaml

from circuits_pl.compat import count_optimizer_steps, last_save, set_last_save
from circuits_pl.data import CircuitDataModule
from circuits_pl.module import CircuitModule


def test_record_resolved_reaches_hparams_yaml_and_drops_the_instantiator(tmp_path):
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    # what LightningCLI does when it builds the module: _instantiator rides along in the hparams
    cli_instantiator = "lightning.pytorch.cli.instantiate_module"
    with _given_hyperparameters_context({"task": "add", "layer_sizes": None}, cli_instantiator):
        module = CircuitModule(task="add", layer_sizes=None)
    assert module.hparams["layer_sizes"] == [2, 2, 1] and module.hparams_initial["layer_sizes"] == [2, 2, 1]
    assert "_instantiator" not in module.hparams and "_instantiator" not in module.hparams_initial
    data = CircuitDataModule(task="add")
    assert isinstance(data.hparams_initial["stream_seed"], int)
    from lightning.pytorch.core.saving import save_hparams_to_yaml

    save_hparams_to_yaml(tmp_path / "hparams.yaml", module.hparams_initial)
    saved = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
    assert saved["layer_sizes"] == [2, 2, 1] and "_instantiator" not in saved


class _CountingModule(pl.LightningModule):
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
    trainer.fit(_CountingModule())
    assert trainer.global_step == 21  # three batches of 7 counted steps, then max_steps stops it
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 3
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    assert progress.total.ready == progress.total.completed == 21  # the one-call path, not the loop
    assert hasattr(progress, "increment_by")


def test_lightning_cli_calls_parse_ckpt_path_after_parsing_and_before_the_seed_and_instantiation():
    """CircuitsCLI overrides LightningCLI's private ``_parse_ckpt_path`` (no public hook runs between
    parsing and ``_set_seed``): it checks --ckpt_path and runs every preflight check there, so a refusal
    is the only line on stderr (no "Seed set to 0") and comes before any class or directory exists."""
    from lightning.pytorch.cli import LightningCLI

    source = inspect.getsource(LightningCLI.__init__)
    calls = ["self.parse_arguments(", "self._parse_ckpt_path()", "self._set_seed()",
             "self.before_instantiate_classes()", "self.instantiate_classes()"]
    positions = [source.find(call) for call in calls]
    assert -1 not in positions, dict(zip(calls, positions))
    assert positions == sorted(positions), dict(zip(calls, positions))


def test_lightning_cli_internals_used_by_the_cli_still_exist():
    """compat.cli_parser/cli_get/cli_instantiate_trainer call these private LightningCLI methods."""
    from lightning.pytorch.cli import LightningCLI

    for name, params in (("_parser", ["self", "subcommand"]), ("_get", ["self", "config", "key", "default"]),
                         ("_instantiate_trainer", ["self", "config", "callbacks"])):
        assert list(inspect.signature(getattr(LightningCLI, name)).parameters) == params, name


def test_restored_batches_counts_the_batches_of_a_fit():
    trainer = pl.Trainer(max_steps=21, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(_CountingModule())
    from circuits_pl.compat import restored_batches

    assert restored_batches(trainer) == 3


def test_csv_logger_still_picks_versions_through_get_next_version(tmp_path):
    """circuits_pl.logger.RunLogger overrides CSVLogger._get_next_version to claim version_N atomically."""
    from circuits_pl.logger import RunLogger

    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)
    logger = RunLogger(save_dir=tmp_path)
    assert logger.version == 1 and (tmp_path / "lightning_logs" / "version_1").is_dir()


def test_model_checkpoint_still_records_its_last_save(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    cb = ModelCheckpoint(dirpath=tmp_path, filename="x", monitor=None)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb], default_root_dir=tmp_path)
    trainer.strategy.connect(CircuitModule(task="add"))
    assert last_save(cb)[0] == ""  # nothing saved yet
    cb._save_checkpoint(trainer, str(tmp_path / "x.ckpt"))
    assert last_save(cb) == (str(tmp_path / "x.ckpt"), 0)
    set_last_save(cb, "y.ckpt", 7)
    assert last_save(cb) == ("y.ckpt", 7)
