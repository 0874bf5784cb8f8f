"""Verdict rules on synthetic histories, and on a real run too short to tell."""

import math

import pytest
from conftest import results, run_dirs

from circuits_pl.verdicts import found, verdict

NAN = math.nan


@pytest.mark.parametrize("converged, exact, history, expected", [
    (True, True, [1e-3, 1e-6, 1e-11], "converged"),
    (False, True, [1e-4, 1e-5, 1e-6], "converging"),            # the exact circuit, falling 10x per validation
    (False, True, [1e-4, 0.95e-4, 0.9e-4], "slow"),              # exact-looking, but not falling geometrically
    (False, True, [1e-4, 1e-4, 0.999e-4], "stuck"),
    (False, False, [0.33, 0.2, 0.1], "slow"),
    (False, False, [NAN] * 5 + [1 / 6, 1 / 6, 1 / 6], "stuck"),  # the dark half-line of abs
    (False, False, [NAN] * 6 + [1 / 6, 1 / 6], "too early"),     # two validations cannot tell
    (False, True, [NAN] * 7 + [1e-6], "too early"),
    (True, False, [1e-3, 1e-11, 1e-12], "converged"),
])
def test_verdict_rules(converged, exact, history, expected):
    assert verdict(converged, exact, history) == expected
    assert found(expected) == (expected in ("converged", "converging"))


def test_diverged_wins():
    assert verdict(True, True, [1e-12] * 3, diverged=True) == "diverged"


def test_a_run_with_no_scheduled_validation_is_too_early_to_call_stuck(run_cli, tmp_path):
    run_cli("fit", "--task", "abs", "--model.members", 16, "--trainer.max_steps", 500, "--stop.when", "never",
            "--trainer.enable_progress_bar", "false", "--figures", "false")
    res = results(run_dirs(tmp_path)[0])
    per = res["per_member"]
    for v, solved in zip(per["verdict"], per["solved"]):
        assert v == ("converged" if solved else "too early")
    assert res["found"] == sum(per["found"]) == res["solved"]
