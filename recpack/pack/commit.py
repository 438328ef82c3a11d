"""``recpack commit OUT``: publish a dataset whose shards were written by shard-range tasks.

The one step that makes the folder a dataset, run once after every task ended.
It requires every shard of the plan, each with its note and with files of the
sizes and CRC32Cs the note gives (read back in full: a shard torn on its way
through a network filesystem is caught here, not by a training job); it refuses,
in one line naming them, shards that are missing or damaged.  Then it removes
what failed attempts left (``*.tmp`` files), builds the key index from the plan
and the shards' record indexes, and publishes as ``recpack pack`` does (report,
``dataset.idx``, fsync, the manifest last).  Until then readers refuse OUT.

Committing twice is harmless: the second finds the dataset complete and says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import mmap
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import crc32c

from ..errors import PackError
from ..format import keyindex
from ..format import manifest as mf
from ..format.index_files import RECORD_INDEX_SUFFIX, load_rpi
from . import resume
from .plan import shard_stem
from .publish import PackResult, publish, writing
from .shard_range import FAILED, finished_note, note_path, read_note
from .stored_plan import StoredPlan


@dataclass(frozen=True)
class ShardSurvey:
    """Every shard of a plan sorted by state: finished (its note), missing, damaged; failures' reasons."""

    notes: dict[int, dict]
    missing: list[int]
    damaged: list[int]
    reasons: dict[int, str]  # a missing shard's last failed attempt, from its failure note

    @property
    def complete(self) -> bool:
        return not self.missing and not self.damaged


def survey(out_dir: str, plan: StoredPlan, threads: int | None = None, early: "EarlyChecks | None" = None) -> ShardSurvey:
    """Check each shard's note and files (sizes, then checksums read in full, on ``threads`` threads).

    A shard that ``early`` read back already, and whose note and files have not changed since, is not read again.
    """
    notes: dict[int, dict] = {}
    missing, damaged, reasons = [], [], {}

    def check(index: int) -> str:
        note = finished_note(out_dir, index)
        files = mf.shard_from_json(note["files"]) if note is not None else None
        if files is None or not all(os.path.isfile(os.path.join(out_dir, info.name)) for info in files.files):
            return "missing"
        if not (early is not None and early.still_good(index, note, files)) and not _intact(out_dir, files):
            return "damaged"
        notes[index] = note
        return "ok"

    with ThreadPoolExecutor(threads or READERS) as pool:
        states = list(pool.map(check, range(plan.shards)))
    for index, state in enumerate(states):
        if state == "missing":
            missing.append(index)
            failure = read_note(note_path(out_dir, index, FAILED))
            if failure and isinstance(failure.get("error"), str):
                reasons[index] = failure["error"]
        elif state == "damaged":
            damaged.append(index)
    return ShardSurvey(notes, missing, damaged, reasons)


READERS = 8  # shards read back at once: their files were written with O_DIRECT, so most reads go to the disk
_buffer = threading.local()


def _crc32c(path: str) -> tuple[int, int]:
    """(size, CRC32C) of a file read ``O_DIRECT`` (where the filesystem allows it) through one reused 8 MB buffer per thread.

    Why ``O_DIRECT``: the disk then puts the bytes straight into the buffer.  Read
    the ordinary way, 2.2 GB of shards cost 1.2-1.6 CPU-seconds of page-cache copies
    and allocations on this VM, against 0.35 s so (measured, #16); a driver does
    these reads while its engine's tasks use every core.  Why a reused buffer and
    not ``manifest.file_crc32c``: a fresh 8 MB bytes object per read costs page
    faults that made reading shards from the page cache twice as slow as the CRC.
    CRC32C releases the GIL, and so do the reads.
    """
    view = getattr(_buffer, "view", None)
    if view is None:
        view = _buffer.view = memoryview(mmap.mmap(-1, 8 << 20))  # anonymous maps are page-aligned (O_DIRECT's rule)
    fd = _open_for_reading(path)
    crc, size = 0, 0
    with open(fd, "rb", buffering=0) as handle:
        while count := _read_into(handle, view):
            crc = crc32c.crc32c(view[:count], crc)
            size += count
    return size, crc


def _open_for_reading(path: str) -> int:
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, os.O_RDONLY | direct)
        except OSError as error:
            if error.errno != errno.EINVAL:  # the filesystem refuses O_DIRECT (tmpfs, some FUSE mounts)
                raise
    return os.open(path, os.O_RDONLY)


def _read_into(handle, view: memoryview) -> int:
    """One read at the handle's position; where an ``O_DIRECT`` read is refused (EINVAL), the file is read plainly."""
    try:
        return handle.readinto(view)
    except OSError as error:
        flags = fcntl.fcntl(handle.fileno(), fcntl.F_GETFL)
        direct = getattr(os, "O_DIRECT", 0)
        if error.errno != errno.EINVAL or not flags & direct:
            raise
        fcntl.fcntl(handle.fileno(), fcntl.F_SETFL, flags & ~direct)
    return handle.readinto(view)


def _intact(out_dir: str, files: mf.ShardFiles) -> bool:
    return all(_crc32c(os.path.join(out_dir, info.name)) == (info.bytes, info.crc32c) for info in files.files)


def _signature(out_dir: str, note: dict, files: mf.ShardFiles) -> tuple:
    """What must not change between an early read-back and the commit: the note, and each file's inode, size, mtime."""
    stats = [os.stat(os.path.join(out_dir, info.name)) for info in files.files]
    return json.dumps(note, sort_keys=True), tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


class EarlyChecks:
    """Shards read back by a driver's thread while the engine's tasks still run, so that commit need not wait on it.

    Why: commit reads every shard back, and shards written with O_DIRECT come from the
    disk (2.2 GB: 2.1 s, a fifth of the local pack's own time here).  A driver waiting
    on its engine can do those reads meanwhile.  A read-back counts at commit only if
    the note and the files' inodes, sizes and mtimes are still what they were; any
    other shard is read there as usual.  A context manager around the tasks.
    """

    def __init__(self, out_dir: str, shards: int, every: float = 0.5):
        self.out_dir, self.shards, self.every = out_dir, shards, every
        self._checked: dict[int, tuple] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recpack-early-checks", daemon=True)

    def __enter__(self) -> "EarlyChecks":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for index in range(self.shards):
                if self._stop.is_set():
                    return
                if index in self._checked or (note := finished_note(self.out_dir, index)) is None:
                    continue
                files = mf.shard_from_json(note["files"])
                try:
                    before = _signature(self.out_dir, note, files)
                    if _intact(self.out_dir, files) and _signature(self.out_dir, note, files) == before:
                        self._checked[index] = before
                except OSError:  # a file renamed over meanwhile (a duplicate attempt): commit reads it
                    continue

    def still_good(self, index: int, note: dict, files: mf.ShardFiles) -> bool:
        checked = self._checked.get(index)
        try:
            return checked is not None and checked == _signature(self.out_dir, note, files)
        except OSError:
            return False


def spans_text(indices: list[int]) -> str:
    """Shard numbers as ranges for a person: ``3, 7-9, 12``."""
    parts, run = [], []
    for index in sorted(indices):
        if run and index == run[-1] + 1:
            run.append(index)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [index]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts)


def incomplete_message(out_dir: str, shards: int, found: ShardSurvey) -> str:
    """One line: which shards are missing or damaged, the first failure's reason, and what to run."""
    parts = []
    if found.missing:
        parts.append(f"{len(found.missing)} of {shards} shards missing ({spans_text(found.missing)})")
    if found.damaged:
        parts.append(f"{len(found.damaged)} damaged, their files differ from their notes ({spans_text(found.damaged)})")
    first = min(found.missing + found.damaged)
    reason = ""
    if found.reasons:
        index = min(found.reasons)
        reason = f"; shard {index} failed: {found.reasons[index]}"
    return (f"{out_dir}: not committed: {' and '.join(parts)}{reason}; rerun their ranges "
            f"(e.g. recpack pack {out_dir} --shard-range {first}:{first + 1}), then commit again")


def commit(out_dir: str, fsync: bool = True, early: EarlyChecks | None = None) -> PackResult:
    """Publish OUT once every shard of its plan is there and intact; PackError naming the shards otherwise.

    ``early``: shards a driver read back while its tasks ran (``EarlyChecks``).
    """
    started = time.monotonic()
    if not os.path.isdir(out_dir):
        raise PackError(f"{out_dir}: no such folder; plan into it first (recpack plan LIST {out_dir} ...)")
    with resume.exclusive(out_dir):
        if _already_committed(out_dir):
            manifest = mf.load(out_dir)
            return PackResult(manifest.num_records, manifest.num_shards, manifest.created.get("skipped", 0),
                              manifest.created.get("reencoded", 0), 0, sum(s.rec.bytes for s in manifest.shards),
                              time.monotonic() - started, manifest.num_shards, 0)
        plan = StoredPlan.open(out_dir)
        found = survey(out_dir, plan, early=early)
        if not found.complete:
            raise PackError(incomplete_message(out_dir, plan.shards, found))
        with writing(out_dir):
            _remove_leftovers(out_dir)
            _build_key_index(out_dir, plan, found.notes, fsync)
        header = plan.header
        processed = sum(stop - start for start, stop in (plan.span(i) for i in range(plan.shards)))
        return publish(out_dir, found.notes, plan.options(fsync), {"description": header["description"],
                       "root": header["root"]}, plan.classes, started, 0, processed,
                       sum(note["bytes_in"] for note in found.notes.values()))


def _already_committed(out_dir: str) -> bool:
    """A manifest and no plan: an earlier commit (or pack) published this folder."""
    has_manifest = os.path.exists(os.path.join(out_dir, mf.MANIFEST_NAME))
    return has_manifest and not os.path.exists(os.path.join(out_dir, resume.WORK_DIR))


def _remove_leftovers(out_dir: str) -> None:
    """The temporary files of attempts that died (shards, notes) and any key index of an earlier try."""
    work = os.path.join(out_dir, resume.WORK_DIR)
    for folder in (out_dir, work):
        for name in os.listdir(folder):
            if name.endswith(".tmp") and (folder == work or name.startswith("shard-")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
    shutil.rmtree(os.path.join(out_dir, mf.KEY_INDEX_NAME), ignore_errors=True)


def _build_key_index(out_dir: str, plan: StoredPlan, notes: dict[int, dict], fsync: bool) -> None:
    """Key -> (shard, record, offset) for every record: the plan's keys minus the shard's bad inputs, in order."""
    env = keyindex.open_for_writing(out_dir)
    try:
        for index in range(plan.shards):
            bad_lines = {row[0] for row in notes[index]["bad"]}
            keys = [key for line, key in zip(*plan.keys(*plan.span(index))) if line not in bad_lines]
            offsets = load_rpi(os.path.join(out_dir, shard_stem(index) + RECORD_INDEX_SUFFIX))["offset"].tolist()
            if len(offsets) != len(keys):
                raise PackError(f"{os.path.join(out_dir, shard_stem(index))}: {len(offsets)} records, but the plan "
                                f"and the shard's note give {len(keys)}; rerun its range and commit again")
            rec = mf.shard_from_json(notes[index]["files"]).rec
            keyindex.add(env, index, ((key, record, offset) for record, (key, offset) in enumerate(zip(keys, offsets))),
                         (rec.bytes, rec.crc32c))
    finally:
        keyindex.close_for_writing(env, durable=fsync)
