"""Where a file's bytes lie on its block device (FIEMAP), and how to read many files in few large requests.

``FS_IOC_FIEMAP`` asks the filesystem for a file's extents: runs of the file's bytes
(``logical``, from its start) stored contiguously at ``physical`` bytes from the start
of the block device the filesystem lives on.  Files extracted or copied together lie
one after the other there, so a list's files sorted by their first extent are read
with the disk's head moving forward only (``layout.disk_order``), and neighbours can
be read in one request each few hundred of KB to a few MB (``plan_reads``).

The kernel's structures (``linux/fiemap.h``), native byte order::

    struct fiemap         u64 fm_start, fm_length; u32 fm_flags, fm_mapped_extents, fm_extent_count,
                          fm_reserved; then fm_extent_count extents
    struct fiemap_extent  u64 fe_logical, fe_physical, fe_length, fe_reserved64[2]; u32 fe_flags, fe_reserved[3]

``plan_reads`` and ``pieces_of`` are pure: they take extents, never a file.
"""

from __future__ import annotations

import fcntl
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
_HEADER = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQ16xI12x")
_ALL = (1 << 64) - 1  # FIEMAP_MAX_OFFSET: map the whole file

# fe_flags
LAST = 0x1  # the file's last extent
UNKNOWN = 0x2  # data location unknown
DELALLOC = 0x4  # not yet allocated: the data is only in the page cache
ENCODED = 0x8  # compressed or otherwise not the file's bytes as they lie
DATA_ENCRYPTED = 0x80
NOT_ALIGNED = 0x100
DATA_INLINE = 0x200  # stored in the inode (not a data block)
DATA_TAIL = 0x400  # packed with other files' tails
UNWRITTEN = 0x800  # allocated but reads as zeros
MERGED = 0x1000  # a block-mapped file's blocks, merged into extents: offsets still the device's
SHARED = 0x2000  # shared with another file (reflink): the bytes there are this file's too

# an extent whose flags are all in here lies on the device as the file's plain bytes
READABLE = LAST | MERGED | SHARED


@dataclass(frozen=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: int


@dataclass(frozen=True)
class Piece:
    """``length`` bytes of file ``item`` from byte ``logical`` of it, at byte ``physical`` of the device."""

    item: int
    logical: int
    physical: int
    length: int


def fiemap(fd: int, count: int = 32) -> list[Extent]:
    """The file's first ``count`` extents (OSError where the filesystem has no FIEMAP: ENOTTY, EOPNOTSUPP).

    Without ``FIEMAP_FLAG_SYNC``: dirty data is not written first; what is not yet
    allocated shows as ``DELALLOC``.
    """
    buffer = bytearray(_HEADER.size + count * _EXTENT.size)
    _HEADER.pack_into(buffer, 0, 0, _ALL, 0, 0, count, 0)
    fcntl.ioctl(fd, FS_IOC_FIEMAP, buffer, True)
    mapped = min(_HEADER.unpack_from(buffer)[3], count)
    return [Extent(*_EXTENT.unpack_from(buffer, _HEADER.size + i * _EXTENT.size)) for i in range(mapped)]


def pieces_of(item: int, extents: Sequence[Extent], size: int) -> list[Piece] | None:
    """The pieces that make up bytes [0, size) of a file, or None when the device does not hold them as they are.

    None for: an empty file; any extent flagged other than ``READABLE`` (delayed
    allocation, unwritten, inline, encrypted, encoded, unknown...); more extents than
    were asked for (no ``LAST`` among them); a hole (sparse files read as zeros there).
    """
    if size <= 0 or not extents or not any(extent.flags & LAST for extent in extents):
        return None
    if any(extent.flags & ~READABLE for extent in extents):
        return None
    pieces, covered = [], 0
    for extent in sorted(extents, key=lambda e: e.logical):
        if extent.logical >= size:
            break
        if extent.logical != covered or extent.length <= 0:
            return None
        length = min(extent.length, size - extent.logical)
        pieces.append(Piece(item, extent.logical, extent.physical, length))
        covered += length
    return pieces if covered == size else None


def plan_reads(pieces: Iterable[Piece], align: int, max_gap: int, max_read: int) -> list[tuple[int, int]]:
    """(offset, length) device reads, ascending, that cover every piece: few and large.

    Pieces whose aligned spans lie at most ``max_gap`` bytes apart share a run (the
    gap is read and dropped: cheaper than another request while it is short); a run
    is cut into reads of at most ``max_read`` bytes.  Offsets and lengths are
    multiples of ``align`` (O_DIRECT's rule); ``max_read`` is rounded down to one.
    """
    max_read = max(align, max_read // align * align)
    spans = sorted((piece.physical // align * align, -(-(piece.physical + piece.length) // align) * align)
                   for piece in pieces if piece.length > 0)
    reads: list[tuple[int, int]] = []
    start = end = None
    for low, high in spans:
        if start is not None and low - end <= max_gap:
            end = max(end, high)
        else:
            if start is not None:
                _cut(reads, start, end, max_read)
            start, end = low, high
        while end - start >= max_read:  # whole reads off the run's front as it grows
            reads.append((start, max_read))
            start += max_read
    if start is not None:
        _cut(reads, start, end, max_read)
    return reads


def _cut(reads: list[tuple[int, int]], start: int, end: int, max_read: int) -> None:
    while start < end:
        length = min(max_read, end - start)
        reads.append((start, length))
        start += length
