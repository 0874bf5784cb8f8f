"""Every shipped config really runs: a short budget, two members, and the run is the config's.

(``--print_config`` alone builds nothing: a config with ``lr: -5`` or sizes that do not fit the
task would pass it.) The expected values are read from the YAML itself, independently of the CLI.
"""

import math
from pathlib import Path

import pytest
import yaml
from conftest import results, run_dirs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_shipped_config_runs_and_its_run_is_what_it_says(run_cli, tmp_path, capsys, config):
    spec = yaml.safe_load(config.read_text())
    run_cli("fit", "--config", config, "--trainer.max_steps", 200, "--model.members", 2, *QUIET)
    res = results(run_dirs(tmp_path)[0])
    model, data = spec.get("model", {}), spec.get("data", {})
    assert res["task"] == spec["task"] and res["steps"] == 200 and res["members_per_cell"] == 2
    if spec.get("sweep"):  # every combination is a cell
        axes = [str(v).split(",") if isinstance(v, str) else v for v in spec["sweep"].values() if v is not None]
        assert len(res["cells"]) == len(res["per_member"]["cell"]) // 2 == math.prod(map(len, axes))
    if model.get("layer_sizes"):
        assert res["layer_sizes"] == model["layer_sizes"]
    for key in ("lr", "bias"):
        if key in model:
            assert res[key] == model[key], key
    for key, value in data.items():
        if value is not None:
            assert res["data"][key] == value, key
    seed = model.get("init_seed")
    assert res["init_seed"] == (spec.get("seed_everything", 0) if seed is None else seed)
    assert "Final weights" in capsys.readouterr().out
    # the saved config.yaml runs again, as the README promises for resuming
    run_cli("fit", "--config", run_dirs(tmp_path)[0] / "config.yaml", "--trainer.max_steps", 100, *QUIET)
    assert results(run_dirs(tmp_path)[1])["task"] == spec["task"]
