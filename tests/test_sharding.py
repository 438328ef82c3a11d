"""Properties of the pure planning functions, over grids of parameters."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpack.pack.plan import shuffled_order, split_evenly
from recpack.read.planning import (
    EpochPlan,
    epoch_sequence,
    read_runs,
    round_robin_consumed,
)


@given(st.integers(0, 500), st.integers(1, 40))
def test_split_evenly_covers_everything_in_near_equal_parts(count, parts):
    ranges = split_evenly(count, parts)
    assert len(ranges) == parts and ranges[0][0] == 0 and ranges[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_shuffled_order_is_a_seeded_permutation():
    assert sorted(shuffled_order(100, 3)) == list(range(100))
    assert (shuffled_order(100, 3) == shuffled_order(100, 3)).all()
    assert (shuffled_order(100, 3) != shuffled_order(100, 4)).any()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=8), st.integers(1, 20), st.booleans(), st.integers(0, 3))
def test_epoch_sequence_holds_every_record_once(sizes, window, shuffle, epoch):
    shards, starts, counts = epoch_sequence(sizes, seed=1, epoch=epoch, shuffle=shuffle, window=window)
    seen = sorted((int(s), int(r)) for s, a, n in zip(shards, starts, counts) for r in range(a, a + n))
    assert seen == [(s, r) for s, size in enumerate(sizes) for r in range(size)]
    assert (counts <= window).all() and (counts > 0).all()


def _plan_records(plan):
    return [(int(s), int(r)) for g in range(len(plan.groups)) for s, r in zip(*plan.group_records(g))]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=6).filter(lambda sizes: sum(sizes) > 0),
    st.integers(1, 5),
    st.sampled_from([1, 4, 8]),
    st.booleans(),
    st.booleans(),
)
def test_ranks_together_see_every_record_exactly_once(sizes, world, group, pad, shuffle):
    total = sum(sizes)
    per_rank = []
    for rank in range(world):
        plan = EpochPlan(sizes, seed=5, epoch=2, shuffle=shuffle, window=7, group=group, rank=rank, world=world, pad=pad)
        records = _plan_records(plan)
        assert len(records) == plan.span_length
        assert all(count <= group for _, count in plan.groups)
        per_rank.append(records)
    assert len({len(records) for records in per_rank}) == 1  # equal counts: DDP never waits
    everything = [record for records in per_rank for record in records]
    distinct = set(everything)
    if pad:
        assert len(distinct) == total and len(everything) == world * -(-total // world)
    else:
        assert len(distinct) == len(everything) == total - total % world


def test_plan_is_a_function_of_seed_and_epoch():
    make = lambda seed, epoch: _plan_records(  # noqa: E731
        EpochPlan([30, 30, 30], seed=seed, epoch=epoch, shuffle=True, window=8, group=16, rank=0, world=1, pad=True)
    )
    assert make(0, 0) == make(0, 0)
    assert make(0, 0) != make(0, 1) and make(0, 0) != make(1, 0)
    unshuffled = EpochPlan([5, 5], seed=0, epoch=0, shuffle=False, window=3, group=4, rank=0, world=1, pad=True)
    assert _plan_records(unshuffled) == [(0, r) for r in range(5)] + [(1, r) for r in range(5)]


def test_read_runs_groups_consecutive_records_per_shard():
    shards = np.array([1, 0, 0, 1, 0, 2])
    records = np.array([5, 3, 4, 6, 9, 0])
    assert read_runs(shards, records) == [(0, 3, 5), (0, 9, 10), (1, 5, 7), (2, 0, 1)]


@pytest.mark.parametrize(
    "available, seen, expected",
    [([3, 3], 3, [2, 1]), ([1, 4], 3, [1, 2]), ([2, 0, 2], 4, [2, 0, 2]), ([5], 0, [0])],
)
def test_round_robin_consumed_replays_the_dataloader(available, seen, expected):
    assert round_robin_consumed(available, seen) == expected


def test_round_robin_consumed_rejects_more_than_the_epoch():
    with pytest.raises(ValueError):
        round_robin_consumed([1, 1], 3)
