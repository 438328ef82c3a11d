"""Write one shard (.rec, .idx, .rpi) so that it either appears whole or not at all.

``ShardWriter`` writes under ``*.tmp`` names, and only when its ``with`` block
ends without an exception does it rename the three files to their final
names.  On an exception the temporary files are deleted.  The dataset's
manifest, written later by the packer, is what makes shards visible to
readers; the renames only let a resumed pack recognise finished work.

Durability is the packer's job, not the writer's: the packer fsyncs each
finished shard on a background thread while the workers write the next ones,
and the manifest is written only after all of them are on disk.  A shard torn
by a power cut before that is caught by the resume's checksum check.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import crc32c
import numpy as np

from . import format as fmt


@dataclass(frozen=True)
class FileInfo:
    name: str
    bytes: int
    crc32c: int


@dataclass(frozen=True)
class ShardFiles:
    """What a finished shard is made of: the stem, its record count, and its three files."""

    stem: str
    records: int
    rec: FileInfo
    idx: FileInfo
    rpi: FileInfo


class _ChecksummedFile:
    """An unbuffered binary file that keeps the CRC32C and size of everything written to it."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        self.crc = 0

    def write(self, pieces: list) -> None:
        for piece in pieces:
            self.crc = crc32c.crc32c(piece, self.crc)
        written = os.writev(self.fd, pieces)
        expected = sum(len(piece) for piece in pieces)
        while written < expected:  # writev may stop early, e.g. on a signal
            rest = b"".join(bytes(piece) for piece in pieces)[written:]
            written += os.write(self.fd, rest)
        self.size += expected

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ShardWriter:
    """Appends records to one shard; a context manager that publishes only on success."""

    def __init__(self, directory: str, stem: str):
        self.directory, self.stem = directory, stem
        self._final = {suffix: os.path.join(directory, stem + suffix) for suffix in _SUFFIXES}
        self._rows: list[tuple[int, int, int, int]] = []
        self._rec: _ChecksummedFile | None = None
        self._idx: _ChecksummedFile | None = None
        self.files: ShardFiles | None = None

    def __enter__(self) -> "ShardWriter":
        self._rec = _ChecksummedFile(self._final[fmt.REC_SUFFIX] + ".tmp")
        self._idx = _ChecksummedFile(self._final[fmt.IDX_SUFFIX] + ".tmp")
        return self

    def write(self, payload_pieces: list[bytes], mask_length: int = 0) -> int:
        """Append one record; returns its offset in the .rec.  Its .idx key is its position in the shard."""
        payload = b"".join(payload_pieces)
        offset = self._rec.size
        self._rec.write(fmt.frame_record(payload))
        self._idx.write([fmt.format_idx_line(len(self._rows), offset).encode()])
        self._rows.append((offset, len(payload), crc32c.crc32c(payload), mask_length))
        return offset

    @property
    def records(self) -> int:
        return len(self._rows)

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self._publish()
        else:
            self._discard()

    def _publish(self) -> None:
        rows = np.array(self._rows, dtype=fmt.RECORD_INDEX_DTYPE)
        buffer = io.BytesIO()
        np.save(buffer, rows, allow_pickle=False)
        rpi = _ChecksummedFile(self._final[fmt.RECORD_INDEX_SUFFIX] + ".tmp")
        try:
            rpi.write([buffer.getvalue()])
            rpi.close()
        except BaseException:
            rpi.close()
            self._discard()
            raise
        self._rec.close()
        self._idx.close()
        for handle in (self._rec, self._idx, rpi):
            os.replace(handle.path, handle.path[: -len(".tmp")])
        self.files = ShardFiles(
            self.stem,
            len(rows),
            *(FileInfo(os.path.basename(h.path[: -len(".tmp")]), h.size, h.crc) for h in (self._rec, self._idx, rpi)),
        )

    def _discard(self) -> None:
        for handle in (self._rec, self._idx):
            if handle is not None:
                handle.close()
        for path in self._final.values():
            try:
                os.unlink(path + ".tmp")
            except FileNotFoundError:
                pass


_SUFFIXES = (fmt.REC_SUFFIX, fmt.IDX_SUFFIX, fmt.RECORD_INDEX_SUFFIX)


def fsync_paths(paths: list[str]) -> None:
    """Wait until the files, and the folders that name them, are on stable storage."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in {os.path.dirname(os.path.abspath(path)) for path in paths}:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_crc32c(path: str, chunk: int = 8 << 20) -> tuple[int, int]:
    """(size, CRC32C) of a whole file, read in large sequential chunks."""
    crc, size = 0, 0
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(chunk):
            crc = crc32c.crc32c(block, crc)
            size += len(block)
    return size, crc
