"""Read-ahead: an epoch's groups read by background threads, a bounded number of bytes ahead of their use.

A group (``planning``: ``shuffle_buffer`` records, yielded in a shuffled order)
can be handed on only once all its runs are read, so runs are read ahead, in
the order their groups are used, on ``threads`` threads.  The rule:

    a run is submitted when its group is the next one to hand on, or when the bytes
    submitted and not yet handed on, with it, stay within

        budget = min(ceiling, max(next two groups' bytes, rate x lead))

``rate`` is the pace at which groups were handed on lately (bytes per second over
the last ``RATE_GROUPS``): the disk's when it is the slower, the decoder's
otherwise.  ``lead`` (``ReadOptions.readahead_s``, 1 s) is how much time of that
pace is read ahead, to ride out the disk's and the decoder's jitter.  The floor
of two groups keeps a group being read while the previous one is decoded; the
``ceiling`` (``ReadOptions.readahead_mb``) is the memory bound.  Nothing else is
read early, and every run is read exactly once.

Memory: the read-ahead maps at most ``ceiling`` bytes of runs per process
(more only when a single group is larger: it is always read whole), plus the runs
of the groups whose records the decoder still holds (at most two).  With
DataLoader workers each worker process has its own read-ahead.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from .planning import EpochPlan, read_runs
from .shard_reader import Record, ShardReader, run_records

RATE_GROUPS = 8  # hand-offs the pace is measured over: enough to smooth one slow batch, few enough to follow a change
# groups planned ahead of the read-ahead on a thread of their own: planning a group loads the record index of
# each shard it touches, one small read each, which must not hold up the hand-off of the group before
PLAN_AHEAD = 8


@dataclass(frozen=True)
class GroupReads:
    """One group's reads: its records in the order they are yielded, and the runs that cover them."""

    group: int
    shards: list[int]
    records: list[int]
    runs: list[tuple[int, int, int]]  # (shard, first, stop), in file order
    sizes: list[int]  # bytes of each run

    @property
    def bytes(self) -> int:
        return sum(self.sizes)


def group_reads(plan: EpochPlan, readers: Sequence[ShardReader], group: int) -> GroupReads:
    shard_ids, record_ids = plan.group_records(group)
    runs = read_runs(shard_ids, record_ids)
    sizes = [readers[shard].run_bytes(first, stop) for shard, first, stop in runs]
    return GroupReads(group, shard_ids.tolist(), record_ids.tolist(), runs, sizes)


def budget(ceiling: int, floor: int, rate: float | None, lead: float) -> int:
    """Bytes that may be read ahead: ``rate x lead``, at least ``floor``, at most ``ceiling``."""
    wanted = floor if rate is None else max(floor, int(rate * lead))
    return min(ceiling, wanted)


class Pace:
    """Bytes per second handed on, over the last ``RATE_GROUPS`` hand-offs (None until two are seen)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._marks: deque[tuple[float, int]] = deque(maxlen=RATE_GROUPS + 1)

    def handed(self, nbytes: int) -> None:
        self._marks.append((self._clock(), nbytes))

    @property
    def rate(self) -> float | None:
        if len(self._marks) < 2:
            return None
        seconds = self._marks[-1][0] - self._marks[0][0]
        moved = sum(nbytes for _, nbytes in list(self._marks)[1:])
        return moved / seconds if seconds > 0 else None


def _read_run(readers: Sequence[ShardReader], run: tuple[int, int, int], verify: bool) -> list[Record]:
    shard, first, stop = run
    return run_records(readers[shard], shard, first, stop, verify)


def _assemble(reads: GroupReads, runs: list[list[Record]]) -> list[Record]:
    """The group's records in its shuffled order, from its runs' records in file order."""
    fetched = {}
    for (shard, _, _), records in zip(reads.runs, runs):
        for record in records:
            fetched[shard, record.index] = record
    return [fetched[key] for key in zip(reads.shards, reads.records)]


def _shut_down(executor: ThreadPoolExecutor, prefix: str) -> None:
    """Shut ``executor`` down, waiting for its threads unless this is one of them.

    Why: a generator abandoned in a reference cycle (an error's traceback holds its frame)
    is closed by the garbage collector on whichever thread it runs, possibly one of its
    own pool's, which cannot wait for itself ("cannot join current thread").
    """
    executor.shutdown(wait=not threading.current_thread().name.startswith(prefix + "_"), cancel_futures=True)


def read_groups(
    plan: EpochPlan,
    readers: Sequence[ShardReader],
    groups: list[int],
    *,
    verify: bool,
    threads: int,
    ceiling: int,
    lead: float,
    pace: Pace | None = None,
) -> Iterator[list[Record]]:
    """Each of ``groups``' records in its shuffled order, read ahead under the module's rule.

    An error raised reading a run (an OSError) is raised here when its group
    is reached; damaged records travel as values (``ShardReader.read_run``).
    Closing the generator cancels the reads not yet started and waits for the others.
    """
    if threads < 1:
        raise ValueError("threads must be at least 1")
    pace = pace or Pace()
    upcoming = iter(groups)
    planning: deque[Future] = deque()  # groups being planned on the planner thread, in order
    planned: deque[GroupReads] = deque()  # from the group to hand on next, in order
    reading: deque[list[Future]] = deque()  # the runs submitted so far, per planned group

    def plan_one(wait: bool = True) -> bool:
        """Take the next group's plan; False when none is left or, unless ``wait``, none is ready yet."""
        while len(planning) < PLAN_AHEAD and (group := next(upcoming, None)) is not None:
            planning.append(planner.submit(group_reads, plan, readers, group))
        if not planning or not (wait or planning[0].done()):
            return False
        planned.append(planning.popleft().result())
        reading.append([])
        return True

    held = 0  # bytes submitted and not yet handed on
    tag = f"{id(planned):x}"  # this call's threads, told apart from any other reader's (see _shut_down)
    pool = ThreadPoolExecutor(threads, thread_name_prefix=f"recpack-read-{tag}")
    planner = ThreadPoolExecutor(1, thread_name_prefix=f"recpack-plan-{tag}")
    try:
        while planned or plan_one():
            while len(planned) < 2 and plan_one():
                pass
            floor = sum(reads.bytes for reads in list(planned)[:2])
            limit = budget(ceiling, floor, pace.rate, lead)
            position = next((i for i, futures in enumerate(reading) if len(futures) < len(planned[i].runs)),
                            len(planned))
            # beyond the next two groups, only plans already made: the head is not held up by planning
            while position < len(planned) or (held < limit and plan_one(wait=False)):
                reads, futures = planned[position], reading[position]
                size = reads.sizes[len(futures)]
                if position > 0 and held + size > limit:
                    break
                futures.append(pool.submit(_read_run, readers, reads.runs[len(futures)], verify))
                held += size
                position += len(futures) == len(reads.runs)
            head = planned.popleft()
            runs = [future.result() for future in reading.popleft()]
            records = _assemble(head, runs)
            del runs
            held -= head.bytes
            pace.handed(head.bytes)
            yield records
            del records
    finally:
        for future in [*planning, *(future for futures in reading for future in futures)]:
            future.cancel()
        _shut_down(pool, f"recpack-read-{tag}")
        _shut_down(planner, f"recpack-plan-{tag}")
