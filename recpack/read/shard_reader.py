"""Read the records of one shard: sequentially in large chunks, or one at a time by index.

``ShardReader`` holds only paths and opens files lazily, so it pickles cheaply
into DataLoader workers.  The per-record index (``.rpi``) is loaded on first
use, not when the dataset opens.  Sequential reads use large chunks with
``posix_fadvise(SEQUENTIAL)`` and hand out zero-copy views of each chunk.

A run of records (``read_run``) is read in whole, aligned 2 MiB blocks where
the kernel can (Linux 5.18+): its memory map is advised ``MADV_HUGEPAGE`` and
``MADV_RANDOM`` and populated, so each missing block is one 2 MiB read into one
large page-cache folio.  Read any other way, a cold range comes in 4 KiB pages,
at most 256 to a bio: under a cgroup I/O throttle, which counts bios, that is one
I/O per 0.6-1 MiB and a 110-IOPS disk delivers 60-100 MB/s of its 170 (issue
#15's measurements).  The blocks at a run's two ends also hold records of the
neighbouring windows; they stay in the page cache and serve those windows later
in the epoch, so an epoch reads each block once when memory holds about half a
block per window boundary until its second window is read.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import crc32c
import numpy as np

from ..errors import CorruptRecordError, DatasetError
from ..format.framing import FramingError, read_framed
from ..format.index_files import load_rpi
from ..format.schema import Payload, trailing_of, unpack_payload

DEFAULT_CHUNK_BYTES = 16 << 20
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14; Python's mmap does not name it


def _kernel_reads_blocks(platform: str, release: str) -> bool:
    """Whether a fault in an ``MADV_HUGEPAGE`` file mapping reads its whole aligned 2 MiB block (Linux 5.18+).

    Older kernels ignore the advice for reading, and ``MADV_RANDOM`` then
    makes every fault read a single 4 KiB page: the old way must be used there.
    """
    if platform != "linux" or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    numbers = [int(part) for part in release.split("-")[0].split(".")[:2] if part.isdigit()]
    return len(numbers) == 2 and tuple(numbers) >= (5, 18)


BLOCK_READS = _kernel_reads_blocks(sys.platform, os.uname().release if hasattr(os, "uname") else "")
_LIBC = ctypes.CDLL(None, use_errno=True) if BLOCK_READS else None
# without block reads: WILLNEED for the exact range, then map every page in one pass
_MAP_FLAGS = mmap.MAP_SHARED | (0 if BLOCK_READS else getattr(mmap, "MAP_POPULATE", 0))


@dataclass
class ShardReader:
    """One shard's records.  ``name`` is used in error messages (e.g. ``shard-00003``).

    The record index is the ``.rpi`` at ``rpi_path``, loaded on first use, or
    ``index_rows`` given in memory (a foreign .rec scanned on open, which has
    no .rpi; ``rpi_path`` is then None).  Given rows travel with the pickle.
    """

    rec_path: str
    rpi_path: str | None
    name: str
    index_rows: np.ndarray | None = field(default=None, repr=False, compare=False)
    records: int | None = None  # what the manifest says the shard holds; an .rpi that disagrees is refused

    def __post_init__(self) -> None:
        self._rows: np.ndarray | None = self.index_rows

    def __getstate__(self) -> dict:
        return {"rec_path": self.rec_path, "rpi_path": self.rpi_path, "name": self.name, "index_rows": self.index_rows,
                "records": self.records}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def release(self) -> None:
        """Let go of the record index if it is a map of the .rpi (a map holds a descriptor); it maps again when used.

        Arrays already handed out stay valid: they keep the map alive until they go.
        """
        if isinstance(self._rows, np.memmap):
            self._rows = self.index_rows

    def close(self) -> None:
        self.release()

    def _open(self) -> int:
        """A new descriptor of the .rec for one read, advised sequential; the caller closes it.

        None is kept between reads (a run's map holds its own), so that a process
        reading thousands of shards does not hold a descriptor for each (``ulimit -n``
        is often 1024) and holds none once it stops reading.
        """
        try:
            fd = os.open(self.rec_path, os.O_RDONLY)
        except OSError as error:  # a shard file gone or unreadable: the dataset's problem, named
            raise DatasetError(f"{self.rec_path}: cannot open shard {self.name} ({error.strerror})") from None
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return fd

    def _end_of(self, index: int) -> int:
        rows = self.rows
        return int(rows[index + 1]["offset"]) if index + 1 < len(rows) else self.file_size()

    # the file access a reader of another store replaces (``remote_reader``): the size, a stream, a range
    def file_size(self) -> int:
        return os.path.getsize(self.rec_path)

    @contextlib.contextmanager
    def _stream(self) -> Iterator[Any]:
        """The .rec as an unbuffered file, advised sequential: what ``iter_records`` reads in chunks."""
        with open(self.rec_path, "rb", buffering=0) as handle:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            yield handle

    def _range(self, offset: int, size: int) -> bytes:
        with open(self.rec_path, "rb", buffering=0) as handle:
            return os.pread(handle.fileno(), size, offset)

    def run_bytes(self, first: int, stop: int) -> int:
        """Bytes of the file that records first..stop-1 take (framing included)."""
        return self._end_of(stop - 1) - int(self.rows[first]["offset"])

    def advise_willneed(self, first: int, stop: int) -> None:
        """Ask the kernel to start reading records first..stop-1 now (asynchronous readahead)."""
        if hasattr(os, "posix_fadvise") and first < stop:
            offset = int(self.rows[first]["offset"])
            fd = self._open()
            try:
                os.posix_fadvise(fd, offset, self._end_of(stop - 1) - offset, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def read_run(self, first: int, stop: int, verify: bool = True) -> list[memoryview | CorruptRecordError]:
        """Payloads of records first..stop-1, as zero-copy views of one memory map of their bytes.

        The map covers only this run and is unmapped when the last view of it
        is dropped, so memory stays bounded by the runs in use.  A damaged
        record comes back as its CorruptRecordError, in its place, so that the
        caller's error policy decides; its neighbours are found through the
        index and are unaffected.
        """
        rows = self.rows
        base = int(rows[first]["offset"])
        start = base - base % mmap.ALLOCATIONGRANULARITY
        end = self._end_of(stop - 1)
        fd = self._open()
        try:
            if end > os.fstat(fd).st_size or end <= base:  # <=: the file ends before the run starts
                error = CorruptRecordError(self.name, stop - 1, "shard file is truncated")
                return [error] * (stop - first)
            if not BLOCK_READS:
                self.advise_willneed(first, stop)
            mapped = mmap.mmap(fd, end - start, flags=_MAP_FLAGS, prot=mmap.PROT_READ, offset=start)
        finally:
            os.close(fd)
        if BLOCK_READS:
            _read_blocks(mapped)
        return self.parse_run(memoryview(mapped), start, first, stop, verify)

    def parse_run(self, data, start: int, first: int, stop: int, verify: bool) -> list[memoryview | CorruptRecordError]:
        """Records first..stop-1 out of ``data``, the file's bytes from offset ``start`` on (``read_run``'s rule)."""
        rows = self.rows
        run = rows[first:stop]  # plain lists: numpy scalar access per record costs more than the parse
        offsets, lengths, crcs = run["offset"].tolist(), run["length"].tolist(), run["crc32c"].tolist()
        results: list[memoryview | CorruptRecordError] = []
        for index, offset, length, crc in zip(range(first, stop), offsets, lengths, crcs):
            try:
                payload, _ = read_framed(data, offset - start, start)
                if verify:
                    self._check(index, payload, length, crc)
            except FramingError as error:
                payload = CorruptRecordError(self.name, index, str(error))
            except CorruptRecordError as error:
                payload = error
            results.append(payload)
        return results

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            rows = load_rpi(self.rpi_path)
            if self.records is not None and len(rows) != self.records:  # another shard's index, or a stale manifest
                raise DatasetError(f"{self.rpi_path}: {len(rows)} records, the manifest says {self.records}")
            self._rows = rows
        return self._rows

    def __len__(self) -> int:
        return len(self.rows)

    def _check(self, index: int, payload, length: int, crc: int) -> None:
        if len(payload) != length:
            raise CorruptRecordError(self.name, index, f"payload is {len(payload)} bytes, index says {length}")
        if crc32c.crc32c(payload) != crc:
            raise CorruptRecordError(self.name, index, "CRC32C mismatch")

    def iter_records(
        self,
        start: int = 0,
        stop: int | None = None,
        verify: bool = True,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> Iterator[tuple[int, memoryview]]:
        """Yield (record index, payload) for records start..stop-1, reading the .rec in order.

        Payloads are views into the current chunk: copy them to keep them past
        the next iteration.  ``on_chunk`` sees every chunk read (e.g. to
        checksum the whole file); it is given the whole file only when
        start == 0 and stop covers every record.
        """
        rows = self.rows
        stop = len(rows) if stop is None else min(stop, len(rows))
        if start >= stop:
            return
        offsets = np.asarray(rows["offset"], dtype=np.int64)
        file_size = self.file_size()
        ends = np.append(offsets[1:], file_size)
        with self._stream() as handle:
            handle.seek(int(offsets[start]))
            data, base = b"", int(offsets[start])
            for index in range(start, stop):
                offset, end = int(offsets[index]), int(ends[index])
                if end > base + len(data):
                    rest = data[offset - base :]
                    chunk = handle.read(max(chunk_bytes, end - offset - len(rest)))
                    if on_chunk is not None:
                        on_chunk(chunk)
                    data, base = rest + chunk, offset
                    if end > base + len(data):
                        raise CorruptRecordError(self.name, index, "shard file is truncated")
                try:
                    payload, next_offset = read_framed(data, offset - base, base)
                except FramingError as error:
                    raise CorruptRecordError(self.name, index, str(error)) from None
                if next_offset + base != end and index + 1 < len(rows):
                    raise CorruptRecordError(self.name, index, "record length disagrees with the index")
                if verify:
                    self._check(index, payload, int(rows[index]["length"]), int(rows[index]["crc32c"]))
                yield index, payload
            if on_chunk is not None and stop == len(rows):
                while chunk := handle.read(chunk_bytes):
                    on_chunk(chunk)

    def read(self, index: int, verify: bool = True) -> bytes:
        """One record's payload by its index in the shard (one positioned read)."""
        rows = self.rows
        if not 0 <= index < len(rows):
            raise IndexError(f"{self.name}: record {index} out of range 0..{len(rows) - 1}")
        offset = int(rows[index]["offset"])
        end = int(rows[index + 1]["offset"]) if index + 1 < len(rows) else self.file_size()
        data = self._range(offset, max(end - offset, 0))  # a file cut short before the record: nothing to read
        try:
            payload, _ = read_framed(data, 0, offset)
        except FramingError as error:
            raise CorruptRecordError(self.name, index, str(error)) from None
        if verify:
            self._check(index, payload, int(rows[index]["length"]), int(rows[index]["crc32c"]))
        return bytes(payload)


    def read_payload(self, index: int, verify: bool = True) -> Payload:
        """One record's content by its index in the shard."""
        return unpack_payload(self.read(index, verify), trailing_of(self.rows[index : index + 1])[0])


def _read_blocks(mapped: mmap.mmap) -> None:
    """Bring a mapped run into memory now, a whole 2 MiB block per read (see the module's docstring)."""
    try:
        mapped.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel built without transparent huge pages: exact 4 KiB-page reads
        mapped.madvise(mmap.MADV_WILLNEED)
    else:
        mapped.madvise(mmap.MADV_RANDOM)  # a fault reads its own block, no read-ahead past it
    _populate(mapped)


def _populate(mapped: mmap.mmap) -> None:
    """MADV_POPULATE_READ through ctypes, which lets go of the GIL for the call.

    ``mmap.madvise`` holds it: for the tens of milliseconds a cold run takes
    to read, every other thread of the process (decoders, the other readers,
    the training loop) would wait.
    """
    address = np.frombuffer(mapped, np.uint8).ctypes.data
    if _LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(len(mapped)), _MADV_POPULATE_READ) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"reading a run into memory: {os.strerror(code)}")


@dataclass(frozen=True)
class Record:
    """One record as read: where it came from, and its payload (or the error found reading it)."""

    shard: int
    index: int
    payload: Any  # memoryview into a read buffer, or a CorruptRecordError
    trailing: tuple[int, ...]  # lengths of the payload's trailing fields (``schema.unpack_payload``)


def run_records(reader: ShardReader, shard: int, first: int, stop: int, verify: bool = True) -> list[Record]:
    """Records first..stop-1 of ``reader`` (shard number ``shard``), read as one run."""
    trailing = trailing_of(reader.rows[first:stop])
    return [Record(shard, index, payload, trailing[index - first])
            for index, payload in enumerate(reader.read_run(first, stop, verify), first)]
