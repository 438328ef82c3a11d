"""Reading a list's files from their block device: many files to one large request, where that is safe.

On a spinning disk every file read costs a request (~9 ms of seek and rotation, ~110 a
second) however close the files lie.  Files taken in the order they lie (``layout.disk_order``)
can instead be read from the device itself, in requests of a MiB or two that span many
of them, and cut into each file's bytes (``extents.plan_reads``).  It is done only where
the bytes on the device are the file's bytes, file by file:

- the process can open the filesystem's block device read-only (in practice: root);
- the filesystem is ext4 (``SUPPORTED``), whose FIEMAP offsets are offsets on that device
  (btrfs, ZFS, network, overlay and memory filesystems have no such device, or other
  offsets; XFS too, for files on a realtime device, and it is not tested here), and not
  mounted ``data=journal``, nor is the file data-journalled (its data may then lie in the
  journal only);
- every extent is plain (``extents.READABLE``: no delayed allocation, unwritten, inline,
  encrypted or encoded data) and the extents cover the file without a hole;
- no page of the file is in the page cache, before the read and after it (a dirty page
  means the disk is behind; clean ones, that a plain read is cheaper anyway), and its
  inode, size, mtime and ctime are after the read what they were before.

Any other file is left to an ordinary read (None in the answer), and a pack gets the
file's bytes either way.  A file that is being written while it is read gives torn
bytes by either kind of read; one written between the two looks is caught here.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from .extents import Piece, fiemap, pieces_of, plan_reads
from .layout import libc, resident_pages

SUPPORTED = {0xEF53: "ext4"}  # statfs f_type (ext2/3/4 share it; all are served by the ext4 driver)
MAX_GAP = 1 << 20  # bytes between files read through rather than skipped (see README: ~6 ms at 170 MB/s < a seek)
MAX_READ = 2 << 20  # bytes a request asks for at most (less where the device's max_sectors_kb says so)
WINDOW_FILES, WINDOW_BYTES = 256, 32 << 20  # files (and their bytes) planned and read together
FS_IOC_GETFLAGS = 0x80086601
JOURNAL_DATA_FL = 0x4000
HUGE = 2 << 20


@dataclass(frozen=True)
class Device:
    fd: int
    align: int  # O_DIRECT's unit: offsets, lengths and the buffer's address are multiples of it
    max_read: int


@dataclass(frozen=True)
class Found:
    """A file whose bytes the device holds as they are: how it was, and where its pieces lie."""

    path: str
    status: os.stat_result
    device: Device
    pieces: list[Piece]


class DeviceReader:
    """Reads files from their devices (each opened once, read-only, ``O_DIRECT``); ``close()`` or ``with``.

    Reads go through one 2 MiB buffer backed by a huge page where the kernel gives one:
    with 4 KiB pages a 1 MiB request needs 256 memory segments, more than many devices
    take at once (a SATA disk 168, a loop device 128), and it is split into several.
    Processes forked later do not inherit it: shared copy-on-write, the huge page would
    be broken into 4 KiB copies by the next read into it.
    """

    def __init__(self) -> None:
        self._devices: dict[int, Device | None] = {}
        self._libc = libc()
        self._map = mmap.mmap(-1, 2 * HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            self._map.madvise(mmap.MADV_HUGEPAGE)
        if hasattr(mmap, "MADV_DONTFORK"):  # a pack forks its workers after this: inherited, every read into
            self._map.madvise(mmap.MADV_DONTFORK)  # the buffer would copy it on write, in 4 KiB pages (4x the requests)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        skip = -address % HUGE
        self._buffer = memoryview(self._map)[skip : skip + HUGE]

    def __enter__(self) -> DeviceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for device in self._devices.values():
            if device is not None:
                os.close(device.fd)
        self._devices.clear()
        self._buffer.release()
        self._map.close()

    def read_all(self, items: Iterable[tuple[int, str]]) -> Iterator[tuple[int, bytes | None]]:
        """(index, bytes) for each (index, path), in the order given; None where an ordinary read must do.

        Files are looked at and read in windows of ``WINDOW_FILES`` files or
        ``WINDOW_BYTES`` bytes: memory holds one window's bytes at a time.
        """
        window: list[tuple[int, str, Found | None]] = []
        size = 0
        for index, path in items:
            found = self.inspect(path)
            window.append((index, path, found))
            size += found.status.st_size if found else 0
            if len(window) >= WINDOW_FILES or size >= WINDOW_BYTES:
                yield from self._read_window(window)
                window, size = [], 0
        yield from self._read_window(window)

    def inspect(self, path: str) -> Found | None:
        """Where the file's bytes lie, if the device may be read for them (else None)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_size <= 0:
                return None
            device = self._device(status.st_dev, fd)
            if device is None or _flags(fd) & JOURNAL_DATA_FL:
                return None
            pieces = pieces_of(0, fiemap(fd), status.st_size)
            if pieces is None or resident_pages(fd, status.st_size, self._libc):
                return None
            return Found(path, status, device, pieces)
        except OSError:
            return None
        finally:
            os.close(fd)

    def read(self, found: list[Found]) -> list[bytes | None]:
        """The files' bytes, read from their devices; None for each that must be read the ordinary way."""
        parts: list[list[tuple[int, bytes]]] = [[] for _ in found]  # (where in the file, bytes) as read
        failed: set[int] = set()
        for device in {item.device for item in found}:
            pieces = [Piece(number, piece.logical, piece.physical, piece.length)
                      for number, item in enumerate(found) if item.device == device for piece in item.pieces]
            self._read_pieces(device, pieces, parts, failed)
        return [None if number in failed or not self._unchanged(item) else _joined(parts[number])
                for number, item in enumerate(found)]

    def _read_window(self, window: list[tuple[int, str, Found | None]]) -> Iterator[tuple[int, bytes | None]]:
        found = [item for _, _, item in window if item is not None]
        data = iter(self.read(found)) if found else iter(())
        for index, _, item in window:
            yield index, (next(data) if item is not None else None)

    def _read_pieces(self, device: Device, pieces: list[Piece], parts: list[list[tuple[int, bytes]]],
                     failed: set[int]) -> None:
        pieces.sort(key=lambda piece: piece.physical)
        first = 0
        for offset, length in plan_reads(pieces, device.align, MAX_GAP, device.max_read):
            view = self._buffer[:length]
            try:
                got = os.preadv(device.fd, [view], offset)
            except OSError:
                got = 0
            end = offset + length
            while first < len(pieces) and pieces[first].physical + pieces[first].length <= offset:
                first += 1
            at = first
            while at < len(pieces) and pieces[at].physical < end:
                piece = pieces[at]
                low, high = max(piece.physical, offset), min(piece.physical + piece.length, end)
                if low < high:
                    if high > offset + got:  # the device ended early, or the read failed
                        failed.add(piece.item)
                    else:
                        data = bytes(view[low - offset : high - offset])
                        parts[piece.item].append((piece.logical + low - piece.physical, data))
                at += 1

    def _unchanged(self, found: Found) -> bool:
        """The file is still the one inspected, unchanged, and none of it came into the page cache meanwhile."""
        try:
            fd = os.open(found.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            now, then = os.fstat(fd), found.status
            same = ((now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns)
                    == (then.st_dev, then.st_ino, then.st_size, then.st_mtime_ns, then.st_ctime_ns))
            return same and resident_pages(fd, now.st_size, self._libc) == 0
        except OSError:
            return False
        finally:
            os.close(fd)

    def _device(self, st_dev: int, fd: int) -> Device | None:
        if st_dev not in self._devices:
            self._devices[st_dev] = _open_device(st_dev, fd, self._libc)
        return self._devices[st_dev]


def _joined(parts: list[tuple[int, bytes]]) -> bytes:
    """A file's bytes from the parts read (one, for a file in one extent read by one request)."""
    return parts[0][1] if len(parts) == 1 else b"".join(data for _, data in sorted(parts, key=lambda part: part[0]))


def _open_device(st_dev: int, fd: int, library) -> Device | None:
    """The block device a file's filesystem lives on, opened for direct reads (None: not one to read here)."""
    if _filesystem_type(fd, library) not in SUPPORTED:
        return None
    number = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    sysfs = os.path.realpath(f"/sys/dev/block/{number}")
    try:
        with open(os.path.join(sysfs, "uevent"), encoding="ascii") as handle:
            fields = dict(line.strip().split("=", 1) for line in handle if "=" in line)
        node = os.path.join("/dev", fields["DEVNAME"])
        status = os.stat(node)
        if not stat.S_ISBLK(status.st_mode) or status.st_rdev != st_dev or _journals_data(number):
            return None
        queue = next(folder for folder in (os.path.join(sysfs, "queue"), os.path.join(os.path.dirname(sysfs), "queue"))
                     if os.path.isdir(folder))  # a partition's queue is its disk's
        block = int(_read(os.path.join(queue, "logical_block_size")))
        largest = int(_read(os.path.join(queue, "max_sectors_kb"))) << 10
        device_fd = os.open(node, os.O_RDONLY | os.O_DIRECT)
    except (OSError, KeyError, ValueError, StopIteration):
        return None
    align = max(mmap.PAGESIZE, block)
    return Device(device_fd, align, max(align, min(MAX_READ, largest) // align * align))


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read().strip()


def _journals_data(number: str) -> bool:
    """Whether a filesystem on device ``MAJ:MIN`` is mounted ``data=journal`` (or the mounts cannot be read)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if (len(fields) > 2 and fields[2] == number and " - " in line
                        and "data=journal" in line.split(" - ", 1)[1].split()[-1].split(",")):
                    return True
    except OSError:
        return True
    return False


def _filesystem_type(fd: int, library) -> int | None:
    """statfs(2)'s ``f_type`` (the first field of ``struct statfs``), or None."""
    buffer = ctypes.create_string_buffer(256)
    library.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
    if library.fstatfs(fd, buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def _flags(fd: int) -> int:
    """The inode's flags (``FS_IOC_GETFLAGS``; OSError where the filesystem has none)."""
    return struct.unpack("=i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)[:4])[0]
