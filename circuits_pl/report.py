"""``python -m circuits_pl report``: the whole study, every task with many seeds, as one table.

Each job is a real ``fit`` (in this process, through the same LightningCLI) with many members and
no early stop, so every seed trains the whole budget; its results.json is then summarised:

    report.md    per task and architecture: success rate with Wilson 95% CI, median solved-at step,
                 verdicts (exact / slow / stuck / diverged), sparsity error of the solved members,
                 the circuits found, the most common stuck functions
    report.csv   the same table, one row per job
    report.png   success rates with their confidence intervals

Jobs: the built-in tasks with circuits_pl's defaults (``--tasks`` to choose), or config files
(``--config configs/notebook/*.yaml`` runs the notebook's study: its sizes, lr and budgets).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from circuits_pl.errors import CircuitsError
from circuits_pl.logger import run_dir
from circuits_pl.tasks import BUILTIN_TASKS, get_task

DEFAULT_MEMBERS = 128
DEFAULT_STEPS = 20_000


def next_version(root: Path) -> Path:
    """``root/version_N`` with the first unused N: a report never overwrites an earlier one."""
    n = 0
    while (root / f"version_{n}").exists():
        n += 1
    return root / f"version_{n}"


def run_job(job: dict[str, Any], members: int, max_steps: int | None, out: Path, seed: int) -> dict[str, Any]:
    """One ``fit`` with every member trained the whole budget; returns its results.json."""
    from circuits_pl.cli import CircuitsCLI

    args = ["fit"]
    if job.get("config"):
        args += ["--config", str(job["config"])]
    if job.get("task"):
        args += ["--task", job["task"]]
    if max_steps is not None or not job.get("config"):
        args += ["--trainer.max_steps", str(max_steps or DEFAULT_STEPS)]
    if not job.get("config"):
        args += ["--seed_everything", str(seed)]
    args += ["--model.members", str(members), "--stop.when", "never", "--trainer.default_root_dir", str(out / "runs"),
             "--trainer.enable_progress_bar", "false", "--figures", "false"]
    log = out / "runs" / f"{job['name']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f), _quiet_lightning():
        cli = CircuitsCLI(args=args)
    directory = Path(run_dir(cli.trainer))
    res = json.loads((directory / "results.json").read_text())
    res["run_dir"] = str(directory)
    return res


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning logs its banners through handlers made at import (not through sys.stdout)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """One report row from a results.json."""
    per = res["per_member"]
    verdicts = Counter(per["verdict"])
    stuck = Counter(f for f, v in zip(per["rough_formula"], per["verdict"]) if v == "stuck" and f)
    lo, hi = res["success_rate_ci95"]
    return {
        "task": res["task"],
        "layer_sizes": "-".join(map(str, res["layer_sizes"])),
        "lr": res["lr"],
        "batch_size": res["data"].get("batch_size"),
        "steps": res["steps"],
        "members": res["members"],
        "solved": res["solved"],
        "success_rate": res["success_rate"],
        "ci95_low": lo,
        "ci95_high": hi,
        "median_solved_at": res["median_solved_at"],
        "exact": verdicts.get("exact", 0),
        "slow": verdicts.get("slow", 0),
        "stuck": verdicts.get("stuck", 0),
        "diverged": verdicts.get("diverged", 0),
        "max_sparsity_error_solved": res["max_sparsity_error_of_solved"],
        "circuits": "; ".join(f"{n}× {c}" for c, n in res["circuits_of_solved"].items()),
        "common_stuck": "; ".join(f"{n}× {f}" for f, n in stuck.most_common(2)),
        "run_dir": res["run_dir"],
    }


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def write_markdown(rows: list[dict[str, Any]], path: Path, command: str) -> None:
    lines = [
        "# circuits_pl report", "",
        f"`{command}`", "",
        "Every member trains the whole budget (no early stop). Solved: validation MSE below the MSE of the",
        "exact circuit with every weight perturbed by ±1e-5. Verdicts: exact (solved), slow (still improving),",
        "stuck (validation MSE fell by < 1% over the last 8 validations), diverged.", "",
        "| task | sizes | lr | steps | solved | rate (95% CI) | median solved at | exact / slow / stuck / diverged "
        "| sparsity err. (max, solved) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['layer_sizes']} | {r['lr']:g} | {r['steps']} | {r['solved']}/{r['members']} "
            f"| {r['success_rate']:.2f} ({r['ci95_low']:.2f}–{r['ci95_high']:.2f}) "
            f"| {_fmt(r['median_solved_at'], '.0f')} | {r['exact']} / {r['slow']} / {r['stuck']} / {r['diverged']} "
            f"| {_fmt(r['max_sparsity_error_solved'], '.2g')} |"
        )
    lines += ["", "## Circuits found", ""]
    for r in rows:
        lines.append(f"- **{r['task']}** ({r['layer_sizes']}): {r['circuits'] or 'none solved'}"
                     + (f"; most common stuck: {r['common_stuck']}" if r["common_stuck"] else ""))
    lines += ["", "Runs (config.yaml, metrics.csv, checkpoints, results.json of each):", ""]
    lines += [f"- {r['task']}: `{r['run_dir']}`" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_rates(rows: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.1 * len(rows) + 2.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    labels = [f"{r['task']}\n{r['layer_sizes']}" for r in rows]
    rates = [r["success_rate"] for r in rows]
    err = [[r["success_rate"] - r["ci95_low"] for r in rows], [r["ci95_high"] - r["success_rate"] for r in rows]]
    ax.bar(range(len(rows)), rates, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("seeds that found the exact circuit")
    ax.set_title(f"Success rate per seed, Wilson 95% CI ({rows[0]['members']} seeds each)", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str]) -> None:
    from circuits_pl.cli import program_name

    parser = argparse.ArgumentParser(
        prog=f"{program_name()} report",
        description="Train every task with many seeds (no early stop) and report success rates with "
                    "Wilson 95% CIs, solved-at steps, verdicts and the circuits found.",
    )
    parser.add_argument("--tasks", default=",".join(BUILTIN_TASKS),
                        help="comma-separated tasks, with circuits_pl's defaults (default: all built-in)")
    parser.add_argument("--config", nargs="+", default=[],
                        help="config files to run instead (their task, sizes, lr, budget), "
                             "e.g. configs/notebook/*.yaml")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS, help="seeds per job (default 128)")
    parser.add_argument("--max_steps", type=int, default=None,
                        help=f"SGD steps per job (default: the config's, else {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of member 0 (member k: seed + k)")
    parser.add_argument("--out", default="reports", help="reports go to OUT/version_N (default: reports)")
    args = parser.parse_args(argv)
    if args.members < 1:
        raise CircuitsError(f"--members must be a positive integer, got {args.members}")
    if args.max_steps is not None and args.max_steps < 1:
        raise CircuitsError(f"--max_steps must be a positive integer, got {args.max_steps}")
    if args.config:
        missing = [c for c in args.config if not Path(c).is_file()]
        if missing:
            raise CircuitsError(f"config file {missing[0]} does not exist")
        jobs = [{"name": Path(c).stem, "config": c} for c in args.config]
    else:
        jobs = [{"name": get_task(t.strip()).name, "task": t.strip()} for t in args.tasks.split(",") if t.strip()]
    if not jobs:
        raise CircuitsError("no tasks given; e.g. --tasks add,min")

    from tqdm import tqdm

    from circuits_pl.memory import RunSize
    from circuits_pl.preflight import check_memory
    from circuits_pl.writable import check_writable_dir

    check_writable_dir(args.out, "--out", needed=2**20)  # before report's version_N exists
    for job in jobs:  # the jobs' own fits check this too, but only once report's directory exists
        if job.get("task"):
            size = RunSize(get_task(job["task"]).layer_sizes, args.members, 1000)
            check_memory(size, options={"members": "--members"})
    out = next_version(Path(args.out))
    out.mkdir(parents=True)
    rows = []
    bar = tqdm(jobs, desc="report", unit="task", file=sys.stderr, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job["name"])
        row = summarise(run_job(job, args.members, args.max_steps, out, args.seed))
        rows.append(row)
        bar.write(f"{row['task']:>9} {row['layer_sizes']:>7}: {row['solved']}/{row['members']} solved "
                  f"({row['ci95_low']:.2f}–{row['ci95_high']:.2f}), median at {_fmt(row['median_solved_at'], '.0f')} "
                  f"steps; {row['circuits'] or 'no exact circuit'}")
    command = "python -m circuits_pl report " + " ".join(argv)
    write_markdown(rows, out / "report.md", command.strip())
    write_csv(rows, out / "report.csv")
    plot_rates(rows, out / "report.png")
    print(f"Report: {out / 'report.md'}, {out / 'report.csv'}, {out / 'report.png'}")
