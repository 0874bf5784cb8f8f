"""Every private-API shim in circuits_pl.compat still works with the installed Lightning."""

import yaml

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
