"""``recpack pack OUT --shard-range A:B``: write shards A..B-1 from OUT's stored plan; any scheduler may run it.

What makes a range safe to retry, duplicate or run beside any other range:

- its shards' bytes are a function of the plan alone (no random draws, no clock),
  so every attempt writes the same files;
- each attempt writes under its own temporary names (``ShardWriter``'s
  ``attempt``) and renames into place: two attempts at one shard never write
  into one file, and whichever renames last leaves the same shard;
- a finished shard leaves a note, ``OUT/.recpack-pack/<stem>.range.json``, in
  the form of the notes ``recpack pack`` resumes from (``<stem>.done.json``); a
  shard with either note whose files check out is not written again.  (A whole
  pack does not resume from a range's note: its keys are not in the key index,
  which ``commit`` builds for all shards at once, so the pack writes that shard
  again, to the same bytes.)
- a range takes OUT's lock *shared*: ranges run side by side, while a whole
  ``recpack pack``, ``plan`` or ``commit`` (which take it exclusively) cannot
  run at the same time as any of them.

A range that fails leaves a ``<stem>.failed.json`` note with the reason, which the
engine drivers and ``commit`` report; the next attempt that finishes the shard
removes it.  Nothing here publishes a dataset: ``commit`` does, once every shard is
there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Iterator

from ..errors import PackError, RecpackError
from ..format import manifest as mf
from . import resume
from .packer import ShardOutcome, write_shard
from .plan import shard_stem
from .publish import shard_note
from .stored_plan import StoredPlan, unique_temporary
from .workers import run as run_workers
from .writer import StagingBuffers

DONE, FAILED = ".range.json", ".failed.json"
PACKED = ".done.json"  # the note of a shard that recpack pack wrote (its keys are in the key index)


@dataclass(frozen=True)
class RangeResult:
    written: tuple[int, ...]  # shards this call wrote
    kept: tuple[int, ...]  # shards already finished by an earlier attempt
    images: int  # inputs read by this call
    bytes_in: int


def task_ranges(shards: int, per_task: int) -> list[tuple[int, int]]:
    """The (first, stop) shard ranges of a pack cut into tasks of ``per_task`` shards (the last may be shorter)."""
    if per_task < 1:
        raise PackError(f"shards per task must be at least 1, not {per_task}")
    return [(first, min(first + per_task, shards)) for first in range(0, shards, per_task)]


def parse_range(text: str, shards: int) -> tuple[int, int]:
    """``A:B`` (shards A..B-1; either side may be left out) checked against the plan's shard count."""
    first, colon, stop = text.partition(":")
    try:
        first_index = int(first) if first.strip() else 0
        stop_index = (int(stop) if stop.strip() else shards) if colon else first_index + 1
    except ValueError:
        raise PackError(f"--shard-range {text!r}: expected A:B, shards A to B-1 (e.g. 0:8)") from None
    if not 0 <= first_index < stop_index <= shards:
        raise PackError(f"--shard-range {text}: the plan has shards 0:{shards}, so A:B needs 0 <= A < B <= {shards}")
    return first_index, stop_index


def note_path(out_dir: str, index: int, kind: str) -> str:
    return os.path.join(out_dir, resume.WORK_DIR, shard_stem(index) + kind)


def write_note(path: str, data: dict) -> None:
    """A note written whole under a name no other attempt uses, then renamed into place."""
    temporary = unique_temporary(path)
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    os.replace(temporary, path)


def read_note(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            note = json.load(handle)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def finished_note(out_dir: str, index: int) -> dict | None:
    """Shard ``index``'s note, written by a range or by recpack pack, if it parses (files not checked)."""
    for kind in (DONE, PACKED):
        note = read_note(note_path(out_dir, index, kind))
        try:
            if note is not None and note["index"] == index and mf.shard_from_json(note["files"]):
                return note
        except (KeyError, TypeError, ValueError):
            pass
    return None


def finished(out_dir: str, index: int) -> bool:
    """Whether shard ``index`` has a note whose files are there with its sizes and checksums."""
    note = finished_note(out_dir, index)
    return note is not None and resume.shard_intact(out_dir, mf.shard_from_json(note["files"]))


@contextlib.contextmanager
def shared_claim(out_dir: str) -> Iterator[None]:
    """Hold OUT's lock shared: other ranges may too; a whole pack, a plan or a commit may not meanwhile.

    Filesystems without ``flock`` (some network mounts) are written to without
    it: ranges of one plan cannot harm each other, and the scheduler, not the
    lock, keeps a commit after them.
    """
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PackError(f"{out_dir}: a recpack pack, plan or commit is using this folder; "
                            "run shard ranges after the plan is written and before the commit") from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        yield
    finally:
        os.close(fd)


def pack_range(out_dir: str, first: int, stop: int, workers: int = 1, show_progress: bool = False) -> RangeResult:
    """Write shards ``first``..``stop``-1 of OUT's plan that are not finished yet; return what was done.

    ``workers`` processes write whole shards side by side (1: in this process,
    as an engine's task does: the engine runs one task per core).
    """
    if not os.path.isdir(out_dir):
        StoredPlan.open(out_dir)  # raises: no plan there
    with shared_claim(out_dir):  # before the plan is read: no new plan can replace it while this range writes
        plan = StoredPlan.open(out_dir)
        if not 0 <= first < stop <= plan.shards:
            raise PackError(f"shards {first}:{stop}: the plan in {out_dir} has shards 0:{plan.shards}")
        kept = tuple(index for index in range(first, stop) if finished(out_dir, index))
        pending = [index for index in range(first, stop) if index not in kept]
        attempt = f"{os.getpid():x}-{secrets.token_hex(4)}"
        tasks = (plan.task(index, out_dir, attempt) for index in pending)
        images = bytes_in = 0
        for outcome in _outcomes(tasks, pending, out_dir, workers, show_progress):
            write_note(note_path(out_dir, outcome.index, DONE), _note(outcome))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(note_path(out_dir, outcome.index, FAILED))
            images += len(outcome.keys) + len(outcome.bad)
            bytes_in += outcome.bytes_in
    return RangeResult(tuple(pending), kept, images, bytes_in)


def _outcomes(tasks, pending: list[int], out_dir: str, workers: int, show_progress: bool) -> Iterator[ShardOutcome]:
    """Each written shard's outcome; a failure leaves a note naming the shard (for the driver and commit), then raises."""
    if workers <= 1 or len(pending) <= 1:
        for index, task in zip(pending, tasks):
            try:
                yield write_shard(task, _staging_buffers())
            except Exception as error:
                _note_failure(out_dir, [index], error)
                raise
        return
    try:
        yield from run_workers(write_shard, tasks, min(workers, len(pending)), None, show_progress)
    except Exception as error:  # which worker's shard failed is in the message; the rest did not finish
        _note_failure(out_dir, [index for index in pending if not finished(out_dir, index)], error)
        raise


_kept = threading.local()


def _staging_buffers() -> StagingBuffers:
    """This thread's staging buffers, kept for every shard it writes in this process.

    Why: an engine's worker process runs task after task, and fresh buffers cost
    12 MB of page faults each time (0.13 GB/s on a fresh VM's memory: 0.1 s a shard).
    Per thread, as two ranges may run in one process's threads; remade after a fork,
    as anonymous maps are shared with the child.
    """
    if getattr(_kept, "pid", None) != os.getpid():
        _kept.buffers, _kept.pid = StagingBuffers(), os.getpid()
    return _kept.buffers


def _note_failure(out_dir: str, indices: list[int], error: Exception) -> None:
    reason = str(error) if isinstance(error, RecpackError) else f"{type(error).__name__}: {error}"
    for index in indices:
        with contextlib.suppress(OSError):
            write_note(note_path(out_dir, index, FAILED), {"index": index, "error": (reason.splitlines() or [""])[0]})


def _note(outcome: ShardOutcome) -> dict:
    return shard_note(outcome.index, outcome.files, outcome.bad, outcome.label_width, outcome.has_masks,
                      outcome.reencoded, outcome.bytes_in)
