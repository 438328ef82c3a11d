"""The first pass of a pack in disk order: read every input in the order it lies, prepare it, spill it.

Worker processes prepare the inputs (the same ``prepare`` as a pack in list order) and
append each record to the spill bucket of its shuffle key (``spill``).  A list's files
are taken in the order they lie on the disk (``layout.disk_order``) and, where it is
allowed and safe, read here from their block device many to a request
(``device_reads``); the others are read by the workers, as in list order.  A bad input
leaves a hole frame, so that the ranks, and hence the shards, come out exactly as a
pack in list order cuts them.  The pass is all or nothing: an interrupted one is
started again, while the shards the second pass (``gather``) finished are kept.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..errors import BadImageError, PackError
from ..format import manifest as mf
from . import resume, spill
from .archive import ArchiveSource, read_located, stream_members
from .device_reads import DeviceReader
from .layout import disk_order
from .plan import PackOptions, shuffle_keys
from .prepare import Inputs, PrepareOptions, prepare, read_inputs
from .sources import Source
from .workers import report_progress
from .workers import run as run_workers

LIST_TASK_ITEMS = 256  # files a worker reads and spills per task (~28 MB of typical JPEGs)
ARCHIVE_TASK_BYTES = 32 << 20  # member bytes per task: what the pack holds in flight per task


@dataclass(frozen=True)
class ScatterItem:
    index: int  # position in the source: the shuffle key's input
    record_id: int
    key: str
    labels: tuple[float, ...]
    class_id: int = -1  # an archive member's class, numbered as met
    path: str | None = None  # a file to read, or
    mask: str | None = None
    data: bytes | None = None  # an archive member's or a file's bytes, already read, or
    location: tuple[str, int, int] | None = None  # where they lie in an uncompressed archive

    @property
    def size(self) -> int:
        """Bytes a worker will be handed or read (0 for a file: not known without a stat)."""
        return len(self.data) if self.data is not None else self.location[2] if self.location else 0


@dataclass(frozen=True)
class ScatterTask:
    spill: spill.SpillStore
    seed: int
    prepare: PrepareOptions
    strict: bool
    items: list[ScatterItem]


@dataclass
class ScatterResult:
    """What the pass found, kept in the work folder so that a resumed pack need not scatter again."""

    counts: list[int]  # frames (holes included) per bucket
    classes: list[str] = field(default_factory=list)  # an archive's classes, in the order met
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (record id, key, reason)
    bytes_in: int = 0
    processed: int = 0


def scatter_task(task: ScatterTask) -> tuple[dict[int, int], list[tuple[int, str, str]], int]:
    """Prepare a task's items and append them to their buckets (runs in a worker).

    Returns (frames per bucket, bad inputs, input bytes read).
    """
    keys = shuffle_keys(task.seed, [item.index for item in task.items])
    buckets = spill.bucket_of(keys, task.spill.buckets).tolist()
    pieces: dict[int, list[spill.Encoded]] = defaultdict(list)
    bad, bytes_in = [], 0
    located = read_located([item.location for item in task.items])
    for item, key, bucket, member in zip(task.items, keys.tolist(), buckets, located):
        try:
            inputs = None
            if item.data is not None:  # a mask is read here, as in list order
                inputs = Inputs(item.data, None if item.mask is None else read_inputs(item.mask, None).image)
            if member is not None:
                inputs = Inputs(member)
            prepared = prepare(item.path or item.key, item.mask, task.prepare, inputs)
        except BadImageError as error:
            if task.strict:
                raise PackError(f"{item.path or item.key} (record {item.record_id}): {error.reason} [--strict]") from None
            bad.append((item.record_id, item.key, error.reason))
            frame = spill.Frame(key, item.index, item.record_id, -1, (), "", hole=True)
        else:
            bytes_in += prepared.source_bytes
            frame = spill.Frame(key, item.index, item.record_id, item.class_id, item.labels, item.key,
                                prepared.image, prepared.mask, rewritten=prepared.reencoded)
        pieces[bucket].append(spill.encode(frame))
    for bucket, frames in pieces.items():
        task.spill.append(bucket, frames)
    report_progress(len(task.items), bytes_in)
    return {bucket: len(frames) for bucket, frames in pieces.items()}, bad, bytes_in


def _list_items(source: Source, device_reads: bool) -> Iterator[ScatterItem]:
    """A list's items in the order their files lie on the disk, with their bytes where the device gave them."""
    order = disk_order(source.paths()).tolist()
    if not device_reads:
        read = ((index, None) for index in order)
    else:
        reader = DeviceReader()
        read = reader.read_all((index, source.item(index).path) for index in order)
    try:
        for index, data in read:
            item = source.item(index)
            yield ScatterItem(index, item.line, item.key, item.labels, path=item.path, mask=item.mask, data=data)
    finally:
        if device_reads:
            reader.close()


def _archive_items(source: ArchiveSource, classes: list[str]) -> Iterator[ScatterItem]:
    """An archive's members as they stream; ``classes`` grows with each class met."""
    numbers: dict[str, int] = {}
    for index, member in enumerate(stream_members(list(source.archives))):
        if member.class_name not in numbers:
            numbers[member.class_name] = len(classes)
            classes.append(member.class_name)
        yield ScatterItem(index, index + 1, member.key, (), numbers[member.class_name], data=member.data,
                          location=member.location)


def _tasks(items: Iterable[ScatterItem], make, archive: bool) -> Iterator[ScatterTask]:
    """Tasks of ``ARCHIVE_TASK_BYTES`` of members, or ``LIST_TASK_ITEMS`` files (fewer when read bytes reach as many)."""
    chunk, size = [], 0
    for item in items:
        chunk.append(item)
        size += item.size
        if size >= ARCHIVE_TASK_BYTES or (not archive and len(chunk) >= LIST_TASK_ITEMS):
            yield make(chunk)
            chunk, size = [], 0
    if chunk:
        yield make(chunk)


def scatter(source: Source | ArchiveSource, store: spill.SpillStore, options: PackOptions,
            show_progress: bool) -> ScatterResult:
    """Read every input once, in disk order, and spill it into ``store``; the counts per bucket say where each rank lies.

    The workers are forked here, after ``store`` was created: a memory spill's files are theirs too.
    """
    result = ScatterResult([0] * store.buckets)
    archive = isinstance(source, ArchiveSource)
    items = _archive_items(source, result.classes) if archive else _list_items(source, options.device_reads)
    make = lambda chunk: ScatterTask(store, options.seed, options.prepare, options.strict, chunk)  # noqa: E731
    workers = options.workers or os.cpu_count() or 1
    total = None if archive else len(source)
    for counts, bad, bytes_in in run_workers(scatter_task, _tasks(items, make, archive), workers, total,
                                             show_progress, desc="read"):
        for bucket, count in counts.items():
            result.counts[bucket] += count
        result.bad += bad
        result.bytes_in += bytes_in
    result.processed = sum(result.counts)
    return result


_STATE = "scatter.json"


def save_result(out_dir: str, result: ScatterResult, sizes: list[int]) -> None:
    """Note that the pass completed, once its spill files are durable (``spill.settle``).

    Only for a spill on disk (``DiskSpill``): a memory spill dies with the process, so
    after a kill the pass must run again (the shards finished meanwhile are kept).
    """
    state = {"counts": result.counts, "sizes": sizes, "classes": result.classes, "bad": result.bad,
             "bytes_in": result.bytes_in, "processed": result.processed}
    mf.write_json_atomic(os.path.join(out_dir, resume.WORK_DIR, _STATE), state)


def load_result(out_dir: str, spill_dir: str) -> ScatterResult | None:
    """The pass's result, if a run of this pack completed it and its spill files are as it left them."""
    try:
        with open(os.path.join(out_dir, resume.WORK_DIR, _STATE), encoding="utf-8") as handle:
            state = json.load(handle)
        for bucket, size in enumerate(state["sizes"]):
            path = spill.bucket_path(spill_dir, bucket)
            if (os.path.getsize(path) if os.path.exists(path) else 0) != size:
                return None
        return ScatterResult(state["counts"], state["classes"], [tuple(row) for row in state["bad"]],
                             state["bytes_in"], state["processed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget_result(out_dir: str) -> None:
    """Drop the saved result, so that the next run of this pack scatters again (its spill proved damaged)."""
    try:
        os.unlink(os.path.join(out_dir, resume.WORK_DIR, _STATE))
    except FileNotFoundError:
        pass
