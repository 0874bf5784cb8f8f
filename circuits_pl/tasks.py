"""The task registry: what function a network should learn, and the exact circuit that computes it.

A task is a small pure function of its input columns plus metadata::

    add(a, b) = a + b        arity 2, default layer sizes 2-2-1,
                             exact circuit  a + b = r(a + b) - r(-a - b)   (r = ReLU)

Circuits are stored as the weight matrices of a bias-free ReLU MLP in PyTorch's ``(out, in)``
layout, e.g. for ``add``: ``W1 = [[1, 1], [-1, -1]]``, ``W2 = [[1, -1]]``. Every built-in target
is positively homogeneous (f(c·x) = c·f(x) for c >= 0), which is what lets a net with no bias
compute it exactly on the whole input space.

Your own task, without editing circuits_pl: name an importable function ``package.module:function``
(its arity is its number of positional parameters; it gets one tensor per input column), or an
importable :class:`Task` object, which can also carry an exact circuit::

    python -m circuits_pl fit --task mytasks:hypot
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from circuits_pl.errors import CircuitsError

Weights = tuple[tuple[tuple[float, ...], ...], ...]  # one (out, in) matrix per layer, as nested tuples


@dataclass(frozen=True)
class Circuit:
    """An exact bias-free ReLU circuit: its formula and its weights (one ``(out, in)`` matrix per layer)."""

    formula: str
    weights: Weights

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (len(self.weights[0][0]),) + tuple(len(w) for w in self.weights)


@dataclass(frozen=True)
class Task:
    """A function to learn.

    Args:
        name: registry name (``add``) or import path (``mymodule:hypot``).
        fn: the target, called with one tensor per input column, returning a tensor of the same shape.
        arity: number of inputs.
        formula: the target as a formula, for printing (``a + b``).
        layer_sizes: default layer sizes of the network, input first, output (1) last.
        circuits: exact circuits, the canonical one first, then known equivalents.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    arity: int
    formula: str
    layer_sizes: tuple[int, ...]
    circuits: tuple[Circuit, ...] = field(default=())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Targets for inputs ``x`` of shape ``(..., arity)``, as shape ``(..., 1)``."""
        return self.fn(*x.unbind(-1)).to(x.dtype).unsqueeze(-1)  # a float64 target trains as float32

    def check_targets(self, points: int = 64) -> None:
        """Call the target on ``points`` sample inputs; raise CircuitsError naming the task and what it
        returned unless it is a finite floating tensor of one value per input row.

        Run before anything is trained or written: a bad target otherwise surfaces as a shape
        assertion deep in torchmetrics, or as a divergence blamed on the learning rate.
        """
        # stream.fill_uniform's draw, written out: stream imports this module, so it cannot import stream
        gen = torch.Generator().manual_seed(0)
        x = torch.empty(points, self.arity).uniform_(-1.0, 1.0, generator=gen)
        columns = x.unbind(-1)
        where = f"task {self.name!r} (f = {self.formula})"
        try:
            out = self.fn(*columns)
        except Exception as err:  # the user's code: any exception is theirs to fix
            detail = (str(err).strip().splitlines() or [""])[0][:160]
            raise CircuitsError(
                f"{where} raised {type(err).__name__}: {detail} when called with {self.arity} tensor(s) "
                f"of shape ({points},); it must take one tensor per input column"
            ) from None
        if not isinstance(out, torch.Tensor):
            raise CircuitsError(
                f"{where} returned {type(out).__name__} {_short(out)}, not a tensor; it must return one "
                f"float tensor of the inputs' shape ({points},), e.g. torch.maximum(a, b)"
            )
        if tuple(out.shape) != (points,):
            raise CircuitsError(
                f"{where} returned a tensor of shape {tuple(out.shape)} for inputs of shape ({points},); "
                f"it must return one value per input, of the inputs' shape"
            )
        if not out.is_floating_point():
            raise CircuitsError(
                f"{where} returned a {out.dtype} tensor; it must return a floating tensor "
                f"(e.g. torch.float32, like its inputs: use .float())"
            )
        bad = ~torch.isfinite(out)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            at = ", ".join(f"{v:.3g}" for v in x[i].tolist())
            raise CircuitsError(
                f"{where} returned {float(out[i])} at input ({at}) ({int(bad.sum())} of {points} sample "
                f"values non-finite); targets must be finite everywhere in [-1, 1]^{self.arity}"
            )

    def circuit_weights(self, layer_sizes: Sequence[int]) -> list[torch.Tensor] | None:
        """The canonical circuit embedded in a net of ``layer_sizes`` (None if it does not fit).

        Wider layers get zero units; extra depth carries the output y through ``r(y), r(-y)``
        pairs: a hidden layer ``[[1, -1], [-1, 1]]`` maps ``(r(y), r(-y))`` to itself, and the
        output ``[1, -1]`` turns it back into ``y``.
        """
        if not self.circuits:
            return None
        return embed_circuit(self.circuits[0].weights, layer_sizes)

    def check_layer_sizes(self, layer_sizes: Sequence[int]) -> tuple[int, ...]:
        """Validate sizes for this task; return them as a tuple. Raises CircuitsError."""
        sizes = tuple(layer_sizes)
        if len(sizes) < 2:
            raise CircuitsError(
                f"layer_sizes {list(sizes)} needs at least an input and an output size, e.g. "
                f"{list(self.layer_sizes)} for task {self.name!r}"
            )
        if any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in sizes):
            raise CircuitsError(f"layer_sizes {list(sizes)} must be positive integers, e.g. {list(self.layer_sizes)}")
        if sizes[0] != self.arity:
            raise CircuitsError(
                f"layer_sizes {list(sizes)} starts with {sizes[0]}, but task {self.name!r} has "
                f"{self.arity} input(s): the first size must be {self.arity}, e.g. {list(self.layer_sizes)}"
            )
        if sizes[-1] != 1:
            raise CircuitsError(
                f"layer_sizes {list(sizes)} ends with {sizes[-1]}, but every task has one output: "
                f"the last size must be 1, e.g. {list(self.layer_sizes)}"
            )
        return sizes


def embed_circuit(weights: Weights, layer_sizes: Sequence[int]) -> list[torch.Tensor] | None:
    """Place a one-output circuit into a (possibly wider and deeper) net; None if it cannot fit."""
    mats = [torch.tensor(w, dtype=torch.float64) for w in weights]
    sizes = list(layer_sizes)
    extra = (len(sizes) - 1) - len(mats)
    if extra < 0 or sizes[0] != mats[0].shape[1]:
        return None
    if extra > 0:  # output y -> hidden pair (r(y), r(-y)) -> ... -> y
        last = mats.pop()
        mats.append(torch.cat([last, -last]))
        mats += [torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)] * (extra - 1)
        mats.append(torch.tensor([[1.0, -1.0]], dtype=torch.float64))
    out = []
    for m, n_in, n_out in zip(mats, sizes[:-1], sizes[1:]):
        if m.shape[0] > n_out or m.shape[1] > n_in:
            return None
        padded = torch.zeros(n_out, n_in, dtype=torch.float64)
        padded[: m.shape[0], : m.shape[1]] = m
        out.append(padded)
    return out


# ---------------------------------------------------------------------------------------------
# The built-in tasks: the notebook's six, plus max.
# ---------------------------------------------------------------------------------------------

def _identity(a):
    return a.clone()


def _negate(a):
    return -a


def _abs(a):
    return a.abs()


def _add(a, b):
    return a + b


def _subtract(a, b):
    return a - b


def _min(a, b):
    return torch.minimum(a, b)


def _max(a, b):
    return torch.maximum(a, b)


_PAIR = ((1.0,), (-1.0,))  # the units r(x), r(-x)

BUILTIN_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("identity", _identity, 1, "x", (1, 2, 1), (Circuit("r(x) - r(-x)", (_PAIR, ((1.0, -1.0),))),)),
        Task("negate", _negate, 1, "-x", (1, 2, 1), (Circuit("r(-x) - r(x)", (_PAIR, ((-1.0, 1.0),))),)),
        Task("abs", _abs, 1, "|x|", (1, 2, 1), (Circuit("r(x) + r(-x)", (_PAIR, ((1.0, 1.0),))),)),
        Task(
            "add", _add, 2, "a + b", (2, 2, 1),
            (Circuit("r(a + b) - r(-a - b)", (((1.0, 1.0), (-1.0, -1.0)), ((1.0, -1.0),))),),
        ),
        Task(
            "subtract", _subtract, 2, "a - b", (2, 2, 1),
            (Circuit("r(a - b) - r(b - a)", (((1.0, -1.0), (-1.0, 1.0)), ((1.0, -1.0),))),),
        ),
        Task(
            "min", _min, 2, "min(a, b)", (2, 3, 1),
            (
                Circuit("r(a) - r(-a) - r(a - b)", (((1.0, 0.0), (-1.0, 0.0), (1.0, -1.0)), ((1.0, -1.0, -1.0),))),
                Circuit("r(b) - r(-b) - r(b - a)", (((0.0, 1.0), (0.0, -1.0), (-1.0, 1.0)), ((1.0, -1.0, -1.0),))),
                Circuit(
                    "0.5 r(a + b) - 0.5 r(-a - b) - 0.5 r(a - b) - 0.5 r(b - a)",
                    (((1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)), ((0.5, -0.5, -0.5, -0.5),)),
                ),
            ),
        ),
        Task(
            "max", _max, 2, "max(a, b)", (2, 3, 1),
            (
                Circuit("r(a) - r(-a) + r(b - a)", (((1.0, 0.0), (-1.0, 0.0), (-1.0, 1.0)), ((1.0, -1.0, 1.0),))),
                Circuit("r(b) - r(-b) + r(a - b)", (((0.0, 1.0), (0.0, -1.0), (1.0, -1.0)), ((1.0, -1.0, 1.0),))),
                Circuit(
                    "0.5 r(a + b) - 0.5 r(-a - b) + 0.5 r(a - b) + 0.5 r(b - a)",
                    (((1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)), ((0.5, -0.5, 0.5, 0.5),)),
                ),
            ),
        ),
    ]
}


def task_names() -> list[str]:
    return sorted(BUILTIN_TASKS)


def get_task(name: str | Task) -> Task:
    """Look up a task by built-in name or ``package.module:attribute`` import path."""
    if isinstance(name, Task):
        return name
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    if isinstance(name, str) and ":" in name:
        return _import_task(name)
    raise CircuitsError(
        f"unknown task {name!r}; valid tasks: {', '.join(task_names())}, "
        "or 'package.module:function' for your own"
    )


def _first_line(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, SyntaxError):
        text = err.msg or text
    return text[:160]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_builtin(name: str) -> bool:
    """A task that loads without importing anything: a built-in one."""
    return name in BUILTIN_TASKS


def _import_task(path: str) -> Task:
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` does: a tasks file next to you is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CircuitsError(
            f"cannot import task {path!r} ({err}); give 'package.module:function' with the module on "
            f"the Python path, or a built-in task: {', '.join(task_names())}"
        ) from None
    except (Exception, SystemExit) as err:  # the user's module is broken: a syntax error, a raise, sys.exit
        where = f" (line {err.lineno} of {err.filename})" if isinstance(err, SyntaxError) else ""
        what = f"called sys.exit({err.code!r})" if isinstance(err, SystemExit) else \
            f"raised {type(err).__name__}: {_first_line(err)}"
        raise CircuitsError(f"importing module {module_name!r} of task {path!r} {what}{where}; fix the module "
                            "(python -c 'import " + module_name + "' shows where)") from None
    try:
        obj = getattr(module, attr)
    except AttributeError as err:
        raise CircuitsError(
            f"cannot import task {path!r} ({err}); give 'package.module:function' with the module on "
            f"the Python path, or a built-in task: {', '.join(task_names())}"
        ) from None
    if isinstance(obj, Task):
        obj.check_targets()
        return obj
    if not callable(obj):
        raise CircuitsError(f"task {path!r} is neither a function nor a circuits_pl.Task")
    try:
        parameters = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        raise CircuitsError(
            f"task {path!r} has no readable signature, so its number of inputs is unknown; wrap it in a "
            f"function with one parameter per input column, e.g. def f(a, b): ..."
        ) from None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        raise CircuitsError(
            f"task function {path!r} takes *args, so its number of inputs is unknown; give it one named "
            f"parameter per input column (def f(a, b): ...) or make it a circuits_pl.Task with arity=N"
        )
    params = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if not params:
        raise CircuitsError(f"task function {path!r} takes no inputs; it needs one parameter per input column")
    arity = len(params)
    names = ", ".join(p.name for p in params)
    task = Task(path, obj, arity, f"{attr}({names})", (arity, 4, 1))
    task.check_targets()
    return task
