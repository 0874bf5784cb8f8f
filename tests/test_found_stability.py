"""The "Found, from the trend" table and sentences of docs/timeline.md stay honest: every number in them equals
what ``benchmarks/found_stability.py --summary`` saved (its runs take minutes: the test reads the file; the
trend rule itself is tested on real runs in tests/test_timeline.py and tests/test_timeline_figure.py)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAVED = json.loads((ROOT / "benchmarks" / "found_stability.json").read_text())
SETTINGS = SAVED["settings"]
PAGE = (ROOT / "docs" / "timeline.md").read_text()
TREND, BEFORE = f"trend, formed {SAVED['formed_validations']}", "geometric"


def section() -> str:
    return PAGE[PAGE.index("## Found, from the trend\n"):]


def total(rule: str, key: str) -> int:
    return sum(s["rules"][rule][key] for s in SETTINGS.values())


def test_the_readme_table_is_the_saved_one():
    text = section()
    assert "python\nbenchmarks/found_stability.py" in text or "python benchmarks/found_stability.py" in text
    rows = re.findall(r"^\| (\w+) (\d+-\d+-\d+)(?: lr [\d.]+)? \((\d+), (\d+)k\) \| (\d+), (\d+) \((\d+)\) "
                      r"\| (\d+), (\d+) \((\d+)\) \| (\d+) / (\d+) of (\d+) \|$", text, flags=re.M)
    assert [f"{task}-{sizes}" for task, sizes, *_ in rows] == list(SETTINGS)
    for task, sizes, *numbers in rows:
        s = SETTINGS[f"{task}-{sizes}"]
        trend, before = s["rules"][TREND], s["rules"][BEFORE]
        assert [int(n) for n in numbers] == [
            s["members"], s["steps"] // 1000,
            trend["calls"], trend["solved_by_double"], trend["solved_by_end"],
            before["calls"], before["solved_by_double"], before["solved_by_end"],
            trend["solved_by_double"], before["solved_by_double"], trend["due"]], (task, sizes)
        assert trend["due"] == before["due"]


def test_the_readme_sentences_are_the_saved_figures():
    text = " ".join(section().split())
    m = re.search(r"Of the trend rule's (\d+) calls, (\d+) \(\d+%\) were solved within twice the step and (\d+) "
                  r"\(\d+%\) by the end of the run; of the geometric rule, (\d+) of (\d+) \(\d+%\) and (\d+) \(\d+%\)",
                  text)
    assert m, text
    assert [int(v) for v in m.groups()] == [
        total(TREND, "calls"), total(TREND, "solved_by_double"), total(TREND, "solved_by_end"),
        total(BEFORE, "solved_by_double"), total(BEFORE, "calls"), total(BEFORE, "solved_by_end")]
    m = re.search(r"the trend rule misses (\d+) of the (\d+) members solved within twice the step \(the geometric "
                  r"rule: (\d+)\)", text)
    assert m, text
    due = total(TREND, "due")
    assert [int(v) for v in m.groups()] == [due - total(TREND, "solved_by_double"), due,
                                            due - total(BEFORE, "solved_by_double")]
    m = re.search(r"min 2-3-1 at 4k: (\d+) found by the trend, all solved by 8k "
                  r"\(the geometric rule: (\d+), all solved\)", text)
    assert m, text
    early = SETTINGS["min-2-3-1"]["rules"]
    assert [int(v) for v in m.groups()] == [early[TREND]["early_calls"], early[BEFORE]["early_calls"]]
    assert early[TREND]["early_solved_by_double"] == early[TREND]["early_calls"]
    assert early[BEFORE]["early_solved_by_double"] == early[BEFORE]["early_calls"]


def test_the_readme_says_what_other_formed_counts_change():
    text = " ".join(section().split())
    m = re.search(r"Requiring the circuit at 3 validations instead of 2 changed nothing for the 2-8-1 nets, took "
                  r"(\d+) of (\d+) calls from min 2-4-1 and halved the calls for min 2-3-1 \((\d+) of (\d+); "
                  r"at 4k, none of the (\d+): their circuits formed one or two validations before\); "
                  r"1 instead of 2 added (\d+) calls to (\d+)\.", text)
    assert m, text
    three, one = "trend, formed 3", "trend, formed 1"
    for name, s in SETTINGS.items():
        if name.endswith("2-8-1"):
            assert s["rules"][three] == s["rules"][TREND], name
    narrow, minimal = SETTINGS["min-2-4-1"]["rules"], SETTINGS["min-2-3-1"]["rules"]
    assert [int(v) for v in m.groups()] == [
        narrow[TREND]["calls"] - narrow[three]["calls"], narrow[TREND]["calls"],
        minimal[three]["calls"], minimal[TREND]["calls"], minimal[TREND]["early_calls"],
        total(one, "calls") - total(TREND, "calls"), total(TREND, "calls")]
    assert abs(minimal[three]["calls"] / minimal[TREND]["calls"] - 0.5) < 0.05  # "halved"
    assert minimal[three]["early_calls"] == 0
