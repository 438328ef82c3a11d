"""The on-disk format of one recpack shard, byte-compatible with MXNet RecordIO.

A shard is three files that share a stem, e.g. ``shard-00007``:

``shard-00007.rec`` -- the records, in order (dmlc RecordIO framing)
    Each record is written as one or more *parts*.  A part is::

        uint32 magic   = 0xced7230a                      (little endian)
        uint32 lrec    = cflag << 29 | length            (length < 2**29)
        length bytes of data, then zero padding to a multiple of 4

    cflag 0 means "whole record in this part".  The writer scans the payload
    at offsets that are multiples of 4; wherever the 4 bytes there equal the
    magic, the record is cut: the bytes before go into a part (cflag 1 for the
    first part, 2 for a middle one), the magic itself is dropped, and the last
    part gets cflag 3.  A reader joins the parts, putting the magic back
    between each pair of parts.  So a reader that finds the magic at an
    aligned offset of the file always stands at a part boundary.

    The payload of a record starts with an *IRHeader*, struct ``<IfQQ``::

        uint32  flag    0: ``label`` holds the one label.  n > 0: n float32
                        labels follow the header and ``label`` is unused.
        float32 label
        uint64  id      recpack: the record's line number in the source list
        uint64  id2     recpack: 0

    then (flag > 0) ``flag`` float32 labels, then the image bytes (a JPEG),
    then, for segmentation records only, the label mask (a PNG).

``shard-00007.idx`` -- MXNet's text index, one ``key<TAB>offset`` line per
    record; ``offset`` is where the record's first part starts in the .rec.
    recpack writes it only so that MXNet and DALI can read the shard.

``shard-00007.rpi`` -- recpack's own per-record index: a NumPy ``.npy`` file
    holding one structured row per record (``RECORD_INDEX_DTYPE``): the
    offset of the first part, the payload length, the CRC32C of the payload
    and the length of the trailing mask (0 when there is none).  It is small
    (20 bytes a record), memory-mappable, and read only when a shard is used.

Everything here is pure: bytes in, bytes out.  File handling lives in
``writer`` and ``reader``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import RecpackError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
PART_HEADER = struct.Struct("<II")
MAX_PART_LENGTH = (1 << 29) - 1
CFLAG_WHOLE, CFLAG_FIRST, CFLAG_MIDDLE, CFLAG_LAST = 0, 1, 2, 3

IR_HEADER = struct.Struct("<IfQQ")

RECORD_INDEX_DTYPE = np.dtype(
    [("offset", "<u8"), ("length", "<u4"), ("crc32c", "<u4"), ("mask_length", "<u4")]
)

REC_SUFFIX, IDX_SUFFIX, RECORD_INDEX_SUFFIX = ".rec", ".idx", ".rpi"
_MAGIC_AS_U32 = np.uint32(MAGIC)


def encode_lrec(cflag: int, length: int) -> int:
    return (cflag << 29) | length


def decode_lrec(lrec: int) -> tuple[int, int]:
    """Split an lrec word into (cflag, length)."""
    return lrec >> 29, lrec & MAX_PART_LENGTH


def padding(length: int) -> int:
    """Zero bytes that follow ``length`` bytes of part data."""
    return -length & 3


def pack_payload(labels: Sequence[float], record_id: int, image: bytes, mask: bytes = b"") -> list[bytes]:
    """The payload of one record as a list of byte strings, to be joined or written in order.

    One label goes into the header's ``label`` field (flag 0), as MXNet's
    ``recordio.pack`` does; none is stored as label 0.0; several become a
    float32 vector after the header.
    """
    return [payload_prefix(labels, record_id), image, mask]


def payload_prefix(labels: Sequence[float], record_id: int) -> bytes:
    """What comes before the image in a payload: the IRHeader, then the label vector if there are several labels."""
    if len(labels) <= 1:
        label = float(labels[0]) if labels else 0.0
        return IR_HEADER.pack(0, label, record_id, 0)
    vector = np.asarray(labels, dtype="<f4").tobytes()
    return IR_HEADER.pack(len(labels), 0.0, record_id, 0) + vector


@dataclass(frozen=True)
class Payload:
    """One record's payload, split into its fields.  ``image`` and ``mask`` are views."""

    labels: np.ndarray  # float32 vector; one element for a single label
    record_id: int
    image: memoryview
    mask: memoryview


def unpack_payload(payload: bytes | memoryview, mask_length: int = 0) -> Payload:
    """Parse a payload written by ``pack_payload`` or by MXNet's ``recordio.pack``."""
    view = memoryview(payload)
    if len(view) < IR_HEADER.size:
        raise ValueError(f"payload of {len(view)} bytes is shorter than its {IR_HEADER.size}-byte header")
    flag, label, record_id, _ = IR_HEADER.unpack_from(view)
    start = IR_HEADER.size
    if flag > 0:
        end = start + 4 * flag
        if end > len(view):
            raise ValueError(f"header announces {flag} labels but the payload ends first")
        labels = np.frombuffer(view[start:end], dtype="<f4")
        start = end
    else:
        labels = np.array([label], dtype=np.float32)
    split = len(view) - mask_length
    if split < start:
        raise ValueError("mask length exceeds the payload")
    return Payload(labels, record_id, view[start:split], view[split:])


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


def format_idx_line(key: int, offset: int) -> str:
    return f"{key}\t{offset}\n"


def parse_idx(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Keys and offsets of an MXNet .idx file, in file order."""
    keys, offsets = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"line {number}: expected 'key<TAB>offset', got {line!r}")
        keys.append(int(fields[0]))
        offsets.append(int(fields[1]))
    return np.asarray(keys, dtype=np.int64), np.asarray(offsets, dtype=np.uint64)
