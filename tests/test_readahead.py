"""Read-ahead: every group whole and in its order, never more bytes ahead than the budget, errors in place."""

import random
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recpack.read.readahead as readahead
from recpack.format import framing
from recpack.pack.writer import ShardWriter, StagingBuffers
from recpack.read.planning import EpochPlan
from recpack.read.readahead import Pace, budget, group_reads, read_groups
from recpack.read.shard_reader import ShardReader, _kernel_reads_blocks

SHARDS, RECORDS = 4, 30


@pytest.fixture(scope="module")
def readers(tmp_path_factory):
    """Shards of random records of 2-9 KB: runs of a few records span several pages and differ in size."""
    folder = tmp_path_factory.mktemp("readahead")
    rng = random.Random(5)
    found = []
    for shard in range(SHARDS):
        stem = f"shard-{shard:05d}"
        with ShardWriter(str(folder), stem, StagingBuffers()) as writer:
            for _ in range(RECORDS):
                writer.write_raw(rng.randbytes(rng.randrange(2000, 9000)).replace(framing.MAGIC_BYTES, b"\0" * 4))
        found.append(ShardReader(str(folder / f"{stem}.rec"), str(folder / f"{stem}.rpi"), stem))
    return found


def epoch(seed=1, group=12, window=5):
    return EpochPlan([RECORDS] * SHARDS, seed=seed, epoch=0, shuffle=True, window=window, group=group,
                     rank=0, world=1, pad=True)


def contents(groups):
    return [[(record.shard, record.index, bytes(record.payload)) for record in group] for group in groups]


@pytest.mark.parametrize("threads, ceiling", [(1, 1), (1, 10**9), (3, 30_000), (4, 10**9)])
def test_groups_arrive_whole_in_their_shuffled_order(readers, threads, ceiling):
    plan = epoch()
    groups = list(range(len(plan.groups)))
    got = contents(read_groups(plan, readers, groups, verify=True, threads=threads, ceiling=ceiling, lead=1.0))
    wanted = []
    for group in groups:
        shards, records = plan.group_records(group)
        wanted.append([(s, r, readers[s].read(r)) for s, r in zip(shards.tolist(), records.tolist())])
    assert got == wanted


class Clock:
    """Time that moves only when told: each hand-off takes ``step`` seconds."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


class SyncPool:
    """A thread pool that reads at submission, so that what was submitted when is known exactly."""

    log: list = []

    def __init__(self, threads, thread_name_prefix=""):
        pass

    def shutdown(self, wait=True, cancel_futures=False):
        pass

    def submit(self, function, *args):
        if function is readahead._read_run:
            SyncPool.log.append(args[1])
        future = Future()
        future.set_result(function(*args))
        return future


def replay(readers, ceiling, lead, step):
    """Read an epoch with a synchronous pool: each group's reads, and (run, groups handed on) per submission."""
    plan = epoch(group=8)
    groups = list(range(len(plan.groups)))
    reads = [group_reads(plan, readers, group) for group in groups]
    SyncPool.log = []
    handed, submitted = 0, []
    original = readahead.ThreadPoolExecutor
    readahead.ThreadPoolExecutor = SyncPool
    try:
        for _ in read_groups(plan, readers, groups, verify=False, threads=1, ceiling=ceiling, lead=lead,
                             pace=Pace(Clock(step))):
            submitted += [(run, handed) for run in SyncPool.log]
            SyncPool.log = []
            handed += 1
    finally:
        readahead.ThreadPoolExecutor = original
    return reads, submitted


def bytes_ahead(reads, submitted):
    """(run's group, groups handed on, bytes submitted and not handed on with it) per submission."""
    owner = {run: position for position, group in enumerate(reads) for run in group.runs}
    size = {run: nbytes for group in reads for run, nbytes in zip(group.runs, group.sizes)}
    return [(owner[run], at, sum(size[r] for r, _ in submitted[: i + 1] if owner[r] >= at))
            for i, (run, at) in enumerate(submitted)]


@settings(max_examples=40, deadline=None)
@given(ceiling=st.integers(1, 400_000), lead=st.floats(0.01, 5.0), step=st.floats(0.001, 2.0))
def test_bytes_ahead_stay_under_the_ceiling_and_the_next_group_is_read_with_the_head(readers, ceiling, lead, step):
    reads, submitted = replay(readers, ceiling, lead, step)
    assert sorted(run for run, _ in submitted) == sorted(run for group in reads for run in group.runs)  # once each
    for group, at, held in bytes_ahead(reads, submitted):
        assert group >= at  # nothing of a group already handed on is read
        if group > at:  # beyond the group being handed on, the budget holds
            assert held <= ceiling
    for at in range(len(reads) - 1):
        if ceiling >= reads[at].bytes + reads[at + 1].bytes:  # the floor fits: reading overlaps decoding
            assert set(reads[at + 1].runs) <= {run for run, when in submitted if when <= at}


def test_a_faster_pace_reads_further_ahead(readers):
    most = lambda step: max(held for _, _, held in bytes_ahead(*replay(readers, 10**9, 1.0, step)))  # noqa: E731
    reads, _ = replay(readers, 10**9, 1.0, 1.0)
    two_groups = max(a.bytes + b.bytes for a, b in zip(reads, reads[1:]))
    assert most(1000.0) <= two_groups  # a slow consumer: the floor only
    assert most(0.001) > 2 * two_groups  # a fast one: its pace times the lead


def test_the_budget_follows_the_pace_between_its_floor_and_ceiling():
    assert budget(ceiling=1000, floor=100, rate=None, lead=1.0) == 100  # nothing measured yet
    assert budget(ceiling=1000, floor=100, rate=50.0, lead=1.0) == 100
    assert budget(ceiling=1000, floor=100, rate=400.0, lead=2.0) == 800
    assert budget(ceiling=1000, floor=100, rate=4000.0, lead=2.0) == 1000
    assert budget(ceiling=50, floor=100, rate=None, lead=1.0) == 50  # the ceiling is the memory bound
    pace = Pace(Clock(0.5))
    assert pace.rate is None
    pace.handed(100)
    pace.handed(300)
    assert pace.rate == pytest.approx(600.0)  # 300 bytes in the half second since the first hand-off


def test_a_failed_read_is_raised_when_its_group_is_reached(readers, monkeypatch):
    plan = epoch()
    groups = list(range(len(plan.groups)))
    broken = group_reads(plan, readers, 3).runs[0]
    original = readahead._read_run

    def failing(readers_, run, verify):
        if run == broken:
            raise OSError(5, "Input/output error")
        return original(readers_, run, verify)

    monkeypatch.setattr(readahead, "_read_run", failing)
    stream = read_groups(plan, readers, groups, verify=True, threads=2, ceiling=10**9, lead=1.0)
    assert len([next(stream) for _ in range(3)]) == 3
    with pytest.raises(OSError, match="Input/output error"):
        next(stream)


def test_block_reads_only_on_kernels_that_read_whole_blocks():
    assert _kernel_reads_blocks("linux", "6.18.44-fc-v1272")
    assert _kernel_reads_blocks("linux", "5.18.0")
    assert not _kernel_reads_blocks("linux", "5.15.0-91-generic")  # MADV_RANDOM would read 4 KiB per fault
    assert not _kernel_reads_blocks("darwin", "23.1.0")


def test_a_reader_pool_shut_down_on_one_of_its_threads_does_not_wait_for_itself():
    """The garbage collector may close an abandoned read_groups on one of its own pool's threads."""
    executor = ThreadPoolExecutor(2, thread_name_prefix="recpack-read-test")
    slow = executor.submit(time.sleep, 2.0)  # long enough that a loaded machine still shuts down before it ends
    shutting = executor.submit(readahead._shut_down, executor, "recpack-read-test")
    shutting.result(timeout=5)  # else "cannot join current thread"
    assert not slow.done()  # it did not wait there
    readahead._shut_down(executor, "recpack-read-test")  # from elsewhere, it waits
    assert slow.done()
