"""The phase diagram figures of docs/study.md stay honest: every number in its "Does width change which circuit SGD
finds?" paragraph equals what ``benchmarks/family_splits.py`` saved, and members of a cell of that study
re-trained here with today's code give the saved outcomes exactly (so a change to training or to the
readout that moves the figures fails until the script is re-run and docs/study.md updated)."""

import json
import re
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.module import CircuitModule
from circuits_pl.run_summary import run_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import family_splits  # noqa: E402

SAVED = json.loads((ROOT / "benchmarks" / "family_splits.json").read_text())
CELLS = {(c["task"], c["width"], c["lr"]): c for c in SAVED["cells"]}
PAGE = (ROOT / "docs" / "study.md").read_text()


def paragraph() -> str:
    start = PAGE.index("**Does width change which circuit SGD finds?")
    return " ".join(PAGE[start:PAGE.index("## A whole diagram in one fit", start)].split())


def test_the_readme_names_the_command_and_its_numbers_are_the_saved_ones():
    text = paragraph()
    assert SAVED["command"].removeprefix("python -m circuits_pl ") in text.replace("`", "")
    assert "python benchmarks/family_splits.py" in text
    rates = re.search(r"abs: [^:]*: ([\d.]+) at width 2, ([\d.]+) at 4, ([\d.]+) at 8, ([\d.]+) at 16 \(lr 0\.1", text)
    assert rates, text
    for width, rate in zip((2, 4, 8, 16), rates.groups()):
        cell = CELLS["abs", width, 0.1]
        assert rate == f"{cell['found'] / cell['members']:.2f}"
    sym = "½(a + b) − ½|a − b|"
    split = re.search(r"at width 4 \(lr 0\.3\) the (\d+) found nets split between the catalogue circuit "
                      r"\((\d+) × r\(a\) − r\(−a\) − r\(a − b\), (\d+) × its mirror\) and the symmetric "
                      + re.escape(sym) + r" \((\d+)\)", text)
    assert split, text
    cell = CELLS["min", 4, 0.3]
    fam = cell["families"]
    assert [int(v) for v in split.groups()] == [cell["found"], fam.get("r(a) − r(−a) − r(a − b)", 0),
                                                fam.get("r(b) − r(−b) − r(b − a)", 0), fam.get(sym, 0)]
    wide = re.search(r"at width 8 \(lr 0\.3\),? (\d+) of (\d+) found nets are " + re.escape(sym), text)
    assert wide, text
    cell = CELLS["min", 8, 0.3]
    assert [int(v) for v in wide.groups()] == [cell["families"].get(sym, 0), cell["found"]]
    assert "at width 16 none is found" in text
    assert all(CELLS["min", 16, lr]["found"] == 0 for lr in (0.03, 0.1, 0.3))
    assert "none of them is solved within 20k steps" in text
    assert all(CELLS["min", w, lr]["solved"] == 0 for w in (8, 16) for lr in (0.03, 0.1, 0.3))
    add = re.search(r"add: best at width 4 and lr 0\.3 \(([\d.]+): (\d+) found, (\d+) solved; ([\d.]+)–([\d.]+) at the "
                    r"smaller rates[^)]*\); (\d+) of (\d+) found nets there \(lr 0\.3\) are the two-unit "
                    r"r\(a \+ b\) − r\(−a − b\)", text)
    assert add, text
    best = CELLS["add", 4, 0.3]
    assert f"{best['found'] / best['members']:.2f}" == add.group(1)
    assert best["found"] == max(c["found"] for (t, _, _), c in CELLS.items() if t == "add")
    assert [int(v) for v in add.group(2, 3, 6, 7)] == [best["found"], best["solved"],
                                                       best["families"].get("r(a + b) − r(−a − b)", 0), best["found"]]
    rates = sorted(CELLS["add", 4, lr]["found"] / CELLS["add", 4, lr]["members"] for lr in (0.03, 0.1))
    assert add.group(4, 5) == (f"{rates[0]:.2f}", f"{rates[-1]:.2f}")
    wider = re.search(r"at widths 8 and 16: (\d+) of (\d+) found, all at 2-8-1 lr 0\.3; (\d+) of (\d+) solved", text)
    assert wider, text
    cells = [c for (t, w, _), c in CELLS.items() if t == "add" and w in (8, 16)]
    assert [int(v) for v in wider.groups()] == [sum(c["found"] for c in cells), sum(c["members"] for c in cells),
                                               sum(c["solved"] for c in cells), sum(c["members"] for c in cells)]
    assert sum(c["found"] for c in cells) == CELLS["add", 8, 0.3]["found"]

def retrain(task: str, width: int, lr: float, members: int, steps: int) -> dict:
    """Members 0..members-1 of a cell trained again as report's fit trains them (seed 0, every member the whole
    budget, a validation every 1000 steps; member k does not depend on how many members train beside it),
    read with today's readout."""
    module = CircuitModule(task=task, layer_sizes=[2, width, 1], members=members, lr=lr, init_seed=0)
    data = CircuitDataModule(task=task, stream_seed=0, steps_per_batch=500)
    trainer = pl.Trainer(max_steps=steps, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[StopWhenSolved("never")])
    trainer.fit(module, data)
    return run_results(module, data, steps)


@pytest.mark.parametrize("task, width, lr, members", [
    ("add", 4, 0.3, 16),
    pytest.param("min", 4, 0.3, 64, marks=pytest.mark.slow),
])
def test_members_of_a_cell_retrained_today_give_the_saved_outcomes(task, width, lr, members):
    saved = CELLS[task, width, lr]
    res = retrain(task, width, lr, members, saved["steps"])
    per = res["per_member"]
    got = [family_splits.family_key(task, f) if ok else None for f, ok in zip(per["family"], per["found"])]
    assert got == saved["member_family"][:members]
    assert per["solved"] == saved["member_solved"][:members]
    assert len(set(got)) > 1 and len(set(per["solved"])) > 1  # both families, solved and not: checked
