"""The "When circuits form" paragraph of docs/timeline.md stays honest: every number in it equals what
``benchmarks/timeline_figure.py`` saved, and the first seeds of that run re-trained here with today's code
give the saved found flags, formed-at and solved-at steps exactly (so a change to training, the readout or
the timeline that moves the figure fails until the script is re-run and docs/timeline.md updated)."""

import json
import re
from pathlib import Path

from conftest import results, run_dirs

ROOT = Path(__file__).resolve().parents[1]
SAVED = json.loads((ROOT / "benchmarks" / "timeline_min.json").read_text())
PAGE = (ROOT / "docs" / "timeline.md").read_text()
MEMBERS = 16  # of the 256: member k is the same net whatever the number of members beside it


def paragraph() -> str:
    start = PAGE.index("What it shows for min 2-3-1")
    return " ".join(PAGE[start:PAGE.index("![each member's circuit over training]", start)].split())


def test_the_readme_names_the_command_and_its_numbers_are_the_saved_ones():
    text = paragraph()
    assert SAVED["command"] in text.replace("`", "")
    assert "python benchmarks/timeline_figure.py --figure docs/images/timeline_min.png" in text.replace("`", "")
    found = re.search(r"all (\d+) members that found the circuit \((\d+) r\(a\) − r\(−a\) − r\(a − b\), (\d+) its "
                      r"mirror\) entered it from `none`, (\d+) of them with no simple form before; (\d+) were briefly "
                      r"named something else first .*?, and none went through r\(a \+ b\) or another circuit", text)
    assert found, text
    circuits = SAVED["found_circuits"]
    assert [int(v) for v in found.groups()] == [
        SAVED["found"], circuits["r(a) − r(−a) − r(a − b)"], circuits["r(b) − r(−b) − r(b − a)"],
        SAVED["straight_from_none"], SAVED["found"] - SAVED["straight_from_none"]]
    assert SAVED["entered_from_none"] == SAVED["found"] and SAVED["through_another_circuit"] == 0
    assert len(circuits) == 2  # "78 ..., 56 its mirror": nothing else was found
    when = re.search(r"formed at a median step of (\d+) \(95% CI (\d+)–(\d+)\), and the MSE crossed the threshold "
                     r"at a median (\d+)", text)
    assert when, text
    assert [int(v) for v in when.groups()] == [SAVED["formed_at_median_of_found"], *SAVED["formed_at_ci95"],
                                               SAVED["median_solved_at"]]
    stuck = re.search(r"one stuck function, (.+?), in and out of the readout's tolerance \((\d+) of the (\d+) "
                      r"entries into it went back to `none`\)", text)
    assert stuck, text
    assert (stuck.group(1), int(stuck.group(2)), int(stuck.group(3))) == (
        SAVED["stuck_function"], SAVED["stuck_back_to_none"], SAVED["stuck_entries"])


def test_seeds_of_the_run_retrained_today_give_the_saved_timeline(run_cli, tmp_path):
    command = SAVED["command"].removeprefix("python -m circuits_pl ").split()
    i = command.index("--model.members")
    command[i + 1] = str(MEMBERS)
    run_cli(*command, "--figures", "false", "--trainer.enable_progress_bar", "false")
    (run,) = run_dirs(tmp_path)
    per = results(run)["per_member"]
    assert per["found"] == SAVED["member_found"][:MEMBERS]
    assert per["formed_at"] == SAVED["member_formed_at"][:MEMBERS]
    assert per["solved_at"] == SAVED["member_solved_at"][:MEMBERS]
    # checked: found and not, formed and not, a stuck form formed (not found) among them
    assert len(set(per["found"])) == 2 and None in per["formed_at"]
    assert any(f is not None and not ok for f, ok in zip(per["formed_at"], per["found"]))
