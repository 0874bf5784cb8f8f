"""report's study: a task's whole diagram in one fit (members split, not cells), seeds added in rounds
until the intervals are tight, resume; every cell's numbers checked against a fit of that cell alone."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import results, run_dirs

from circuits_pl.study import split_seeds
from circuits_pl.success import wilson_interval

TESTS = Path(__file__).parent
SAME = ("val_mse", "found", "solved", "solved_at", "verdict", "formula", "circuit", "max_error")  # per member


def _rows(report: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((report / "report.csv").open()))


def _members_of(row: dict[str, str], root: Path) -> dict[str, list]:
    """The cell's members, from the results.json of every fit that trained some of them, in seed order."""
    got: dict[int, dict] = {}
    for run in row["run_dir"].split():
        res = json.loads((root / run / "results.json").read_text())
        first = int(res["init_seed"]) - 0  # seeds of this fit: init_seed + k (the study's seed is 0 here)
        for info in res["cells"]:
            if ("-".join(map(str, info["layer_sizes"])), info["lr"], info["init_scale"]) == \
                    (row["layer_sizes"], float(row["lr"]), float(row["init_scale"])):
                for k in range(info["members"]):
                    m = info["first_member"] + k
                    got[first + k] = {f: res["per_member"][f][m] for f in SAME}
    return {f: [got[k][f] for k in sorted(got)] for f in SAME}


def _alone(run_cli, tmp_path: Path, name: str, sizes: str, lr: str, scale: str, members: int, steps: int) -> dict:
    """fit of one cell alone, as report ran every cell before (seed 0: member k is seed k)."""
    root = tmp_path / "alone" / name
    run_cli("fit", "--task", "abs", "--model.layer_sizes", json.dumps([int(n) for n in sizes.split("-")]),
            "--model.lr", lr, "--model.init_scale", scale, "--model.members", members, "--seed_everything", 0,
            "--trainer.max_steps", steps, "--stop.when", "never", "--trainer.default_root_dir", root,
            "--trainer.enable_progress_bar", "false", "--figures", "false")
    (run,) = run_dirs(root)
    return results(run)


def _check_row_against(row: dict[str, str], members: dict[str, list], alone: dict) -> None:
    """report.csv's row and its members equal the fit of the cell alone (its own summary, not report's)."""
    assert members == {f: alone["per_member"][f] for f in SAME}
    n = alone["members"]
    assert int(row["members"]) == n
    assert int(row["found"]) == alone["found"] and int(row["solved"]) == alone["solved"]
    assert (float(row["found_ci95_low"]), float(row["found_ci95_high"])) == pytest.approx(alone["found_rate_ci95"])
    median = alone["median_solved_at"]
    assert (float(row["median_solved_at"]) if row["median_solved_at"] else None) == median
    for verdict in ("converged", "converging", "slow", "stuck", "too_early", "diverged"):
        assert int(row[verdict]) == alone["per_member"]["verdict"].count(verdict.replace("_", " "))


def test_split_seeds_is_even_and_consecutive():
    assert split_seeds(0, 10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert split_seeds(8, 2, 5) == [(8, 1), (9, 1)]


def test_a_task_diagram_is_one_fit_split_by_members_and_each_cell_equals_its_fit_alone(run_cli, tmp_path):
    run_cli("report", "--tasks", "abs", "--sweep.sizes", "1-2-1,1-3-1", "--sweep.lr", "0.1,0.3",
            "--sweep.init_scale", "0.5,1", "--model.members", 4, "--trainer.max_steps", 1500, "--jobs", 2)
    out = tmp_path / "reports" / "version_0"
    # two fits for the task's 8 cells: seeds 0-1 and 2-3 of every cell (members split, not cells)
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == ["abs_seeds0-1", "abs_seeds2-3"]
    for fit in ("abs_seeds0-1", "abs_seeds2-3"):
        (run,) = run_dirs(out / "runs" / fit)
        assert len(results(run)["cells"]) == 8 and results(run)["members"] == 16
    rows = _rows(out)
    assert [(r["layer_sizes"], r["lr"], r["init_scale"]) for r in rows] == [
        (s, lr, sc) for s in ("1-2-1", "1-3-1") for lr in ("0.1", "0.3") for sc in ("0.5", "1.0")]
    assert list(rows[0])[2:5] == ["layer_sizes", "lr", "init_scale"] and all(r["members"] == "4" for r in rows)
    for i, (sizes, lr, scale) in enumerate([("1-2-1", "0.3", "0.5"), ("1-3-1", "0.1", "1.0")]):
        row = next(r for r in rows if (r["layer_sizes"], r["lr"], r["init_scale"]) == (sizes, lr, scale))
        assert len(row["run_dir"].split()) == 2
        alone = _alone(run_cli, tmp_path, str(i), sizes, lr, scale, 4, 1500)
        _check_row_against(row, _members_of(row, tmp_path), alone)
    md = (out / "report.md").read_text()
    assert "| abs | 1-2-1 | 0.3 | 0.5 | 1500 |" in md


def _wide(row: dict[str, str], width: float) -> bool:
    low, high = wilson_interval(int(row["found"]), int(row["members"]))
    return high - low > width


def _start(args: list, cwd: Path) -> subprocess.Popen:
    path = os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "circuits_pl", *map(str, args)], cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ci_width_rounds_add_seeds_to_wide_cells_and_resume_continues_an_interrupted_study(run_cli, tmp_path):
    # 60k steps: round 1's fit lasts long enough to be stopped after its first validation (at 6000 it sometimes
    # ended first). 4 seeds: 0/4 or 4/4 found is 0.49 wide, 1-3 of 4 is 0.65-0.70: those cells get 4 more (max 8)
    study = ["report", "--tasks", "abs", "--sweep.sizes", "1-2-1,1-8-1", "--model.members", 4, "--max_members", 8,
             "--ci_width", 0.6, "--trainer.max_steps", 60_000, "--jobs", 1]
    proc = _start(study, tmp_path)
    out = tmp_path / "reports" / "version_0"
    log = out / "runs" / "abs_seeds4-7.log"  # round 1's fit
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not (log.exists() and "step " in log.read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # round 1 is training
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "round 1: 1 of 2 cells still have a found-rate interval wider than 0.6: 4 more seeds each" in err
    assert "report --resume" in (out / "report.md").read_text()
    (first,) = run_dirs(out / "runs" / "abs_seeds0-3")
    finished = (first / "results.json").stat().st_mtime_ns
    assert (out / "runs" / "abs_seeds4-7" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()

    run_cli("report", "--resume", out)
    assert run_dirs(out / "runs" / "abs_seeds0-3") == [first]  # round 0 was not trained again
    assert (first / "results.json").stat().st_mtime_ns == finished
    resumed = run_dirs(out / "runs" / "abs_seeds4-7")
    assert len(resumed) == 2 and results(resumed[-1])["steps"] == 60_000  # continued from its last.ckpt
    rows = _rows(out)
    assert sorted(int(r["members"]) for r in rows) == [4, 8]  # the narrow cell stopped at 4, the wide one took 8
    for row in rows:
        assert not _wide(row, 0.6) or int(row["members"]) == 8
        assert len(row["run_dir"].split()) == (1 if row["members"] == "4" else 2)
        alone = _alone(run_cli, tmp_path, row["layer_sizes"], row["layer_sizes"], "0.1", "1.0", int(row["members"]),
                       60_000)
        _check_row_against(row, _members_of(row, tmp_path), alone)
    md = (out / "report.md").read_text()
    assert "wider than 0.6, up to 8 seeds per cell (2 rounds)" in md and "Interrupted" not in md
