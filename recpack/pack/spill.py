"""Spill files: prepared records parked in key-range buckets until their shard is written.

A pack that reads its sources in disk order (``scatter``) cannot write shards as it goes,
since consecutive inputs belong anywhere in the shuffle.  Each prepared record is appended
to the bucket that holds its range of shuffle keys (``plan.shuffle_keys``); buckets are key
ranges, so bucket b's records, sorted by key, are exactly the shuffled order's next stretch,
and ``gather`` writes the shards bucket after bucket.  These files live only in the pack's
work folder (``OUT/.recpack-pack/spill/`` or ``--spill-dir``) and are gone with it.

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

A worker writes all its frames for a bucket with one ``O_APPEND`` write, which the kernel
places whole at the end of the file whatever other workers append.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import PackError

FRAME = struct.Struct("<QQqiHHIII")
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


def encode(frame: Frame) -> bytes:
    key = frame.source_key.encode("utf-8")
    flags = (HOLE if frame.hole else 0) | (REWRITTEN if frame.rewritten else 0)
    header = FRAME.pack(frame.key, frame.index, frame.record_id, frame.class_id, flags,
                        len(frame.labels), len(key), len(frame.image), len(frame.mask))
    return b"".join((header, struct.pack(f"<{len(frame.labels)}f", *frame.labels), key, frame.image, frame.mask))


def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each shuffle key: ``buckets`` (< 2**32) near-equal, contiguous key ranges, in key order."""
    return (((keys >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)).astype(np.int64)


def bucket_path(spill_dir: str, bucket: int) -> str:
    return os.path.join(spill_dir, f"bucket-{bucket:05d}.spill")


def append(spill_dir: str, bucket: int, data: bytes) -> None:
    """Append whole frames to a bucket, in one write (other workers may append too)."""
    fd = os.open(bucket_path(spill_dir, bucket), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        written = os.write(fd, view)
        if written != len(view):  # a regular file takes a write whole or fails; never leave half a frame
            raise PackError(f"{bucket_path(spill_dir, bucket)}: short write ({written} of {len(view)} bytes); "
                            "is the disk full?")
    finally:
        os.close(fd)


def read_bucket(spill_dir: str, bucket: int) -> tuple[mmap.mmap | None, list[Frame]]:
    """A bucket's frames sorted into shuffle order, and the map their bytes are views of (None if empty).

    The file is mapped, not read: its pages are the page cache's to keep or drop,
    so a bucket larger than memory still works (slower, faulting pages back in).
    """
    path = bucket_path(spill_dir, bucket)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None, []
    with open(path, "rb") as handle:  # MAP_POPULATE: map every page in one kernel pass, not one fault each
        data = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                         prot=mmap.PROT_READ)
    frames = list(_frames(memoryview(data), path))
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


def check_room(spill_dir: str, out_dir: str, estimated_bytes: int) -> None:
    """Refuse to start when the spill and the shards would not fit: the spill takes about the
    inputs' size until the pack ends, and the shards as much again (on the same disk, both)."""
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
