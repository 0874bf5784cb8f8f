"""The phase diagram and family splits of docs/study.md ("Does width change which circuit SGD finds?"), regenerated.

Runs the page's study (or reads its runs), reads every job's last checkpoint with today's readout
(``circuits_pl.run_summary.run_results``: found, solved, families), and writes per cell (task, hidden width, lr):
members, found, its Wilson interval and the families of the found members, into ``benchmarks/family_splits.json``;
prints the sentences the page states; with ``--figure``, draws the phase diagram (report's heat map) from it.

    python benchmarks/family_splits.py                                   # trains the 36 jobs (~5 min on 2 idle cores)
    python benchmarks/family_splits.py --runs reports/version_3          # the runs of a report already made
    python benchmarks/family_splits.py --figure docs/images/phase.png    # also the page's figure

``tests/test_family_splits.py`` checks the page's sentences against the saved JSON, and re-trains one cell
to check the JSON against today's code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from circuits_pl.readout.matrices import MINUS
from circuits_pl.readout.structure import target_form
from circuits_pl.report import plot_rates
from circuits_pl.run_summary import run_results
from circuits_pl.saved_run import load_run
from circuits_pl.success import wilson_interval
from circuits_pl.tasks import BUILTIN_TASKS

TASKS, SIZES, LRS, MEMBERS = "add,abs,min", "2-2-1,2-4-1,2-8-1,2-16-1", "0.03,0.1,0.3", 64
COMMAND = ["report", "--tasks", TASKS, "--sweep.sizes", SIZES, "--sweep.lr", LRS, "--model.members", str(MEMBERS)]
SAVED = Path(__file__).with_name("family_splits.json")


def family_key(task: str, family: str) -> str:
    """A found member's family as docs/study.md counts it: the task's first listed circuit, its mirror, or the
    function's unique form (the spread-out listed circuit and every structural reading of it)."""
    circuits = [c.formula.replace("-", MINUS) for c in BUILTIN_TASKS[task].circuits]
    if family in circuits[:2]:
        return family
    if family in circuits[2:]:
        return target_form(BUILTIN_TASKS[task]).text()
    return family


def cell(run_dir: Path) -> list[dict]:
    """A fit's cells (report's fit holds a task's whole diagram), read from its last checkpoint with today's
    readout."""
    run = load_run(run_dir)
    res = run_results(run.module, run.data, run.step)
    task = res["task"]
    per = res["per_member"]
    out = []
    for info in res["cells"]:
        mine = range(info["first_member"], info["first_member"] + info["members"])
        outcome = [family_key(task, per["family"][m]) if per["found"][m] else None for m in mine]
        families = Counter(f for f in outcome if f is not None)
        lo, hi = wilson_interval(info["found"], info["members"])
        out.append({"task": task, "width": info["layer_sizes"][1], "lr": info["lr"], "steps": res["steps"],
                    "members": info["members"], "found": info["found"], "found_ci95": [round(lo, 2), round(hi, 2)],
                    "solved": info["solved"], "families": dict(families.most_common()),
                    # per member (member k is the same net whatever the number of members): family if found, solved
                    "member_family": outcome, "member_solved": [per["solved"][m] for m in mine],
                    "init_seed": res["init_seed"]})
    return out


def cells(reports: list[Path]) -> list[dict]:
    runs = sorted(d for r in reports for d in (r / "runs").glob("*/lightning_logs/version_*")
                  if (d / "results.json").is_file())  # finished jobs only
    merged: dict[tuple, dict] = {}  # a cell whose seeds were split over fits (report --jobs): one, in seed order
    for c in sorted((c for d in runs for c in cell(d)), key=lambda c: c.pop("init_seed")):
        key = (c["task"], c["width"], c["lr"])
        if key not in merged:
            merged[key] = c
            continue
        m = merged[key]
        m["members"] += c["members"]
        m["found"] += c["found"]
        m["solved"] += c["solved"]
        m["member_family"] += c["member_family"]
        m["member_solved"] += c["member_solved"]
        m["families"] = dict(Counter(f for f in m["member_family"] if f is not None).most_common())
        lo, hi = wilson_interval(m["found"], m["members"])
        m["found_ci95"] = [round(lo, 2), round(hi, 2)]
    return list(merged.values())


def rows(table: list[dict]) -> list[dict]:
    """The table as report's rows, for its heat map."""
    order = {t: i for i, t in enumerate(TASKS.split(","))}
    table = sorted(table, key=lambda c: (order[c["task"]], c["width"], c["lr"]))
    return [{"task": c["task"], "layer_sizes": f"{BUILTIN_TASKS[c['task']].arity}-{c['width']}-1", "lr": c["lr"],
             "members": c["members"], "found_rate": c["found"] / c["members"], "found_ci95_low": c["found_ci95"][0],
             "found_ci95_high": c["found_ci95"][1]} for c in table]


def sentences(table: list[dict]) -> list[str]:
    """What docs/study.md says, from the table."""
    at = {(c["task"], c["width"], c["lr"]): c for c in table}
    widths = sorted({c["width"] for c in table})
    lrs = sorted({c["lr"] for c in table})
    out = []
    abs_rates = ", ".join(f"{at['abs', w, 0.1]['found'] / MEMBERS:.2f} at width {w}" for w in widths)
    out.append(f"abs, lr 0.1: found rate {abs_rates}")
    sym = target_form(BUILTIN_TASKS["min"]).text()
    for w in widths[1:]:
        for lr in lrs:
            c = at["min", w, lr]
            parts = ", ".join(f"{n} × {f}" for f, n in c["families"].items())
            out.append(f"min width {w}, lr {lr:g}: {c['found']} found ({c['families'].get(sym, 0)} {sym}): {parts}")
    two = BUILTIN_TASKS["add"].circuits[0].formula.replace("-", MINUS)
    for lr in lrs:
        c = at["add", 4, lr]
        out.append(f"add width 4, lr {lr:g}: found {c['found'] / MEMBERS:.2f}; {c['families'].get(two, 0)} of "
                   f"{c['found']} found nets are {two}")
    return out


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="*", default=None,
                        help="report directories (reports/version_N) whose runs to read, instead of training")
    parser.add_argument("--figure", type=Path, default=None, help="draw the phase diagram (found rates) there")
    parser.add_argument("--save", type=Path, default=SAVED, help=f"where the table goes (default {SAVED.name})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reports = args.runs
        if not reports:
            subprocess.run([sys.executable, "-m", "circuits_pl", *COMMAND, "--out", tmp], check=True)
            reports = [Path(tmp) / "version_0"]
        table = cells(reports)
    if args.figure:
        plot_rates(rows(table), args.figure)
    args.save.write_text(json.dumps({"command": "python -m circuits_pl " + " ".join(COMMAND), "cells": table},
                                    indent=1, ensure_ascii=False) + "\n")
    print("\n".join(sentences(table)))
    print(f"Saved: {args.save}")


if __name__ == "__main__":
    main()
