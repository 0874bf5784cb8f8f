"""Cells of a study: members that differ in layer sizes, learning rate and initial-weight scale.

A *cell* is one setting of the phase diagram, ``(layer_sizes, lr, init_scale)``; a *sweep* trains
``members_per_cell`` seeds of every cell in one run. Member ``m`` belongs to cell ``m // K`` and is
seeded ``init_seed + m % K`` (K = members per cell): the seeds of a cell are those of a run of that
cell alone, so member (cell c, seed k) of a sweep is bit-identical to member k of
``fit --seed_everything SEED`` with c's settings (every op of training is per member).

Members train in *groups*: the cells that share layer sizes and learning rate, side by side as one
stacked network with one optimizer parameter group (its lr a scalar, as torch.optim's: a per-member
lr tensor would round differently from the scalar step of the same cell alone). No member pays for a
wider one: a group holds one architecture. Cells are kept sorted (sizes, lr, init_scale), so every
group is a contiguous range of members::

    --sweep.sizes 1-2-1,1-4-1 --sweep.lr 0.1,0.3 --sweep.init_scale 0.1,1 --model.members 64
    cells  0: 1-2-1 lr 0.1 ×0.1   1: 1-2-1 lr 0.1 ×1   2: 1-2-1 lr 0.3 ×0.1 ...  7: 1-4-1 lr 0.3 ×1
    groups [0, 128) 1-2-1 lr 0.1   [128, 256) 1-2-1 lr 0.3   [256, 384) 1-4-1 lr 0.1   [384, 512) 1-4-1 lr 0.3

``init_scale`` multiplies nn.Linear's initial weights (and biases): U(−s/√fan_in, s/√fan_in). Plain
Python: no torch, no Lightning.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from circuits_pl.errors import CircuitsError


@dataclass(frozen=True, order=True)
class Cell:
    """One setting of the diagram."""

    layer_sizes: tuple[int, ...]
    lr: float
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        sizes = tuple(self.layer_sizes)
        if len(sizes) < 3 or any(not _is_int(n) or n < 1 for n in sizes) or sizes[-1] != 1:
            raise CircuitsError(f"a cell's layer sizes must be input-hidden...-1 with positive sizes, e.g. 2-4-1; "
                                f"got {_sizes_text(sizes)}")
        if not _positive(self.lr):
            raise CircuitsError(f"a cell's lr must be a positive number, got {self.lr!r}")
        if not _positive(self.init_scale):
            raise CircuitsError(f"a cell's init_scale must be a positive number, got {self.init_scale!r}")
        object.__setattr__(self, "layer_sizes", tuple(int(n) for n in sizes))
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "init_scale", float(self.init_scale))

    @property
    def label(self) -> str:
        """``1-4-1 lr 0.1 init×0.5`` (the scale only when it is not 1)."""
        text = f"{_sizes_text(self.layer_sizes)} lr {self.lr:g}"
        return text if self.init_scale == 1.0 else f"{text} init×{self.init_scale:g}"

    def as_dict(self) -> dict:
        return {"layer_sizes": list(self.layer_sizes), "lr": self.lr, "init_scale": self.init_scale}


@dataclass(frozen=True)
class Group:
    """Members ``[start, stop)``: the cells ``cells`` (indices), which share layer sizes and lr."""

    layer_sizes: tuple[int, ...]
    lr: float
    start: int
    stop: int
    cells: tuple[int, ...]

    @property
    def members(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Sweep:
    """The cells of a run and the seeds each gets (see the module docstring)."""

    cells: tuple[Cell, ...]
    members_per_cell: int

    def __post_init__(self) -> None:
        cells = tuple(sorted(set(self.cells)))
        if not cells:
            raise CircuitsError("a sweep needs at least one cell")
        if len(cells) != len(self.cells):
            raise CircuitsError("a sweep lists the same cell twice: " + ", ".join(
                c.label for c in set(self.cells) if list(self.cells).count(c) > 1))
        arities = {c.layer_sizes[0] for c in cells}
        if len(arities) > 1:
            raise CircuitsError(f"every cell of a sweep has the task's input size; got {sorted(arities)}")
        if not _is_int(self.members_per_cell) or self.members_per_cell < 1:
            raise CircuitsError(f"members per cell must be a positive integer, got {self.members_per_cell!r}")
        object.__setattr__(self, "cells", cells)

    @classmethod
    def product(cls, sizes: Iterable[Sequence[int]], lrs: Iterable[float], init_scales: Iterable[float] = (1.0,),
                members_per_cell: int = 64) -> Sweep:
        """Every combination of the given sizes, lrs and scales."""
        return cls(tuple(Cell(tuple(s), lr, sc) for s, lr, sc in itertools.product(sizes, lrs, init_scales)),
                   members_per_cell)

    @classmethod
    def of_run(cls, layer_sizes: Sequence[int], lr: float, init_scale: float = 1.0,
               cells: Sequence[dict] | None = None, members_per_cell: int = 64) -> Sweep:
        """The cells of a run: ``cells`` (plain mappings, as :meth:`Cell.as_dict` writes them) if given,
        else the one cell ``(layer_sizes, lr, init_scale)``: a run of today."""
        if cells is None:
            return cls((Cell(tuple(layer_sizes), lr, init_scale),), members_per_cell)
        return cls(tuple(cell_from_dict(c) for c in cells), members_per_cell)

    @property
    def members(self) -> int:
        return len(self.cells) * self.members_per_cell

    @property
    def is_single(self) -> bool:
        return len(self.cells) == 1

    def cell_of(self, member: int) -> int:
        return member // self.members_per_cell

    def cell_index(self) -> list[int]:
        """Per member, its cell: ``[0]*K + [1]*K + ...``."""
        return [c for c in range(len(self.cells)) for _ in range(self.members_per_cell)]

    def seed_offset(self, member: int) -> int:
        """Member ``m`` is seeded ``init_seed + seed_offset(m)``."""
        return member % self.members_per_cell

    def members_of(self, cell: int) -> range:
        return range(cell * self.members_per_cell, (cell + 1) * self.members_per_cell)

    def groups(self) -> list[Group]:
        """Runs of cells sharing layer sizes and lr, each a contiguous range of members."""
        out: list[Group] = []
        for key, idx in itertools.groupby(range(len(self.cells)),
                                          key=lambda i: (self.cells[i].layer_sizes, self.cells[i].lr)):
            idx = tuple(idx)
            out.append(Group(key[0], key[1], idx[0] * self.members_per_cell,
                             (idx[-1] + 1) * self.members_per_cell, idx))
        return out

    def describe(self) -> str:
        """The cells in one phrase: ``3 sizes (1-2-1, 1-4-1, 1-8-1) × 3 lr (0.03, 0.1, 0.3) × 2 init scales
        (0.1, 1)`` when they form a product, else ``5 cells: 1-2-1 lr 0.1, ...``."""
        sizes = list(dict.fromkeys(c.layer_sizes for c in self.cells))
        lrs = list(dict.fromkeys(c.lr for c in self.cells))
        scales = list(dict.fromkeys(c.init_scale for c in self.cells))
        if len(sizes) * len(lrs) * len(scales) == len(self.cells):
            axes = [(sizes, "size", "sizes", _sizes_text), (lrs, "lr", "lr", lambda v: f"{v:g}"),
                    (scales, "init scale", "init scales", lambda v: f"{v:g}")]
            return " × ".join(f"{len(vs)} {one if len(vs) == 1 else many} ({', '.join(map(text, vs))})"
                              for vs, one, many, text in axes)
        return f"{len(self.cells)} cells: " + ", ".join(c.label for c in self.cells)

    def shares(self, start: int, stop: int) -> list[tuple[int, slice]]:
        """Members ``[start, stop)`` (a process's share of all members) as (group index, slice of that
        group's own members): what each group trains on that process."""
        out = []
        for g, group in enumerate(self.groups()):
            lo, hi = max(start, group.start), min(stop, group.stop)
            if lo < hi:
                out.append((g, slice(lo - group.start, hi - group.start)))
        return out


def cell_from_dict(data: dict) -> Cell:
    """A cell from its plain form ``{"layer_sizes": [1, 4, 1], "lr": 0.1, "init_scale": 1.0}``
    (``init_scale`` may be left out: 1); anything else is a one-line CircuitsError."""
    if not isinstance(data, dict) or not {"layer_sizes", "lr"} <= data.keys() or \
            not data.keys() <= {"layer_sizes", "lr", "init_scale"}:
        raise CircuitsError(f"a cell is a mapping with layer_sizes, lr and optionally init_scale, e.g. "
                            f'{{"layer_sizes": [1, 4, 1], "lr": 0.1, "init_scale": 1}}; got {data!r}')
    sizes = data["layer_sizes"]
    if isinstance(sizes, str):
        (sizes,) = parse_sizes_list(sizes, option="a cell's layer_sizes")
    if not isinstance(sizes, (list, tuple)):
        raise CircuitsError(f"a cell's layer_sizes must be a list like [1, 4, 1] or 1-4-1, got {sizes!r}")
    return Cell(tuple(sizes), data["lr"], data.get("init_scale", 1.0))


def parse_sizes_list(text: str, arity: int | None = None, option: str = "--sweep.sizes") -> list[tuple[int, ...]]:
    """``1-2-1,1-4-1`` (or a list of lists) -> ``[(1, 2, 1), (1, 4, 1)]``; the input size checked against
    the task's ``arity`` when given."""
    items = _items(text)
    out = []
    for item in items:
        try:
            sizes = tuple(int(p) for p in (item.split("-") if isinstance(item, str) else item))
        except (TypeError, ValueError):
            raise CircuitsError(f"{option} item {item!r} is not like 1-4-1 (sizes joined by -)") from None
        if len(sizes) < 3 or min(sizes) < 1 or sizes[-1] != 1:
            raise CircuitsError(f"{option} item {item!r} needs input-hidden...-1 with positive sizes, e.g. 2-4-1")
        if arity is not None and sizes[0] != arity:
            raise CircuitsError(f"{option} item {item!r} starts with {sizes[0]} inputs; the task has {arity}, "
                                f"e.g. {arity}-4-1")
        out.append(sizes)
    if not out:
        raise CircuitsError(f"{option} is empty; e.g. 2-2-1,2-4-1")
    return out


def parse_positive_list(text: str | float | Sequence[float], option: str) -> list[float]:
    """``0.03,0.1,0.3`` (or a list, or one number) -> positive finite floats, each once."""
    items = [text] if isinstance(text, (int, float)) and not isinstance(text, bool) else _items(text)
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        raise CircuitsError(f"{option} {text!r} must be positive numbers joined by commas, e.g. 0.03,0.1,0.3") from None
    if not values or not all(_positive(v) for v in values):
        raise CircuitsError(f"{option} {text!r} must be positive numbers joined by commas, e.g. 0.03,0.1,0.3")
    if len(set(values)) != len(values):
        raise CircuitsError(f"{option} {text!r} lists a value twice")
    return values


def _items(text: str | Sequence) -> list:
    if isinstance(text, str):
        return [s.strip() for s in text.split(",") if s.strip()]
    return list(text)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _sizes_text(sizes: Sequence) -> str:
    return "-".join(map(str, sizes))
