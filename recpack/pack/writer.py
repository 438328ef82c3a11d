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

import errno
import mmap
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import crc32c
import numpy as np

from ..format import framing
from ..format.index_files import (
    DATASET_INDEX_NAME, IDX_SUFFIX, REC_SUFFIX, RECORD_INDEX_SUFFIX, SHARD_SUFFIXES, dataset_idx_bytes, idx_bytes,
    load_rpi, rpi_bytes,
)
from ..format.manifest import FileInfo, ShardFiles, write_file
from ..format.schema import RECORD_INDEX_DTYPE, Payload, index_row, pack_payload


@dataclass(frozen=True)
class RecordSlot:
    """Room for one whole record in a writer's staging buffer: the caller fills ``image``, then commits."""

    record: memoryview  # the framed record: part header, payload, padding
    payload_length: int
    image: memoryview  # the payload's bytes after its prefix


class StagingBuffers:
    """The ring of page-aligned buffers a ``_RecordFile`` fills in turn.

    Allocate once per process and pass to every ``ShardWriter``: fresh memory
    costs page faults (and, in a VM, the host backing it) each time.
    """

    COUNT = 3  # one being filled, up to two queued for the disk

    def __init__(self) -> None:
        self.ring = [mmap.mmap(-1, _RecordFile.BLOCK) for _ in range(self.COUNT)]  # anonymous maps are page-aligned


class _RecordFile:
    """The .rec being written, through large page-aligned buffers; keeps the CRC32C and size of what it holds.

    Bytes arrive either as pieces to copy (``write``) or are placed by the
    caller straight into the current buffer (``room``, then ``advance``).
    The file's CRC32C is computed a whole buffer at a time on the background
    thread, just before that buffer is written.

    Why: per record, a plain ``write`` costs the kernel a copy into the page
    cache, and later a writeback pass, about as much CPU as everything else
    the packer does besides its decode check.  Opened ``O_DIRECT``, the file
    takes whole buffers that the disk reads itself, and a pack of a terabyte
    no longer flushes everything else out of the page cache.  Full buffers go
    to a background thread while the caller fills the next one, so it waits
    on the disk only when the disk falls two buffers behind.  Where the
    filesystem refuses ``O_DIRECT`` (some FUSE mounts, older tmpfs) the same
    buffers are written the ordinary way.
    """

    BLOCK = 4 << 20  # bytes per write: long sequential runs even on a disk that seeks
    ALIGN = 4096  # O_DIRECT wants buffer address, length and file offset aligned to the block size

    def __init__(self, path: str, buffers: "StagingBuffers"):
        self.path = path
        self.size = 0
        self.crc = 0
        self.fd, self.direct = _open_for_writing(path)
        self._buffers = buffers.ring
        self._current = 0
        self._fill = 0
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="recpack-write")
        self._in_flight: deque[Future] = deque()  # writes of the buffers after the current one, oldest first
        self._written = 0  # bytes on their way to the file, in order

    def write(self, pieces: list) -> None:
        for piece in pieces:
            view = memoryview(piece).cast("B")
            while view:
                take = min(len(view), self.BLOCK - self._fill)
                self._buffers[self._current][self._fill : self._fill + take] = view[:take]
                self._fill += take
                self.size += take
                view = view[take:]
                if self._fill == self.BLOCK:
                    self._hand_off(self.BLOCK)

    def room(self, length: int) -> memoryview | None:
        """The next ``length`` bytes of the current buffer, for the caller to fill; None if they do not fit in it."""
        if self._fill + length > self.BLOCK:
            return None
        return memoryview(self._buffers[self._current])[self._fill : self._fill + length]

    def advance(self, length: int) -> None:
        """Take the ``length`` bytes the caller has filled from ``room`` as written."""
        self._fill += length
        self.size += length
        if self._fill == self.BLOCK:
            self._hand_off(self.BLOCK)

    def _hand_off(self, length: int, data_length: int | None = None) -> None:
        """Queue the current buffer's first ``length`` bytes; move to the next buffer once its write is done.

        ``data_length`` (default: all) of them are file content; the rest is padding that is cut off later.
        """
        buffer = memoryview(self._buffers[self._current])[:length]
        data = buffer if data_length is None else buffer[:data_length]
        self._in_flight.append(self._flusher.submit(self._checksum_and_write, data, buffer, self._written))
        self._written += length
        self._current, self._fill = (self._current + 1) % len(self._buffers), 0
        if len(self._in_flight) == len(self._buffers):
            self._in_flight.popleft().result()

    def _checksum_and_write(self, data: memoryview, buffer: memoryview, offset: int) -> None:
        """Runs on the one background thread, buffer after buffer in file order, so the CRC chains correctly."""
        self.crc = crc32c.crc32c(data, self.crc)
        _write_all(self.fd, buffer, offset)

    def _wait(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    def finish(self) -> None:
        """Write what is buffered, and cut the zero padding O_DIRECT needed for the last block."""
        tail = self._fill
        if tail:
            padded = -(-tail // self.ALIGN) * self.ALIGN if self.direct else tail
            self._buffers[self._current][tail:padded] = bytes(padded - tail)
            self._hand_off(padded, tail)
        self._wait()
        if self.direct and tail:
            os.ftruncate(self.fd, self.size)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            self._flusher.shutdown(wait=True)
            os.close(self.fd)
            self.fd = -1


def _open_for_writing(path: str) -> tuple[int, bool]:
    """A new file's descriptor, opened O_DIRECT where the filesystem allows it; (fd, direct)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, flags | direct, 0o644), True
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
    return os.open(path, flags, 0o644), False


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class ShardWriter:
    """Appends records to one shard; a context manager that publishes only on success."""

    def __init__(self, directory: str, stem: str, buffers: StagingBuffers | None = None, attempt: str | None = None):
        """``attempt`` (a token) goes into the temporary names, ``shard-00007.<attempt>.rec.tmp``, for when two
        attempts at one shard may run at once (a retried or duplicated shard-range task): each writes its own
        files, and as both write the same bytes, whichever renames last leaves the same shard."""
        self.directory, self.stem = directory, stem
        self._buffers = buffers or StagingBuffers()
        self._final = {suffix: os.path.join(directory, stem + suffix) for suffix in SHARD_SUFFIXES}
        middle = f".{attempt}" if attempt else ""
        self._temporary = {suffix: os.path.join(directory, f"{stem}{middle}{suffix}.tmp") for suffix in SHARD_SUFFIXES}
        self._rows: list[tuple] = []  # schema.index_row tuples
        self._rec: _RecordFile | None = None
        self.files: ShardFiles | None = None

    def __enter__(self) -> "ShardWriter":
        self._rec = _RecordFile(self._temporary[REC_SUFFIX], self._buffers)
        return self

    def write(self, record: Payload) -> int:
        """Append one record; returns its offset in the .rec.  Its .idx key is its position in the shard."""
        return self.write_raw(b"".join(pack_payload(record)), record.trailing_lengths())

    def write_raw(self, payload: bytes, trailing: tuple[int, ...] = ()) -> int:
        """Append a payload already packed (``schema.pack_payload``), with its trailing-field lengths."""
        offset = self._rec.size
        self._rec.write(framing.frame_record(payload))
        self._rows.append(index_row(offset, len(payload), crc32c.crc32c(payload), trailing))
        return offset

    def reserve(self, prefix: bytes, image_length: int) -> RecordSlot | None:
        """Room for a record whose payload is ``prefix`` and then ``image_length`` bytes, with the prefix in place.

        Why: reading an image file straight into the buffer that goes to
        disk saves two copies of it (into a bytes object, then into the
        buffer), half the per-image cost of ``--check header``.  None when
        the record would straddle two buffers: use ``write``.
        """
        payload_length = len(prefix) + image_length
        record = self._rec.room(framing.whole_record_length(payload_length))
        if record is None:
            return None
        start = framing.PART_HEADER.size
        record[start : start + len(prefix)] = prefix
        return RecordSlot(record, payload_length, record[start + len(prefix) : start + payload_length])

    def commit(self, slot: RecordSlot) -> int:
        """Append the record whose slot the caller has filled; returns its offset, as ``write`` does.

        Nothing may be written to this shard between ``reserve`` and ``commit``.
        """
        start = framing.PART_HEADER.size
        payload = slot.record[start : start + slot.payload_length]
        if not framing.frame_in_place(slot.record, slot.payload_length):  # holds the magic: cut into parts
            return self.write_raw(bytes(payload))
        offset = self._rec.size
        self._rows.append(index_row(offset, slot.payload_length, crc32c.crc32c(payload)))
        self._rec.advance(len(slot.record))
        return offset

    @property
    def records(self) -> int:
        return len(self._rows)

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            try:
                self._publish()
            except BaseException:
                self._discard()
                raise
        else:
            self._discard()

    def _publish(self) -> None:
        rows = np.array(self._rows, dtype=RECORD_INDEX_DTYPE)
        self._rec.finish()
        name = lambda suffix: os.path.basename(self._final[suffix])  # noqa: E731  (the final name, not the .tmp)
        idx_info = write_file(self._temporary[IDX_SUFFIX], idx_bytes(rows["offset"]), name(IDX_SUFFIX))
        rpi_info = write_file(self._temporary[RECORD_INDEX_SUFFIX], rpi_bytes(rows), name(RECORD_INDEX_SUFFIX))
        rec_info = FileInfo(name(REC_SUFFIX), self._rec.size, self._rec.crc)
        for suffix, path in self._final.items():
            os.replace(self._temporary[suffix], path)
        self.files = ShardFiles(self.stem, len(rows), rec_info, idx_info, rpi_info)

    def _discard(self) -> None:
        if self._rec is not None:
            self._rec.close()
        for path in self._temporary.values():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


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


def write_dataset_index(out_dir: str, shards) -> str:
    """Write ``dataset.idx`` (one MXNet index over all ``shards``, for DALI) from their ``.rpi`` files; return its path.

    Call it once every shard is final and before the manifest is written
    (pack, import, and a commit step that publishes shards written elsewhere).
    """
    offsets = [load_rpi(os.path.join(out_dir, shard.rpi.name))["offset"] for shard in shards]
    path = os.path.join(out_dir, DATASET_INDEX_NAME)
    write_file(path, dataset_idx_bytes(offsets, [shard.rec.bytes for shard in shards]))
    return path
