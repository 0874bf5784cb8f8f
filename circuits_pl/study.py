"""The study behind ``report``: which fits to run, how their members become one row per cell, and
when a cell has seeds enough. Plain Python (no torch, no Lightning): it plans command lines and
reads results.json files.

A study trains the cells (``circuits_pl.sweep.Cell``) of one or more *bases*: a built-in task with
its cells (``--sweep.sizes`` × ``--sweep.lr`` × ``--sweep.init_scale``), or a config file (its own cells). Each cell
takes seeds ``SEED + 0, 1, 2, ...``. A *fit* (:class:`FitPlan`) is one ``fit`` process: some cells
of one base side by side and the seeds ``[first, first + count)`` of each::

    fit --task abs --model.cells '[...]' --seed_everything SEED --model.init_seed SEED+first --model.members count

Member k of a cell in that fit is member ``first + k`` of ``fit --seed_everything SEED`` of that cell
alone, bit for bit: every op of training is per member, the training stream is SEED's, and member
k is initialised from ``init_seed + k``. So where a cell's seeds were trained (which fit, which round,
how many processes) changes nothing in its row.

Rounds. Round 0 gives every cell ``members`` seeds. With a target width (``report --ci_width``),
each later round gives ``members`` more (up to ``max_members`` in all) to the cells whose found rate
still has a 95% Wilson interval wider than the target. A cell in round r took part in every round
before it, so the cells of a round share their first seed: one fit per base per round (split into
``shards`` fits of consecutive seeds with ``--jobs``).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuits_pl.errors import CircuitsError
from circuits_pl.sweep import Cell, cell_from_dict
from circuits_pl.verdicts import VERDICTS

CELL_KEYS = ("layer_sizes", "lr", "init_scale")  # a results.json cell's setting (beside its counts)
UNLISTED = "an unlisted circuit"  # as results.json's circuits_of_found names a found member no listed form matches


@dataclass(frozen=True)
class Base:
    """What a fit trains besides its cells: a built-in task, or a config file (its task and cells)."""

    name: str
    task: str | None = None
    config: str | None = None


@dataclass(frozen=True)
class FitPlan:
    """One ``fit`` of the study: ``cells`` of ``base`` (none listed: the config's own), seeds
    ``[first, first + count)`` of each (offsets from the study's seed)."""

    name: str
    base: Base
    cells: tuple[Cell, ...]
    first: int
    count: int
    round: int = 0

    def fit_args(self, seed: int, max_steps: int | None, root: Path, default_steps: int,
                 extra: Sequence[str] = ()) -> list[str]:
        """The ``fit`` command line (after ``python -m circuits_pl``)."""
        args = ["fit"]
        if self.base.config:
            args += ["--config", self.base.config]
        if self.base.task:
            args += ["--task", self.base.task]
        if len(self.cells) == 1:  # a cell alone, as a plain run of it is typed
            (cell,) = self.cells
            args += ["--model.layer_sizes", json.dumps(list(cell.layer_sizes)), "--model.lr", repr(cell.lr)]
            if cell.init_scale != 1.0:
                args += ["--model.init_scale", repr(cell.init_scale)]
        elif self.cells:
            args += ["--model.cells", json.dumps([c.as_dict() for c in self.cells])]
        if max_steps is not None or not self.base.config:
            args += ["--trainer.max_steps", str(max_steps or default_steps)]
        if not self.base.config:
            args += ["--seed_everything", str(seed)]
        if self.first:
            args += ["--model.init_seed", str(seed + self.first)]
        return args + ["--model.members", str(self.count), "--stop.when", "never",
                       "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
                       "--figures", "false", "--threads", "1", *extra]


def split_seeds(first: int, count: int, shards: int) -> list[tuple[int, int]]:
    """``count`` seeds from ``first`` as at most ``shards`` runs of consecutive seeds, as even as can be:
    ``split_seeds(0, 10, 3)`` -> ``[(0, 4), (4, 3), (7, 3)]``."""
    shards = max(1, min(shards, count))
    out, start = [], first
    for i in range(shards):
        n = count // shards + (i < count % shards)
        out.append((start, n))
        start += n
    return out


def plan_fits(base: Base, cells: Sequence[Cell], first: int, count: int, shards: int, round_: int,
              named_by_seeds: bool) -> list[FitPlan]:
    """The fits giving ``cells`` of ``base`` the seeds ``[first, first + count)``, in ``shards``.
    A fit is named by its base alone when it is the base's only fit of the study, else
    ``base_seeds{first}-{last}``."""
    out = []
    for start, n in split_seeds(first, count, shards):
        name = f"{base.name}_seeds{start}-{start + n - 1}" if named_by_seeds else base.name
        out.append(FitPlan(name, base, tuple(cells), start, n, round_))
    return out


@dataclass
class CellRecord:
    """A cell's members gathered from every fit that trained some of them."""

    base: Base
    cell: Cell
    task: str | None = None
    members: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed offset -> the member's fields
    runs: list[str] = field(default_factory=list)
    steps: int | None = None
    batch_size: int | None = None
    certified_over: str | None = None
    sectors: int | None = None  # the target's sectors (circuits_pl.basins), where basins are defined
    seed: int | None = None  # the seed of the cell's member 0

    @property
    def count(self) -> int:
        return len(self.members)

    def found_interval(self) -> tuple[float, float]:
        from circuits_pl.success import wilson_interval  # here: torch and scipy load after the fits started

        found = sum(bool(m["found"]) for m in self.members.values())
        return wilson_interval(found, self.count)

    def ordered(self) -> list[dict[str, Any]]:
        """The members in seed order (the order of a run of this cell alone)."""
        return [self.members[k] for k in sorted(self.members)]


MEMBER_FIELDS = ("found", "solved", "solved_at", "verdict", "formula", "rough_formula", "circuit", "family",
                 "exact", "sparsity_error", "max_error", "sectors_covered", "sectors_agreeing")


class Study:
    """The cells of a study and what its fits have given them so far (see the module docstring).

    Args:
        bases: the bases, in the order of the report.
        cells: per base name, its cells in the order asked (none for a config: read from its results).
        seed: seed of every cell's member 0.
        members: seeds per cell in round 0, and added per later round.
        ci_width: the target width of each cell's 95% Wilson interval of the found rate (None: one round).
        max_members: at most this many seeds per cell.
        shards: fits per base and round (seeds split among them).
    """

    def __init__(self, bases: Sequence[Base], cells: dict[str, Sequence[Cell]], seed: int, members: int,
                 ci_width: float | None = None, max_members: int | None = None, shards: int = 1):
        self.bases = list(bases)
        self.cells = {b.name: list(cells.get(b.name, ())) for b in self.bases}
        self.seed, self.members, self.ci_width, self.shards = seed, members, ci_width, shards
        self.max_members = max(members, max_members or members) if ci_width is not None else members
        self.records: dict[tuple[str, Cell], CellRecord] = {}
        self.round = 0
        self.done: set[str] = set()  # names of the fits whose results are in

    def _named_by_seeds(self, base: Base) -> bool:
        return self.ci_width is not None or self._shards(base) > 1

    def _shards(self, base: Base) -> int:
        return 1 if base.config else self.shards

    def first_round(self) -> list[FitPlan]:
        """Round 0: every cell of every base, ``members`` seeds each."""
        self.round = 0
        return [fit for base in self.bases
                for fit in plan_fits(base, self.cells[base.name], 0, self.members, self._shards(base), 0,
                                     self._named_by_seeds(base))]

    def add(self, plan: FitPlan, res: dict[str, Any], run_dir: str) -> None:
        """Merge one finished fit's results.json into its cells."""
        per = res["per_member"]
        fit_cells = [cell_from_dict({k: c[k] for k in CELL_KEYS if k in c}) for c in res["cells"]]
        offset0 = plan.first  # member first_member + k of a fit cell is seed offset plan.first + k
        task = res["task"]
        sectors = None
        for c, (cell, info) in enumerate(zip(fit_cells, res["cells"])):
            key = (plan.base.name, cell)
            if plan.base.config and cell not in self.cells[plan.base.name]:
                self.cells[plan.base.name].append(cell)
            if key not in self.records:
                self.records[key] = CellRecord(plan.base, cell, task)
            record = self.records[key]
            record.task, record.steps = task, int(res["steps"])
            record.seed = int(res["init_seed"]) - plan.first
            record.batch_size = res.get("data", {}).get("batch_size")
            record.certified_over = res.get("certified_over")
            if info.get("basins"):
                sectors = len(info["basins"]["sectors"])
            record.sectors = sectors
            for k in range(info["members"]):
                m = info["first_member"] + k
                if per["cell"][m] != c:
                    raise CircuitsError(f"{run_dir}/results.json is inconsistent: member {m} is not of cell {c}")
                record.members[offset0 + k] = {f: (per[f][m] if per.get(f) is not None else None)
                                               for f in MEMBER_FIELDS}
            if run_dir not in record.runs:
                record.runs.append(run_dir)
        self.done.add(plan.name)

    def wide(self) -> list[CellRecord]:
        """The cells that want more seeds: interval wider than the target and fewer than max_members."""
        if self.ci_width is None:
            return []
        out = []
        for base in self.bases:
            for cell in self.cells[base.name]:
                record = self.records.get((base.name, cell))
                if record is None or base.config:
                    continue
                low, high = record.found_interval()
                if high - low > self.ci_width and record.count < self.max_members:
                    out.append(record)
        return out

    def next_round(self) -> list[FitPlan]:
        """The fits of the next round: ``members`` more seeds (at most up to max_members) for every wide
        cell; empty when the study is answered."""
        wide = self.wide()
        if not wide:
            return []
        self.round += 1
        plans = []
        for base in self.bases:
            by_first: dict[int, list[Cell]] = {}
            for r in wide:
                if r.base == base:
                    by_first.setdefault(r.count, []).append(r.cell)
            for first, cells in by_first.items():
                count = min(self.members, self.max_members - first)
                plans += plan_fits(base, cells, first, count, self._shards(base), self.round, True)
        return plans

    def named_records(self) -> list[tuple[str, CellRecord]]:
        """(name, record) of every cell that has members, bases and cells in the order asked."""
        out = []
        for base in self.bases:
            cells = self.cells[base.name]
            for cell in cells:
                record = self.records.get((base.name, cell))
                if record is not None and record.count:
                    out.append((cell_name(base, cell, len(cells) == 1), record))
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One report row per cell that has members (see :meth:`named_records`)."""
        return [cell_row(record, name) for name, record in self.named_records()]


def cell_name(base: Base, cell: Cell, alone: bool) -> str:
    """``abs_1-4-1_lr0.1`` (``_init0.5`` when the scale is not 1); a base's only cell is named by the base."""
    if alone:
        return base.name
    name = f"{base.name}_{'-'.join(map(str, cell.layer_sizes))}_lr{cell.lr:g}"
    return name if cell.init_scale == 1.0 else f"{name}_init{cell.init_scale:g}"


def cell_row(record: CellRecord, name: str | None = None) -> dict[str, Any]:
    """One row of report.csv from a cell's members (in seed order: the same row however they were trained)."""
    from circuits_pl.success import wilson_interval  # here: torch and scipy load after the fits started

    members = record.ordered()
    n = len(members)
    found = sum(bool(m["found"]) for m in members)
    solved = sum(bool(m["solved"]) for m in members)
    at = [m["solved_at"] for m in members if m["solved"] and m["solved_at"] is not None]
    verdicts = Counter(m["verdict"] for m in members)
    stuck = Counter(m["rough_formula"] for m in members if m["verdict"] == "stuck" and m["rough_formula"])
    sparsity = [m["sparsity_error"] for m in members if m["solved"] and m["sparsity_error"] is not None]
    certified = [m["max_error"] for m in members if m["exact"] and m["max_error"] is not None]
    f_lo, f_hi = wilson_interval(found, n)
    s_lo, s_hi = wilson_interval(solved, n)
    cell = record.cell
    return {
        "job": name or record.base.name,
        "task": record.task,
        "layer_sizes": "-".join(map(str, cell.layer_sizes)),
        "lr": cell.lr,
        "init_scale": cell.init_scale,
        "batch_size": record.batch_size,
        "steps": record.steps,
        "members": n,
        "found": found,
        "found_rate": found / n,
        "found_ci95_low": f_lo,
        "found_ci95_high": f_hi,
        "solved": solved,
        "success_rate": solved / n,
        "ci95_low": s_lo,
        "ci95_high": s_hi,
        "median_solved_at": float(statistics.median(at)) if at else None,
        **{v.replace(" ", "_"): verdicts.get(v, 0) for v in VERDICTS},
        "max_sparsity_error_solved": max(sparsity) if sparsity else None,
        "max_certified_error_exact": max(certified) if certified and record.certified_over else None,
        "certified_over": record.certified_over,
        "circuits": "; ".join(f"{k}× {c}" for c, k in circuits_of_found(members).items()),
        "common_stuck": "; ".join(f"{k}× {f}" for f, k in stuck.most_common(2)),
        "run_dir": " ".join(record.runs),
    }


def circuits_of_found(members: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many found members found each circuit, most common first (as results.json counts them:
    by family, else the circuit, else as an unlisted circuit that still computes the target)."""
    counts = Counter(m["family"] or m["circuit"] or UNLISTED for m in members
                     if m["found"] and m["formula"] is not None)
    return dict(counts.most_common())

