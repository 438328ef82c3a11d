"""``recpack pack``: shuffle a source once, write it as shards in parallel, publish a manifest.

How the work is cut: the shuffled list is split into ``shards`` contiguous
ranges and each worker process writes whole shards, in record order, through
its own ``ShardWriter``.  A shard's bytes therefore depend only on the source,
the seed and the options -- never on ``workers`` or on timing -- and no image
bytes cross a process boundary.  (Parallelism is capped by the shard count.)

Crash safety and resume: ``OUT/.recpack-pack/plan.json`` holds a fingerprint
of the source and options.  Each finished shard gets a small ``*.done.json``
note there after its keys are in the key index.  A rerun with the same
fingerprint keeps the noted shards whose files still match their checksums
and writes the rest; any other rerun starts clean.  The manifest is written
last: until it exists, readers refuse the folder.  A pack holds a lock on
OUT for its whole run (``exclusive``), so two packs never mix.  Unless
``fsync`` is off, finished shards are fsynced on a background thread as the
workers go on, and the manifest only after all of them, so a power cut cannot
leave a manifest that names shards the disk never received.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import warnings
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Container, Iterable, Iterator

from PIL import Image
from tqdm import tqdm

from . import __version__
from . import format as fmt
from . import keyindex
from . import manifest as mf
from .errors import BadImageError, PackError
from .prefetch import ordered_map
from .prepare import Inputs, PrepareOptions, prepare, read_inputs, stored_as_is
from .sharding import shuffled_order, split_evenly
from .sources import Source, SourceItem
from .writer import ShardFiles, ShardWriter, StagingBuffers, file_crc32c, fsync_paths

WORK_DIR = mf.WORK_DIR_NAME
DEFAULT_SEED = 0


@dataclass(frozen=True)
class PackOptions:
    shards: int = 64
    seed: int = DEFAULT_SEED
    workers: int | None = None  # processes; None means all cores
    prepare: PrepareOptions = field(default_factory=PrepareOptions)
    strict: bool = False  # any bad input fails the pack
    fsync: bool = True  # make every shard durable before the manifest commits the dataset
    overwrite: bool = False  # replace a complete dataset in OUT


@dataclass(frozen=True)
class ShardTask:
    index: int
    out_dir: str
    items: list[SourceItem]
    prepare: PrepareOptions
    strict: bool

    @property
    def stem(self) -> str:
        return shard_stem(self.index)


@dataclass(frozen=True)
class ShardOutcome:
    """What a worker reports for one finished shard."""

    index: int
    files: ShardFiles
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


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


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
        slot = writer.reserve(fmt.payload_prefix(item.labels, item.line), size)
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
                    payload = fmt.pack_payload(item.labels, item.line, prepared.image, prepared.mask)
                    offset = writer.write(payload, len(prepared.mask))
                    tally.written(item, writer.records - 1, offset, prepared.source_bytes,
                                  bool(prepared.mask), prepared.reencoded)
            pending_images += 1
            if pending_images >= 256 or time.monotonic() - last_report > 0.25:
                _report_progress(pending_images, tally.bytes_in - reported_bytes)
                pending_images, reported_bytes, last_report = 0, tally.bytes_in, time.monotonic()
    _report_progress(pending_images, tally.bytes_in - reported_bytes)
    return ShardOutcome(task.index, writer.files, tally.bad, tally.keys, tally.label_width, tally.has_masks,
                        tally.reencoded, tally.bytes_in)


# --- resume bookkeeping ------------------------------------------------------------------


def fingerprint(source: Source, options: PackOptions) -> str:
    """A hash of everything that decides the shards' bytes (not workers, not strictness)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([fmt.MAGIC, mf.FORMAT_VERSION, options.shards, options.seed, asdict(options.prepare)]).encode())
    digest.update(f"{source.root}\0{sorted(source.masks.items())}\n".encode())
    digest.update(source.lines.tobytes())
    for start in range(0, len(source.keys), 65536):  # in slices: no second copy of a huge list
        digest.update("\0".join(source.keys[start : start + 65536]).encode() + b"\0")
    distinct: dict[tuple[float, ...], int] = {}
    codes = array("q", (distinct.setdefault(labels, len(distinct)) for labels in source.labels))
    digest.update(repr(list(distinct)).encode() + codes.tobytes())
    return digest.hexdigest()


def _is_our_file(name: str) -> bool:
    stem = name.split(".", 1)[0]
    return (stem.startswith("shard-") and stem[6:].isdigit()) or name in (
        mf.MANIFEST_NAME, mf.MANIFEST_NAME + ".tmp", mf.REPORT_NAME, mf.KEY_INDEX_NAME, WORK_DIR
    )


def clean_output(out_dir: str) -> None:
    """Remove everything a pack writes into ``out_dir``, and nothing else."""
    for name in os.listdir(out_dir):
        if _is_our_file(name):
            path = os.path.join(out_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def _shard_intact(out_dir: str, files: ShardFiles) -> bool:
    for info in (files.rec, files.idx, files.rpi):
        path = os.path.join(out_dir, info.name)
        if not os.path.isfile(path) or os.path.getsize(path) != info.bytes:
            return False
        if file_crc32c(path) != (info.bytes, info.crc32c):
            return False
    return True


@contextlib.contextmanager
def exclusive(out_dir: str) -> Iterator[None]:
    """Hold OUT's lock for a whole pack, so that two packs never write into one folder.

    An advisory ``flock`` on the folder itself (nothing to clean up; the
    kernel drops it when the last process holding it exits, and forked
    workers inherit it).
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PackError(f"{out_dir}: exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PackError(f"{out_dir}: another recpack pack is writing into this folder; "
                            "wait for it to finish, or stop it and rerun") from None
        yield
    finally:
        os.close(fd)


def start_or_resume(out_dir: str, print_hash: str, overwrite: bool) -> dict[int, dict]:
    """Prepare ``out_dir`` (existing, and locked by ``exclusive``); return the notes of finished shards to keep."""
    if os.path.exists(os.path.join(out_dir, mf.MANIFEST_NAME)):
        if not overwrite:
            raise PackError(f"{out_dir}: already holds a complete dataset; pass --overwrite to replace it")
        clean_output(out_dir)
    work = os.path.join(out_dir, WORK_DIR)
    plan_path = os.path.join(work, "plan.json")
    same_plan = False
    if os.path.exists(plan_path):
        try:
            with open(plan_path, encoding="utf-8") as handle:
                same_plan = json.load(handle).get("fingerprint") == print_hash
        except (OSError, ValueError):
            same_plan = False
    if not same_plan:
        clean_output(out_dir)
    kept: dict[int, dict] = {}
    if same_plan:
        for name in sorted(os.listdir(work)):
            if not name.endswith(".done.json"):
                continue
            with open(os.path.join(work, name), encoding="utf-8") as handle:
                note = json.load(handle)
            if _shard_intact(out_dir, mf.shard_files_from_json(note["files"])):
                kept[note["index"]] = note
            else:
                os.unlink(os.path.join(work, name))
        for name in os.listdir(out_dir):
            if name.endswith(".tmp") and _is_our_file(name):
                os.unlink(os.path.join(out_dir, name))
    os.makedirs(work, exist_ok=True)
    mf.write_json_atomic(plan_path, {"fingerprint": print_hash}, durable=False)
    return kept


def _note(outcome: ShardOutcome) -> dict:
    return {
        "index": outcome.index,
        "files": mf.shard_files_to_json(outcome.files),
        "bad": outcome.bad,
        "label_width": outcome.label_width,
        "has_masks": outcome.has_masks,
        "reencoded": outcome.reencoded,
        "bytes_in": outcome.bytes_in,
    }


# --- the pack ----------------------------------------------------------------------------


def plan_tasks(source: Source, out_dir: str, options: PackOptions, skip: Container[int] = ()) -> Iterator[ShardTask]:
    """One task per shard not in ``skip``: the shuffled list cut into near-equal contiguous ranges.

    A generator, so that a shard's items exist only while its task is queued.
    """
    order = shuffled_order(len(source), options.seed)
    for index, (start, stop) in enumerate(split_evenly(len(order), options.shards)):
        if index not in skip:
            items = [source.item(i) for i in order[start:stop].tolist()]
            yield ShardTask(index, out_dir, items, options.prepare, options.strict)


def _shard_paths(out_dir: str, files: ShardFiles) -> list[str]:
    return [os.path.join(out_dir, info.name) for info in (files.rec, files.idx, files.rpi)]


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
    if options.shards < 1:
        raise PackError("--shards must be at least 1")
    if options.shards > len(source):
        raise PackError(f"--shards {options.shards} exceeds the number of images ({len(source)}) in {source.description}")
    with exclusive(out_dir):
        return _pack_locked(source, out_dir, options, show_progress)


def _pack_locked(source: Source, out_dir: str, options: PackOptions, show_progress: bool) -> PackResult:
    started = time.monotonic()
    work = os.path.join(out_dir, WORK_DIR)
    notes = start_or_resume(out_dir, fingerprint(source, options), options.overwrite)
    resumed = len(notes)
    pending = [(i, span) for i, span in enumerate(split_evenly(len(source), options.shards)) if i not in notes]
    processed = sum(stop - start for _, (start, stop) in pending)
    bytes_read = 0
    if pending:
        workers = min(options.workers or os.cpu_count() or 1, len(pending))
        remaining = sum(stop - start for _, (start, stop) in pending)
        tasks = plan_tasks(source, out_dir, options, skip=notes)
        env = None
        # fsync finished shards on one background thread, so the disk works while the workers do
        with ThreadPoolExecutor(1, thread_name_prefix="recpack-fsync") as flusher:
            flushed = []
            try:
                for outcome in _run_workers(tasks, len(pending), workers, remaining, show_progress):
                    env = env or keyindex.open_for_writing(out_dir)
                    keyindex.add(env, outcome.index, outcome.keys)
                    note = _note(outcome)
                    # a resume hint only: the shard's checksums are verified before it is trusted
                    mf.write_json_atomic(os.path.join(work, f"{outcome.files.stem}.done.json"), note, durable=False)
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
    shards = tuple(mf.shard_files_from_json(note["files"]) for note in ordered)
    if sum(shard.records for shard in shards) == 0:
        raise PackError(f"{source.description}: no usable image (see {os.path.join(out_dir, mf.REPORT_NAME)})")
    if options.fsync:  # shards kept from an interrupted run, the report, and the folder
        fsync_paths([path for shard in shards for path in _shard_paths(out_dir, shard)] + [os.path.join(out_dir, mf.REPORT_NAME)])
    reencoded = sum(note["reencoded"] for note in ordered)
    created = {
        "source": source.description,
        "root": source.root,
        "seed": options.seed,
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
    shutil.rmtree(work, ignore_errors=True)
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
