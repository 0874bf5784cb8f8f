"""Private Lightning APIs circuits_pl relies on still behave as it assumes."""

import inspect


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
