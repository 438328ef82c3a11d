"""The second pass of a pack in disk order: the spill buckets, in key order, into shards.

Buckets are contiguous ranges of shuffle keys, so reading them in order and sorting
each one gives the whole shuffled sequence, one bucket in memory at a time (its frames'
bytes stay in the mapped file, on disk or in memory).  Ranks count holes too, and the shards are cut at the
same ranks as a pack in list order cuts them (``plan.split_evenly``), which is why both
write the same bytes.  Shards whose resume notes survived are skipped, and buckets that
hold only ranks of such shards are not read at all.
"""

from __future__ import annotations

import bisect
from typing import Any

from tqdm import tqdm

from ..errors import PackError
from ..format.schema import Payload, payload_prefix
from . import spill
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

    def close(self, ledger: ShardLedger) -> None:
        self.writer.__exit__(None, None, None)
        note = shard_note(self.index, self.writer.files, [], self.label_width, self.has_masks, self.rewritten, 0)
        ledger.add(note, self.keys)

    def discard(self, error: BaseException) -> None:
        """Give up the shard: the writer deletes its .tmp files, as when its ``with`` block raises."""
        self.writer.__exit__(type(error), error, error.__traceback__)


def gather(out_dir: str, store: spill.SpillStore, scattered: ScatterResult, shards: int, ledger: ShardLedger,
           labels_of_class: list[tuple[float, ...]] | None, show_progress: bool) -> None:
    """Write every shard without a note in ``ledger.notes``, in order, from the buckets."""
    starts = [start for start, _ in split_evenly(sum(scattered.counts), shards)]
    shard_of = lambda rank: bisect.bisect_right(starts, rank) - 1  # noqa: E731
    done = set(ledger.notes)
    buffers = StagingBuffers()  # one set for every shard: fresh memory costs page faults each time
    first_rank = 0
    current: _OpenShard | None = None
    with tqdm(total=sum(scattered.counts), unit="img", desc="write", disable=not show_progress,
              dynamic_ncols=True) as bar:
        try:
            for bucket, count in enumerate(scattered.counts):
                ranks = range(first_rank, first_rank + count)
                first_rank += count
                if not count or all(shard in done for shard in range(shard_of(ranks[0]), shard_of(ranks[-1]) + 1)):
                    bar.update(count)  # only finished shards' records here: the bucket is not read
                    continue
                data, frames = store.read_bucket(bucket)
                if len(frames) != count:
                    forget_result(out_dir)
                    raise PackError(f"{store.name(bucket)}: {len(frames)} spilled records, the first "
                                    f"pass wrote {count}; rerun the same command (it reads the sources again)")
                for rank, frame in zip(ranks, frames):
                    shard = shard_of(rank)
                    if current is not None and current.index != shard:
                        current.close(ledger)
                        current = None
                    if shard not in done and current is None:
                        current = _OpenShard(out_dir, shard, buffers)
                    if current is not None and not frame.hole:
                        current.write(frame, frame.labels if frame.class_id < 0 else labels_of_class[frame.class_id])
                    bar.update(1)
                del data, frames, frame  # the map closes once no record's view of it is left
                store.release(bucket)
            if current is not None:
                current.close(ledger)
                current = None
        except BaseException as error:
            if current is not None:
                current.discard(error)
            raise


def labels_for(classes: list[str]) -> tuple[tuple[str, ...], list[tuple[float, ...]]]:
    """Sorted class names, and each met class's label (its place among them), as an image folder numbers them."""
    ordered = tuple(sorted(classes))
    place: dict[str, Any] = {name: float(position) for position, name in enumerate(ordered)}
    return ordered, [(place[name],) for name in classes]
