"""One record, declared once: what its payload holds, and the row the per-record index keeps of it.

The writer, the readers and the batching all go through ``Payload``, ``pack_payload``,
``unpack_payload`` and ``index_row``; none of them spells out the layout.  A new byte field
(say, bounding boxes) is a name in ``TRAILING_FIELDS`` and an attribute of ``Payload``:
the index gains its ``<name>_length`` column and every payload carries it after the image.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2: MXNet's IRHeader

# Byte fields stored after the image, in this order; each has an index column "<name>_length".
# The image takes whatever lies between the labels and these, so MXNet readers, which know no
# trailing fields, read a record without them as the plain image it is.
TRAILING_FIELDS: tuple[str, ...] = ("mask",)
TRAILING_COLUMNS: tuple[str, ...] = tuple(f"{name}_length" for name in TRAILING_FIELDS)

RECORD_INDEX_DTYPE = np.dtype(
    [("offset", "<u8"), ("length", "<u4"), ("crc32c", "<u4")] + [(column, "<u4") for column in TRAILING_COLUMNS]
)


@dataclass(frozen=True)
class Payload:
    """One record's content.  As read, ``labels`` is a float32 vector and the byte fields are views."""

    labels: Sequence[float] | np.ndarray  # one element for a single label; none is stored as label 0.0
    record_id: int
    image: bytes | memoryview
    mask: bytes | memoryview = b""  # a PNG label mask, for segmentation datasets

    def trailing_lengths(self) -> tuple[int, ...]:
        return tuple(len(getattr(self, name)) for name in TRAILING_FIELDS)


def payload_prefix(labels: Sequence[float], record_id: int) -> bytes:
    """What comes before the image: the IRHeader, then the label vector if there are several labels.

    One label goes into the header's ``label`` field (flag 0), as MXNet's ``recordio.pack`` does.
    """
    if len(labels) <= 1:
        label = float(labels[0]) if len(labels) else 0.0
        return IR_HEADER.pack(0, label, record_id, 0)
    vector = np.asarray(labels, dtype="<f4").tobytes()
    return IR_HEADER.pack(len(labels), 0.0, record_id, 0) + vector


def pack_payload(payload: Payload) -> list[bytes | memoryview]:
    """The payload's bytes, as pieces to join or write in order."""
    return [payload_prefix(payload.labels, payload.record_id), payload.image,
            *(getattr(payload, name) for name in TRAILING_FIELDS)]


def unpack_payload(data: bytes | memoryview, trailing: Sequence[int] = ()) -> Payload:
    """Parse a payload written by ``pack_payload`` or by MXNet's ``recordio.pack``.

    ``trailing`` holds the lengths of ``TRAILING_FIELDS`` from the record's index row
    (missing ones are 0: a record without them, or one from a .rec that MXNet wrote).
    """
    view = memoryview(data)
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
    lengths = tuple(trailing) + (0,) * (len(TRAILING_FIELDS) - len(trailing))
    split = len(view) - sum(lengths)
    if split < start:
        raise ValueError("trailing fields (mask) exceed the payload")
    fields, position = {}, split
    for name, length in zip(TRAILING_FIELDS, lengths):
        fields[name] = view[position : position + length]
        position += length
    return Payload(labels, record_id, view[start:split], **fields)


def index_row(offset: int, length: int, crc32c: int, trailing: Sequence[int] = ()) -> tuple:
    """One row of the per-record index, as a tuple in ``RECORD_INDEX_DTYPE``'s field order."""
    return (offset, length, crc32c, *trailing, *(0,) * (len(TRAILING_FIELDS) - len(trailing)))


def trailing_of(rows: np.ndarray) -> list[tuple[int, ...]]:
    """The trailing-field lengths of index rows, one tuple per row (what ``unpack_payload`` takes)."""
    return list(zip(*(rows[column].tolist() for column in TRAILING_COLUMNS)))
