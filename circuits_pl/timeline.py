"""The timeline: every member's circuit at every regular validation of fit. Plain PyTorch, no Lightning.

At each validation on the ``val_check_interval`` grid the timeline records, for all K members at once,
the name of the circuit each computes (the readout's family: a listed circuit's formula such as
``r(a) − r(−a) − r(a − b)``, or the function's form such as ``½(a + b) − ½|a − b|``, or ``none`` while no
simple circuit is there yet) and its validation MSE. From it come each member's path
(``none → ½(a + b) + ½|a + b| → r(a) − r(−a) − r(a − b)``), the step its final circuit formed (from
which its name never changed), the transitions between circuits across members, and the trend that
decides whether a member still above the threshold has found its circuit (``circuits_pl.verdicts``).

How members are named, by architecture (a sweep's groups of cells, ``circuits_pl.sweep``, each by its own
sizes; the names are shared, so one circuit has one name whichever group holds it):

- one hidden layer: all members at once by :class:`~circuits_pl.readout.snap.Snapper` (the readout's
  decisions as tensor ops; each distinct circuit named once by the readout's printers);
- two hidden layers: the full readout, member by member, but only for members whose weights moved by
  more than ``MOVED_TOL`` (max |Δw|) since they were last read; the others keep their last name (a net
  that moved less cannot cross the readout's tolerances, 1e-2, unless it sat on their edge);
- biases or more hidden layers: not tracked (the readout reads bias-free nets with 1 or 2 hidden
  layers); steps and MSE are still recorded (the trend needs them), the name is ``not tracked``.

In a checkpoint (``state``/``load``; tensors and plain lists: checkpoints load with ``weights_only=True``)::

    steps     (V,)      SGD step of each recorded validation
    codes     (V, K)    int32: index into names
    val_mse   (V, K)    float32 (NaN once diverged)
    names, exact        the circuit names, and whether each is an exact circuit of the task
    read      [tensors] per group: two hidden layers, each member's weights when it was last read
                        (empty for the other groups)

Only regular validations are recorded (as ``Population``'s history): a run resumed from any checkpoint
records exactly what a run that never stopped records.
"""

from __future__ import annotations

import csv
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.files import atomic_open
from circuits_pl.readout import describe_member
from circuits_pl.readout.snap import NONE, Snapper, circuit_name
from circuits_pl.tasks import Task

NOT_TRACKED = "not tracked"
MOVED_TOL = 1e-3  # two hidden layers: a member is read again once a weight moved by more than this
VERSION = 1
MODE_TEXT = {"snap": "all members at once (one hidden layer)",
             "readout": "the full readout of members whose weights moved (two hidden layers)"}


def _mode(layer_sizes: Sequence[int], bias: bool) -> str | None:
    """How a group's circuits are named: "snap" (one hidden layer), "readout" (two), None (not tracked)."""
    hidden = len(layer_sizes) - 2
    return None if bias else {1: "snap", 2: "readout"}.get(hidden)


class Timeline:
    """Every member's circuit name and validation MSE at every regular validation of fit.

    Args:
        task: the task the members learn.
        groups: ``(layer_sizes, members)`` of each group of members that share an architecture, in member
            order (a run's ``Sweep.groups()``; one pair for a run without a sweep): each group's members are
            named with its own sizes.
        bias: the nets have biases (not tracked: the readout is for bias-free nets).
    """

    def __init__(self, task: Task, groups: Sequence[tuple[Sequence[int], int]], bias: bool = False):
        self.task = task
        self.groups = [(tuple(sizes), int(n)) for sizes, n in groups]
        self.members = sum(n for _, n in self.groups)
        self.modes = [_mode(sizes, bias) for sizes, _ in self.groups]
        self.steps: list[int] = []
        self._codes: list[torch.Tensor] = []  # per validation, (K,) int32
        self._mse: list[torch.Tensor] = []  # per validation, (K,) float32
        self.names: list[str] = [NONE]
        self.exact: list[bool] = [False]
        self._code_of = {NONE: 0}
        if None in self.modes:
            self._code(NOT_TRACKED, False)
        snappers = {sizes: Snapper(task, sizes) for (sizes, _), mode in zip(self.groups, self.modes)
                    if mode == "snap"}  # one per architecture: two groups may differ in lr only
        self._snappers = [snappers.get(sizes) for sizes, _ in self.groups]
        self._read: list[torch.Tensor | None] = [None] * len(self.groups)  # "readout" groups: weights last read
        self.absent = False  # loaded from a checkpoint written before the timeline existed
        self.inputs: torch.Tensor | None = None  # the run's test inputs: dead units, as the readout reads them
        self.seconds = 0.0  # spent recording (benchmarks/speed.py reports it against fit time)

    # --- recording ---------------------------------------------------------------------------------
    def record(self, step: int, weights: Sequence[Sequence[torch.Tensor]], val_mse: torch.Tensor) -> None:
        """Name every member's circuit from ``weights`` (per group, its ``(members, out, in)`` per layer) at
        SGD step ``step`` and record it with the members' validation MSE ``(K,)``."""
        if self.absent:
            return
        if len(weights) != len(self.groups):
            raise ValueError(f"weights of {len(weights)} groups for a timeline of {len(self.groups)}")
        start = time.perf_counter()
        codes = torch.cat([self._name_group(g, [w.detach().to("cpu", torch.float64) for w in ws])
                           for g, ws in enumerate(weights)])
        self.steps.append(int(step))
        self._codes.append(codes)
        self._mse.append(val_mse.detach().to("cpu", torch.float32).clone())
        self.seconds += time.perf_counter() - start

    def _name_group(self, g: int, weights: list[torch.Tensor]) -> torch.Tensor:
        """Group ``g``'s members' codes ``(members,)``; 0 (none) where a weight is not finite."""
        mode, n = self.modes[g], self.groups[g][1]
        finite = torch.stack([torch.isfinite(w).flatten(1).all(1) for w in weights]).all(0)
        if mode == "snap":
            snapper = self._snappers[g]
            named = snapper.names(snapper.keys([torch.where(finite[:, None, None], w, 0.0) for w in weights]))
            codes = torch.tensor([self._code(name, e) for name, e in named], dtype=torch.int32)
        elif mode == "readout":
            codes = self._read_moved(g, weights, finite)
        else:
            return torch.full((n,), self._code_of[NOT_TRACKED], dtype=torch.int32)
        return torch.where(finite, codes, 0)

    def _code(self, name: str, exact: bool) -> int:
        if name not in self._code_of:
            self._code_of[name] = len(self.names)
            self.names.append(name)
            self.exact.append(bool(exact))
        return self._code_of[name]

    def _read_moved(self, g: int, weights: list[torch.Tensor], finite: torch.Tensor) -> torch.Tensor:
        """Two hidden layers: the full readout of every member of group ``g`` that moved since it was last read."""
        flat = torch.cat([w.flatten(1) for w in weights], dim=1)
        start = sum(n for _, n in self.groups[:g])
        if self._read[g] is None or not self._codes:
            moved = torch.ones(len(flat), dtype=torch.bool)
            codes = torch.zeros(len(flat), dtype=torch.int32)
            read = flat.clone()
        else:
            read = self._read[g]
            moved = (flat - read).abs().amax(dim=1) > MOVED_TOL
            codes = self._codes[-1][start : start + len(flat)].clone()
        x = None if self.inputs is None else self.inputs.to("cpu", torch.float64)
        for k in (moved & finite).nonzero().flatten().tolist():
            name, exact = circuit_name(describe_member([w[k] for w in weights], self.task, x, to_formula=False))
            codes[k] = self._code(name, exact)
            read[k] = flat[k]
        self._read[g] = read
        return codes

    # --- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any] | None:
        """For a checkpoint: tensors and plain lists only; None while absent (see :meth:`load`)."""
        if self.absent:
            return None
        return {"version": VERSION, "steps": torch.tensor(self.steps, dtype=torch.long),
                "codes": self.codes, "val_mse": self.val_mse, "names": list(self.names),
                "exact": list(self.exact),
                "read": [torch.zeros(0) if t is None else t.clone() for t in self._read]}

    def load(self, state: dict[str, Any] | None) -> None:
        """From :meth:`state`. None (a checkpoint from before the timeline): the timeline is absent, and
        stays absent if the run is resumed (its first validations are lost: a path from the resume on
        would date every circuit to the resume)."""
        if state is None:
            self.absent = True
            return
        try:
            steps, codes, mse = state["steps"], state["codes"], state["val_mse"]
            names, exact = [str(n) for n in state["names"]], [bool(e) for e in state["exact"]]
            read = state.get("read") or [torch.zeros(0)] * len(self.groups)
            shape = (len(steps), self.members)
            if tuple(codes.shape) != shape or tuple(mse.shape) != shape or len(exact) != len(names) or (
                    codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < len(names)) or (
                    len(read) != len(self.groups)) or any(
                    t.numel() and t.shape[0] != n for t, (_, n) in zip(read, self.groups)):
                raise ValueError("shapes")
        except (KeyError, TypeError, AttributeError, ValueError):
            raise CircuitsError("the checkpoint's timeline is damaged (its steps, codes, MSE and names do not "
                                f"match {self.members} members); the weights are fine: inspect them with "
                                "circuits_pl.CircuitModule.load_from_checkpoint after removing checkpoint['timeline']"
                                ) from None
        self.steps = [int(s) for s in steps.tolist()]
        self._codes = list(codes.to(torch.int32).unbind(0))
        self._mse = list(mse.to(torch.float32).unbind(0))
        self.names, self.exact = names, exact
        self._code_of = {n: i for i, n in enumerate(self.names)}
        self._read = [t.clone() if t.numel() else None for t in read]

    # --- reading it --------------------------------------------------------------------------------
    @property
    def tracked(self) -> bool:
        """Some member's circuits are named (not for nets with biases or more than two hidden layers)."""
        return any(mode is not None for mode in self.modes)

    def tracks(self, member: int) -> bool:
        """Member ``member``'s circuits are named (its group's architecture is read by the readout)."""
        return self.modes[self.group_of(member)] is not None

    def group_of(self, member: int) -> int:
        if not 0 <= member < self.members:
            raise IndexError(f"member {member} is out of range: the timeline has {self.members} members")
        start = 0
        for g, (_, n) in enumerate(self.groups):
            if member < start + n:
                return g
            start += n
        raise AssertionError("unreachable")

    def mode_text(self) -> str:
        """How circuits are named, e.g. ``all members at once (one hidden layer)``; for groups that differ,
        each group's way with its sizes."""
        modes = [MODE_TEXT.get(m, f"{NOT_TRACKED}: the readout reads bias-free nets with 1 or 2 hidden layers")
                 for m in self.modes]
        if len(set(modes)) == 1:
            return modes[0]
        return "; ".join(f"{'-'.join(map(str, sizes))}: {text}" for (sizes, _), text in zip(self.groups, modes))

    @property
    def codes(self) -> torch.Tensor:
        """``(V, K)`` int32: each member's circuit (an index into ``names``) at each recorded validation."""
        return torch.stack(self._codes) if self._codes else torch.zeros(0, self.members, dtype=torch.int32)

    @property
    def val_mse(self) -> torch.Tensor:
        """``(V, K)`` float32: each member's validation MSE at each recorded validation."""
        return torch.stack(self._mse) if self._mse else torch.zeros(0, self.members)

    def path(self, member: int) -> list[tuple[str, int]]:
        """Member ``member``'s circuits in order, each with the step it began: ``[("none", 1000), ...]``."""
        out: list[tuple[str, int]] = []
        for step, codes in zip(self.steps, self._codes):
            name = self.names[int(codes[member])]
            if not out or out[-1][0] != name:
                out.append((name, step))
        return out

    def formed_at(self) -> list[int | None]:
        """Per member, the step from which its circuit never changed (the first validation of its last
        run of one name), or None when that name is ``none``/not tracked or nothing was recorded."""
        codes = self.codes
        if codes.shape[0] == 0 or not self.tracked:
            return [None] * self.members
        unnamed = {0, self._code_of.get(NOT_TRACKED, 0)}
        changed = torch.cat([torch.ones(1, self.members, dtype=torch.bool), codes[1:] != codes[:-1]])
        index = torch.arange(codes.shape[0])[:, None].expand_as(codes)
        last = torch.where(changed, index, 0).amax(dim=0)
        steps = torch.tensor(self.steps)
        return [None if int(codes[-1, k]) in unnamed else int(steps[last[k]]) for k in range(self.members)]

    def stable_for(self) -> list[int]:
        """Per member, how many of the last recorded validations in a row name its final circuit."""
        return [0 if step is None else sum(1 for s in self.steps if s >= step) for step in self.formed_at()]

    def last(self, member: int, count: int) -> tuple[list[int], list[float]]:
        """The last ``count`` recorded (steps, validation MSE) of member ``member``."""
        steps = self.steps[-count:]
        return steps, [float(m[member]) for m in self._mse[-count:]]

    def transitions(self) -> Counter:
        """(from name, to name) -> how many times a member changed from one to the other between
        consecutive recorded validations, over all members."""
        codes = self.codes
        if codes.shape[0] < 2:
            return Counter()
        before, after = codes[:-1].flatten(), codes[1:].flatten()
        moved = before != after
        pairs = Counter(zip(before[moved].tolist(), after[moved].tolist()))
        return Counter({(self.names[a], self.names[b]): n for (a, b), n in pairs.items()})

    def shares(self) -> tuple[list[str], torch.Tensor]:
        """The names and how many members hold each at each recorded validation: ``(V, len(names))``."""
        codes = self.codes.long()
        counts = torch.zeros(codes.shape[0], len(self.names), dtype=torch.long)
        counts.scatter_add_(1, codes, torch.ones_like(codes))
        return list(self.names), counts

    def common_paths(self, top: int = 5) -> list[tuple[tuple[str, ...], int]]:
        """The most common paths (each member's circuits in order, repeats merged) and their member counts."""
        paths = Counter(tuple(name for name, _ in self.path(k)) for k in range(self.members))
        return paths.most_common(top)

    def write_csv(self, path: str | Path) -> Path:
        """``circuits.csv``: one row per (validation, member): step, member, circuit, val_mse."""
        path = Path(path)
        with atomic_open(path, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["step", "member", "circuit", "val_mse"])
            for step, codes, mse in zip(self.steps, self._codes, self._mse):
                for k, (code, m) in enumerate(zip(codes.tolist(), mse.tolist())):
                    writer.writerow([step, k, self.names[code], f"{m:.9g}" if math.isfinite(m) else "nan"])
        return path


def path_text(path: Sequence[tuple[str, int]], formed_at: int | None, solved_at: int | None) -> str:
    """``none → r(a + b) → r(a) − r(−a) − r(a − b) at 3000, solved at 6000``: a member's path, the step its
    final circuit formed and the step it was solved."""
    if not path:
        return "nothing recorded"
    text = " → ".join(name for name, _ in path)
    if formed_at is not None:
        text += f" at {formed_at}"
    return text + (f", solved at {solved_at}" if solved_at is not None else ", not solved")
