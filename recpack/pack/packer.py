"""``recpack pack``: shuffle a source once, write it as shards in parallel, publish a manifest.

How the work is cut (``plan``): the shuffled list is split into ``shards``
contiguous ranges and each worker process writes whole shards, in record
order, through its own ``ShardWriter``; no image bytes cross a process
boundary.  (Parallelism is capped by the shard count.)

Crash safety: the folder is locked and interrupted runs resume (``resume``).
The manifest is written last: until it exists, readers refuse the folder.
Unless ``fsync`` is off, finished shards are fsynced on a background thread as
the workers go on, and the manifest only after all of them, so a power cut
cannot leave a manifest that names shards the disk never received.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Iterator

from ..errors import BadImageError, PackError
from ..format import manifest as mf
from ..format.schema import Payload, payload_prefix
from ..prefetch import ordered_map
from . import resume, spill
from .archive import ArchiveSource
from .gather import gather, labels_for
from .layout import cached_fraction, mean_file_bytes, on_spinning_disk
from .scatter import forget_result, load_result, save_result, scatter
from .plan import PackOptions, ShardTask, fingerprint, plan_tasks, shard_spans
from .prepare import Inputs, PrepareOptions, prepare, read_inputs, stored_as_is
from .publish import PackResult, ShardLedger, publish, shard_note
from .sources import Source, SourceItem
from .workers import report_progress, staging_buffers
from .workers import run as run_workers
from .writer import ShardWriter, StagingBuffers


@dataclass(frozen=True)
class ShardOutcome:
    """What a worker reports for one finished shard."""

    index: int
    files: mf.ShardFiles
    bad: list[tuple[int, str, str]]  # (list line, key, reason)
    keys: list[tuple[str, int, int]]  # (key, record in shard, offset)
    label_width: int
    has_masks: bool
    reencoded: int
    bytes_in: int  # input bytes this shard read


# --- worker side -------------------------------------------------------------------------

def write_shard(task: ShardTask, buffers: StagingBuffers | None = None) -> ShardOutcome:
    """Prepare and write every item of one shard, in order.  Runs in a worker process.

    Inputs that cannot be read fail as BadImageError inside; an OSError here
    is the output side (disk full, permissions, I/O error) and ends the pack.
    ``buffers``: the staging buffers to write through (default: the pool worker's).
    """
    try:
        return _write_items(task, buffers or staging_buffers())
    except OSError as error:
        raise PackError(f"{os.path.join(task.out_dir, task.stem)}: cannot write ({error.strerror or error}); "
                        "the shards finished so far are kept: fix this and rerun the same command") from None


READ_AHEAD = 8  # inputs read in one background call; two such calls run ahead of the checks


def _inputs(items: list[SourceItem], options: PrepareOptions) -> Iterator[Inputs | None]:
    """The items' files, in order: read ahead on a background thread when each costs a decode; else None.

    Why: the list is in shuffled order, so on a cold disk every file costs a
    seek, and read in line with a 1-ms decode check the CPU would wait for
    each one (measured here: the default pack 7% faster with this, wall time).
    Header checks are so cheap that the second thread's share of the GIL
    costs more than the overlap saves from a warm page cache (+10% wall,
    +19% CPU), so that mode reads in line (None: "not read yet"), mostly
    straight into the shard's buffer; for cold sources, add --workers.
    """
    if _reads_in_line(options):
        yield from itertools.repeat(None, len(items))
        return
    chunks = [items[start : start + READ_AHEAD] for start in range(0, len(items), READ_AHEAD)]
    read = lambda chunk: [read_inputs(item.path, item.mask) for item in chunk]  # noqa: E731
    for inputs in ordered_map(read, chunks, threads=1, depth=2):
        yield from inputs


def _reads_in_line(options: PrepareOptions) -> bool:
    return options.check == "header" and options.resize is None


def _write_in_place(writer: ShardWriter, item: SourceItem, options: PrepareOptions) -> tuple[int, int] | None:
    """Read an image file straight into the shard's buffer and commit it there if it is stored as is.

    Returns (offset, bytes read), or None, with nothing written, for anything
    else -- a mask, an image to convert, a record that would straddle two
    buffers, a file that cannot be read or is damaged -- which then takes the
    ordinary path (``prepare``), whose error messages say what is wrong.
    """
    if item.mask is not None:
        return None
    try:
        fd = os.open(item.path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        slot = writer.reserve(payload_prefix(item.labels, item.line), size)
        if slot is None or os.readv(fd, [slot.image]) != size:
            return None
    except OSError:  # a directory, an I/O error: the ordinary path names it
        return None
    finally:
        os.close(fd)
    if not stored_as_is(slot.image, options):
        return None
    return writer.commit(slot), size


@dataclass
class _ShardTally:
    """What one shard's worker has counted so far, for its ShardOutcome."""

    bad: list[tuple[int, str, str]] = field(default_factory=list)
    keys: list[tuple[str, int, int]] = field(default_factory=list)
    label_width: int = 1
    has_masks: bool = False
    reencoded: int = 0
    bytes_in: int = 0

    def written(self, item: SourceItem, record: int, offset: int, source_bytes: int,
                has_mask: bool = False, reencoded: bool = False) -> None:
        self.keys.append((item.key, record, offset))
        self.label_width = max(self.label_width, len(item.labels))
        self.has_masks = self.has_masks or has_mask
        self.reencoded += reencoded
        self.bytes_in += source_bytes


def _write_items(task: ShardTask, buffers: StagingBuffers | None) -> ShardOutcome:
    tally = _ShardTally()
    in_place = _reads_in_line(task.prepare)
    pending_images, reported_bytes, last_report = 0, 0, time.monotonic()
    with ShardWriter(task.out_dir, task.stem, buffers, task.attempt) as writer:
        for item, inputs in zip(task.items, _inputs(task.items, task.prepare)):
            written = _write_in_place(writer, item, task.prepare) if in_place else None
            if written is not None:
                offset, source_bytes = written
                tally.written(item, writer.records - 1, offset, source_bytes)
            else:
                try:
                    prepared = prepare(item.path, item.mask, task.prepare, inputs)
                except BadImageError as error:
                    if task.strict:
                        raise PackError(f"{item.path} (list line {item.line}): {error.reason} [--strict]") from None
                    tally.bad.append((item.line, item.key, error.reason))
                else:
                    offset = writer.write(Payload(item.labels, item.line, prepared.image, prepared.mask))
                    tally.written(item, writer.records - 1, offset, prepared.source_bytes,
                                  bool(prepared.mask), prepared.reencoded)
            pending_images += 1
            if pending_images >= 256 or time.monotonic() - last_report > 0.25:
                report_progress(pending_images, tally.bytes_in - reported_bytes)
                pending_images, reported_bytes, last_report = 0, tally.bytes_in, time.monotonic()
    report_progress(pending_images, tally.bytes_in - reported_bytes)
    return ShardOutcome(task.index, writer.files, tally.bad, tally.keys, tally.label_width, tally.has_masks,
                        tally.reencoded, tally.bytes_in)


def pack(source: Source | ArchiveSource, out_dir: str, options: PackOptions, show_progress: bool = True) -> PackResult:
    """Pack ``source`` into ``out_dir``, resuming an interrupted run of the same pack.

    Inputs are read in list order, or in disk order then spilled and written
    (``scatter``, ``gather``): the same bytes either way.  ``options.order="auto"``
    reads archives in disk order, and lists whose files are uncached on a spinning disk.
    """
    if isinstance(source, ArchiveSource):
        with resume.exclusive(out_dir):
            return _pack_in_disk_order(source, out_dir, options, show_progress)
    spans = shard_spans(source, options)
    with resume.exclusive(out_dir):
        if reads_in_disk_order(source, options):
            return _pack_in_disk_order(source, out_dir, options, show_progress)
        return _pack_locked(source, out_dir, options, spans, show_progress)


COLD = 0.5  # a list on a spinning disk whose sampled files are less cached than this is read in disk order


def reads_in_disk_order(source: Source, options: PackOptions) -> bool:
    """The order a list is read in: as asked, or (auto) disk order for uncached files on a spinning disk.

    Why: in list order every file of a cold list costs a seek on a spinning disk; in
    inode order the head mostly moves forward.  Where seeks are free (flash) or the
    files are cached, list order is cheaper: nothing is spilled.  (Under an I/O-count
    throttle both orders cost one request per file: see the README's measurements.)
    """
    if options.order != "auto":
        return options.order == "disk"
    if not on_spinning_disk(source.paths()[0]):
        return False
    cached = cached_fraction(source.paths())
    return cached is not None and cached < COLD


def _pack_locked(source: Source, out_dir: str, options: PackOptions, spans: list[tuple[int, int]],
                 show_progress: bool) -> PackResult:
    started = time.monotonic()
    notes = resume.start_or_resume(out_dir, fingerprint(source, options), options.overwrite)
    resumed = len(notes)
    pending = [(i, span) for i, span in enumerate(spans) if i not in notes]
    processed = sum(stop - start for _, (start, stop) in pending)
    bytes_read = 0
    if pending:
        workers = min(options.workers or os.cpu_count() or 1, len(pending))
        tasks = plan_tasks(source, out_dir, options, spans, skip=notes)
        with ShardLedger(out_dir, options.fsync, notes) as ledger:
            for outcome in run_workers(write_shard, tasks, workers, processed, show_progress):
                ledger.add(_note(outcome), outcome.keys)
                bytes_read += outcome.bytes_in
    return publish(out_dir, notes, options, {"description": source.description, "root": source.root},
                   source.classes, started, resumed, processed, bytes_read)


def _pack_in_disk_order(source: Source | ArchiveSource, out_dir: str, options: PackOptions,
                        show_progress: bool) -> PackResult:
    """Scatter every input into the spill in disk order (unless an interrupted run finished that), then gather."""
    started = time.monotonic()
    print_hash = fingerprint(source, options)
    notes = resume.start_or_resume(out_dir, print_hash, options.overwrite)
    resumed = len(notes)
    spill_dir = _spill_dir(out_dir, options, print_hash)
    scattered = load_result(out_dir, spill_dir)
    read_here = scattered is None  # else the interrupted run read every input: this one only gathers
    if scattered is not None:
        store: spill.SpillStore = spill.DiskSpill(spill_dir, len(scattered.counts))
    else:
        forget_result(out_dir)
        shutil.rmtree(spill_dir, ignore_errors=True)
        estimate = _estimated_bytes(source)
        store = _spill_store(estimate, spill_dir, out_dir, options)
    try:
        if scattered is None:
            scattered = scatter(source, store, options, show_progress)
            sizes = store.settle(durable=options.fsync,
                                 drop_from_cache=not spill.fits_in_memory(estimate, _available_memory()))
            if store.lasting:
                save_result(out_dir, scattered, sizes)
        if sum(scattered.counts) < options.shards:
            raise PackError(f"--shards {options.shards} exceeds the number of images ({sum(scattered.counts)}) "
                            f"in {source.description}")
        if isinstance(source, ArchiveSource):
            classes, labels_of_class = labels_for(scattered.classes)
        else:
            classes, labels_of_class = source.classes, None
        with ShardLedger(out_dir, options.fsync, notes) as ledger:
            gather(out_dir, store, scattered, options.shards, ledger, labels_of_class, options.workers,
                   show_progress)
    finally:
        store.close()  # a memory spill's memory is freed; a disk spill stays for a rerun
    store.remove()  # before the manifest: a pack killed after publishing leaves no spill (under --spill-dir) behind
    return publish(out_dir, notes, options, {"description": source.description, "root": source.root}, classes,
                   started, resumed, scattered.processed if read_here else 0, scattered.bytes_in if read_here else 0,
                   extra_bad=scattered.bad)


def _spill_store(estimate: int, spill_dir: str, out_dir: str, options: PackOptions) -> spill.SpillStore:
    """In memory files if the spill fits in memory and no --spill-dir is given, else in ``spill_dir``."""
    buckets = spill.bucket_count(estimate, options.spill_memory)
    if spill.kept_in_memory(estimate, _available_memory(), options.spill_dir):
        spill.check_room(None, out_dir, estimate)
        return spill.MemorySpill.create(buckets)
    spill.check_room(spill_dir, out_dir, estimate)
    return spill.DiskSpill.create(spill_dir, buckets)


def _spill_dir(out_dir: str, options: PackOptions, print_hash: str) -> str:
    if options.spill_dir is None:
        return os.path.join(out_dir, resume.WORK_DIR, "spill")
    return os.path.join(options.spill_dir, f"recpack-spill-{print_hash[:16]}")


def _estimated_bytes(source: Source | ArchiveSource) -> int:
    if isinstance(source, ArchiveSource):
        return source.total_bytes()
    return int(len(source) * mean_file_bytes(source.paths()))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _note(outcome: ShardOutcome) -> dict:
    return shard_note(outcome.index, outcome.files, outcome.bad, outcome.label_width, outcome.has_masks,
                      outcome.reencoded, outcome.bytes_in)
