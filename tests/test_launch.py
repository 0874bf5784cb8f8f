"""report's fits through submitit: its local executor end to end, and the generated sbatch script run
under stand-in SLURM commands (tests/slurm_stub.py) with a preemption mid-fit; every cell checked
against a fit of that cell alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_stub
from conftest import results, run_dirs
from test_study import _alone, _check_row_against, _members_of, _rows

pytest.importorskip("submitit")

TESTS = Path(__file__).parent
# 50k steps: a fit of it lasts long enough to be preempted after its first validation (at 5000 steps the
# fit sometimes ended before the stub's signal came, and the test found one run, not two)
STUDY = ["report", "--tasks", "abs", "--sweep.sizes", "1-2-1,1-4-1", "--model.members", 4,
         "--trainer.max_steps", 50_000, "--jobs", 2]


def _check_against_fits_alone(run_cli, tmp_path: Path, out: Path) -> None:
    rows = _rows(out)
    assert [r["layer_sizes"] for r in rows] == ["1-2-1", "1-4-1"]
    for row in rows:
        assert len(row["run_dir"].split()) == 2  # seeds 0-1 and 2-3, one job each
        alone = _alone(run_cli, tmp_path, row["layer_sizes"], row["layer_sizes"], "0.1", "1.0", 4, 50_000)
        _check_row_against(row, _members_of(row, tmp_path), alone)


@pytest.mark.slow
def test_submitit_local_executor_runs_the_study_end_to_end(run_cli, tmp_path):
    run_cli(*STUDY, "--launcher", "submitit_local")
    out = tmp_path / "reports" / "version_0"
    assert len(list((out / "submitit").glob("*_result.pkl"))) == 2
    _check_against_fits_alone(run_cli, tmp_path, out)


def _wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"report ended before {what}: {proc.stderr.read()}")
        time.sleep(0.1)
    pytest.fail(f"no {what} within {timeout} s")


def test_sbatch_script_under_stub_slurm_is_preempted_mid_fit_requeued_and_resumes_to_the_same_numbers(
        run_cli, tmp_path):
    slurm_stub.install(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
           "SLURM_STUB_DIR": str(tmp_path / "slurm"),
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "circuits_pl", *map(str, STUDY), "--launcher", "slurm",
                             "--slurm.partition", "debug", "--slurm.time", "30"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "reports" / "version_0"
    log = out / "runs" / "abs_seeds0-1.log"
    try:
        _wait_for(lambda: log.exists() and "\nstep " in log.read_text(), "a validation of job 1_0", proc)
        # SLURM's preemption as submitit's SlurmJob._interrupt sends it: SIGTERM to the job step, then USR2
        for sig in ("SIGTERM", "USR2"):
            subprocess.run(["scancel", "1_0", "--signal", sig], env=env, check=True)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Report (2 cells, 2 fits" in stdout
    script = next((out / "submitit").glob("*_submission.sh")).read_text()
    assert not [p for p in (out / "submitit").iterdir() if p.is_dir()]  # every job's files in one folder, no "%j"
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=debug", "#SBATCH --time=30",
                 "#SBATCH --signal=USR2@90", "#SBATCH --cpus-per-task=1"):
        assert line in script
    stub = tmp_path / "slurm"
    assert (stub / "1_0.runs").read_text() == "2" and (stub / "1_1.runs").read_text() == "1"  # 1_0 was requeued
    assert (stub / "1_0.state").read_text() == "COMPLETED" == (stub / "1_1.state").read_text()
    assert "this job is preempted" in next((out / "submitit").glob("1_0_*_log.err")).read_text()
    first, resumed = run_dirs(out / "runs" / "abs_seeds0-1")
    assert not (first / "results.json").exists() and (first / "checkpoints" / "last.ckpt").is_file()
    assert results(resumed)["steps"] == 50_000 and "Resuming from" in log.read_text()
    _check_against_fits_alone(run_cli, tmp_path, out)
