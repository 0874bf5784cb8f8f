from dataclasses import replace

import pytest
import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.stream import uniform_inputs
from circuits_pl.tasks import BUILTIN_TASKS, Task, embed_circuit, get_task, task_names


def _run(weights, x):
    a = x.T
    for i, w in enumerate(weights):
        a = w @ a
        if i < len(weights) - 1:
            a = a.relu()
    return a.T


PYTHON_TARGETS = {  # independent reference: plain Python arithmetic
    "identity": lambda x: x,
    "negate": lambda x: -x,
    "abs": abs,
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "min": min,
    "max": max,
}


def test_registry_has_the_notebook_tasks_and_max():
    assert task_names() == sorted(PYTHON_TARGETS)
    assert [get_task(n).arity for n in ("identity", "negate", "abs", "add", "subtract", "min", "max")] == [
        1, 1, 1, 2, 2, 2, 2]
    assert get_task("min").layer_sizes == (2, 3, 1) and get_task("abs").layer_sizes == (1, 2, 1)


@pytest.mark.parametrize("name", sorted(PYTHON_TARGETS))
def test_targets_match_python_arithmetic(name):
    task = get_task(name)
    x = torch.rand(50, task.arity, dtype=torch.float64) * 2 - 1
    expected = [PYTHON_TARGETS[name](*row) for row in x.tolist()]
    assert task(x).flatten().tolist() == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_every_listed_circuit_is_exact_everywhere(name):
    task = get_task(name)
    x = (torch.rand(2000, task.arity, dtype=torch.float64) * 2 - 1) * 7  # outside [-1, 1] too
    for circuit in task.circuits:
        weights = [torch.tensor(w, dtype=torch.float64) for w in circuit.weights]
        assert (_run(weights, x) - task(x)).abs().max() < 1e-12, circuit.formula


@pytest.mark.parametrize("sizes", [(2, 3, 1), (2, 5, 1), (2, 3, 2, 1), (2, 4, 3, 2, 1)])
def test_min_circuit_embeds_into_wider_and_deeper_nets(sizes):
    task = get_task("min")
    weights = task.circuit_weights(sizes)
    assert [tuple(w.shape) for w in weights] == [(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
    x = torch.rand(1000, 2, dtype=torch.float64) * 2 - 1
    assert (_run(weights, x) - task(x)).abs().max() < 1e-12


def test_circuit_that_cannot_fit_is_none():
    assert get_task("min").circuit_weights((2, 2, 1)) is None
    assert embed_circuit(get_task("abs").circuits[0].weights, (1, 2, 1, 1)) is None  # width 1 < 2


def test_unknown_task_lists_valid_names():
    with pytest.raises(CircuitsError, match=r"unknown task 'mul'; valid tasks: abs, add, identity, max, min"):
        get_task("mul")


def test_user_function_task_arity_from_signature():
    task = get_task("custom_tasks:double_sum")
    assert task.arity == 2 and task.layer_sizes == (2, 4, 1) and task.circuits == ()
    x = torch.tensor([[0.25, -1.0]])
    assert task(x).item() == pytest.approx(-1.5)


def test_user_task_object_with_circuit():
    task = get_task("custom_tasks:HALF_ABS")
    assert task.name == "half_abs" and task.circuit_weights((1, 3, 1)) is not None


def test_user_task_import_error_is_one_line():
    with pytest.raises(CircuitsError, match=r"cannot import task 'no_such_module:f'"):
        get_task("no_such_module:f")


@pytest.mark.parametrize(
    "sizes, message",
    [
        ((1, 2, 1), r"starts with 1, but task 'add' has 2 input\(s\)"),
        ((2, 2, 3), r"ends with 3, but every task has one output"),
        ((2, 0, 1), r"must be positive integers"),
        ((2,), r"needs at least an input and an output size"),
    ],
)
def test_layer_sizes_are_checked_against_the_task(sizes, message):
    with pytest.raises(CircuitsError, match=message):
        get_task("add").check_layer_sizes(sizes)


def test_a_float64_target_trains_as_float32():
    task = get_task("custom_tasks:relu_x")
    wide = Task("wide", lambda a: a.double() * 2, 1, "2x", (1, 2, 1))
    x = torch.tensor([[0.5], [-1.0]])
    assert task(x).dtype == torch.float32 and wide(x).dtype == torch.float32
    assert wide(x).flatten().tolist() == [1.0, -2.0]


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda a: a / 0.0, r"task 'bad' \(f = \?\) returned (-?inf|nan) at input .* non-finite\); targets must"),
        (lambda a: a[:3], r"returned a tensor of shape \(3,\) for inputs of shape \(64,\)"),
        (lambda a: a.sum(), r"returned a tensor of shape \(\) for inputs"),
        (lambda a: (a > 0), r"returned a torch.bool tensor; it must return a floating tensor"),
        (lambda a: [1.0], r"returned list \[1.0\], not a tensor"),
        (lambda a: a.foo(), r"raised AttributeError: 'Tensor' object has no attribute 'foo' when called with 1 tensor"),
    ],
)
def test_bad_targets_are_refused_naming_the_task_and_what_it_returned(fn, message):
    with pytest.raises(CircuitsError, match=message):
        Task("bad", fn, 1, "?", (1, 2, 1)).check_targets()


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_the_check_calls_the_target_on_the_streams_points_and_passes_the_builtins(name):
    task = BUILTIN_TASKS[name]
    calls = []

    def recorded(*columns):
        calls.append(columns)
        return task.fn(*columns)

    assert replace(task, fn=recorded).check_targets() is None  # no CircuitsError
    (columns,) = calls  # one call, one column per input, 64 points drawn as the stream draws a fixed set
    assert torch.equal(torch.stack(columns, -1), uniform_inputs(64, task.arity, seed=0))


def test_star_args_is_not_a_task_without_inputs():
    with pytest.raises(CircuitsError, match=r"takes \*args, so its number of inputs is unknown"):
        get_task("custom_tasks:star_args")
