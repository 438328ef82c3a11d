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

import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator

from PIL import Image
from tqdm import tqdm

from .._version import __version__
from ..errors import BadImageError, PackError
from ..format import keyindex
from ..format import manifest as mf
from ..format.schema import Payload, payload_prefix
from ..prefetch import ordered_map
from . import resume
from .plan import SHUFFLE, PackOptions, ShardTask, fingerprint, plan_tasks, shard_spans
from .prepare import Inputs, PrepareOptions, prepare, read_inputs, stored_as_is
from .sources import Source, SourceItem
from .writer import ShardWriter, StagingBuffers, fsync_paths


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


@dataclass(frozen=True)
class PackResult:
    records: int
    shards: int
    skipped: int
    reencoded: int
    bytes_in: int  # input bytes read by this run
    bytes_out: int
    seconds: float
    resumed_shards: int
    processed: int  # inputs read and checked by this run (not those of resumed shards)


# --- worker side -------------------------------------------------------------------------

_progress: tuple | None = None  # (images, bytes) shared counters, set once per worker process
_buffers: StagingBuffers | None = None  # the worker's write buffers, reused for every shard it writes


def _init_worker(images, nbytes, parent: int) -> None:
    global _progress, _buffers
    _die_with_parent(parent)
    _progress = (images, nbytes)
    _buffers = StagingBuffers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    # Pillow warns of images over ~89 Mpixel and refuses those over twice that (a bad input, reported);
    # below its limit a large image is just packed: no warning through the progress bar
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the pack process dies (Linux; elsewhere a no-op).

    Why: a worker outliving a killed pack would finish its shard and rename it
    into place under a rerun.  The workers hold the folder's lock too
    (inherited), so a rerun is refused while any of them lives; with this,
    none outlives the pack.
    """
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _report_progress(images: int, nbytes: int) -> None:
    if _progress is None:
        return
    for counter, amount in zip(_progress, (images, nbytes)):
        with counter.get_lock():
            counter.value += amount


def write_shard(task: ShardTask) -> ShardOutcome:
    """Prepare and write every item of one shard, in order.  Runs in a worker process.

    Inputs that cannot be read fail as BadImageError inside; an OSError here
    is the output side (disk full, permissions, I/O error) and ends the pack.
    """
    try:
        return _write_items(task)
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


def _write_items(task: ShardTask) -> ShardOutcome:
    tally = _ShardTally()
    in_place = _reads_in_line(task.prepare)
    pending_images, reported_bytes, last_report = 0, 0, time.monotonic()
    with ShardWriter(task.out_dir, task.stem, _buffers) as writer:
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
                _report_progress(pending_images, tally.bytes_in - reported_bytes)
                pending_images, reported_bytes, last_report = 0, tally.bytes_in, time.monotonic()
    _report_progress(pending_images, tally.bytes_in - reported_bytes)
    return ShardOutcome(task.index, writer.files, tally.bad, tally.keys, tally.label_width, tally.has_masks,
                        tally.reencoded, tally.bytes_in)


def _note(outcome: ShardOutcome) -> dict:
    return {
        "index": outcome.index,
        "files": mf.shard_to_json(outcome.files),
        "bad": outcome.bad,
        "label_width": outcome.label_width,
        "has_masks": outcome.has_masks,
        "reencoded": outcome.reencoded,
        "bytes_in": outcome.bytes_in,
    }


# --- the pack ----------------------------------------------------------------------------


def _shard_paths(out_dir: str, files: mf.ShardFiles) -> list[str]:
    return [os.path.join(out_dir, info.name) for info in files.files]


def _write_report(out_dir: str, notes: list[dict]) -> int:
    rows = sorted(tuple(row) for note in notes for row in note["bad"])
    with open(os.path.join(out_dir, mf.REPORT_NAME), "w", encoding="utf-8") as handle:
        handle.write("line\tpath\treason\n")
        handle.writelines(f"{line}\t{key}\t{reason}\n" for line, key, reason in rows)
    return len(rows)


def _run_workers(tasks: Iterable[ShardTask], count: int, workers: int, total: int, show_progress: bool) -> Iterator[ShardOutcome]:
    """Run shard tasks on a process pool; yield each outcome, in this process, as its shard finishes.

    On Linux the workers are forked, before this process has any thread or
    LMDB handle (the caller opens the key index after the first outcome).
    """
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    images, nbytes = context.Value("q", 0), context.Value("q", 0)
    with context.Pool(workers, initializer=_init_worker, initargs=(images, nbytes, os.getpid())) as pool:
        started = time.monotonic()
        with tqdm(total=total, unit="img", desc="pack", disable=not show_progress, dynamic_ncols=True) as bar:

            def refresh() -> None:
                bar.update(images.value - bar.n)
                elapsed = max(time.monotonic() - started, 1e-9)
                bar.set_postfix_str(f"{nbytes.value / elapsed / 1e6:.0f} MB/s", refresh=False)

            results = pool.imap_unordered(write_shard, tasks)
            for _ in range(count):
                while True:
                    try:
                        outcome = results.next(timeout=0.2)
                        break
                    except multiprocessing.TimeoutError:
                        refresh()
                yield outcome
                refresh()


def pack(source: Source, out_dir: str, options: PackOptions, show_progress: bool = True) -> PackResult:
    """Pack ``source`` into ``out_dir``, resuming an interrupted run of the same pack."""
    spans = shard_spans(source, options)
    with resume.exclusive(out_dir):
        return _pack_locked(source, out_dir, options, spans, show_progress)


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
        remaining = sum(stop - start for _, (start, stop) in pending)
        tasks = plan_tasks(source, out_dir, options, spans, skip=notes)
        env = None
        # fsync finished shards on one background thread, so the disk works while the workers do
        with ThreadPoolExecutor(1, thread_name_prefix="recpack-fsync") as flusher:
            flushed = []
            try:
                for outcome in _run_workers(tasks, len(pending), workers, remaining, show_progress):
                    env = env or keyindex.open_for_writing(out_dir)
                    keyindex.add(env, outcome.index, outcome.keys)
                    note = _note(outcome)
                    resume.note_done(out_dir, outcome.files.stem, note)
                    notes[outcome.index] = note
                    bytes_read += outcome.bytes_in
                    if options.fsync:
                        flushed.append(flusher.submit(fsync_paths, _shard_paths(out_dir, outcome.files)))
            finally:
                if env is not None:
                    if options.fsync:
                        env.sync(True)
                    env.close()
            for future in flushed:
                future.result()
    ordered = [notes[index] for index in range(options.shards)]
    skipped = _write_report(out_dir, ordered)
    shards = tuple(mf.shard_from_json(note["files"]) for note in ordered)
    if sum(shard.records for shard in shards) == 0:
        raise PackError(f"{source.description}: no usable image (see {os.path.join(out_dir, mf.REPORT_NAME)})")
    if options.fsync:  # shards kept from an interrupted run, the report, and the folder
        fsync_paths([path for shard in shards for path in _shard_paths(out_dir, shard)] + [os.path.join(out_dir, mf.REPORT_NAME)])
    reencoded = sum(note["reencoded"] for note in ordered)
    created = {
        "source": source.description,
        "root": source.root,
        "seed": options.seed,
        "shuffle": SHUFFLE,
        "shards": options.shards,
        "check": options.prepare.check,
        "resize": options.prepare.resize,
        "quality": options.prepare.quality,
        "skipped": skipped,
        "reencoded": reencoded,
        "recpack_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest = mf.Manifest(
        shards,
        max(note["label_width"] for note in ordered),
        any(note["has_masks"] for note in ordered),
        source.classes,
        created,
    )
    mf.save(out_dir, manifest, durable=options.fsync)
    resume.finish(out_dir)
    return PackResult(
        manifest.num_records,
        manifest.num_shards,
        skipped,
        reencoded,
        bytes_read,
        sum(shard.rec.bytes for shard in shards),
        time.monotonic() - started,
        resumed,
        processed,
    )
