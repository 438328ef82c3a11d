"""RecordIO framing: how a payload becomes parts in a ``.rec`` and back (layout: ``recpack.format``).

Pure functions, bytes in and bytes out; opening files is the callers' business.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import RecpackError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
PART_HEADER = struct.Struct("<II")
MAX_PART_LENGTH = (1 << 29) - 1
CFLAG_WHOLE, CFLAG_FIRST, CFLAG_MIDDLE, CFLAG_LAST = 0, 1, 2, 3
_MAGIC_AS_U32 = np.uint32(MAGIC)


def encode_lrec(cflag: int, length: int) -> int:
    return (cflag << 29) | length


def decode_lrec(lrec: int) -> tuple[int, int]:
    """Split an lrec word into (cflag, length)."""
    return lrec >> 29, lrec & MAX_PART_LENGTH


def padding(length: int) -> int:
    """Zero bytes that follow ``length`` bytes of part data."""
    return -length & 3


def magic_positions(payload: bytes | memoryview) -> np.ndarray:
    """Aligned offsets in ``payload`` whose 4 bytes equal the magic (where the record is cut)."""
    aligned = len(payload) & ~3
    if aligned == 0:
        return np.empty(0, dtype=np.intp)
    words = np.frombuffer(payload, dtype="<u4", count=aligned // 4)
    hits = np.flatnonzero(words == _MAGIC_AS_U32)
    return hits * 4


def frame_record(payload: bytes | memoryview) -> list[bytes | memoryview]:
    """The bytes that store ``payload`` in a .rec file, as pieces to write in order."""
    view = memoryview(payload)
    if len(view) > MAX_PART_LENGTH:
        raise ValueError(f"record of {len(view)} bytes exceeds RecordIO's limit of {MAX_PART_LENGTH}")
    cuts = magic_positions(view)
    if len(cuts) == 0:
        return [PART_HEADER.pack(MAGIC, len(view)), view, bytes(padding(len(view)))]
    pieces: list[bytes | memoryview] = []
    start = 0
    for cut in cuts.tolist():
        cflag = CFLAG_FIRST if start == 0 else CFLAG_MIDDLE
        pieces += [PART_HEADER.pack(MAGIC, encode_lrec(cflag, cut - start)), view[start:cut]]
        start = cut + 4
    pieces += [PART_HEADER.pack(MAGIC, encode_lrec(CFLAG_LAST, len(view) - start)), view[start:]]
    pieces.append(bytes(padding(len(view) - start)))
    return pieces


def whole_record_length(payload_length: int) -> int:
    """Bytes a payload takes in a .rec when stored as one whole part: part header, payload, padding."""
    return PART_HEADER.size + payload_length + padding(payload_length)


def frame_in_place(record: memoryview, payload_length: int) -> bool:
    """Frame, as one whole part, a payload already placed at ``record[PART_HEADER.size:]``.

    ``record`` spans ``whole_record_length(payload_length)`` bytes; this writes
    the part header before the payload and the zero padding after it.  Returns
    False, writing nothing, when the payload holds the magic at an aligned
    offset and must be cut into parts by ``frame_record`` instead (were its
    bytes random, one 100-KB payload in about 170,000).
    """
    if payload_length > MAX_PART_LENGTH:
        raise ValueError(f"record of {payload_length} bytes exceeds RecordIO's limit of {MAX_PART_LENGTH}")
    end = PART_HEADER.size + payload_length
    if len(magic_positions(record[PART_HEADER.size : end])):
        return False
    PART_HEADER.pack_into(record, 0, MAGIC, encode_lrec(CFLAG_WHOLE, payload_length))
    record[end:] = bytes(len(record) - end)
    return True


class FramingError(RecpackError):
    """A .rec byte range does not hold well-formed RecordIO parts (callers add the shard and record)."""


def read_framed(buffer: bytes | memoryview, offset: int, base: int = 0) -> tuple[bytes | memoryview, int]:
    """Parse the record whose first part starts at ``offset``.

    Returns (payload, offset of the next record).  A whole record comes back
    as a zero-copy view; a multi-part one is joined into new bytes.  ``base``
    is the file offset of ``buffer[0]`` (a reader's chunk or map), so that
    errors name the file byte a user can look at.
    """
    view = memoryview(buffer)
    parts: list[memoryview] = []
    position = offset
    while True:
        if position + PART_HEADER.size > len(view):
            raise FramingError(f"truncated part header at file byte {base + position}")
        magic, lrec = PART_HEADER.unpack_from(view, position)
        if magic != MAGIC:
            raise FramingError(f"bad magic 0x{magic:08x} at file byte {base + position}")
        cflag, length = decode_lrec(lrec)
        start = position + PART_HEADER.size
        end = start + length
        if end > len(view):
            raise FramingError(f"part at file byte {base + position} announces {length} bytes but the data ends first")
        expected = (CFLAG_WHOLE, CFLAG_FIRST) if not parts else (CFLAG_MIDDLE, CFLAG_LAST)
        if cflag not in expected:
            raise FramingError(f"unexpected continuation flag {cflag} at file byte {base + position}")
        parts.append(view[start:end])
        position = end + padding(length)
        if cflag in (CFLAG_WHOLE, CFLAG_LAST):
            break
    if len(parts) == 1:
        return parts[0], position
    return MAGIC_BYTES.join(parts), position
