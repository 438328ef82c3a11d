"""Index a RecordIO file that recpack did not write (MXNet's im2rec, ``MXIndexedRecordIO``, ...).

Its framing is the one in ``framing``, so all it lacks is recpack's per-record index: one
sequential pass rebuilds it, with the CRC32C of every payload, so that reads are still
verified.  An ``.idx`` beside a ``.rec`` is only cross-checked: it must list every record,
in file order (as MXNet's writers do); recpack reads records in file order, so an index
that disagrees means the pair does not belong together.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass
from typing import Callable

import crc32c
import numpy as np

from ..errors import DatasetError
from .framing import CFLAG_FIRST, CFLAG_LAST, CFLAG_MIDDLE, CFLAG_WHOLE, MAGIC, MAGIC_BYTES, PART_HEADER, decode_lrec, padding
from .index_files import IDX_SUFFIX, parse_idx
from .schema import IR_HEADER, RECORD_INDEX_DTYPE

SCAN_PROGRESS_FROM_BYTES = 1 << 30  # scans of smaller files are quick enough to show no bar
SCAN_CHUNK_BYTES = 4 << 20  # stays in CPU cache between the file's CRC and the records': ~2.5x faster than 64 MB


@dataclass(frozen=True)
class Scan:
    """What one pass over a .rec finds."""

    rows: np.ndarray  # RECORD_INDEX_DTYPE, in file order
    bytes: int  # of the whole file
    crc32c: int  # of the whole file
    label_width: int  # the most labels an IRHeader announces (flag 0 counts as 1)


class _Chunks:
    """A window onto the file, refilled with large reads; keeps the whole-file CRC as it goes."""

    def __init__(self, handle, chunk_bytes: int, on_bytes: Callable[[int], object]):
        self.handle, self.on_bytes = handle, on_bytes
        self.buffer = bytearray(chunk_bytes)
        self.view = memoryview(self.buffer)
        self.base = self.pos = self.filled = 0  # file offset of buffer[0]; parse position; valid bytes
        self.crc = 0

    def ensure(self, need: int) -> bool:
        """Make buffer[pos:pos+need] valid if the file has that many bytes left."""
        if self.filled - self.pos >= need:
            return True
        rest = self.filled - self.pos
        if need > len(self.buffer):
            self.view.release()
            self.buffer = bytearray(self.buffer[self.pos : self.filled]) + bytearray(need - rest)
            self.view = memoryview(self.buffer)
        else:
            self.view[:rest] = self.view[self.pos : self.filled]
        self.base, self.pos, self.filled = self.base + self.pos, 0, rest
        while self.filled < need:
            count = self.handle.readinto(self.view[self.filled :])
            if not count:
                return False
            self.crc = crc32c.crc32c(self.view[self.filled : self.filled + count], self.crc)
            self.filled += count
            self.on_bytes(count)
        return True


def scan_rec(path: str, on_bytes: Callable[[int], object] | None = None, chunk_bytes: int = SCAN_CHUNK_BYTES) -> Scan:
    """Walk a .rec's framing from start to end and index every record.

    Raises DatasetError naming the file and the byte offset of the first
    framing problem (bad magic, truncation, a broken multi-part record).
    ``on_bytes(n)`` is told of every n bytes read (a progress bar's update).
    """
    size = os.path.getsize(path)
    offsets, lengths, crcs = array("Q"), array("I"), array("I")
    width = 1
    start = length = crc = flag = -1  # the record being assembled; start -1: none

    def fail(at: int, problem: str) -> DatasetError:
        return DatasetError(f"{path}: byte {at}: {problem}")

    with open(path, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        chunks = _Chunks(handle, chunk_bytes, on_bytes or (lambda count: None))
        while True:
            if not chunks.ensure(PART_HEADER.size):
                if chunks.filled == chunks.pos and start < 0:
                    break
                at = chunks.base + chunks.pos
                raise fail(at, "truncated: the file ends inside a part header" if chunks.filled > chunks.pos
                           else f"truncated: the record that starts at byte {start} has no last part")
            at = chunks.base + chunks.pos
            magic, lrec = PART_HEADER.unpack_from(chunks.buffer, chunks.pos)
            if magic != MAGIC:
                raise fail(at, f"bad magic 0x{magic:08x} (not RecordIO, or a damaged part)")
            cflag, part = decode_lrec(lrec)
            stored = PART_HEADER.size + part + padding(part)
            if not chunks.ensure(stored):
                raise fail(at, f"truncated: the part announces {part} bytes but the file ends at byte {size}")
            data = chunks.view[chunks.pos + PART_HEADER.size : chunks.pos + PART_HEADER.size + part]
            if cflag in (CFLAG_WHOLE, CFLAG_FIRST):
                if start >= 0:
                    raise fail(at, f"the record that starts at byte {start} has no last part")
                start, length, crc = at, part, crc32c.crc32c(data)
                flag = IR_HEADER.unpack_from(data)[0] if part >= IR_HEADER.size else 0
            elif cflag in (CFLAG_MIDDLE, CFLAG_LAST):
                if start < 0:
                    raise fail(at, f"continuation part (flag {cflag}) without a first part")
                length += 4 + part
                crc = crc32c.crc32c(data, crc32c.crc32c(MAGIC_BYTES, crc))
            else:
                raise fail(at, f"invalid continuation flag {cflag}")
            del data  # drop the view: the next ensure() may replace the buffer
            chunks.pos += stored
            if cflag in (CFLAG_WHOLE, CFLAG_LAST):
                offsets.append(start)
                lengths.append(length)
                crcs.append(crc)
                if IR_HEADER.size + 4 * flag <= length:  # else not an IRHeader: decoding will say so
                    width = max(width, flag)
                start = -1
        chunks.view.release()
    rows = np.zeros(len(offsets), dtype=RECORD_INDEX_DTYPE)
    rows["offset"], rows["length"], rows["crc32c"] = offsets, lengths, crcs
    return Scan(rows, size, chunks.crc, width)


def check_idx(idx_path: str, rec_path: str, rows: np.ndarray) -> None:
    """Raise DatasetError unless the .idx lists every record of the scan, in file order, under distinct keys."""
    try:
        with open(idx_path, encoding="ascii") as handle:
            keys, offsets = parse_idx(handle.read())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{idx_path}: unreadable ({error})") from None
    if len(np.unique(keys)) != len(keys):
        raise DatasetError(f"{idx_path}: keys repeat")
    if len(offsets) != len(rows):
        raise DatasetError(f"{idx_path}: lists {len(offsets)} records, {rec_path} holds {len(rows)}")
    wrong = np.flatnonzero(offsets != rows["offset"])
    if len(wrong):
        entry = int(wrong[0])
        raise DatasetError(
            f"{idx_path}: entry {entry + 1} (key {keys[entry]}) says byte {offsets[entry]}, "
            f"but record {entry} of {rec_path} starts at byte {rows['offset'][entry]}"
        )


def _idx_beside(rec_path: str) -> str | None:
    idx = os.path.splitext(rec_path)[0] + IDX_SUFFIX
    return idx if os.path.isfile(idx) else None


def idx_beside(rec_path: str) -> str | None:
    """The MXNet .idx that shares the .rec's stem, if there is one."""
    idx = os.path.splitext(rec_path)[0] + IDX_SUFFIX
    return idx if os.path.isfile(idx) else None


def scan_with_idx(rec_path: str, on_bytes: Callable[[int], object] | None = None) -> tuple[Scan, str | None]:
    """Scan a .rec and cross-check the .idx beside it, if any; (scan, that .idx's path or None)."""
    scan = scan_rec(rec_path, on_bytes)
    idx = idx_beside(rec_path)
    if idx is not None:
        check_idx(idx, rec_path, scan.rows)
    return scan, idx


def shard_stems(rec_paths: list[str]) -> list[str]:
    """Shard names from the file names, made distinct (``train``, ``train-2``) where folders repeat one."""
    stems: list[str] = []
    for path in rec_paths:
        base = stem = os.path.splitext(os.path.basename(path))[0]
        number = 1
        while stem in stems:
            number += 1
            stem = f"{base}-{number}"
        stems.append(stem)
    return stems
