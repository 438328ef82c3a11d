"""The second pass of a pack in disk order: the spill buckets, in key order, into shards.

Buckets are contiguous ranges of shuffle keys, so reading them in order and sorting
each one gives the whole shuffled sequence (its frames' bytes stay in the mapped file,
on disk or in memory).  Ranks count holes too, and the shards are cut at the same ranks
as a pack in list order cuts them (``plan.split_evenly``), which is why both write the
same bytes.  The packer's workers write the shards, each mapping one bucket at a time:
at most one bucket per worker is mapped.  Shards whose resume notes survived are skipped,
and buckets that hold only ranks of such shards are not read at all.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Any

from ..errors import PackError
from ..format.schema import Payload, payload_prefix
from . import spill, workers
from .plan import shard_stem, split_evenly
from .publish import ShardLedger, shard_note
from .scatter import ScatterResult, forget_result
from .writer import ShardWriter, StagingBuffers


class _OpenShard:
    """The shard being written, and what its note and key-index entries need."""

    def __init__(self, out_dir: str, index: int, buffers: StagingBuffers):
        self.index = index
        self.writer = ShardWriter(out_dir, shard_stem(index), buffers).__enter__()
        self.keys: list[tuple[str, int, int]] = []
        self.label_width, self.has_masks, self.rewritten = 1, False, 0

    def write(self, frame: spill.Frame, labels: tuple[float, ...]) -> None:
        # straight into the shard's buffer where it fits: one copy of the image, not two (a joined payload, then it)
        slot = None if len(frame.mask) else self.writer.reserve(payload_prefix(labels, frame.record_id), len(frame.image))
        if slot is not None:
            slot.image[:] = frame.image
            offset = self.writer.commit(slot)
        else:
            offset = self.writer.write(Payload(labels, frame.record_id, frame.image, frame.mask))
        self.keys.append((frame.source_key, self.writer.records - 1, offset))
        self.label_width = max(self.label_width, len(labels))
        self.has_masks = self.has_masks or bool(len(frame.mask))
        self.rewritten += frame.rewritten

    def close(self) -> dict[str, Any]:
        """Publish the shard; its resume note."""
        self.writer.__exit__(None, None, None)
        return shard_note(self.index, self.writer.files, [], self.label_width, self.has_masks, self.rewritten, 0)

    def discard(self, error: BaseException) -> None:
        """Give up the shard: the writer deletes its .tmp files, as when its ``with`` block raises."""
        self.writer.__exit__(type(error), error, error.__traceback__)


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: its ranks [start, stop), and the buckets (bucket, first rank, frames) that hold them."""

    shard: int
    start: int
    stop: int
    buckets: tuple[tuple[int, int, int], ...]


@dataclass
class ShardWritten:
    """A written shard, for the ledger; and the buckets it read, which may be freed once no other shard needs them."""

    note: dict[str, Any]
    keys: list[tuple[str, int, int]]
    buckets: tuple[int, ...]


class _Gatherer:
    """What every shard task needs (given once per worker), and the bucket the worker read last.

    Tasks come in shard order and a bucket holds many shards, so a worker mostly finds its
    next shard's bucket already mapped and sorted: each worker reads each bucket about once.
    """

    def __init__(self, out_dir: str, store: spill.SpillStore, labels_of_class: list[tuple[float, ...]] | None):
        self.out_dir, self.store, self.labels_of_class = out_dir, store, labels_of_class
        self._bucket: tuple[int, Any, list[spill.Frame]] | None = None  # (bucket, its map, its sorted frames)

    def frames(self, bucket: int, count: int) -> list[spill.Frame]:
        if self._bucket is None or self._bucket[0] != bucket:
            self._bucket = None  # the old map closes once no frame of it is left
            data, frames = self.store.read_bucket(bucket)
            if len(frames) != count:
                forget_result(self.out_dir)
                raise PackError(f"{self.store.name(bucket)}: {len(frames)} spilled records, the first "
                                f"pass wrote {count}; rerun the same command (it reads the sources again)")
            self._bucket = (bucket, data, frames)
        return self._bucket[2]

    def write(self, task: ShardTask) -> ShardWritten:
        shard = _OpenShard(self.out_dir, task.shard, workers.staging_buffers() or StagingBuffers())
        try:
            for bucket, first_rank, count in task.buckets:
                frames = self.frames(bucket, count)
                low, high = max(task.start - first_rank, 0), min(task.stop - first_rank, count)
                nbytes = 0
                for frame in frames[low:high]:
                    if not frame.hole:
                        shard.write(frame, frame.labels if frame.class_id < 0 else self.labels_of_class[frame.class_id])
                        nbytes += len(frame.image)
                workers.report_progress(high - low, nbytes)
            note = shard.close()
        except BaseException as error:
            shard.discard(error)
            raise
        return ShardWritten(note, shard.keys, tuple(bucket for bucket, _, _ in task.buckets))


def _write_shard(task: ShardTask) -> ShardWritten:  # runs in a worker
    return workers.shared().write(task)


def shard_tasks(counts: list[int], shards: int, done: set[int]) -> list[ShardTask]:
    """The unfinished shards, in order, each with the buckets its ranks fall in (pure: planning only)."""
    firsts = [0]
    for count in counts:
        firsts.append(firsts[-1] + count)
    tasks = []
    for shard, (start, stop) in enumerate(split_evenly(firsts[-1], shards)):
        if shard in done:
            continue
        first = bisect.bisect_right(firsts, start) - 1
        buckets = []
        for bucket in range(first, len(counts)):
            if firsts[bucket] >= stop:
                break
            if counts[bucket]:
                buckets.append((bucket, firsts[bucket], counts[bucket]))
        tasks.append(ShardTask(shard, start, stop, tuple(buckets)))
    return tasks


def gather(out_dir: str, store: spill.SpillStore, scattered: ScatterResult, shards: int, ledger: ShardLedger,
           labels_of_class: list[tuple[float, ...]] | None, workers_wanted: int | None,
           show_progress: bool) -> None:
    """Write every shard without a note in ``ledger.notes`` from the buckets, shards shared among workers.

    A bucket's memory (a memory spill's) is freed once every shard with ranks in it is written.
    """
    tasks = shard_tasks(scattered.counts, shards, set(ledger.notes))
    if not tasks:
        return
    waiting = {}  # bucket -> shards not yet written that read it
    for task in tasks:
        for bucket, _, _ in task.buckets:
            waiting[bucket] = waiting.get(bucket, 0) + 1
    count = min(workers_wanted or os.cpu_count() or 1, len(tasks))
    total = sum(task.stop - task.start for task in tasks)
    gatherer = _Gatherer(out_dir, store, labels_of_class)
    for written in workers.run(_write_shard, tasks, count, total, show_progress, desc="write", shared=gatherer):
        ledger.add(written.note, written.keys)
        for bucket in written.buckets:
            waiting[bucket] -= 1
            if not waiting[bucket]:
                store.release(bucket)


def labels_for(classes: list[str]) -> tuple[tuple[str, ...], list[tuple[float, ...]]]:
    """Sorted class names, and each met class's label (its place among them), as an image folder numbers them."""
    ordered = tuple(sorted(classes))
    place: dict[str, Any] = {name: float(position) for position, name in enumerate(ordered)}
    return ordered, [(place[name],) for name in classes]
