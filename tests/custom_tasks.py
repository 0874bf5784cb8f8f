"""A user's own tasks, importable as ``custom_tasks:...`` (tests put this folder on sys.path)."""

import torch

from circuits_pl.tasks import Circuit, Task


def double_sum(a, b):
    """2a + 2b: exact with 2-2-1, r(a + b) scaled."""
    return 2 * (a + b)


def relu_x(x):
    return torch.relu(x)


HALF_ABS = Task("half_abs", lambda x: 0.5 * x.abs(), 1, "|x| / 2", (1, 2, 1),
                (Circuit("0.5 r(x) + 0.5 r(-x)", (((1.0,), (-1.0,)), ((0.5, 0.5),))),))


# Bad tasks: each must be refused, naming the task and what it returned, before any run directory exists.
def nan_target(a, b):
    return torch.where(a > 0, a / 0.0 * 0.0, b)  # NaN where a > 0


def wrong_shape(a, b):
    return torch.stack([a, b], -1)


def int_target(a):
    return (a > 0).long()


def python_scalar(a):
    return 1.0


def raises(a, b):
    raise ZeroDivisionError("integer division or modulo by zero")


def star_args(*columns):
    return sum(columns)
