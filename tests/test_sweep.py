"""Cells of a sweep: parsing, order, seeds, groups by architecture and lr, process shares."""

import pytest
import yaml

from circuits_pl.errors import CircuitsError
from circuits_pl.sweep import Cell, Sweep, parse_positive_list, parse_sizes_list


def test_product_cells_members_and_seeds():
    sweep = Sweep.product([(1, 4, 1), (1, 2, 1)], [0.3, 0.1], [1.0, 0.1], members_per_cell=3)
    assert sweep.members == 2 * 2 * 2 * 3
    # sorted by sizes, lr, scale whatever order they were given in
    assert [c.label for c in sweep.cells[:3]] == ["1-2-1 lr 0.1 init×0.1", "1-2-1 lr 0.1", "1-2-1 lr 0.3 init×0.1"]
    # member m: cell m // K, seed offset m % K (the seeds of the cell run alone)
    assert [sweep.cell_of(m) for m in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert [sweep.seed_offset(m) for m in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert list(sweep.members_of(2)) == [6, 7, 8]


def test_groups_are_contiguous_runs_of_one_architecture_and_lr():
    sweep = Sweep.product([(1, 2, 1), (1, 4, 1)], [0.1, 0.3], [0.1, 1.0], members_per_cell=64)
    groups = sweep.groups()
    assert [(g.layer_sizes, g.lr, g.start, g.stop, g.cells) for g in groups] == [
        ((1, 2, 1), 0.1, 0, 128, (0, 1)), ((1, 2, 1), 0.3, 128, 256, (2, 3)),
        ((1, 4, 1), 0.1, 256, 384, (4, 5)), ((1, 4, 1), 0.3, 384, 512, (6, 7))]
    for g in groups:  # every member of a group is of its cells, with its sizes and lr
        for m in range(g.start, g.stop):
            cell = sweep.cells[sweep.cell_of(m)]
            assert (cell.layer_sizes, cell.lr) == (g.layer_sizes, g.lr)


def test_shares_cut_groups_at_a_process_boundary():
    sweep = Sweep.product([(2, 2, 1), (2, 4, 1)], [0.1], members_per_cell=5)  # groups [0, 5), [5, 10)
    assert sweep.shares(0, 10) == [(0, slice(0, 5)), (1, slice(0, 5))]
    assert sweep.shares(3, 7) == [(0, slice(3, 5)), (1, slice(0, 2))]
    assert sweep.shares(5, 5) == []


def test_round_trip_through_the_plain_cells_that_config_yaml_and_checkpoints_hold():
    sweep = Sweep.product([(2, 3, 1)], [0.1, 0.03], [0.5], members_per_cell=16)
    plain = yaml.safe_load(yaml.safe_dump([c.as_dict() for c in sweep.cells]))  # model.cells, as fit saves it
    assert plain == [{"layer_sizes": [2, 3, 1], "lr": 0.03, "init_scale": 0.5},
                     {"layer_sizes": [2, 3, 1], "lr": 0.1, "init_scale": 0.5}]
    assert Sweep.of_run((), 0.1, 1.0, plain, 16) == sweep  # as a resumed run reads them back
    # a run of today: no cells, its one cell from the model's options
    assert Sweep.of_run((2, 3, 1), 0.1) == Sweep((Cell((2, 3, 1), 0.1),), 64)
    assert Sweep((Cell((2, 3, 1), 0.1),), 64).is_single and not sweep.is_single


@pytest.mark.parametrize("make, message", [
    (lambda: Cell((2, 0, 1), 0.1), "positive sizes"),
    (lambda: Cell((2, 3), 0.1), "input-hidden"),
    (lambda: Cell((2, 3, 1), 0.0), "lr must be a positive"),
    (lambda: Cell((2, 3, 1), float("nan")), "lr must be a positive"),
    (lambda: Cell((2, 3, 1), 0.1, -1.0), "init_scale must be a positive"),
    (lambda: Sweep((Cell((2, 3, 1), 0.1), Cell((2, 3, 1), 0.1)), 4), "same cell twice"),
    (lambda: Sweep((Cell((2, 3, 1), 0.1), Cell((1, 3, 1), 0.1)), 4), "input size"),
    (lambda: Sweep((Cell((2, 3, 1), 0.1),), 0), "positive integer"),
    (lambda: Sweep((), 4), "at least one cell"),
])
def test_bad_cells_are_refused_in_one_line(make, message):
    with pytest.raises(CircuitsError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_parsers():
    assert parse_sizes_list("1-2-1, 1-4-1", arity=1) == [(1, 2, 1), (1, 4, 1)]
    assert parse_sizes_list([[2, 3, 1]]) == [(2, 3, 1)]
    assert parse_positive_list("0.03,0.1", "--sweep.lr") == [0.03, 0.1]
    for bad, message in [("1-2", "input-hidden"), ("1-x-1", "not like"), ("2-4-1", "the task has 1"), ("", "empty")]:
        with pytest.raises(CircuitsError, match=message):
            parse_sizes_list(bad, arity=1)
    for bad in ["0.1,-1", "abc", "", "0.1,0.1", "inf"]:
        with pytest.raises(CircuitsError, match="--sweep.lr"):
            parse_positive_list(bad, "--sweep.lr")
