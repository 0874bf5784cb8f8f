"""The study: report's table, its CIs, parallel jobs equal to a serial run, the sweep's heat map."""

import argparse
import csv
import json
import math
from pathlib import Path

import pytest
from conftest import assert_drawn

from circuits_pl.report import make_study, plot_rates


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_report_tables_every_task_and_parallel_jobs_give_the_serial_results(run_cli, tmp_path):
    study = ["report", "--tasks", "abs,subtract", "--model.members", 16, "--trainer.max_steps", 2000]
    run_cli(*study, "--jobs", 2)
    run_cli(*study, "--jobs", 1)  # a second report: a new version_N, the first untouched
    parallel, serial = (list(csv.DictReader((tmp_path / "reports" / v / "report.csv").open()))
                        for v in ("version_0", "version_1"))
    assert [r["task"] for r in parallel] == ["abs", "subtract"] == [r["task"] for r in serial]
    verdicts = ("converged", "converging", "slow", "stuck", "too_early", "diverged")
    for row, twin in zip(parallel, serial):
        res = json.loads((tmp_path / row["run_dir"] / "results.json").read_text())
        assert res["per_member"] == json.loads((tmp_path / twin["run_dir"] / "results.json").read_text())["per_member"]
        assert res["members"] == 16 and res["steps"] == 2000 and not res["stopped_when_solved"]
        assert int(row["solved"]) == sum(res["per_member"]["solved"])
        assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx(
            _wilson_by_hand(int(row["solved"]), 16))
        assert (float(row["found_ci95_low"]), float(row["found_ci95_high"])) == pytest.approx(
            _wilson_by_hand(int(row["found"]), 16))
        assert sum(int(row[v]) for v in verdicts) == 16
        assert int(row["found"]) == sum(res["per_member"]["found"]) >= int(row["converged"])
    md = (tmp_path / "reports" / "version_0" / "report.md").read_text()
    assert "| abs | 1-2-1 | 0.1 | 2000 | " in md and "r(x) + r(\u2212x)" in md
    res = json.loads((tmp_path / parallel[0]["run_dir"] / "results.json").read_text())
    worst = max(e for e, exact in zip(res["per_member"]["max_error"], res["per_member"]["exact"]) if exact)
    assert f"certified max error {worst:.2g} over [-1, 1] (the largest of the exact members)" in md
    assert_drawn(tmp_path / "reports" / "version_0" / "report.png")


def test_sweep_cells_give_every_task_the_hidden_widths_and_draw_a_heat_map(tmp_path):
    args = argparse.Namespace(config=[], tasks="abs,min", sizes="2-2-1,2-8-1", lrs="0.03,0.1", init_scales=None)
    bases, cells = make_study(args)
    assert [b.task for b in bases] == ["abs", "min"]
    assert [(c.layer_sizes, c.lr, c.init_scale) for c in cells["abs"]] == [
        ((1, 2, 1), 0.03, 1.0), ((1, 2, 1), 0.1, 1.0), ((1, 8, 1), 0.03, 1.0), ((1, 8, 1), 0.1, 1.0)]
    assert cells["min"][0].layer_sizes == (2, 2, 1) and len(cells["min"]) == 4
    rows = [{"task": b.task, "layer_sizes": "-".join(map(str, c.layer_sizes)), "lr": c.lr, "members": 10,
             "found_rate": 0.5, "found_ci95_low": 0.2, "found_ci95_high": 0.8} for b in bases for c in cells[b.name]]
    assert_drawn(plot_rates(rows, tmp_path / "phase.png"))


def test_progress_lines_start_with_the_job_name_unpadded():
    from circuits_pl.report import progress_line

    row = {"job": "abs", "found": 10, "members": 32, "found_ci95_low": 0.18, "found_ci95_high": 0.49,
           "solved": 10, "median_solved_at": 1000.0, "circuits": "10× r(x) + r(−x)"}
    assert progress_line(row) == ("abs: 10/32 found the circuit (0.18–0.49), 10 solved, median at 1000 steps; "
                                  "10× r(x) + r(−x)")


def test_a_job_whose_members_are_all_too_early_says_so_not_no_exact_circuit(tmp_path):
    from circuits_pl.report import progress_line, write_markdown

    row = {"job": "min", "task": "min", "layer_sizes": "2-3-1", "lr": 0.1, "steps": 1000, "members": 16, "found": 0,
           "found_ci95_low": 0.0, "found_ci95_high": 0.19, "solved": 0, "ci95_low": 0.0, "ci95_high": 0.19,
           "median_solved_at": None, "converged": 0, "converging": 0, "slow": 0, "stuck": 0, "too_early": 16,
           "diverged": 0, "max_sparsity_error_solved": None, "circuits": "", "common_stuck": "", "run_dir": "r"}
    assert progress_line(row) == ("min: too early to tell: all 16 members had fewer than 3 validations; give more "
                                  "steps (--trainer.max_steps) or validate more often")
    write_markdown([row], tmp_path / "report.md", "report --tasks min")
    text = (tmp_path / "report.md").read_text()
    assert "- **min** (2-3-1, lr 0.1): too early to tell (fewer than 3 validations)" in text


def test_a_cell_without_a_certified_error_reports_without_one(tmp_path):
    from circuits_pl.report import write_markdown

    row = {"job": "add", "task": "add", "layer_sizes": "2-2-1", "lr": 0.1, "init_scale": 1.0, "steps": 2000,
           "members": 4, "found": 2, "found_ci95_low": 0.15, "found_ci95_high": 0.85, "solved": 2, "ci95_low": 0.15,
           "ci95_high": 0.85, "median_solved_at": 1000.0, "converged": 2, "converging": 0, "slow": 0, "stuck": 2,
           "too_early": 0, "diverged": 0, "max_sparsity_error_solved": 1e-6, "max_certified_error_exact": None,
           "certified_over": None, "circuits": "2× r(a + b) − r(−a − b)", "common_stuck": "2× y = 1.0·r(a + b)",
           "run_dir": "runs/add"}
    new = dict(row, job="add-new", max_certified_error_exact=3.4e-05, certified_over="[-1, 1]²")
    write_markdown([row, new], tmp_path / "report.md", "report")
    lines = (tmp_path / "report.md").read_text().splitlines()
    bullets = [ln for ln in lines if ln.startswith("- **add**")]
    assert bullets[0] == "- **add** (2-2-1, lr 0.1): 2× r(a + b) − r(−a − b); most common stuck: 2× y = 1.0·r(a + b)"
    assert bullets[1] == ("- **add** (2-2-1, lr 0.1): 2× r(a + b) − r(−a − b); certified max error 3.4e-05 over "
                          "[-1, 1]² (the largest of the exact members); most common stuck: 2× y = 1.0·r(a + b)")


def test_fits_forked_from_the_forkserver_give_what_plain_processes_give(run_cli, tmp_path, monkeypatch):
    """report's local fits are forked from a forkserver that imported torch and Lightning once
    (launch.ForkedFit); CIRCUITS_PL_FORK=0 starts each as ``python -m circuits_pl fit``. Same study, same numbers."""
    from circuits_pl import launch

    forked = []
    real = launch.ForkedFit.__init__

    def spy(self, args, log_path):
        forked.append(log_path)
        real(self, args, log_path)

    monkeypatch.setattr(launch.ForkedFit, "__init__", spy)
    study = ["report", "--tasks", "abs,add", "--model.members", 4, "--trainer.max_steps", 1000, "--jobs", 2]
    run_cli(*study)
    assert len(forked) == 2  # one fit per task
    monkeypatch.setenv("CIRCUITS_PL_FORK", "0")
    run_cli(*study)
    assert len(forked) == 2
    versions = [list(csv.DictReader((tmp_path / "reports" / v / "report.csv").open()))
                for v in ("version_0", "version_1")]
    for row, twin in zip(*versions):
        assert {k: v for k, v in row.items() if k != "run_dir"} == {k: v for k, v in twin.items() if k != "run_dir"}
        for a, b in zip(row["run_dir"].split(), twin["run_dir"].split()):
            assert (json.loads((tmp_path / a / "results.json").read_text())["per_member"]
                    == json.loads((tmp_path / b / "results.json").read_text())["per_member"])
    for log in forked:  # each forked fit's output went to its own log
        assert "Trained 1000 steps" in Path(log).read_text()
