"""``python -m circuits_pl report``: the study — every task (and setting) with many seeds, as one table.

Each job is a real ``fit`` in its own process (``python -m circuits_pl fit ... --threads 1``) with
many members and no early stop, so every seed trains the whole budget; up to ``--jobs`` of them run
at once (default: one per CPU core). Each job's results.json is then summarised:

    report.md    per task and setting: success rate with Wilson 95% CI, median solved-at step,
                 verdicts (exact / slow / stuck / diverged), sparsity error of the solved members,
                 the circuits found, the most common stuck functions
    report.csv   the same table, one row per job
    report.png   success rates with their confidence intervals (a heat map per task, sizes x lrs,
                 when the study sweeps them)

Jobs: the built-in tasks with circuits_pl's defaults (``--tasks`` to choose), swept over
``--sizes`` and ``--lrs`` if given; or config files (``--config configs/notebook/*.yaml`` runs the
notebook's study: its sizes, lr and budgets).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from circuits_pl import signals
from circuits_pl.errors import CircuitsError
from circuits_pl.files import atomic_write_text
from circuits_pl.logger import claim_version
from circuits_pl.plots import save_figure
from circuits_pl.tasks import BUILTIN_TASKS, get_task
from circuits_pl.usage import program_name
from circuits_pl.verdicts import MIN_VALIDATIONS, VERDICTS

DEFAULT_MEMBERS = 128
DEFAULT_STEPS = 20_000


@dataclass
class Job:
    """One ``fit`` of the study: a task with optional sizes and lr, or a config file."""

    name: str
    task: str | None = None
    config: str | None = None
    sizes: list[int] | None = None
    lr: float | None = None
    extra: list[str] = field(default_factory=list)

    def fit_args(self, members: int, max_steps: int | None, seed: int, root: Path) -> list[str]:
        args = ["fit"]
        if self.config:
            args += ["--config", self.config]
        if self.task:
            args += ["--task", self.task]
        if self.sizes:
            args += ["--model.layer_sizes", json.dumps(self.sizes)]
        if self.lr is not None:
            args += ["--model.lr", repr(self.lr)]
        if max_steps is not None or not self.config:
            args += ["--trainer.max_steps", str(max_steps or DEFAULT_STEPS)]
        if not self.config:
            args += ["--seed_everything", str(seed)]
        return args + ["--model.members", str(members), "--stop.when", "never",
                       "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
                       "--figures", "false", "--threads", "1", *self.extra]


class Jobs:
    """The fits of a report running now, so that a signal can stop them (:meth:`stop`) and no
    queued job starts after it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, subprocess.Popen] = {}
        self.stopped = False

    def start(self, name: str, cmd: list[str], log: IO, env: dict[str, str]) -> subprocess.Popen | None:
        with self.lock:
            if self.stopped:
                return None
            # its own session: a Ctrl-C in the terminal reaches the report alone, which passes it on once
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            self.running[name] = proc
            return proc

    def finished(self, name: str) -> None:
        with self.lock:
            self.running.pop(name, None)

    def stop(self, signum: int, wait: float) -> list[str]:
        """Send ``signum`` to every running fit (each saves its last.ckpt and exits 128 + signum), start
        no other, wait up to ``wait`` seconds, kill what is left; the names of the jobs stopped."""
        with self.lock:
            self.stopped = True
            procs = dict(self.running)
        for proc in procs.values():
            with contextlib.suppress(OSError):
                proc.send_signal(signum)
        deadline = time.monotonic() + wait
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return list(procs)


class ReportInterrupted(BaseException):
    """A signal stopped the report (a BaseException, like KeyboardInterrupt: nothing may swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_job(job: Job, members: int, max_steps: int | None, out: Path, seed: int,
            jobs: Jobs | None = None) -> dict[str, Any] | None:
    """One ``fit`` in its own process (every member the whole budget); returns its results.json (None if
    the report was stopped before it started or while it ran).

    Each job gets its own root directory, so its run directory is known before it starts and jobs
    running at once never race for a ``version_N``.
    """
    jobs = jobs or Jobs()
    root = out / "runs" / job.name
    root.mkdir(parents=True, exist_ok=True)
    log = out / "runs" / f"{job.name}.log"
    cmd = [sys.executable, "-m", "circuits_pl", *job.fit_args(members, max_steps, seed, root)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        proc = jobs.start(job.name, cmd, f, env)
        if proc is None:
            return None
        returncode = proc.wait()
    if jobs.stopped:
        return None
    jobs.finished(job.name)
    lines = log.read_text().strip().splitlines()
    if returncode != 0:
        last = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        raise CircuitsError(f"report job {job.name} failed (exit {returncode}): {last.removeprefix('error: ')} "
                            f"(log: {log})")
    (directory,) = sorted((root / "lightning_logs").glob("version_*"))
    res = json.loads((directory / "results.json").read_text())
    res["run_dir"] = str(directory)
    res["job"] = job.name
    return res


def report_row(res: dict[str, Any]) -> dict[str, Any]:
    """One report row from a results.json."""
    per = res["per_member"]
    verdicts = Counter(per["verdict"])
    stuck = Counter(f for f, v in zip(per["rough_formula"], per["verdict"]) if v == "stuck" and f)
    lo, hi = res["success_rate_ci95"]
    return {
        "job": res.get("job", res["task"]),
        "task": res["task"],
        "layer_sizes": "-".join(map(str, res["layer_sizes"])),
        "lr": res["lr"],
        "batch_size": res["data"].get("batch_size"),
        "steps": res["steps"],
        "members": res["members"],
        "found": res["found"],
        "found_rate": res["found_rate"],
        "found_ci95_low": res["found_rate_ci95"][0],
        "found_ci95_high": res["found_rate_ci95"][1],
        "solved": res["solved"],
        "success_rate": res["success_rate"],
        "ci95_low": lo,
        "ci95_high": hi,
        "median_solved_at": res["median_solved_at"],
        **{v.replace(" ", "_"): verdicts.get(v, 0) for v in VERDICTS},
        "max_sparsity_error_solved": res["max_sparsity_error_of_solved"],
        # runs from before the certified readout have neither: their report reads as it did
        "max_certified_error_exact": res.get("max_certified_error_of_exact"),
        "certified_over": res.get("certified_over"),
        "circuits": "; ".join(f"{n}× {c}" for c, n in res["circuits_of_found"].items()),
        "common_stuck": "; ".join(f"{n}× {f}" for f, n in stuck.most_common(2)),
        "run_dir": res["run_dir"],
    }


def too_early(row: dict[str, Any]) -> bool:
    """Every member of the job had too few validations for a verdict (its budget was too short)."""
    return row.get("too_early", 0) == row["members"] and not row["found"]


def progress_line(row: dict[str, Any]) -> str:
    """The stderr line of a finished job: ``abs: 10/32 found the circuit (0.18–0.49), ...`` (no padding)."""
    if too_early(row):
        return (f"{row['job']}: too early to tell: all {row['members']} members had fewer than {MIN_VALIDATIONS} "
                "validations; give more steps (--max_steps) or validate more often")
    return (f"{row['job']}: {row['found']}/{row['members']} found the circuit "
            f"({row['found_ci95_low']:.2f}–{row['found_ci95_high']:.2f}), {row['solved']} solved, median at "
            f"{_fmt(row['median_solved_at'], '.0f')} steps; {row['circuits'] or 'no exact circuit'}")


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def write_markdown(rows: list[dict[str, Any]], path: Path, command: str, interrupted: str | None = None,
                   stopped: list[str] | None = None, extra: list[str] | None = None) -> None:
    """report.md (written atomically, whole); ``interrupted``: what stopped the report (only the jobs that
    finished are in it), ``stopped``: lines on the jobs it stopped, ``extra``: more sections (basins)."""
    lines = [
        "# circuits_pl report", "",
        f"`{command}`", "",
        *([f"**{interrupted}**", ""] if interrupted else []),
        "Every member trains the whole budget (no early stop). Found: the readout of its weights is an exact",
        "circuit of the task and its MSE is below the threshold or still falling geometrically. Solved",
        "(converged): validation MSE below the MSE of the exact circuit with every weight perturbed by ±1e-5.",
        "Verdicts: converged, converging (found, still on its way down), slow (still improving), stuck",
        "(validation MSE fell by < 1% over the last 8 validations), too early (< 3 validations), diverged.", "",
        "| task | sizes | lr | steps | found (95% CI) | solved (95% CI) | median solved at "
        "| converged / converging / slow / stuck / too early / diverged | sparsity err. (max, solved) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        counts = " / ".join(str(r[v.replace(" ", "_")]) for v in VERDICTS)
        lines.append(
            f"| {r['task']} | {r['layer_sizes']} | {r['lr']:g} | {r['steps']} "
            f"| {r['found']}/{r['members']} ({r['found_ci95_low']:.2f}–{r['found_ci95_high']:.2f}) "
            f"| {r['solved']}/{r['members']} ({r['ci95_low']:.2f}–{r['ci95_high']:.2f}) "
            f"| {_fmt(r['median_solved_at'], '.0f')} | {counts} | {_fmt(r['max_sparsity_error_solved'], '.2g')} |"
        )
    lines += ["", "## Circuits found", ""]
    for r in rows:
        found = r["circuits"] or ("too early to tell (fewer than "
                                  f"{MIN_VALIDATIONS} validations)" if too_early(r) else "none solved")
        lines.append(f"- **{r['task']}** ({r['layer_sizes']}, lr {r['lr']:g}): {found}"
                     + _certified_text(r)
                     + (f"; most common stuck: {r['common_stuck']}" if r["common_stuck"] else ""))
    lines += ["", "Runs (config.yaml, metrics.csv, checkpoints, results.json of each):", ""]
    lines += [f"- {r['job']}: `{r['run_dir']}`" for r in rows]
    if stopped:
        lines += ["", *stopped]
    lines += extra or []
    atomic_write_text(path, "\n".join(lines) + "\n")


def _certified_text(row: dict[str, Any]) -> str:
    """``; certified max error 3.4e-05 over [-1, 1]² (the largest of the exact members)``, or nothing."""
    if row.get("max_certified_error_exact") is None:
        return ""
    return (f"; certified max error {row['max_certified_error_exact']:.2g} over {row['certified_over']} "
            "(the largest of the exact members)")


def basins_markdown(results: list[dict[str, Any]]) -> list[str]:
    """report.md's Basins section: per job, the found rate per class of initial weights
    (``circuits_pl.basins``) and, for 1-h-1 nets, the dark ceiling 1 − 2^(1−h) beside the measured rates."""
    from circuits_pl.basins import summary_lines

    lines = ["", "## Basins: the initial weights against the outcome", "",
             "Sectors: arcs of input directions on which the target is linear and of one sign. A member's first-layer",
             "units each face one sector; a unit agrees when its output weight has the target's sign there.", ""]
    for res in results:
        b = res.get("basins")
        if not b:
            continue
        lines += [f"**{res.get('job', res['task'])}** ({'-'.join(map(str, res['layer_sizes']))}): sectors "
                  + "; ".join(b["sectors"]), ""]
        lines += [f"- {line}" for line in summary_lines(b)]
        lines += ["", "| sectors covered | by an agreeing unit | members | found (95% CI) |", "|---|---|---|---|"]
        for r in b["table"]:
            agreeing = "–" if r["agreeing"] is None else r["agreeing"]
            lines.append(f"| {r['covered']}/{r['sectors']} | {agreeing} | {r['members']} "
                         f"| {r['found']} ({r['ci95'][0]:.2f}–{r['ci95'][1]:.2f}) |")
        lines.append("")
    return lines if len(lines) > 6 else []


def plot_basins_of(res: dict[str, Any], path: Path) -> Path | None:
    """The job's initial units coloured by outcome (``plots.plot_basins``); None where basins are not defined."""
    from circuits_pl import basins
    from circuits_pl.plots import plot_basins

    if not res.get("basins"):
        return None
    task = get_task(res["task"])
    weights = basins.initial_weights(res["layer_sizes"], res["members"], res["init_seed"])
    per = res["per_member"]
    outcomes = basins.outcome_labels(per["found"], per["rough_formula"])
    sectors = basins.target_sectors(task) or []
    out = weights[-1][:, 0, :] if len(weights) == 2 else None
    title = f"{res.get('job', res['task'])}: initial units, coloured by what their member became"
    return plot_basins(weights[0], out, outcomes, [s.lo for s in sectors if task.arity == 2], title, path)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def plot_rates(rows: list[dict[str, Any]], path: Path) -> Path:
    """Bars with Wilson CIs, one per job; with a sizes x lrs sweep, one heat map per task instead."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    swept = any(len({(r["layer_sizes"], r["lr"]) for r in rows if r["task"] == t}) > 1 for t in tasks)
    if swept:
        return _plot_phase_diagram(rows, tasks, path)
    fig = Figure(figsize=(1.1 * len(rows) + 2.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    labels = [f"{r['task']}\n{r['layer_sizes']}" for r in rows]
    rates = [r["found_rate"] for r in rows]
    err = [[r["found_rate"] - r["found_ci95_low"] for r in rows],
           [r["found_ci95_high"] - r["found_rate"] for r in rows]]
    ax.bar(range(len(rows)), rates, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("seeds that found the exact circuit")
    ax.set_title(f"Success rate per seed, Wilson 95% CI ({rows[0]['members']} seeds each)", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _plot_phase_diagram(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> Path:
    """One heat map per task: found rate per (hidden sizes, lr) cell, with its Wilson 95% CI."""
    from circuits_pl.plots import plot_phase_diagram

    cells = [{"panel": r["task"], "layer_sizes": r["layer_sizes"], "lr": r["lr"], "rate": r["found_rate"],
              "low": r["found_ci95_low"], "high": r["found_ci95_high"]} for r in rows if r["task"] in tasks]
    return plot_phase_diagram(cells, f"Found the exact circuit, {rows[0]['members']} seeds per cell", path,
                              colour_label="success rate (Wilson 95% CI)")


def parse_sizes(text: str) -> list[list[int]]:
    """``2-2-1,2-4-1`` -> hidden layers ``[[2], [4]]`` (the input size is each task's arity)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            sizes = [int(p) for p in item.split("-")]
        except ValueError:
            raise CircuitsError(f"--sizes item {item!r} is not like 2-4-1 (sizes joined by -)") from None
        if len(sizes) < 3 or sizes[-1] != 1 or min(sizes) < 1:
            raise CircuitsError(f"--sizes item {item!r} needs input-hidden...-1 with positive sizes, e.g. 2-4-1")
        out.append(sizes[1:-1])
    return out


def parse_lrs(text: str) -> list[float]:
    try:
        lrs = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CircuitsError(f"--lrs {text!r} must be numbers joined by commas, e.g. 0.03,0.1,0.3") from None
    if not lrs or any(not lr > 0 for lr in lrs):
        raise CircuitsError(f"--lrs {text!r} must be positive numbers, e.g. 0.03,0.1,0.3")
    return lrs


def make_jobs(args: argparse.Namespace) -> list[Job]:
    if args.config:
        missing = [c for c in args.config if not Path(c).is_file()]
        if missing:
            raise CircuitsError(f"config file {missing[0]} does not exist")
        stems = [Path(c).stem for c in args.config]
        return [Job(name=s if stems.count(s) == 1 else f"{s}-{i}", config=c)
                for i, (s, c) in enumerate(zip(stems, args.config))]
    tasks = [get_task(t.strip()).name for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise CircuitsError("no tasks given; e.g. --tasks add,min")
    hidden = parse_sizes(args.sizes) if args.sizes else [None]
    lrs = parse_lrs(args.lrs) if args.lrs else [None]
    jobs = []
    for task in tasks:
        arity = get_task(task).arity
        for h in hidden:
            for lr in lrs:
                sizes = None if h is None else [arity, *h, 1]
                name = "_".join([task] + (["-".join(map(str, sizes))] if sizes else []) +
                                ([f"lr{lr:g}"] if lr is not None else []))
                jobs.append(Job(name=name, task=task, sizes=sizes, lr=lr))
    return jobs


def _check_resources(args: argparse.Namespace, jobs: list[Job]) -> None:
    """Before report's version_N exists: --out is a writable directory (not a file, not read-only), and
    the jobs run at once fit in memory (each fit checks itself too, but only after version_N exists)."""
    from circuits_pl import preflight
    from circuits_pl.memory import RunSize
    from circuits_pl.writable import check_writable_dir

    check_writable_dir(args.out, "--out", needed=2**20)
    available = preflight.available_bytes()
    at_once = max(1, min(args.jobs, len(jobs)))
    for job in jobs:
        if job.task and available is not None:
            sizes = tuple(job.sizes) if job.sizes else get_task(job.task).layer_sizes
            size = RunSize(sizes, args.members, 1000)
            preflight.check_memory(size, available // at_once, options={"members": "--members"})


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog=f"{program_name()} report",
        description="Train every task with many seeds (no early stop) and report success rates with "
                    "Wilson 95% CIs, solved-at steps, verdicts and the circuits found.",
    )
    parser.add_argument("--tasks", default=",".join(BUILTIN_TASKS),
                        help="comma-separated tasks, with circuits_pl's defaults (default: all built-in)")
    parser.add_argument("--sizes", default=None,
                        help="sweep layer sizes, e.g. 2-2-1,2-4-1,2-8-1: the hidden widths apply to every task "
                             "(the input size is the task's)")
    parser.add_argument("--lrs", default=None, help="sweep learning rates, e.g. 0.03,0.1,0.3")
    parser.add_argument("--config", nargs="+", default=[],
                        help="config files to run instead (their task, sizes, lr, budget), "
                             "e.g. configs/notebook/*.yaml")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS, help="seeds per job (default 128)")
    parser.add_argument("--max_steps", type=int, default=None,
                        help=f"SGD steps per job (default: the config's, else {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of member 0 (member k: seed + k)")
    parser.add_argument("--success_mse", type=float, default=None,
                        help="validation MSE below which a member counts as solved (default: the task's ε-threshold)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="fits run at once, one process and one torch thread each (default: CPU cores)")
    parser.add_argument("--out", default="reports", help="reports go to OUT/version_N (default: reports)")
    parser.add_argument("--engine", default="auto", choices=["auto", "fused", "torch"],
                        help="--model.engine of every fit (default auto: fused on the CPU)")
    args = parser.parse_args(argv)
    if args.members < 1:
        raise CircuitsError(f"--members must be a positive integer, got {args.members}")
    if args.max_steps is not None and args.max_steps < 1:
        raise CircuitsError(f"--max_steps must be a positive integer, got {args.max_steps}")
    if args.success_mse is not None and not args.success_mse > 0:
        raise CircuitsError(f"--success_mse must be a positive number, got {args.success_mse}")
    if args.jobs < 1:
        raise CircuitsError(f"--jobs must be a positive integer, got {args.jobs}")
    jobs = make_jobs(args)
    if args.engine != "auto":
        for job in jobs:
            job.extra += ["--model.engine", args.engine]
    if args.success_mse is not None:
        for job in jobs:
            job.extra += ["--model.success_mse", repr(args.success_mse)]
    _check_resources(args, jobs)
    try:
        out = Path(args.out) / f"version_{claim_version(args.out)}"
    except OSError as err:
        raise CircuitsError(f"cannot create the report directory in {args.out}: {err.strerror or err}") from None

    from tqdm import tqdm

    start = time.perf_counter()
    command = f"{program_name()} report " + " ".join(argv)
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc=f"report ({min(args.jobs, len(jobs))} at once)", unit="job", file=sys.stderr,
               dynamic_ncols=True, disable=not sys.stderr.isatty())
    running = Jobs()
    pool = ThreadPoolExecutor(max_workers=args.jobs)  # threads only wait for their fit's process
    interrupted: ReportInterrupted | None = None
    with _stop_on_signals():
        try:
            futures = {pool.submit(run_job, job, args.members, args.max_steps, out, args.seed, running): job
                       for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                res = future.result()
                results[job.name] = res
                row = report_row(res)
                bar.update(1)
                bar.write(progress_line(row), file=sys.stderr)
        except ReportInterrupted as err:
            interrupted = err
        except BaseException:
            running.stop(signal.SIGTERM, wait=signals.GRACE + 5)
            raise
        finally:
            if interrupted is not None:  # every running fit saves its last.ckpt and stops; none starts
                stopped = running.stop(interrupted.signum, wait=signals.GRACE + 5)
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    rows = [report_row(results[job.name]) for job in jobs if job.name in results]  # in the order asked
    ordered = [results[job.name] for job in jobs if job.name in results]
    if interrupted is not None:
        _report_interrupted(interrupted, rows, jobs, stopped, out, command, time.perf_counter() - start,
                            basins_markdown(ordered))
    write_markdown(rows, out / "report.md", command.strip(), extra=basins_markdown(ordered))
    for res in ordered:
        if res.get("task") and get_task(res["task"]).arity <= 2:
            plot_basins_of(res, out / f"basins_{res['job']}.png")
    write_csv(rows, out / "report.csv")
    plot_rates(rows, out / "report.png")
    print(f"Report ({len(jobs)} jobs, {time.perf_counter() - start:.0f} s): "
          f"{out / 'report.md'}, {out / 'report.csv'}, {out / 'report.png'}")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """While the jobs run: SIGINT/SIGTERM raise ReportInterrupted in the waiting main thread (a signal
    the parent ignores stays ignored)."""
    raised = []

    def stop(signum: int, frame: Any) -> None:
        signals.acknowledge()
        if not raised:  # once: a second signal must not break the stopping and the report's writing
            raised.append(signum)
            raise ReportInterrupted(signum)

    previous = {}
    for sig in signals.STOP_SIGNALS:
        if not signals.ignored_at_start(sig) and threading.current_thread() is threading.main_thread():
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report_interrupted(err: ReportInterrupted, rows: list[dict[str, Any]], jobs: list[Job], stopped: list[str],
                        out: Path, command: str, seconds: float, extra: list[str]) -> None:
    """Write the report of the jobs that finished, saying what stopped it; exit 128 + signal."""
    name = signal.Signals(err.signum).name
    stopped = [job.name for job in jobs if job.name in set(stopped)]  # in the order asked, whichever started first
    note = (f"Interrupted by {name} after {seconds:.0f} s: {len(rows)} of {len(jobs)} jobs finished and are "
            "reported here")
    resume = []
    for job in stopped:
        last = sorted((out / "runs" / job / "lightning_logs").glob("version_*/checkpoints/last.ckpt"))
        if last:
            run = last[-1].parent.parent
            resume.append(f"- {job}: `{program_name()} fit --config {shlex.quote(str(run / 'config.yaml'))} "
                          f"--ckpt_path {shlex.quote(str(last[-1]))}`")
        else:
            resume.append(f"- {job}: stopped before its first checkpoint")
    if stopped:
        note += f"; stopped while running: {', '.join(stopped)} (below); the others never started"
    written = [out / "report.md"]
    write_markdown(rows, out / "report.md", command.strip(), interrupted=note,
                   stopped=["Stopped jobs, each resumable from its last.ckpt (or run again):", "", *resume],
                   extra=extra)
    if rows:
        write_csv(rows, out / "report.csv")
        written += [out / "report.csv", plot_rates(rows, out / "report.png")]
    print(f"{name}: report interrupted; {len(rows)} of {len(jobs)} jobs finished: {', '.join(map(str, written))}",
          file=sys.stderr)
    raise SystemExit(128 + err.signum)
