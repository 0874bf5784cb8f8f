"""The real CLI, in-process: outputs of a run, checkpoint reuse, predict, configs, errors."""

import csv
from pathlib import Path

import pytest
import torch
from conftest import results, run_dirs

from circuits_pl.module import CircuitModule

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]


def test_fit_add_leaves_a_complete_run_and_validate_reuses_it(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "add", "--model.members", 8, "--trainer.max_steps", 3000, *QUIET)
    (run,) = run_dirs(tmp_path)
    for name in ("config.yaml", "hparams.yaml", "metrics.csv", "results.json", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("best-step=*.ckpt"))
    res = results(run)
    assert res["per_member"]["val_mse"][res["best_member"]] < 1e-6
    out = capsys.readouterr().out
    assert "Starting validation MSE" in out and "Final weights (member" in out
    assert f"{res['found']}/8 members found the exact circuit (95% Wilson CI" in out
    assert f"; {res['solved']}/8 members solved (CI" in out

    run_cli("validate", "--ckpt_path", run / "checkpoints" / "last.ckpt", *QUIET)
    out = capsys.readouterr().out
    assert "val/mse" in out
    assert len(run_dirs(tmp_path)) == 2  # a new run directory: the first run is untouched


def test_resume_takes_the_architecture_from_the_checkpoint_and_the_lr_from_the_command(run_cli, tmp_path):
    run_cli("fit", "--task", "abs", "--model.members", 3, "--model.lr", 0.02, "--trainer.max_steps", 500, *QUIET)
    ckpt = run_dirs(tmp_path)[0] / "checkpoints" / "last.ckpt"
    run_cli("fit", "--ckpt_path", ckpt, "--trainer.max_steps", 800, "--stop.when", "never", *QUIET)  # no --task
    run_cli("fit", "--ckpt_path", ckpt, "--model.lr", 0.05, "--trainer.max_steps", 800, "--stop.when", "never", *QUIET)
    kept, changed = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in run_dirs(tmp_path)[1:])
    for state, lr in ((kept, 0.02), (changed, 0.05)):
        assert state["hyper_parameters"]["members"] == 3 and state["hyper_parameters"]["task"] == "abs"
        assert state["optimizer_states"][0]["param_groups"][0]["lr"] == lr == state["hyper_parameters"]["lr"]
        assert state["global_step"] == 800


def test_load_from_checkpoint_alone_maps_inputs_to_outputs(run_cli, tmp_path):
    run_cli("fit", "--task", "subtract", "--model.members", 4, "--trainer.max_steps", 3000, *QUIET)
    module = CircuitModule.load_from_checkpoint(run_dirs(tmp_path)[0] / "checkpoints" / "last.ckpt")
    x = torch.tensor([[0.5, -0.25], [-1.0, 0.75], [3.0, 1.0]])
    with torch.no_grad():
        torch.testing.assert_close(module(x), (x[:, :1] - x[:, 1:]), rtol=0, atol=1e-4)
    other = CircuitModule.load_from_checkpoint(run_dirs(tmp_path)[0] / "checkpoints" / "last.ckpt", member=3)
    assert other.selected_member == 3


def test_predict_writes_predictions_of_the_chosen_member(run_cli, tmp_path):
    run_cli("fit", "--task", "abs", "--model.members", 4, "--trainer.max_steps", 1000, "--stop.when", "never",
            *QUIET)
    ckpt = run_dirs(tmp_path)[0] / "checkpoints" / "last.ckpt"
    run_cli("predict", "--ckpt_path", ckpt, "--model.member", 2, "--data.predict_points", 11, *QUIET)
    rows = list(csv.DictReader((run_dirs(tmp_path)[1] / "predictions.csv").open()))
    assert len(rows) == 11 and set(rows[0]) == {"x1", "target", "prediction"}
    # member 2's net by plain arithmetic on the checkpoint's weight matrices, not through the module
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    w1, w2 = (state[f"net.groups.0.weights.{layer}"][2].double() for layer in (0, 1))
    x = torch.tensor([[float(r["x1"])] for r in rows], dtype=torch.float64)
    expected = ((x @ w1.T).clamp(min=0) @ w2.T).flatten().tolist()
    assert len(set(expected)) > 5  # not a constant: the points span the input range
    assert [float(r["prediction"]) for r in rows] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [float(r["target"]) for r in rows] == pytest.approx([abs(float(r["x1"])) for r in rows])


@pytest.mark.parametrize(
    "task, seed, expected",
    [
        ("identity", 0, ["[[-0.0075,  0.5364]]", "[[-0.5820],\n [-0.5204]]"]),
        ("negate", 1, ["[[ 0.5153, -0.4414]]", "[[-0.1371],\n [ 0.3319]]"]),
        ("add", 0, ["[[-0.0053, -0.5820],\n [ 0.3793, -0.5204]]", "[[-0.2723],\n [ 0.1896]]"]),
    ],
)
def test_initial_weights_print_as_in_the_notebook(run_cli, capsys, task, seed, expected):
    run_cli("fit", "--task", task, "--seed_everything", seed, "--model.members", 1, "--model.lr", 1e-4,
            "--trainer.max_steps", 100, *QUIET)
    out = capsys.readouterr().out
    start = out.index("Initial weights:")
    block = out[start: out.index("Starting validation MSE")]
    assert f"hidden_layer_0:\n{expected[0]}\n\noutput_layer:\n{expected[1]}" in block


def test_runs_without_a_logger_still_get_their_own_directory(run_cli, tmp_path):
    for _ in range(2):  # Lightning would write both into tmp_path itself, and the second would abort
        run_cli("fit", "--task", "abs", "--model.members", 2, "--trainer.max_steps", 200, "--trainer.logger", "false",
                *QUIET)
    first, second = run_dirs(tmp_path)
    for run in (first, second):
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert not (run / "metrics.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lightning_logs"]


def test_checkpointing_can_be_switched_off(run_cli, tmp_path):
    run_cli("fit", "--task", "abs", "--model.members", 2, "--trainer.max_steps", 200,
            "--trainer.enable_checkpointing", "false", *QUIET)
    (run,) = run_dirs(tmp_path)
    assert (run / "results.json").is_file() and not (run / "checkpoints").exists()


def test_a_task_module_in_the_working_directory_is_importable(run_cli, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_study_tasks.py").write_text("def hypot(a, b):\n    return (a * a + b * b).sqrt()\n")
    # the console script `circuits-pl` does not put the working directory on sys.path; `python -m` does
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    run_cli("fit", "--task", "my_study_tasks:hypot", "--model.members", 2, "--trainer.max_steps", 200, *QUIET)
    assert "network 2-4-1" in capsys.readouterr().out


def test_unknown_command_lists_the_valid_ones(run_cli, capsys):
    run_cli("train", "--task", "add", expect=2)
    assert capsys.readouterr().err.strip() == (
        "error: unknown command 'train'; valid commands: fit, validate, test, predict, inspect, report")


def test_a_run_stopped_by_its_budget_is_not_reported_as_stopped_when_solved(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "min", "--model.members", 4, "--trainer.max_steps", 1000, *QUIET)
    assert results(run_dirs(tmp_path)[0])["stopped_when_solved"] is False
    assert "Stopped once solved" not in capsys.readouterr().out
