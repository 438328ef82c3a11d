"""Tar archives as a source, read once, front to back: plain or gzip, a folder of them, or tars inside a tar.

ImageNet-21k ships as one archive of per-class tars, and extracting 14M files first costs
more than packing them.  Members are streamed in the order they lie in the archive (tar's
stream mode never seeks, so a .tar.gz and a tape-like disk read the same way), and each
image member's class is its parent folder (``train/n01440764/x.JPEG``) or, for a member at
the top of an inner tar, that tar's name (``n01440764.tar`` -> ``n01440764``).  Labels are
the classes' positions in sorted order, as for an image folder; since the classes are only
all known at the end of the stream, ``ArchiveSource`` hands out class names and the packer
turns them into labels once the pass is over.
"""

from __future__ import annotations

import io
import mmap
import os
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Iterator

from ..errors import RecpackError
from .sources import ARCHIVE_COMMENT, IMAGE_EXTENSIONS, Source, open_source

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: str) -> bool:
    return path.lower().endswith(ARCHIVE_SUFFIXES) and os.path.isfile(path)


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Member:
    """One image in an archive, as met: its bytes, or where they lie in an uncompressed archive file."""

    key: str  # archive/.../member path: what ``recpack get`` looks up
    class_name: str
    data: bytes | None = None  # a compressed stream's member, already read, or
    location: tuple[str, int, int] | None = None  # (archive file, offset, size): read by whoever prepares it


def read_located(locations: list[tuple[str, int, int] | None]) -> list[memoryview | None]:
    """The bytes of members located in uncompressed archive files (None where a location is None).

    Each file's members are mapped from the page cache in one span, not read: the
    read-ahead has put them there, and a copy of each member would cost the pack's
    CPU as much as checking it.  A file that ends inside a member is a one-line error.
    """
    views: list[memoryview | None] = [None] * len(locations)
    by_file: dict[str, list[int]] = {}
    for position, location in enumerate(locations):
        if location is not None:
            by_file.setdefault(location[0], []).append(position)
    for path, positions in by_file.items():
        start = min(locations[p][1] for p in positions)
        stop = max(locations[p][1] + locations[p][2] for p in positions)
        base = start - start % mmap.ALLOCATIONGRANULARITY
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if stop > size:
                last = max(positions, key=lambda p: locations[p][1] + locations[p][2])
                raise RecpackError(f"{path}: ends inside the member at byte {locations[last][1]}")
            if stop == start:
                span = memoryview(b"")
            else:
                span = memoryview(mmap.mmap(handle.fileno(), stop - base, offset=base, prot=mmap.PROT_READ,
                                            flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)))
        for p in positions:
            _, offset, length = locations[p]
            views[p] = span[offset - base : offset - base + length]
    return views


def archives_in(path: str) -> list[str]:
    """The archives a source path names: itself, or the archives in a folder (sorted)."""
    if is_archive(path):
        return [path]
    if os.path.isdir(path):
        found = sorted(os.path.join(path, name) for name in os.listdir(path) if is_archive(os.path.join(path, name)))
        if found:
            return found
    raise RecpackError(f"{path}: not a tar archive or a folder of them")


def holds_archives_only(folder: str) -> bool:
    """Whether a folder is a folder of archives (some archives, no class subfolders)."""
    entries = [entry for entry in os.scandir(folder) if not entry.name.startswith(".")]
    has_archives = any(entry.is_file() and is_archive(entry.path) for entry in entries)
    return has_archives and not any(entry.is_dir() for entry in entries)


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and PurePosixPath(base).suffix.lower() in IMAGE_EXTENSIONS


READ_AHEAD_BYTES = 256 << 20  # of an uncompressed archive, read ahead of the members handed out
_CHUNK_BYTES = 8 << 20


class _ReadAhead:
    """Reads an archive file front to back on a background thread, up to ``READ_AHEAD_BYTES`` past the walk.

    Why: the walk reads only members' headers, 512 bytes every ~110 KB, which the kernel
    does not take for a sequential read, and the workers read the members' data later.
    Large sequential reads just ahead of both turn all of it into what ``cat`` gets from
    the disk (WILLNEED advice was measured slower under an I/O-count throttle: it reads in
    smaller requests), and both are then served from the page cache.  The bytes go to
    /dev/null by ``sendfile``: into the page cache, never copied out of it (a read into a
    buffer thrown away cost a tenth of a tar pack's CPU, on cores the pack is short of).
    """

    def __init__(self, fd: int):
        self.fd, self.walked, self.size = fd, 0, os.fstat(fd).st_size
        self._moved = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="recpack-archive-read", daemon=True)
        self._thread.start()

    def reached(self, position: int) -> None:
        with self._moved:
            self.walked = position
            self._moved.notify()

    def _run(self) -> None:
        position = 0
        with open(os.devnull, "wb", buffering=0) as null:
            read = self._reader(null.fileno())
            while position < self.size:
                with self._moved:
                    self._moved.wait_for(lambda: self._stop or position < self.walked + READ_AHEAD_BYTES)
                    if self._stop:
                        return
                try:
                    count = read(position)
                except OSError:  # the walk meets the same error and reports it
                    return
                if not count:
                    return
                position += count

    def _reader(self, null: int):
        """The chunk reader: ``sendfile`` where the kernel takes /dev/null as its output, else ``preadv``."""
        try:
            os.sendfile(null, self.fd, 0, 1)
            return lambda position: os.sendfile(null, self.fd, position, _CHUNK_BYTES)
        except (OSError, AttributeError):
            buffer = bytearray(_CHUNK_BYTES)
            return lambda position: os.preadv(self.fd, [buffer], position)

    def close(self) -> None:
        with self._moved:
            self._stop = True
            self._moved.notify()
        self._thread.join()


def _class_of(name: str, label: str, top_class: str | None) -> str:
    class_name = PurePosixPath(name).parent.name or top_class
    if class_name is None:
        raise RecpackError(f"{label}: member {name} has no class (put images in class folders, or one tar per class)")
    return class_name


def _members(fileobj: IO[bytes], label: str, top_class: str | None, file: tuple[str, int, _ReadAhead] | None
             ) -> Iterator[Member]:
    """Image members of one tar, inner tars in their place.

    ``file`` is (path, offset of ``fileobj`` in it, read-ahead) while the chain of tars
    down to here is uncompressed: members are then located, not read; a compressed tar
    is streamed and its members read here.
    """
    mode = "r:" if file is not None else "r|*"
    try:
        with tarfile.open(fileobj=fileobj, mode=mode) as archive:
            for info in archive:
                if not info.isfile():
                    continue
                name = info.name
                if file is not None:
                    file[2].reached(file[1] + info.offset_data)
                if name.lower().endswith(ARCHIVE_SUFFIXES):
                    inner = archive.extractfile(info)
                    inner_file = None
                    if file is not None and not _compressed(inner):
                        inner_file = (file[0], file[1] + info.offset_data, file[2])
                    yield from _members(inner, f"{label}/{name}", _stem(PurePosixPath(name).name), inner_file)
                    continue
                if not _is_image(name):
                    continue
                class_name = _class_of(name, label, top_class)
                if file is not None:
                    yield Member(f"{label}/{name}", class_name, location=(file[0], file[1] + info.offset_data, info.size))
                else:
                    yield Member(f"{label}/{name}", class_name, data=archive.extractfile(info).read())
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise
        raise RecpackError(f"{label}: damaged or not a tar archive ({error})") from None


def _compressed(fileobj: IO[bytes]) -> bool:
    """Whether a tar file starts with a compression magic (gzip, bzip2, xz) rather than a tar header."""
    start = fileobj.read(6)
    fileobj.seek(0)
    return start[:2] == b"\x1f\x8b" or start[:3] == b"BZh" or start[:6] == b"\xfd7zXZ\x00"


def stream_members(archives: list[str]) -> Iterator[Member]:
    """Every image member of the archives, in archive order, each archive read once front to back.

    A top-level archive named for a class (a folder of per-class tars) lends its name
    to members at its top; members of a single archive need class folders or inner tars.
    """
    per_class = len(archives) > 1
    for path in archives:
        # unbuffered: the header walk seeks past every member, and a buffered reader would refill its
        # whole buffer after each seek; a compressed stream gets a large buffer instead
        with open(path, "rb", buffering=0) as raw:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(raw.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            top_class = _stem(os.path.basename(path)) if per_class else None
            if _compressed(raw):
                yield from _members(io.BufferedReader(raw, 8 << 20), os.path.basename(path), top_class, None)
            else:
                ahead = _ReadAhead(raw.fileno())
                try:
                    yield from _members(raw, os.path.basename(path), top_class, (os.path.abspath(path), 0, ahead))
                finally:
                    ahead.close()


@dataclass(frozen=True)
class ArchiveSource:
    """A source whose items are only known by reading it: archives, read once in order."""

    description: str
    archives: tuple[str, ...]

    @property
    def root(self) -> str:
        return os.path.dirname(os.path.abspath(self.archives[0]))

    def total_bytes(self) -> int:
        return sum(os.path.getsize(path) for path in self.archives)


def open_archives(path: str) -> ArchiveSource:
    archives = archives_in(path)
    return ArchiveSource(os.path.abspath(path), tuple(os.path.abspath(a) for a in archives))


def list_members(source: ArchiveSource, out: IO[str]) -> int:
    """Write an archive's list (``key<TAB>label``, labels as a pack gives them) after one pass; returns its length.

    The keys wait in a temporary file, not in memory, until the pass has met every class.
    """
    classes: dict[str, int] = {}
    with tempfile.TemporaryFile("w+", encoding="utf-8") as pending:
        for member in stream_members(list(source.archives)):
            pending.write(f"{classes.setdefault(member.class_name, len(classes))}\t{member.key}\n")
        label = {number: float(place) for place, (_, number) in enumerate(sorted(classes.items()))}
        pending.seek(0)
        out.write(f"{ARCHIVE_COMMENT}{source.description}\n")
        count = 0
        for line in pending:
            number, key = line.rstrip("\n").split("\t", 1)
            out.write(f"{key}\t{label[int(number)]:g}\n")
            count += 1
    return count


def open_input(path: str, root: str | None = None) -> Source | ArchiveSource:
    """What ``recpack pack`` takes: an archive or a folder of them, else a list file or an image folder."""
    if is_archive(path) or (os.path.isdir(path) and holds_archives_only(path)):
        if root is not None:
            raise RecpackError(f"{path}: --root applies to list files, not to archives")
        return open_archives(path)
    return open_source(path, root)
