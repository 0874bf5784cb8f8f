"""circuits_pl: which exact circuit does a tiny bias-free ReLU MLP learn? A PyTorch Lightning study.

The public names below are loaded on first use (PEP 562), so ``import circuits_pl`` and
``python -m circuits_pl --help`` import neither torch nor Lightning (those imports take seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and readers
    from circuits_pl.data import CircuitDataModule
    from circuits_pl.module import CircuitModule
    from circuits_pl.network import ReLUMLP
    from circuits_pl.tasks import Circuit, Task, get_task, task_names

_HOME = {
    "Circuit": "circuits_pl.tasks",
    "CircuitDataModule": "circuits_pl.data",
    "CircuitModule": "circuits_pl.module",
    "ReLUMLP": "circuits_pl.network",
    "Task": "circuits_pl.tasks",
    "get_task": "circuits_pl.tasks",
    "task_names": "circuits_pl.tasks",
}

__all__ = ["Circuit", "CircuitDataModule", "CircuitModule", "ReLUMLP", "Task", "get_task", "task_names"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'circuits_pl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # next time a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
