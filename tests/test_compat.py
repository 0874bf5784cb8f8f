"""Every private-API shim in circuits_pl.compat still works with the installed Lightning."""

import inspect
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
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


def test_after_parse_runs_after_parsing_and_before_the_seed_and_instantiation(monkeypatch):
    """HookedLightningCLI.after_parse stands in for LightningCLI's private ``_parse_ckpt_path`` (no public
    hook runs between parsing and ``_set_seed``): CircuitsCLI checks --ckpt_path and runs every preflight
    check there, so a refusal is the only line on stderr (no "Seed set to 0") and comes before any class
    or directory exists. Checked by the order Lightning really calls them in."""
    from lightning.pytorch.cli import LightningCLI

    from circuits_pl.compat import HookedLightningCLI

    calls = []
    for name in ("parse_arguments", "_set_seed", "before_instantiate_classes", "instantiate_classes"):
        original = getattr(LightningCLI, name)
        monkeypatch.setattr(LightningCLI, name,
                            lambda self, *a, _n=name, _f=original, **k: (calls.append(_n), _f(self, *a, **k))[1])

    class Recording(HookedLightningCLI):
        def after_parse(self):
            calls.append("after_parse")

    monkeypatch.setattr(sys, "argv", ["circuits_pl"])  # pytest's own arguments are not the CLI's
    Recording(CircuitModule, CircuitDataModule, args=["--model.task", "add", "--data.task", "add",
                                                      "--seed_everything", "0"], run=False,
              trainer_defaults={"logger": False, "enable_checkpointing": False})
    assert calls == ["parse_arguments", "after_parse", "_set_seed", "before_instantiate_classes",
                     "instantiate_classes"]


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
    """circuits_pl.logger.RunLogger claims version_N atomically through HookedCSVLogger.next_version
    (CSVLogger._get_next_version)."""
    from circuits_pl.logger import RunLogger

    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)
    logger = RunLogger(save_dir=tmp_path)
    assert logger.version == 1 and (tmp_path / "lightning_logs" / "version_1").is_dir()


def test_model_checkpoint_still_records_its_last_save(tmp_path):
    from circuits_pl.compat import HookedModelCheckpoint

    cb = HookedModelCheckpoint(dirpath=tmp_path, filename="x", monitor=None)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb], default_root_dir=tmp_path)
    trainer.strategy.connect(CircuitModule(task="add"))
    assert last_save(cb)[0] == ""  # nothing saved yet
    cb.write_checkpoint(trainer, str(tmp_path / "x.ckpt"))
    assert last_save(cb) == (str(tmp_path / "x.ckpt"), 0) and (tmp_path / "x.ckpt").is_file()
    set_last_save(cb, "y.ckpt", 7)
    assert last_save(cb) == ("y.ckpt", 7)


@pytest.mark.filterwarnings("ignore:Using ModelCheckpoint with manual optimization")  # the steps are whole blocks
def test_every_save_of_model_checkpoint_goes_through_write_checkpoint(tmp_path):
    """HookedModelCheckpoint.write_checkpoint sees every save Lightning's ModelCheckpoint makes in a fit
    (top-k and last), through the private ``_save_checkpoint``."""
    from circuits_pl.compat import HookedModelCheckpoint

    class Recording(HookedModelCheckpoint):
        written: list[str] = []

        def write_checkpoint(self, trainer, filepath):
            self.written.append(filepath)
            super().write_checkpoint(trainer, filepath)

    cb = Recording(dirpath=tmp_path, filename="step-{step}", every_n_train_steps=7, save_top_k=-1, save_last=True)
    trainer = pl.Trainer(max_steps=21, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb], default_root_dir=tmp_path)
    trainer.fit(_CountingModule())
    saved = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert saved == sorted({Path(p).name for p in Recording.written}) and "last.ckpt" in saved
    assert "step-step=21.ckpt" in saved


def test_csv_logger_hooks_reach_its_writer_and_version(tmp_path):
    """HookedCSVLogger: next_version sees Lightning's pick, writer_class makes the writer (in the private
    ``experiment`` body), started_writer is ``_experiment``; record_new_keys fills ``metrics_keys``."""
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    from circuits_pl.compat import HookedCSVLogger, record_new_keys

    class Writer(ExperimentWriter):
        pass

    class Logger(HookedCSVLogger):
        writer_class = Writer
        seen: list[int] = []

        def next_version(self, version):
            self.seen.append(version)
            return version + 5

    (tmp_path / "lightning_logs" / "version_2").mkdir(parents=True)
    logger = Logger(save_dir=tmp_path)
    assert logger.version == 8 and Logger.seen == [3]
    assert logger.started_writer() is None
    logger.log_metrics({"b": 1.0, "a": 2.0}, step=0)
    writer = logger.started_writer()
    assert type(writer) is Writer and writer is logger.experiment
    record_new_keys(writer)
    assert writer.metrics_keys == ["a", "b", "step"]


def test_ddp_strategy_hands_its_launcher_to_replace_launcher():
    """HookedDDPStrategy.replace_launcher sees the launcher Lightning chose (``_configure_launcher``) and its
    answer is the one the strategy keeps; MemberParallelStrategy puts RankLauncher there (no process starts)."""
    from circuits_pl.compat import script_launcher
    from circuits_pl.interrupts import RankLauncher
    from circuits_pl.strategy import MemberParallelStrategy

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=MemberParallelStrategy(), logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    assert type(trainer.strategy.launcher) is RankLauncher
    assert issubclass(RankLauncher, script_launcher())


def test_start_child_ranks_finds_the_launchers_private_members():
    """compat.start_child_ranks calls ``_SubprocessScriptLauncher._call_children_scripts`` and reads ``procs``."""
    from lightning.fabric.plugins.environments import LightningEnvironment

    from circuits_pl.compat import script_launcher

    launcher = script_launcher()(LightningEnvironment(), num_processes=2, num_nodes=1)
    assert callable(launcher._call_children_scripts) and launcher.procs == []


def test_module_from_checkpoint_builds_what_load_from_checkpoint_builds(tmp_path):
    """compat.module_from_checkpoint runs Lightning's steps after its torch.load on a checkpoint already read:
    the same module, weights and hyper-parameters (the given ones over the saved) as load_from_checkpoint."""
    from circuits_pl.checkpoint_checks import load_checked_checkpoint
    from circuits_pl.compat import module_from_checkpoint

    trainer = pl.Trainer(max_steps=30, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, enable_checkpointing=False)
    trainer.fit(CircuitModule(task="add", members=4), CircuitDataModule(task="add", steps_per_batch=10))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    reference = CircuitModule.load_from_checkpoint(tmp_path / "run.ckpt", map_location="cpu", member=2)
    module = module_from_checkpoint(CircuitModule, load_checked_checkpoint(tmp_path / "run.ckpt"), member=2)
    assert type(module) is CircuitModule and module.selected_member == reference.selected_member == 2
    assert dict(module.hparams) == dict(reference.hparams)
    assert module.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():  # NaN: history slots not filled yet
        torch.testing.assert_close(module.state_dict()[key], value, rtol=0, atol=0, equal_nan=True)


def test_parser_actions_lists_a_parsers_options():
    from lightning.pytorch.cli import LightningArgumentParser

    from circuits_pl.compat import parser_actions

    parser = LightningArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    assert "threads" in [action.dest for action in parser_actions(parser)]


def test_quiet_lightning_warnings_silences_inside_and_restores_after():
    import warnings

    from circuits_pl.compat import quiet_lightning_warnings

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning_warnings():
            warnings.warn("The dirpath has changed from 'a' to 'b'", UserWarning, stacklevel=1)
        warnings.warn("The dirpath has changed from 'a' to 'b'", UserWarning, stacklevel=1)
    assert len(caught) == 1  # the one outside the block
    assert warnings.filters == before


def test_fast_result_logging_skips_lightnings_walk_only_when_nothing_moves(monkeypatch):
    """Lightning's _ResultMetric.to still walks the metric's state on every call (the cost the shim
    removes; Lightning issue #20388): inside the block a .to to the device the value is on returns at
    once, any other .to is Lightning's own, and the class is as before after the block."""
    from lightning.pytorch.trainer.connectors.logger_connector import result

    from circuits_pl.compat import fast_result_logging

    walks = []
    walk = result.apply_to_collection
    monkeypatch.setattr(result, "apply_to_collection", lambda *a, **k: walks.append(1) or walk(*a, **k))
    collection = result._ResultCollection(training=True)
    collection.log("training_step", "train/mse", torch.tensor(0.5), on_step=True, on_epoch=False, batch_size=1)
    metric = collection["training_step.train/mse"]
    original = result._ResultMetric.to

    walks.clear()
    metric.to(torch.device("cpu"))
    assert walks, "Lightning no longer walks the state: the shim is not needed"
    with fast_result_logging():
        walks.clear()
        assert metric.to(torch.device("cpu")) is metric and metric.to("cpu") is metric
        collection.log("training_step", "train/mse", torch.tensor(0.25), on_step=True, on_epoch=False, batch_size=1)
        assert walks == []
        metric.to(torch.float64)  # a dtype: Lightning's walk
        assert walks
    assert result._ResultMetric.to is original
    assert float(collection["training_step.train/mse"].value) == 0.25


def test_fast_result_logging_logs_what_lightning_logs(run_cli, tmp_path, monkeypatch):
    """metrics.csv and the loss curves' record are the same with Lightning's own logging."""
    import contextlib

    from circuits_pl import cli

    args = ["fit", "--task", "abs", "--model.members", 3, "--trainer.max_steps", 600, "--trainer.val_check_interval",
            200, "--trainer.log_every_n_steps", 100, "--trainer.enable_progress_bar", "false", "--figures", "false"]
    run_cli(*args, "--trainer.default_root_dir", "fast")
    monkeypatch.setattr(cli, "fast_result_logging", contextlib.nullcontext)
    run_cli(*args, "--trainer.default_root_dir", "lightning")
    fast, lightning = (next((tmp_path / root).glob("lightning_logs/version_*")) for root in ("fast", "lightning"))
    assert (fast / "metrics.csv").read_text() == (lightning / "metrics.csv").read_text()
    assert len((fast / "metrics.csv").read_text().splitlines()) > 6


def test_command_functions_are_subcommands_of_lightnings_root_and_run_before_the_seed(monkeypatch):
    """HookedLightningCLI adds command_functions beside fit/validate/test/predict on LightningCLI's own root
    parser (through its private ``_add_subcommands`` and jsonargparse's private ``_subcommands_action``),
    parses a dataclass parameter as ``--model.<field>``, and runs the function right after parsing:
    LightningCLI seeds and builds nothing for it."""
    from dataclasses import dataclass

    from lightning.pytorch.cli import LightningCLI

    from circuits_pl.compat import HookedLightningCLI

    @dataclass(frozen=True)
    class Pick:
        """Which.

        Args:
            member: the member
        """

        member: int | None = None

    ran = []

    def hello(path: str, model: Pick = Pick(), loud: bool = False, *, given: str = "") -> None:
        """Say hello: the first line

        What hello does.

        Args:
            path: where
            model: which member
            loud: shout
            given: passed by the CLI, not an option
        """
        ran.append((path, model, loud, given))

    calls = []
    for name in ("_set_seed", "instantiate_classes"):
        original = getattr(LightningCLI, name)
        monkeypatch.setattr(LightningCLI, name,
                            lambda self, *a, _n=name, _f=original, **k: (calls.append(_n), _f(self, *a, **k))[1])

    class WithHello(HookedLightningCLI):
        def command_functions(self):
            return {"hello": hello}

        def run_command_function(self, name, function, options):
            function(**options, given=name)

    monkeypatch.setattr(sys, "argv", ["circuits_pl"])
    cli = WithHello(CircuitModule, CircuitDataModule,
                    args=["hello", "run_dir", "--model.member", "3", "--loud", "true"],
                    parser_kwargs={"exit_on_error": False})
    assert ran == [("run_dir", Pick(member=3), True, "hello")]
    assert calls == [] and cli.subcommand == "hello" and not hasattr(cli, "trainer")
    choices = cli.parser._subcommands_action.choices
    assert list(choices) == ["fit", "validate", "test", "predict", "hello"]
    assert choices["hello"].description == "What hello does."
    from jsonargparse import ArgumentError

    with pytest.raises(ArgumentError, match="given"):  # keyword-only: not an option
        WithHello(CircuitModule, CircuitDataModule, args=["hello", "x", "--given", "y"],
                  parser_kwargs={"exit_on_error": False})
