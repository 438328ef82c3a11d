"""Index a RecordIO file that recpack did not write (MXNet's im2rec, ``MXIndexedRecordIO``, ...).

Its framing is the one in ``framing``, so all it lacks is recpack's per-record index: one
sequential pass rebuilds it, with the CRC32C of every payload, so that reads are still
verified.  An ``.idx`` beside a ``.rec`` is only cross-checked: it must list every record,
in file order (as MXNet's writers do); recpack reads records in file order, so an index
that disagrees means the pair does not belong together.

Damage stops the scan with a DatasetError naming the byte, unless the caller asks it to
skip damage: then it drops the record the damage falls in and resynchronises on the next
aligned magic word that can start a record, as dmlc-core's RecordIO reader does, and
reports each stretch it passed over (``Damage``).
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
class Damage:
    """A stretch of a .rec that a scan skipping damage passed over: no record in it was indexed."""

    start: int  # file byte where the damaged record (or the stray part) begins
    end: int  # where the scan went on: the next record's first part, or the end of the file
    problem: str  # what was found, and at which byte

    def __str__(self) -> str:
        return f"bytes {self.start}-{self.end} skipped ({self.problem})"


@dataclass(frozen=True)
class Scan:
    """What one pass over a .rec finds."""

    rows: np.ndarray  # RECORD_INDEX_DTYPE, in file order
    bytes: int  # of the whole file
    crc32c: int  # of the whole file
    label_width: int  # the most labels an IRHeader announces (flag 0 counts as 1)
    damage: tuple[Damage, ...] = ()  # what a scan skipping damage passed over, in file order


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

    def next_record_start(self, size: int) -> bool:
        """Move past the current word to the next aligned magic that can start a record; False at the end.

        A candidate's flag must be 0 or 1 and its part must fit in the file.  Data
        never holds the magic at an aligned offset (the writer cuts records there),
        so past damage the first such word is where the next record begins.
        """
        self.pos = min(self.pos + 4, self.filled)  # at the end of the file fewer than 4 bytes may be left
        while self.ensure(PART_HEADER.size):
            usable = (self.filled - self.pos) // 4 * 4
            words = np.frombuffer(self.buffer, dtype="<u4", count=usable // 4, offset=self.pos)
            for hit in np.flatnonzero(words[:-1] == MAGIC).tolist():
                cflag, part = decode_lrec(int(words[hit + 1]))
                if cflag in (CFLAG_WHOLE, CFLAG_FIRST) and self.base + self.pos + 4 * hit + _stored(part) <= size:
                    self.pos += 4 * hit
                    return True
            del words  # before ensure() moves or replaces the buffer
            self.pos += usable - 4  # the last word may be a magic whose length word is not read yet
        self.pos = self.filled
        return False


def _stored(part: int) -> int:
    """Bytes a part of ``part`` data bytes takes in the file: header, data, padding."""
    return PART_HEADER.size + part + padding(part)


def scan_rec(path: str, on_bytes: Callable[[int], object] | None = None, chunk_bytes: int = SCAN_CHUNK_BYTES,
             skip_damage: bool = False) -> Scan:
    """Walk a .rec's framing from start to end and index every record.

    Raises DatasetError naming the file and the byte offset of the first
    framing problem (bad magic, truncation, a broken multi-part record);
    with ``skip_damage``, notes it in ``Scan.damage`` and goes on from the
    next record it can find.  A length field is checked against the file's
    size before anything is read or allocated for it.
    ``on_bytes(n)`` is told of every n bytes read (a progress bar's update).
    """
    size = os.path.getsize(path)
    offsets, lengths, crcs = array("Q"), array("I"), array("I")
    width = 1
    start = length = crc = flag = -1  # the record being assembled; start -1: none
    damage: list[Damage] = []

    def damaged(at: int, problem: str, resume_here: bool = False) -> bool:
        """Raise; or, skipping damage, drop the open record and move to the next record start (False: none left)."""
        nonlocal start
        if not skip_damage:
            raise DatasetError(f"{path}: byte {at}: {problem}")
        begin, start = (start if start >= 0 else at), -1
        found = resume_here or chunks.next_record_start(size)
        damage.append(Damage(begin, chunks.base + chunks.pos if found else size, f"byte {at}: {problem}"))
        return found

    with open(path, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        chunks = _Chunks(handle, chunk_bytes, on_bytes or (lambda count: None))
        while True:
            if not chunks.ensure(PART_HEADER.size):
                if chunks.filled == chunks.pos and start < 0:
                    break
                at = chunks.base + chunks.pos
                if damaged(at, "truncated: the file ends inside a part header" if chunks.filled > chunks.pos
                           else f"truncated: the record that starts at byte {start} has no last part"):
                    continue
                break
            at = chunks.base + chunks.pos
            magic, lrec = PART_HEADER.unpack_from(chunks.buffer, chunks.pos)
            cflag, part = decode_lrec(lrec)
            stored = _stored(part)
            problem, resume_here = None, False
            if magic != MAGIC:
                problem = f"bad magic 0x{magic:08x} (not RecordIO, or a damaged part)"
            elif at + stored > size:
                problem = f"truncated: the part announces {part} bytes but the file ends at byte {size}"
            elif cflag in (CFLAG_WHOLE, CFLAG_FIRST) and start >= 0:
                problem, resume_here = f"the record that starts at byte {start} has no last part", True
            elif cflag in (CFLAG_MIDDLE, CFLAG_LAST) and start < 0:
                problem = f"continuation part (flag {cflag}) without a first part"
            elif cflag > CFLAG_LAST:
                problem = f"invalid continuation flag {cflag}"
            if problem is not None:
                if damaged(at, problem, resume_here):
                    continue
                break
            chunks.ensure(stored)  # the file holds it: checked above
            data = chunks.view[chunks.pos + PART_HEADER.size : chunks.pos + PART_HEADER.size + part]
            if cflag in (CFLAG_WHOLE, CFLAG_FIRST):
                start, length, crc = at, part, crc32c.crc32c(data)
                flag = IR_HEADER.unpack_from(data)[0] if part >= IR_HEADER.size else 0
            else:
                length += 4 + part
                crc = crc32c.crc32c(data, crc32c.crc32c(MAGIC_BYTES, crc))
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
    return Scan(rows, size, chunks.crc, width, tuple(damage))


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


def idx_beside(rec_path: str) -> str | None:
    """The MXNet .idx that shares the .rec's stem, if there is one."""
    idx = os.path.splitext(rec_path)[0] + IDX_SUFFIX
    return idx if os.path.isfile(idx) else None


def scan_with_idx(rec_path: str, on_bytes: Callable[[int], object] | None = None,
                  skip_damage: bool = False) -> tuple[Scan, str | None]:
    """Scan a .rec and cross-check the .idx beside it, if any; (scan, that .idx's path or None).

    A scan that skipped damage cannot match the index (it lists the lost records
    too): the index is then left unused, and None returned for it.
    """
    scan = scan_rec(rec_path, on_bytes, skip_damage=skip_damage)
    idx = idx_beside(rec_path)
    if idx is not None and scan.damage:
        return scan, None
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
