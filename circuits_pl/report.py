"""``python -m circuits_pl report``: the study — every task (and cell) with many seeds, as one table.

The study's cells are every task × ``--sweep.sizes`` × ``--sweep.lr`` × ``--sweep.init_scale`` (or the cells of
``--config`` files). One ``fit`` trains a task's whole diagram side by side (its members differ in
sizes, lr and init scale: ``circuits_pl.sweep``), with many seeds per cell and no early stop, so every
seed trains the whole budget; ``--jobs N`` splits a task's seeds over at most N fits. Where a cell's
seeds were trained changes nothing in its row (``circuits_pl.study``). With ``--ci_width`` seeds are
added in rounds to the cells whose interval is still wider than the target. The fits run here
(``--launcher local``) or on a SLURM cluster (``--launcher slurm``: ``circuits_pl.launch``). Then:

    report.md    per cell: success rate with Wilson 95% CI, median solved-at step, verdicts (exact /
                 slow / stuck / diverged), sparsity error of the solved members, the circuits found,
                 the most common stuck functions; the basins of the initial weights; per fit, when circuits
                 formed (formed-at against solved-at) and the common paths through circuits (the timeline)
    report.csv   the same table, one row per cell (``members``: the seeds it took)
    report.png   success rates with their confidence intervals (a heat map per task and init scale,
                 sizes x lrs, when the study sweeps them)
    study.json   the command, so that ``report --resume OUT/version_N`` continues the study

Jobs: the built-in tasks with circuits_pl's defaults (``--tasks`` to choose), swept over
``--sweep.sizes``, ``--sweep.lr`` and ``--sweep.init_scale`` if given; or config files (``--config
configs/notebook/*.yaml`` runs the notebook's study: its sizes, lr and budgets).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from circuits_pl import signals
from circuits_pl.errors import CircuitsError
from circuits_pl.files import atomic_write_text, claim_version
from circuits_pl.launch import LAUNCHERS, FitSpec, JobStopped, SlurmOptions, check_launcher, make_launcher
from circuits_pl.preflight import check_config_file
from circuits_pl.study import Base, CellRecord, FitPlan, Study
from circuits_pl.sweep import Cell, parse_positive_list, parse_sizes_list
from circuits_pl.tasks import BUILTIN_TASKS, get_task
from circuits_pl.usage import current_spelling, program_name
from circuits_pl.verdicts import MIN_VALIDATIONS, VERDICTS

DEFAULT_MEMBERS = 128
DEFAULT_STEPS = 20_000
DEFAULT_LR = 0.1  # CircuitModule's
DEFAULT_MAX_MEMBERS = 1024  # with --ci_width: the interval of a rate near 0.5 is then 0.06 wide
STUDY_FILE = "study.json"
# report's own options that --resume lets change: where and how many at once the fits run, not what they are
RESUMABLE = ("--resume", "--launcher", "--jobs", "--slurm.")


# -------------------------------------------------------------------------------------------------
# Options: the typed parameters of `report` and their help (its docstring), the one place they are
# declared; circuits_pl.cli puts them on the command root. What fit also has has fit's name.
# -------------------------------------------------------------------------------------------------
SLURM_DEFAULTS = SlurmOptions()


@dataclass(frozen=True)
class StudySweep:
    """The cells of every task (as fit's --sweep.*): every combination of these is a cell.

    Args:
        sizes: layer sizes, e.g. 2-2-1,2-4-1,2-8-1: the hidden widths apply to every task (the input size is
            the task's)
        lr: learning rates, e.g. 0.03,0.1,0.3
        init_scale: initial-weight scales (a factor on nn.Linear's init bound), e.g. 0.5,1
    """

    sizes: str | None = None
    lr: str | None = None
    init_scale: str | None = None


@dataclass(frozen=True)
class StudyModel:
    """What every fit trains (as fit's --model.*).

    Args:
        members: seeds per cell (with --ci_width: per round)
        success_mse: validation MSE below which a member counts as solved (null: the task's ε-threshold)
        engine: --model.engine of every fit (auto: fused on the CPU)
    """

    members: int = DEFAULT_MEMBERS
    success_mse: float | None = None
    engine: Literal["auto", "fused", "torch"] = "auto"


@dataclass(frozen=True)
class StudyTrainer:
    """How long every fit trains (as fit's --trainer.*).

    Args:
        max_steps: SGD steps per fit (null: the config file's, else 20000)
    """

    max_steps: int | None = None


def report(tasks: str = ",".join(BUILTIN_TASKS), sweep: StudySweep = StudySweep(), config: list[str] | None = None,
           model: StudyModel = StudyModel(), trainer: StudyTrainer = StudyTrainer(), seed_everything: int = 0,
           jobs: int | None = None, out: str = "reports", ci_width: float | None = None,
           max_members: int | None = None, resume: str | None = None, launcher: str = "local",
           slurm: SlurmOptions = SLURM_DEFAULTS, *, argv: Sequence[str] = ()) -> None:
    """The success-rate study: every task, many seeds, Wilson 95% intervals

    Train every task with many seeds (no early stop) and report success rates with Wilson 95% CIs,
    solved-at steps, verdicts and the circuits found (OUT/version_N/report.md, report.csv, report.png).

    Args:
        tasks: comma-separated tasks, each with circuits_pl's defaults
        sweep: the cells of every task
        config: config files to run instead of --tasks (their task, sizes, lr, budget), e.g.
            configs/notebook/*.yaml
        model: what every fit trains
        trainer: how long every fit trains
        seed_everything: seed of member 0 of every cell (member k: seed_everything + k) and of the data
        jobs: local: fits run at once, one process and one torch thread each (null: one per CPU core); a task's
            seeds are split over at most this many fits. slurm: fits per task (null: 1)
        out: reports go to OUT/version_N
        ci_width: add --model.members seeds per round to every cell whose found rate's 95% Wilson interval is
            wider than this (e.g. 0.1), until it is not or the cell has --max_members
        max_members: with --ci_width: at most this many seeds per cell (null: 1024)
        resume: OUT/version_N: continue an interrupted report: finished fits are read, fits cut mid-way resume
            from their last.ckpt (only --launcher, --jobs and --slurm.* may change)
        launcher: where the fits run: local (processes here), slurm (SLURM jobs through submitit: pip install
            'circuits_pl[slurm]'), or submitit_local (submitit's local executor, a check of that path)
        slurm: with --launcher slurm
        argv: the command line as typed (study.json keeps it for --resume; report.md quotes it)
    """
    run(_study_args(tasks, sweep, config, model, trainer, seed_everything, jobs, out, ci_width, max_members, resume,
                    launcher, slurm), list(argv))


# The numbers the help quotes, from their one definition (a docstring cannot be an f-string).
StudyTrainer.__doc__ = StudyTrainer.__doc__.replace("20000", str(DEFAULT_STEPS))
report.__doc__ = report.__doc__.replace("(null: 1024)", f"(null: {DEFAULT_MAX_MEMBERS})")


def _study_args(tasks: str, sweep: StudySweep, config: list[str] | None, model: StudyModel, trainer: StudyTrainer,
                seed_everything: int, jobs: int | None, out: str, ci_width: float | None, max_members: int | None,
                resume: str | None, launcher: str, slurm: SlurmOptions) -> argparse.Namespace:
    """:func:`report`'s options as the study reads them."""
    return argparse.Namespace(
        tasks=tasks, sizes=sweep.sizes, lrs=sweep.lr, init_scales=sweep.init_scale, config=list(config or []),
        members=model.members, success_mse=model.success_mse, engine=model.engine, max_steps=trainer.max_steps,
        seed=seed_everything, jobs=jobs, out=out, ci_width=ci_width, max_members=max_members, resume=resume,
        launcher=launcher, slurm=slurm)


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """``--config a.yaml b.yaml`` (a shell's ``configs/notebook/*.yaml``) as the one list it is."""
    argv = [str(a) for a in argv]
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--config":
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            out.append(f"--config={json.dumps(argv[i + 1:j])}" if j > i + 1 else argv[i])
            i = j
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``report ARGV``'s options, parsed by report's own parser (the one the command root has), as
    :func:`report` hands them on. For tools that plan a study without running it (benchmarks/study.py)."""
    from circuits_pl.compat import call_options, function_parser

    parser = function_parser(report, "report")
    argv = normalise_argv(current_spelling("report", argv, say=False))
    return _study_args(**call_options(report, parser.parse_args(argv)))


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    values = dataclasses.asdict(args.slurm)
    for key in ("time", "cpus_per_task", "array_parallelism"):
        if values[key] < 1:
            raise CircuitsError(f"--slurm.{key} must be a positive integer, got {values[key]}")
    if values["gpus_per_node"] < 0:
        raise CircuitsError(f"--slurm.gpus_per_node must be 0 or more, got {values['gpus_per_node']}")
    return args.slurm


def _resumed(argv: list[str]) -> tuple[argparse.Namespace, list[str], dict]:
    """``--resume DIR``: the study's own command line (its study.json) with the options that may change."""
    given = parse_args(argv)
    changed = [a.split("=")[0] for a in argv if a.startswith("--") and not a.startswith(RESUMABLE)]
    if changed:
        raise CircuitsError(f"--resume continues the study as it was started; drop {', '.join(changed)} "
                            "(only --launcher, --jobs and --slurm.* may change)")
    path = Path(given.resume) / STUDY_FILE
    try:
        saved = json.loads(path.read_text())
        # a study started before its options had fit's names: the current spellings, silently
        original = current_spelling("report", [str(a) for a in saved["argv"]], say=False)
    except FileNotFoundError:
        raise CircuitsError(f"--resume {given.resume}: no {STUDY_FILE} there (give a report directory, "
                            "e.g. reports/version_0, made by this version of report)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CircuitsError(f"--resume {given.resume}: {path} is not readable or not a study ({err})") from None
    args = parse_args(original + argv)  # the later options win: launcher, jobs, slurm
    return args, original, saved


def _check_args(args: argparse.Namespace) -> None:
    if args.members < 1:
        raise CircuitsError(f"--model.members must be a positive integer, got {args.members}")
    if args.max_steps is not None and args.max_steps < 1:
        raise CircuitsError(f"--trainer.max_steps must be a positive integer, got {args.max_steps}")
    if args.success_mse is not None and not args.success_mse > 0:
        raise CircuitsError(f"--model.success_mse must be a positive number, got {args.success_mse}")
    if args.jobs is not None and args.jobs < 1:
        raise CircuitsError(f"--jobs must be a positive integer, got {args.jobs}")
    if args.ci_width is not None:
        if not 0 < args.ci_width < 1:
            raise CircuitsError(f"--ci_width must be a width between 0 and 1 (e.g. 0.1), got {args.ci_width}")
        if args.config:
            raise CircuitsError("--ci_width adds seeds to the cells of --tasks (× --sweep.sizes × --sweep.lr × "
                                "--sweep.init_scale); "
                                "a --config file runs as one fit: drop one of them")
        if args.max_members is not None and args.max_members < args.members:
            raise CircuitsError(f"--max_members ({args.max_members}) must be at least --model.members "
                                f"({args.members}), "
                                "the seeds of the first round")
    elif args.max_members is not None:
        raise CircuitsError("--max_members caps the rounds of --ci_width: give --ci_width too (e.g. --ci_width 0.1)")


def make_study(args: argparse.Namespace) -> tuple[list[Base], dict[str, list[Cell]]]:
    """The bases (tasks or config files) and each task's cells, in the order asked."""
    if args.config:
        # fit's own checks of a config file (a directory, a binary or empty file, not a mapping), before
        # anything is written; its options are fit's to check, in the job
        for path in args.config:
            check_config_file(path)
        stems = [Path(c).stem for c in args.config]
        return [Base(s if stems.count(s) == 1 else f"{s}-{i}", config=c)
                for i, (s, c) in enumerate(zip(stems, args.config))], {}
    tasks = [get_task(t.strip()).name for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise CircuitsError("no tasks given; e.g. --tasks add,min")
    arities = {t: get_task(t).arity for t in tasks}
    hidden = None
    if args.sizes:
        sizes = parse_sizes_list(args.sizes, option="--sweep.sizes")
        for s in sizes:
            if s[0] not in arities.values():
                takes = " or ".join(f"{a} ({', '.join(t for t in tasks if arities[t] == a)})"
                                    for a in sorted(set(arities.values())))
                raise CircuitsError(f"--sweep.sizes item {'-'.join(map(str, s))} starts with {s[0]} inputs; "
                                    "the tasks take "
                                    f"{takes}: e.g. {min(arities.values())}-{'-'.join(map(str, s[1:]))} (each task "
                                    "gets its own input size)")
        hidden = [list(s[1:-1]) for s in sizes]
    lrs = parse_positive_list(args.lrs, "--sweep.lr") if args.lrs else [DEFAULT_LR]
    scales = parse_positive_list(args.init_scales, "--sweep.init_scale") if args.init_scales else [1.0]
    cells = {}
    for task in tasks:
        layers = [get_task(task).layer_sizes] if hidden is None else [(arities[task], *h, 1) for h in hidden]
        cells[task] = [Cell(tuple(s), lr, sc) for s in layers for lr in lrs for sc in scales]
    return [Base(t, task=t) for t in tasks], cells


def shards_per_base(args: argparse.Namespace, task_bases: int) -> int:
    """How many fits share a task's seeds. Local: the fewest (at most --jobs) that keep all --jobs
    processes busy to the end, --jobs / gcd(tasks, --jobs): 3 tasks on 2 cores -> 2 fits per task (six
    half-fits, three rounds of two) rather than three whole fits, the last alone. SLURM: --jobs (default 1)."""
    if args.launcher != "local":
        return args.jobs or 1
    jobs = args.jobs or os.cpu_count() or 1
    return max(1, min(args.members, jobs // math.gcd(max(task_bases, 1), jobs)))


# -------------------------------------------------------------------------------------------------
# Rows, markdown, csv, figures
# -------------------------------------------------------------------------------------------------
def too_early(row: dict[str, Any]) -> bool:
    """Every member of the cell had too few validations for a verdict (its budget was too short)."""
    return row.get("too_early", 0) == row["members"] and not row["found"]


def progress_line(row: dict[str, Any]) -> str:
    """The stderr line of a finished cell: ``abs: 10/32 found the circuit (0.18–0.49), ...`` (no padding)."""
    if too_early(row):
        return (f"{row['job']}: too early to tell: all {row['members']} members had fewer than {MIN_VALIDATIONS} "
                "validations; give more steps (--trainer.max_steps) or validate more often")
    return (f"{row['job']}: {row['found']}/{row['members']} found the circuit "
            f"({row['found_ci95_low']:.2f}–{row['found_ci95_high']:.2f}), {row['solved']} solved, median at "
            f"{_fmt(row['median_solved_at'], '.0f')} steps; {row['circuits'] or 'no exact circuit'}")


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def _scaled(rows: list[dict[str, Any]]) -> bool:
    return any(r.get("init_scale", 1.0) != 1.0 for r in rows)


def _setting(row: dict[str, Any]) -> str:
    """``1-2-1, lr 0.1`` (``, init ×0.5`` when the scale is not 1)."""
    text = f"{row['layer_sizes']}, lr {row['lr']:g}"
    scale = row.get("init_scale", 1.0)
    return text if scale == 1.0 else f"{text}, init ×{scale:g}"


def write_markdown(rows: list[dict[str, Any]], path: Path, command: str, interrupted: str | None = None,
                   stopped: list[str] | None = None, extra: list[str] | None = None,
                   runs: list[tuple[str, str]] | None = None, rounds: list[str] | None = None) -> None:
    """report.md (written atomically, whole); ``interrupted``: what stopped the report (only the fits that
    finished are in it), ``stopped``: lines on the fits it stopped, ``extra``: more sections (basins),
    ``runs``: (fit, run directory) of every fit, ``rounds``: what ``--ci_width`` did."""
    scaled = _scaled(rows)
    lines = [
        "# circuits_pl report", "",
        f"`{command}`", "",
        *([f"**{interrupted}**", ""] if interrupted else []),
        "Every member trains the whole budget (no early stop). Found: the readout of its weights is an exact",
        "circuit of the task and its MSE is below the threshold or, from its timeline, it holds that circuit and",
        "a power law of its last validations reaches the threshold within twice the steps trained. Solved",
        "(converged): the exact MSE over the whole input box (one or two inputs; else the validation MSE) below",
        "the MSE of the exact circuit with every weight perturbed by ±1e-5.",
        "Verdicts: converged, converging (found, still on its way down), slow (still improving), stuck",
        "(validation MSE fell by < 1% over the last 8 validations), too early (< 3 validations), diverged.", "",
        *([*rounds, ""] if rounds else []),
        f"| task | sizes | lr |{' init |' if scaled else ''} steps | found (95% CI) | solved (95% CI) "
        "| median solved at | converged / converging / slow / stuck / too early / diverged "
        "| sparsity err. (max, solved) |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if scaled else ""),
    ]
    def init(r: dict[str, Any]) -> str:
        return f" {r.get('init_scale', 1.0):g} |" if scaled else ""

    for r in rows:
        counts = " / ".join(str(r[v.replace(" ", "_")]) for v in VERDICTS)
        lines.append(
            f"| {r['task']} | {r['layer_sizes']} | {r['lr']:g} |{init(r)} {r['steps']} "
            f"| {r['found']}/{r['members']} ({r['found_ci95_low']:.2f}–{r['found_ci95_high']:.2f}) "
            f"| {r['solved']}/{r['members']} ({r['ci95_low']:.2f}–{r['ci95_high']:.2f}) "
            f"| {_fmt(r['median_solved_at'], '.0f')} | {counts} | {_fmt(r['max_sparsity_error_solved'], '.2g')} |"
        )
    lines += ["", "## Circuits found", ""]
    for r in rows:
        found = r["circuits"] or ("too early to tell (fewer than "
                                  f"{MIN_VALIDATIONS} validations)" if too_early(r) else "none solved")
        lines.append(f"- **{r['task']}** ({_setting(r)}): {found}"
                     + _certified_text(r)
                     + (f"; most common stuck: {r['common_stuck']}" if r["common_stuck"] else ""))
    lines += ["", "Runs (config.yaml, metrics.csv, checkpoints, results.json of each):", ""]
    lines += [f"- {name}: `{run}`" for name, run in (runs if runs is not None else
                                                      [(r["job"], r["run_dir"]) for r in rows])]
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


def _basins(record: CellRecord) -> dict[str, Any] | None:
    """The cell's basins summary (``basins.summary``) from its members' classes, in seed order."""
    from circuits_pl import basins

    members = record.ordered()
    if not members or members[0]["sectors_covered"] is None or record.sectors is None or record.task is None:
        return None
    classes = [basins.Basin(m["sectors_covered"], m["sectors_agreeing"], record.sectors, ()) for m in members]
    return basins.summary(get_task(record.task), record.cell.layer_sizes, classes, [bool(m["found"]) for m in members])


def basins_markdown(records: list[tuple[str, CellRecord]]) -> list[str]:
    """report.md's Basins section: per cell, the found rate per class of initial weights
    (``circuits_pl.basins``) and, for 1-h-1 nets, the dark ceiling 1 − 2^(1−h) beside the measured rates."""
    from circuits_pl.basins import summary_lines

    lines = ["", "## Basins: the initial weights against the outcome", "",
             "Sectors: arcs of input directions on which the target is linear and of one sign. A member's first-layer",
             "units each face one sector; a unit agrees when its output weight has the target's sign there.", ""]
    for name, record in records:
        b = _basins(record)
        if not b:
            continue
        lines += [f"**{name}** ({'-'.join(map(str, record.cell.layer_sizes))}): sectors " + "; ".join(b["sectors"]), ""]
        lines += [f"- {line}" for line in summary_lines(b)]
        lines += ["", "| sectors covered | by an agreeing unit | members | found (95% CI) |", "|---|---|---|---|"]
        for r in b["table"]:
            agreeing = "–" if r["agreeing"] is None else r["agreeing"]
            lines.append(f"| {r['covered']}/{r['sectors']} | {agreeing} | {r['members']} "
                         f"| {r['found']} ({r['ci95'][0]:.2f}–{r['ci95'][1]:.2f}) |")
        lines.append("")
    return lines if len(lines) > 6 else []


def timeline_markdown(results: list[dict[str, Any]]) -> list[str]:
    """report.md's Timeline section: per fit (a task's cells together), when the found members' circuits
    formed (the distribution of ``formed_at`` beside that of ``solved_at``) and the most common paths
    through circuits; a fit from before the timeline says it has none."""
    lines = ["", "## Timeline: when circuits form, and the paths to them", "",
             "Formed at: the step from which the timeline (each member's circuit at every validation) named a",
             "member's final circuit. Quantiles over the found members; paths: each member's circuits in order.", ""]
    for res in results:
        cells = res.get("cells") or [res]
        setting = f"{len(cells)} cells" if len(cells) > 1 else "-".join(map(str, cells[0]["layer_sizes"]))
        name = f"**{res.get('job', res['task'])}** ({setting})"
        t = res.get("timeline")
        if not t:
            lines += [f"- {name}: timeline absent (a run from before circuits_pl recorded one)", ""]
            continue
        per = res["per_member"]
        formed = [f for f, ok in zip(per["formed_at"] or [], per["found"]) if ok and f is not None]
        solved = [s for s in per["solved_at"] if s is not None]
        ci = t.get("formed_at_ci95")
        median = f"; median {t['formed_at_median_of_found']:.0f}, 95% CI {ci[0]:.0f}–{ci[1]:.0f}" if ci else ""
        lines.append(f"{name}: {t['validations']} validations, circuits {t['tracked']}; formed at "
                     f"{_quantiles(formed)} ({len(formed)} found members{median}), solved at {_quantiles(solved)}")
        lines.append("")
        for p in t["common_paths"][:5]:
            lines.append(f"- {p['members']}× {' → '.join(p['path'])}")
        lines.append("")
    return lines


def _quantiles(values: list[float]) -> str:
    """``min 1000, quartiles 2000 / 3000 / 3000, max 5000`` (or ``–`` for none)."""
    if not values:
        return "–"
    xs = sorted(values)

    def q(f: float) -> float:
        return xs[min(len(xs) - 1, int(f * (len(xs) - 1) + 0.5))]

    return f"min {xs[0]:.0f}, quartiles {q(0.25):.0f} / {q(0.5):.0f} / {q(0.75):.0f}, max {xs[-1]:.0f}"


def plot_basins_of(name: str, record: CellRecord, path: Path) -> Path | None:
    """The cell's initial units coloured by outcome (``plots.plot_basins``); None where basins are not defined."""
    from circuits_pl import basins
    from circuits_pl.plots import plot_basins

    members = record.ordered()
    if not members or members[0]["sectors_covered"] is None or record.seed is None:
        return None
    task = get_task(record.task)
    cell = record.cell
    weights = basins.initial_weights(cell.layer_sizes, len(members), record.seed, init_scale=cell.init_scale)
    outcomes = basins.outcome_labels([bool(m["found"]) for m in members], [m["rough_formula"] for m in members])
    sectors = basins.target_sectors(task) or []
    out = weights[-1][:, 0, :] if len(weights) == 2 else None
    title = f"{name}: initial units, coloured by what their member became"
    return plot_basins(weights[0], out, outcomes, [s.lo for s in sectors if task.arity == 2], title, path)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _seeds_text(rows: list[dict[str, Any]]) -> str:
    counts = [r["members"] for r in rows]
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def plot_rates(rows: list[dict[str, Any]], path: Path) -> Path:
    """Bars with Wilson CIs, one per cell; with a sweep, a heat map per task (and init scale) instead."""
    from matplotlib.figure import Figure

    from circuits_pl.plots import save_figure  # here: the fits start without waiting for torch's import

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    swept = any(len({(r["layer_sizes"], r["lr"], r.get("init_scale", 1.0)) for r in rows if r["task"] == t}) > 1
                for t in tasks)
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
    ax.set_title(f"Success rate per seed, Wilson 95% CI ({_seeds_text(rows)} seeds each)", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _plot_phase_diagram(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> Path:
    """One heat map per task and init scale: found rate per (hidden sizes, lr) cell, with its Wilson 95% CI."""
    from circuits_pl.plots import plot_phase_diagram

    scaled = len({r.get("init_scale", 1.0) for r in rows}) > 1
    cells = [{"panel": r["task"] + (f", init ×{r.get('init_scale', 1.0):g}" if scaled else ""),
              "layer_sizes": r["layer_sizes"], "lr": r["lr"], "rate": r["found_rate"],
              "low": r["found_ci95_low"], "high": r["found_ci95_high"]} for r in rows if r["task"] in tasks]
    return plot_phase_diagram(cells, f"Found the exact circuit, {_seeds_text(rows)} seeds per cell", path,
                              colour_label="success rate (Wilson 95% CI)")


# -------------------------------------------------------------------------------------------------
# The command
# -------------------------------------------------------------------------------------------------
def _check_resources(args: argparse.Namespace, study: Study, shards: int) -> None:
    """Before report's version_N exists: --out is a writable directory (not a file, not read-only), and
    the fits run at once fit in memory (each fit checks itself too, but only after version_N exists)."""
    from circuits_pl import preflight
    from circuits_pl.memory import RunSize
    from circuits_pl.writable import check_writable_dir

    check_writable_dir(args.out, "--out", needed=2**20)
    available = preflight.available_bytes()
    if available is None or args.launcher != "local":
        return
    at_once = max(1, min(args.jobs or os.cpu_count() or 1, len(study.bases) * shards))
    per_fit = -(-args.members // shards)
    for base in study.bases:
        cells = study.cells[base.name]
        if base.task and cells:
            widest = max((c.layer_sizes for c in cells), key=lambda s: sum(a * b for a, b in zip(s[:-1], s[1:])))
            size = RunSize(widest, per_fit * len(cells), 1000)
            preflight.check_memory(size, available // at_once, options={"members": "--model.members"}, cells=len(cells))


def fit_spec(plan: FitPlan, args: argparse.Namespace, out: Path, extra: list[str]) -> FitSpec:
    root = out / "runs" / plan.name
    return FitSpec(plan.name, str(root), str(out / "runs" / f"{plan.name}.log"),
                   tuple(plan.fit_args(args.seed, args.max_steps, root, DEFAULT_STEPS, extra)))


def run(args: argparse.Namespace, argv: list[str]) -> None:
    """Run the study of ``args`` (:func:`report`'s options); ``argv``: the command line as typed."""
    if args.launcher not in LAUNCHERS:  # argparse's words, as for every other choice
        raise CircuitsError(f"argument --launcher: invalid choice: {args.launcher!r} "
                            f"(choose from {', '.join(map(repr, LAUNCHERS))})")
    resuming = args.resume is not None
    if resuming:
        args, original, saved = _resumed(argv)
    else:
        original, saved = argv, {}
    _check_args(args)
    options = slurm_options(args)
    check_launcher(args.launcher)
    bases, cells = make_study(args)
    shards = int(saved.get("shards") or shards_per_base(args, sum(b.task is not None for b in bases)))
    study = Study(bases, cells, args.seed, args.members, args.ci_width,
                  (args.max_members or DEFAULT_MAX_MEMBERS) if args.ci_width is not None else None, shards)
    extra = ["--model.success_mse", repr(args.success_mse)] if args.success_mse is not None else []
    if args.engine != "auto":
        extra += ["--model.engine", args.engine]
    if resuming:
        out = Path(args.resume)
    else:
        _check_resources(args, study, shards)
        try:
            out = Path(args.out) / f"version_{claim_version(args.out)}"
        except OSError as err:
            raise CircuitsError(f"cannot create the report directory in {args.out}: {err.strerror or err}") from None
        atomic_write_text(out / STUDY_FILE, json.dumps({"argv": original, "shards": shards}, indent=2) + "\n")

    from tqdm import tqdm

    start = time.perf_counter()
    command = f"{program_name()} report " + " ".join(shlex.quote(a) for a in original)
    jobs_at_once = args.jobs or os.cpu_count() or 1
    launcher = make_launcher(args.launcher, jobs_at_once, out / "submitit", options)
    plans = study.first_round()
    planned: list[FitPlan] = []
    runs: list[tuple[str, str]] = []
    fit_results: list[dict[str, Any]] = []  # each fit's results.json, for the timeline section
    rounds: list[str] = []
    interrupted: ReportInterrupted | JobStopped | None = None
    with _stop_on_signals():
        try:
            while plans:
                planned += plans
                by_name = {p.name: p for p in plans}
                left = {b.name: sum(p.base == b for p in plans) for b in bases}
                bar = tqdm(total=len(plans), unit="fit", file=sys.stderr, dynamic_ncols=True,
                           desc=f"report{f' round {study.round}' if study.round else ''} "
                                f"({min(jobs_at_once, len(plans)) if args.launcher == 'local' else args.launcher})",
                           disable=not sys.stderr.isatty())

                def done(spec: FitSpec, res: dict, run_dir: Path, by_name=by_name, left=left, bar=bar) -> None:
                    plan = by_name[spec.name]
                    study.add(plan, res, str(run_dir))
                    runs.append((spec.name, str(run_dir)))
                    fit_results.append({**res, "job": spec.name})
                    bar.update(1)
                    left[plan.base.name] -= 1
                    if not left[plan.base.name]:  # the base's cells have their seeds of this round
                        for row in study.rows():
                            if row["task"] and _in_round(row, plan, by_name):
                                bar.write(progress_line(row), file=sys.stderr)

                launcher.run([fit_spec(p, args, out, extra) for p in plans], done)
                bar.close()
                plans = study.next_round()
                if plans:
                    line = _round_line(study, plans)
                    rounds.append(line)
                    print(line, file=sys.stderr)
        except (ReportInterrupted, JobStopped) as err:
            interrupted = err
    named = study.named_records()
    rows = study.rows()
    done_runs = sorted(runs, key=lambda nr: [p.name for p in planned].index(nr[0]))
    extra_md = basins_markdown(named) + timeline_markdown(fit_results)
    rounds_md = _rounds_summary(study, rows, rounds)
    if interrupted is not None:
        _report_interrupted(interrupted, rows, planned, launcher.stopped_names, out, command,
                            time.perf_counter() - start, extra_md, done_runs, rounds_md)
    write_markdown(rows, out / "report.md", command.strip(), extra=extra_md, runs=done_runs, rounds=rounds_md)
    for name, record in named:
        if record.task and get_task(record.task).arity <= 2:
            plot_basins_of(name, record, out / f"basins_{name}.png")
    write_csv(rows, out / "report.csv")
    plot_rates(rows, out / "report.png")
    counts = f"{len(rows)} cell{'s' * (len(rows) != 1)}, {len(planned)} fit{'s' * (len(planned) != 1)}"
    print(f"Report ({counts}, {time.perf_counter() - start:.0f} s): "
          f"{out / 'report.md'}, {out / 'report.csv'}, {out / 'report.png'}")


def _in_round(row: dict[str, Any], plan: FitPlan, by_name: dict[str, FitPlan]) -> bool:
    """Is the row's cell one of ``plan``'s base that this round trained?"""
    cells = {c for p in by_name.values() if p.base == plan.base for c in p.cells}
    scale = row.get("init_scale", 1.0)
    return (row["task"] == (plan.base.task or row["task"]) and
            (not cells or any("-".join(map(str, c.layer_sizes)) == row["layer_sizes"] and c.lr == row["lr"]
                              and c.init_scale == scale for c in cells)))


def _round_line(study: Study, plans: list[FitPlan]) -> str:
    """``round 2: 5 of 12 cells still wider than 0.1: 64 more seeds each (seeds 128-191)``."""
    cells = {(p.base.name, c) for p in plans for c in p.cells}
    total = sum(len(v) for v in study.cells.values())
    firsts = sorted({p.first for p in plans})
    count = sum(p.count for p in plans if p.base == plans[0].base and p.first >= plans[0].first)
    return (f"round {study.round}: {len(cells)} of {total} cells still have a found-rate interval wider than "
            f"{study.ci_width:g}: {count} more seeds each (from seed offset {firsts[0]})")


def _rounds_summary(study: Study, rows: list[dict[str, Any]], rounds: list[str]) -> list[str]:
    """report.md's lines on ``--ci_width``: the rule, the rounds, and the cells it could not answer."""
    if study.ci_width is None:
        return []
    wide = [r["job"] for r in rows if r["found_ci95_high"] - r["found_ci95_low"] > study.ci_width]
    lines = [f"Seeds were added in rounds of {study.members} to every cell whose found rate's 95% Wilson interval "
             f"was wider than {study.ci_width:g}, up to {study.max_members} seeds per cell "
             f"({study.round + 1} round{'s' if study.round else ''}); `members` says how many each took."]
    lines += [f"- {line}" for line in rounds]
    if wide:
        lines.append(f"- still wider than {study.ci_width:g} at {study.max_members} seeds: {', '.join(wide)}")
    return lines


class ReportInterrupted(BaseException):
    """A signal stopped the report (a BaseException, like KeyboardInterrupt: nothing may swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """While the fits run: SIGINT/SIGTERM raise ReportInterrupted in the waiting main thread (a signal
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


def _report_interrupted(err: ReportInterrupted | JobStopped, rows: list[dict[str, Any]], planned: list[FitPlan],
                        stopped: list[str], out: Path, command: str, seconds: float, extra: list[str],
                        runs: list[tuple[str, str]], rounds: list[str]) -> None:
    """Write the report of the fits that finished, saying what stopped it; exit 128 + signal."""
    name = signal.Signals(err.signum).name
    stopped_now = set(stopped) | ({err.name} if isinstance(err, JobStopped) else set())
    stopped = [p.name for p in planned if p.name in stopped_now]  # in the order asked, whichever started first
    why = f"job {err.name} was stopped by {name}" if isinstance(err, JobStopped) else None
    note = (f"Interrupted by {name}{f' ({why})' if why else ''} after {seconds:.0f} s: {len(runs)} of {len(planned)} "
            "jobs finished and are reported here")
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
                   stopped=[f"Continue the study (finished fits are kept, stopped ones resume from their last.ckpt): "
                            f"`{program_name()} report --resume {shlex.quote(str(out))}`", "",
                            "Stopped jobs, each resumable from its last.ckpt (or run again):", "", *resume],
                   extra=extra, runs=runs, rounds=rounds)
    if rows:
        write_csv(rows, out / "report.csv")
        written += [out / "report.csv", plot_rates(rows, out / "report.png")]
    print(f"{name}: report interrupted{f' ({why})' if why else ''}; {len(runs)} of {len(planned)} jobs finished: "
          f"{', '.join(map(str, written))}", file=sys.stderr)
    raise SystemExit(128 + err.signum)
