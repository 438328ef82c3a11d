"""Spill files: prepared records parked in key-range buckets until their shard is written.

A pack that reads its sources in disk order (``scatter``) cannot write shards as it goes,
since consecutive inputs belong anywhere in the shuffle.  Each prepared record is appended
to the bucket that holds its range of shuffle keys (``plan.shuffle_keys``); buckets are key
ranges, so bucket b's records, sorted by key, are exactly the shuffled order's next stretch,
and ``gather`` writes the shards bucket after bucket.  A spill store holds the buckets:
memory files when the spill fits in memory (``MemorySpill``: nothing written to a disk,
gone with the process), else files in the pack's work folder (``DiskSpill``:
``OUT/.recpack-pack/spill/`` or ``--spill-dir``), gone with it.

One frame per source item, little endian::

    uint64 key        the shuffle key
    uint64 index      the item's position in the source (ties between keys go by it)
    int64  record_id  the IRHeader id the record gets
    int32  class_id   an archive's class, numbered as met (labels follow once all are known); -1: labels below
    uint16 flags      1: a bad input, a hole in the order (no labels, key, image or mask follow);
                      2: the image was re-encoded or converted
    uint16 labels     how many float32 labels follow
    uint32 key_length, image_length, mask_length
    labels, key (UTF-8), image, mask

A worker appends its frames for a bucket with ``O_APPEND`` writes of whole frames, each of
which the kernel places whole at the end of the file whatever other workers append (memory
files alike).  The writes gather the frames' pieces (``writev``): an image is copied once,
into the file, not first into a joined buffer.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import shutil
import struct
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import PackError

FRAME = struct.Struct("<QQqiHHIII")
# a spill that fits in memory can live in memory files: Linux, where the workers are forked and inherit them
MEMORY_FILES = sys.platform == "linux" and hasattr(os, "memfd_create")
HOLE, REWRITTEN = 1, 2


@dataclass(frozen=True)
class Frame:
    """One spilled item; ``image`` and ``mask`` are views of the bucket's map when read back."""

    key: int
    index: int
    record_id: int
    class_id: int
    labels: tuple[float, ...]
    source_key: str
    image: bytes | memoryview = b""
    mask: bytes | memoryview = b""
    hole: bool = False
    rewritten: bool = False


Encoded = tuple  # a frame's pieces, in file order: (header + labels + key, image[, mask])


def encode(frame: Frame) -> Encoded:
    key = frame.source_key.encode("utf-8")
    flags = (HOLE if frame.hole else 0) | (REWRITTEN if frame.rewritten else 0)
    header = FRAME.pack(frame.key, frame.index, frame.record_id, frame.class_id, flags,
                        len(frame.labels), len(key), len(frame.image), len(frame.mask))
    head = b"".join((header, struct.pack(f"<{len(frame.labels)}f", *frame.labels), key))
    return (head, frame.image, frame.mask) if len(frame.mask) else (head, frame.image)


def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each shuffle key: ``buckets`` (< 2**32) near-equal, contiguous key ranges, in key order."""
    return (((keys >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)).astype(np.int64)


def bucket_path(spill_dir: str, bucket: int) -> str:
    return os.path.join(spill_dir, f"bucket-{bucket:05d}.spill")


def kept_in_memory(estimated_bytes: int, available_bytes: int, spill_dir: str | None,
                   memory_files: bool = MEMORY_FILES) -> bool:
    """Whether a spill of ``estimated_bytes`` lives in memory files rather than on disk.

    Why: a spill that fits in the page cache is read back from it anyway; held in
    memory files it is also never written to the disk (no journal, no writeback, no
    fsync of a copy as large as the inputs), and gone with the process.  Only without
    ``--spill-dir`` (asking for a folder means a folder), and below half the memory
    available, the rule that also keeps a disk spill in the page cache (``fits_in_memory``).
    """
    return spill_dir is None and memory_files and fits_in_memory(estimated_bytes, available_bytes)


def fits_in_memory(estimated_bytes: int, available_bytes: int) -> bool:
    """Below half the memory available (``MemAvailable``): the other half stays for everything else."""
    return estimated_bytes < available_bytes // 2


@dataclass(frozen=True)
class DiskSpill:
    """Buckets as files in a folder (``OUT/.recpack-pack/spill/`` or under ``--spill-dir``).

    They outlive a killed pack: once settled (fsynced), the first pass's saved result
    may claim them, and a rerun goes straight to the second pass.
    """

    folder: str
    buckets: int
    lasting = True  # a rerun may trust buckets this store settled

    @classmethod
    def create(cls, folder: str, buckets: int) -> DiskSpill:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
        return cls(folder, buckets)

    def name(self, bucket: int) -> str:
        return bucket_path(self.folder, bucket)

    def append(self, bucket: int, frames: list[Encoded]) -> None:
        """Append whole frames to a bucket (other workers may append too)."""
        try:
            fd = os.open(self.name(bucket), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _append_frames(fd, frames, self.name(bucket))
            finally:
                os.close(fd)
        except OSError as error:
            raise PackError(f"{self.folder}: cannot write spill files ({error.strerror or error}); "
                            "free space (or point --spill-dir elsewhere) and rerun the same command") from None

    def read_bucket(self, bucket: int) -> tuple[mmap.mmap | None, list[Frame]]:
        path = self.name(bucket)
        if not os.path.exists(path):
            return None, []
        with open(path, "rb") as handle:
            return _read_bucket(handle.fileno(), path)

    def settle(self, durable: bool, drop_from_cache: bool) -> list[int]:
        return settle(self.folder, self.buckets, durable, drop_from_cache)

    def release(self, bucket: int) -> None:
        """Nothing: after a kill in the second pass, a rerun reads the bucket again."""

    def close(self) -> None:
        """Nothing: the files stay for a rerun until the pack has succeeded (``remove``)."""

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class MemorySpill:
    """Buckets as memory files (``memfd_create``): never written to a disk, gone with the pack's process.

    They are created in the pack process before the first pass forks its workers,
    which inherit the descriptors (their numbers travel in the tasks).  Each is set
    ``O_APPEND`` once, and every worker writes through that one open file: an append
    lands whole at the end whatever the others append, as on a disk (the file's size
    is read and moved under its inode's lock).  Their pages count as shared memory
    (``Shmem`` in /proc/meminfo) until each bucket is written into its shards.  A kill
    loses them, so the first pass's result is never saved for them (``lasting``).
    """

    fds: tuple[int, ...]
    lasting = False

    @classmethod
    def create(cls, buckets: int) -> MemorySpill:
        fds: list[int] = []
        try:
            for bucket in range(buckets):
                fds.append(os.memfd_create(f"recpack-spill-{bucket:05d}", os.MFD_CLOEXEC))
                fcntl.fcntl(fds[-1], fcntl.F_SETFL, fcntl.fcntl(fds[-1], fcntl.F_GETFL) | os.O_APPEND)
        except OSError as error:
            for fd in fds:
                os.close(fd)
            raise PackError(f"cannot create memory files for the spill ({error.strerror or error}); "
                            "pass --spill-dir") from None
        return cls(tuple(fds))

    @property
    def buckets(self) -> int:
        return len(self.fds)

    def name(self, bucket: int) -> str:
        return f"spill bucket {bucket} (in memory)"

    def append(self, bucket: int, frames: list[Encoded]) -> None:
        try:
            _append_frames(self.fds[bucket], frames, self.name(bucket))
        except OSError as error:
            raise PackError(f"cannot hold the spill in memory ({error.strerror or error}); free memory "
                            "or pass --spill-dir, and rerun the same command") from None

    def read_bucket(self, bucket: int) -> tuple[mmap.mmap | None, list[Frame]]:
        return _read_bucket(self.fds[bucket], self.name(bucket))

    def settle(self, durable: bool, drop_from_cache: bool) -> list[int]:
        """Their sizes: nothing to make durable (a kill loses them whatever is done) or to evict."""
        return [os.fstat(fd).st_size for fd in self.fds]

    def release(self, bucket: int) -> None:
        """Free a bucket's memory once its shards are written (no map of it may be left)."""
        os.ftruncate(self.fds[bucket], 0)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def remove(self) -> None:
        """Nothing: ``close`` freed them (closing twice could close a descriptor reused since)."""


SpillStore = DiskSpill | MemorySpill


WRITE_PIECES = 1024  # IOV_MAX on Linux: the pieces one writev may gather


def _append_frames(fd: int, frames: list[Encoded], name: str) -> None:
    """Whole frames in as few appends as ``writev`` allows, each one frames whole."""
    start = 0
    while start < len(frames):
        stop, pieces = start, 0
        while stop < len(frames) and pieces + len(frames[stop]) <= WRITE_PIECES:
            pieces += len(frames[stop])
            stop += 1
        batch = [piece for frame in frames[start:stop] for piece in frame]
        expected = sum(len(piece) for piece in batch)
        written = os.writev(fd, batch)
        if written != expected:  # a regular file takes a write whole or fails; never leave half a frame
            raise PackError(f"{name}: short write ({written} of {expected} bytes); is the disk (or memory) full?")
        start = stop


def _read_bucket(fd: int, name: str) -> tuple[mmap.mmap | None, list[Frame]]:
    """A bucket's frames sorted into shuffle order, and the map their bytes are views of (None if empty).

    The file is mapped, not read: a disk bucket's pages are the page cache's to keep
    or drop, so a bucket larger than memory still works (slower, faulting pages back in).
    """
    if os.fstat(fd).st_size == 0:
        return None, []
    # MAP_POPULATE: map every page in one kernel pass, not one fault each
    data = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ)
    frames = list(_frames(memoryview(data), name))
    frames.sort(key=lambda frame: (frame.key, frame.index))
    return data, frames


def _frames(view: memoryview, path: str) -> Iterator[Frame]:
    position = 0
    while position < len(view):
        if position + FRAME.size > len(view):
            raise PackError(f"{path}: spill file ends inside a frame at byte {position}")
        key, index, record_id, class_id, flags, labels, key_length, image_length, mask_length = (
            FRAME.unpack_from(view, position))
        position += FRAME.size
        end = position + 4 * labels + key_length + image_length + mask_length
        if end > len(view):
            raise PackError(f"{path}: spill frame at byte {position - FRAME.size} runs past the end")
        values = struct.unpack_from(f"<{labels}f", view, position)
        position += 4 * labels
        source_key = bytes(view[position : position + key_length]).decode("utf-8")
        position += key_length
        image = view[position : position + image_length]
        position += image_length
        mask = view[position : position + mask_length]
        position = end
        yield Frame(key, index, record_id, class_id, values, source_key, image, mask, bool(flags & HOLE),
                    bool(flags & REWRITTEN))


def bucket_count(estimated_bytes: int, bucket_bytes: int) -> int:
    """Buckets of about ``bucket_bytes`` each for the estimated spill (at least one)."""
    return max(1, -(-int(estimated_bytes) // max(1, bucket_bytes)))


def check_room(spill_dir: str | None, out_dir: str, estimated_bytes: int) -> None:
    """Refuse to start when the spill and the shards would not fit: the spill takes about the
    inputs' size until the pack ends, and the shards as much again (on the same disk, both).
    ``spill_dir`` None: the spill is in memory, and only the shards need room."""
    if spill_dir is None:
        out_parent = _existing_parent(out_dir)
        free = os.statvfs(out_parent).f_bavail * os.statvfs(out_parent).f_frsize
        if free < int(estimated_bytes * 1.05):
            raise PackError(f"{out_parent}: about {estimated_bytes * 1.05 / 1e9:.1f} GB needed for the shards, "
                            f"{free / 1e9:.1f} GB free; free space or write them elsewhere")
        return
    spill_parent = _existing_parent(spill_dir)
    spill_stat, out_stat = os.stat(spill_parent), os.stat(_existing_parent(out_dir))
    free = os.statvfs(spill_parent).f_bavail * os.statvfs(spill_parent).f_frsize
    needed = int(estimated_bytes * 1.05) * (2 if spill_stat.st_dev == out_stat.st_dev else 1)
    if free < needed:
        raise PackError(f"{spill_parent}: about {needed / 1e9:.1f} GB needed for spill files "
                        f"{'and shards ' if needed > estimated_bytes * 1.05 else ''}"
                        f"of a disk-order pack, {free / 1e9:.1f} GB free; free space, point --spill-dir at another "
                        "disk, or pack with --order list")


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def settle(spill_dir: str, buckets: int, durable: bool, drop_from_cache: bool) -> list[int]:
    """Make the bucket files durable (a resumed pack trusts them; with --no-fsync, not) and return their sizes.

    ``drop_from_cache`` evicts them once written: a spill larger than memory would not
    stay cached anyway, and evicting it keeps the page cache for everything else
    (only written-back pages can go: with ``durable`` off, some stay).
    """
    sizes = []
    for bucket in range(buckets):
        path = bucket_path(spill_dir, bucket)
        if not os.path.exists(path):
            sizes.append(0)
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            if durable:
                os.fsync(fd)
            if drop_from_cache and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            sizes.append(os.fstat(fd).st_size)
        finally:
            os.close(fd)
    return sizes
