"""The real CLI, in-process: outputs of a run, checkpoint reuse, predict, configs, errors."""

import csv
import re
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
    module = CircuitModule.load_from_checkpoint(ckpt, member=2)
    x = torch.tensor([[float(r["x1"])] for r in rows])
    with torch.no_grad():
        expected = module(x).flatten().tolist()
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


CKPT_ERRORS = [
    (["fit", "--task", "mul"], r"unknown task 'mul'; valid tasks: abs, add, identity, max, min, negate, subtract"),
    (["fit", "--task", "add", "--model.layer_sizes", "[1, 2, 1]"], r"the first size must be 2"),
    (["fit", "--task", "add", "--model.layer_sizes", "[2, 2, 2]"], r"the last size must be 1"),
    (["fit", "--task", "add", "--model.layer_sizes", "[2, -1, 1]"], r"must be positive integers"),
    (["fit", "--task", "add", "--model.lr", "0"], r"model.lr must be a positive number, got 0"),
    (["fit", "--task", "add", "--data.batch_size", "0"], r"data.batch_size must be a positive integer, got 0"),
    (["fit", "--task", "add", "--model.members", "0"], r"model.members must be a positive integer, got 0"),
    (["fit", "--task", "add", "--ckpt_path", "missing.ckpt"], r"checkpoint missing.ckpt does not exist"),
    (["validate", "--ckpt_path", "truncated.ckpt"], r"truncated.ckpt is not a readable checkpoint"),
    (["validate", "--ckpt_path", "notes.txt"], r"notes.txt is not a readable checkpoint"),
    (["validate", "--ckpt_path", "foreign.ckpt"], r"is a checkpoint, but not of circuits_pl"),
    (["validate", "--ckpt_path", "good.ckpt", "--task", "add"], r"is of task 'abs', not 'add'"),
    (["validate", "--ckpt_path", "good.ckpt", "--model.layer_sizes", "[1, 4, 1]"], r"holds a 1-2-1 network, not 1-4-1"),
    (["fit", "--ckpt_path", "good.ckpt", "--model.members", "5"], r"has model.members 2, not 5"),
    (["fit", "--task", "add", "--config", "unknown_key.yaml"], r"does not accept option 'model.bogus'"),
    (["fit", "--task", "add", "--config", "broken.yaml"], r"Problems parsing config"),
    (["fit", "--task", "add", "--model.bogus", "1"], r"unrecognized arguments: --model.bogus"),
    (["fit"], r"fit needs --task NAME"),
]


@pytest.fixture
def bad_inputs(run_cli, tmp_path):
    """A finished run plus damaged and foreign files, in tmp_path (the CLI's working directory)."""
    run_cli("fit", "--task", "abs", "--model.members", 2, "--trainer.max_steps", 200, *QUIET)
    (good,) = run_dirs(tmp_path)
    ckpt = good / "checkpoints" / "last.ckpt"
    (tmp_path / "good.ckpt").write_bytes(ckpt.read_bytes())
    (tmp_path / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:2000])
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.ckpt")
    (tmp_path / "unknown_key.yaml").write_text("model:\n  bogus: 3\n")
    (tmp_path / "broken.yaml").write_text("model:\n  lr: [0.1\n")
    return good


@pytest.mark.parametrize("argv, message", CKPT_ERRORS, ids=[" ".join(a)[:60] for a, _ in CKPT_ERRORS])
def test_bad_input_is_one_line_nonzero_and_touches_nothing(run_cli, tmp_path, capsys, bad_inputs, argv, message):
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    run_cli(*argv, expect=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no run directory created, no file of the earlier run touched


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
