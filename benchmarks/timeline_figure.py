"""The "When circuits form" figure (docs/timeline.md) and numbers (min 2-3-1, 256 seeds), regenerated.

Runs the page's command (or reads its run), and from the run's timeline and results.json writes what the
page states: the found members' circuits, how they entered them (from ``none`` straight, or after another
name; through another circuit of the task or not), the median step their circuit formed (with its 95%
interval) against the median step they were solved, and the stuck function members hover about (how often
an entry into it went back to ``none``); per member its found flag, formed-at and solved-at, so a test can
re-train a few members and compare. Saved in ``benchmarks/timeline_min.json``; with ``--figure`` the run's
``timeline.png`` is copied there.

    python benchmarks/timeline_figure.py                                        # trains the run (~1-2 min)
    python benchmarks/timeline_figure.py --run lightning_logs/version_N         # a run of that command
    python benchmarks/timeline_figure.py --figure docs/images/timeline_min.png  # also the page's figure

``tests/test_timeline_figure.py`` checks the page's paragraph against the saved JSON, and re-trains the
first members to check the JSON against today's code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from circuits_pl.readout.snap import NONE
from circuits_pl.saved_run import load_run

COMMAND = ["fit", "--task", "min", "--model.members", "256", "--trainer.max_steps", "8000",
           "--trainer.val_check_interval", "100", "--stop.when", "never"]
SAVED = Path(__file__).with_name("timeline_min.json")


def summary(run_dir: Path) -> dict:
    """What docs/timeline.md says of the run, from its last checkpoint's timeline and its results.json."""
    run = load_run(run_dir)
    timeline = run.module.timeline
    res = json.loads((run_dir / "results.json").read_text())
    per, t = res["per_member"], res["timeline"]
    found = [k for k, ok in enumerate(per["found"]) if ok]
    exact = {name for name, e in zip(timeline.names, timeline.exact) if e}
    paths = {k: [name for name, _ in timeline.path(k)] for k in found}
    # the stuck function: the name no exact circuit, not none, that most entries went into
    entries = Counter()
    back = Counter()
    for (a, b), n in timeline.transitions().items():
        entries[b] += n
        if b == NONE:
            back[a] += n
    stuck = max((name for name in entries if name not in exact and name != NONE), key=lambda n: entries[n],
                default=None)
    return {
        "command": "python -m circuits_pl " + " ".join(COMMAND),
        "members": res["members"],
        "validations": t["validations"],
        "found": len(found),
        "found_circuits": dict(Counter(per["family"][k] for k in found).most_common()),
        # the name before the final circuit was none / the path was none then the circuit
        "entered_from_none": sum(len(p) >= 2 and p[-2] == NONE for p in paths.values()),
        "straight_from_none": sum(p == [NONE, p[-1]] for p in paths.values()),
        "through_another_circuit": sum(any(name in exact for name in p[:-1]) for p in paths.values()),
        "formed_at_median_of_found": t["formed_at_median_of_found"],
        "formed_at_ci95": t["formed_at_ci95"],
        "median_solved_at": res["median_solved_at"],
        "stuck_function": stuck,
        "stuck_entries": entries[stuck] if stuck else 0,
        "stuck_back_to_none": back[stuck] if stuck else 0,
        # per member (member k is the same net whatever the number of members beside it)
        "member_found": per["found"],
        "member_formed_at": per["formed_at"],
        "member_solved_at": per["solved_at"],
    }


def sentences(s: dict) -> list[str]:
    """The page's numbers, as sentences."""
    circuits = ", ".join(f"{n} {c}" for c, n in s["found_circuits"].items())
    lo, hi = s["formed_at_ci95"]
    return [f"{s['found']} of {s['members']} members found the circuit ({circuits}); "
            f"{s['entered_from_none']} entered it from none, {s['straight_from_none']} with no simple form before, "
            f"{s['found'] - s['straight_from_none']} briefly named something else first; "
            f"{s['through_another_circuit']} went through another circuit of the task",
            f"formed at a median step of {s['formed_at_median_of_found']:.0f} (95% CI {lo:.0f}–{hi:.0f}), "
            f"solved at a median {s['median_solved_at']:.0f}",
            f"stuck function {s['stuck_function']}: {s['stuck_back_to_none']} of the {s['stuck_entries']} entries "
            "into it went back to none"]


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a run directory of the command, instead of training")
    parser.add_argument("--figure", type=Path, default=None, help="copy the run's timeline.png there")
    parser.add_argument("--save", type=Path, default=SAVED, help=f"where the numbers go (default {SAVED.name})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run
        if run_dir is None:
            subprocess.run([sys.executable, "-m", "circuits_pl", *COMMAND], check=True, cwd=tmp,
                           stdout=subprocess.DEVNULL)
            run_dir = Path(tmp) / "lightning_logs" / "version_0"
        s = summary(run_dir)
        if args.figure:
            shutil.copyfile(run_dir / "timeline.png", args.figure)
    args.save.write_text(json.dumps(s, indent=1, ensure_ascii=False) + "\n")
    print("\n".join(sentences(s)))
    print(f"Saved: {args.save}" + (f", {args.figure}" if args.figure else ""))


if __name__ == "__main__":
    main()
