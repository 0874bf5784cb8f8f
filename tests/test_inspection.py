"""Reading circuits of real runs: inspect, results.json circuits, the Wilson interval."""

import math

import pytest
from conftest import assert_drawn, results, run_dirs

from circuits_pl.success import wilson_interval
from circuits_pl.tasks import BUILTIN_TASKS, get_task

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]


@pytest.mark.parametrize("task", sorted(BUILTIN_TASKS))
def test_inspect_reads_the_exact_circuit_of_a_solved_run(run_cli, tmp_path, capsys, task):
    run_cli("fit", "--task", task, *QUIET)  # defaults: 64 members, stop once one is solved
    (run,) = run_dirs(tmp_path)
    res = results(run)
    assert res["solved"] >= 1
    capsys.readouterr()
    run_cli("inspect", run)
    out = capsys.readouterr().out
    formulas = [c.formula.replace("-", "\u2212") for c in get_task(task).circuits]
    assert any(f"Circuit: matches the exact circuit {f} " in out for f in formulas), out
    assert "Homogeneity f(c·x) = c·f(x): OK" in out and "Solved: yes, by the exact MSE over [-1, 1]" in out
    assert "certified max error " in out and "Formula vs the net: certified max error " in out
    for name in ("losses.png", f"function_member{res['best_member']}.png", f"circuit_member{res['best_member']}.png"):
        assert_drawn(run / name)
    # results.json names the circuit of every solved member: a listed one, at these minimal sizes
    per = res["per_member"]
    listed = [c.formula.replace("-", "\u2212") for c in get_task(task).circuits]
    for k in range(res["members"]):
        if per["solved"][k]:
            assert per["exact"][k] and per["found"][k] and per["circuit"][k] in listed, per["circuit"][k]


def test_training_on_a_cone_reports_the_held_out_directions(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "add", "--data.cone", "[1, 0]", "--model.members", 16, "--trainer.max_steps", 3000,
            *QUIET)
    (run,) = run_dirs(tmp_path)
    res = results(run)
    best = res["best_member"]
    # a bias-free net that found r(a + b) - r(-a - b) on x1 >= 0 is exact on x1 < 0 too
    assert res["data"]["cone"] == [1.0, 0.0] and res["per_member"]["heldout_mse"][best] < 1e-9
    capsys.readouterr()
    run_cli("inspect", run, "--figures", "false")
    assert "Held-out directions (u·x < 0 for u = [1.0, 0.0]): MSE" in capsys.readouterr().out
    rows = (run / "metrics.csv").read_text()
    assert "test/heldout_mse" in rows.splitlines()[0]


def test_inspect_a_stuck_member_says_where_it_is_wrong(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "identity", "--model.members", 8, "--trainer.max_steps", 4000, "--stop.when", "never",
            *QUIET)
    (run,) = run_dirs(tmp_path)
    per = results(run)["per_member"]
    stuck = per["verdict"].index("stuck")
    assert per["circuit"][stuck] is None and per["val_mse"][stuck] > 0.1
    capsys.readouterr()
    run_cli("inspect", run / "checkpoints" / "last.ckpt", "--model.member", stuck, "--figures", "false")
    out = capsys.readouterr().out
    assert f"member {stuck} of 8" in out and "Circuit: matches no known circuit" in out
    assert "Where it is wrong: wrong where x " in out and "Worst inputs:" in out
    assert "Solved: no, by the exact MSE over [-1, 1] " in out
    assert not list(run.glob(f"*member{stuck}.png"))


@pytest.mark.parametrize("argv, message", [
    (["inspect", "nowhere"], r"checkpoint nowhere does not exist"),
    (["inspect", "."], r"holds no checkpoints/last.ckpt"),
    (["report", "--tasks", "mul"], r"unknown task 'mul'"),
    (["report", "--model.members", "0"], r"--model.members must be a positive integer"),
    (["report", "--config", "missing.yaml"], r"config missing.yaml does not exist; give a YAML file"),
])
def test_inspect_and_report_errors_are_one_line(run_cli, capsys, argv, message):
    import re

    run_cli(*argv, expect=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (31, 64), (64, 64)])
def test_wilson_interval_matches_the_closed_form(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)


def test_an_unfinished_member_is_approaching_its_circuit_in_fit_inspect_and_results(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "add", "--trainer.max_steps", 100, *QUIET)
    (run,) = run_dirs(tmp_path)
    res = results(run)
    best, per = res["best_member"], res["per_member"]
    assert not per["solved"][best] and per["test_mse"][best] > res["success_mse"] and not per["found"][best]
    assert per["exact"][best] is False and per["circuit"][best] == "r(a + b) \u2212 r(\u2212a \u2212 b)"
    assert "exact" in res["verdict_rules"]
    fit_out = capsys.readouterr().out
    run_cli("inspect", run, "--figures", "false")
    inspect_out = capsys.readouterr().out
    for out in (fit_out, inspect_out):
        (line,) = [s for s in out.splitlines() if s.startswith("Circuit: ")]
        assert "approaching the exact circuit r(a + b) \u2212 r(\u2212a \u2212 b)" in line, line
        assert "exactly" not in line and "not one listed" not in line


def test_results_json_the_circuit_line_and_inspect_decide_alike(run_cli, tmp_path, capsys):
    """One decision of solved and exact per member, everywhere: results.json, fit's printed Circuit/Solved
    lines and inspect (each member read through the CLI), all from the certified MSE over the box."""
    run_cli("fit", "--task", "add", "--model.members", 6, "--trainer.max_steps", 3000, "--stop.when", "never",
            *QUIET)
    out = capsys.readouterr().out
    (run,) = run_dirs(tmp_path)
    res = results(run)
    per = res["per_member"]
    assert res["decided_on"] == "exact MSE over [-1, 1]²" and res["certified_over"] == "[-1, 1]²"
    assert per["solved"] == [m < res["success_mse"] for m in per["box_mse"]]
    assert res["solved"] == sum(per["solved"]) and 0 < res["solved"] < 6  # both kinds present
    best = res["best_member"]
    fit_says = next(line for line in out.splitlines() if line.startswith("Solved: "))
    assert fit_says.startswith("Solved: yes" if per["solved"][best] else "Solved: no")
    for k in range(6):
        run_cli("inspect", run, "--model.member", k, "--figures", "false")
        said = capsys.readouterr().out
        assert f"Solved: {'yes' if per['solved'][k] else 'no'}, by the exact MSE over [-1, 1]² " in said
        assert f"certified max error {per['max_error'][k]:.2g} over [-1, 1]²" in said
        assert ("Circuit: matches the exact circuit" in said) == per["exact"][k]
        assert f"Formula vs the net: certified max error {per['formula_max_error'][k]:.2g}" in said
