"""Where a list's files lie, and whether they are cached: what decides the order a pack reads them in.

On a spinning disk a shuffled list costs a seek per file (~110 files/s); the same files
read in the order they lie on the disk stream at nearly the sequential rate.  Inode
numbers stand in for that order: a filesystem that allocates inodes as files are
written (ext4, XFS) places their data the same way, so files written together (an
extracted archive, a copied folder) have neighbouring inodes and neighbouring blocks.
They come from the directory entries (``d_ino``), one listing per folder, without a
stat or an open per file, which on a cold disk would cost the very seeks this avoids.
Better, where the filesystem reports extents (FIEMAP: ext4, XFS, btrfs...), the first
extent's place on the device is where the file's data actually lies (``disk_order``):
an open and an ioctl per file, on metadata the listing has usually brought in already.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .extents import fiemap

PAGE = 4096


FOLDERS_KEPT = 256  # folder listings held at once: lists name a folder's files together, as recpack list writes them


def inode_order(paths: Sequence[str]) -> np.ndarray:
    """Indices of ``paths`` sorted by inode; files whose folder cannot be listed keep their place, first.

    Memory: 8 bytes a path for the keys, and the listings of the last ``FOLDERS_KEPT``
    folders (a list that scatters a folder's files lists that folder again).
    """
    listings: OrderedDict[str, dict[str, int]] = OrderedDict()
    keys = np.zeros(len(paths), dtype=np.int64)
    for position in range(len(paths)):
        folder, name = os.path.split(paths[position])
        if folder in listings:
            listings.move_to_end(folder)
        else:
            try:
                with os.scandir(folder or ".") as entries:
                    listings[folder] = {entry.name: entry.inode() for entry in entries}
            except OSError:
                listings[folder] = {}
            if len(listings) > FOLDERS_KEPT:
                listings.popitem(last=False)
        keys[position] = listings[folder].get(name, 0)
    return np.argsort(keys, kind="stable")


FIEMAP_PROBE = 64  # files that open without one FIEMAP answer: the filesystem has none, inode order it is


def disk_order(paths: Sequence[str]) -> np.ndarray:
    """Indices of ``paths`` in the order their data lies on the disk: by extent where FIEMAP answers, else by inode."""
    order = physical_order(paths)
    return inode_order(paths) if order is None else order


def physical_order(paths: Sequence[str]) -> np.ndarray | None:
    """Indices sorted by (device, byte offset of the first extent); files that cannot be mapped keep their place, first.

    None when the first ``FIEMAP_PROBE`` files that open all refuse FIEMAP.  Memory: 16
    bytes a path.  (``O_NONBLOCK``: a FIFO in a list must not hang the pack here.)
    """
    devices = np.full(len(paths), -1, dtype=np.int64)
    offsets = np.full(len(paths), -1, dtype=np.int64)
    opened = answered = 0
    for position, path in enumerate(paths):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        opened += 1
        try:
            extents = fiemap(fd, 1)
            answered += 1
            if extents:
                devices[position], offsets[position] = os.fstat(fd).st_dev, min(extents[0].physical, 2**63 - 1)
        except OSError:
            pass
        finally:
            os.close(fd)
        if opened == FIEMAP_PROBE and not answered:
            return None
    if opened and not answered:
        return None
    order = np.argsort(offsets, kind="stable")
    return order[np.argsort(devices[order], kind="stable")]


def libc():
    """The C library, with ``mmap``, ``munmap`` and ``mincore`` typed."""
    library = ctypes.CDLL(None, use_errno=True)
    library.mmap.restype = ctypes.c_void_p
    library.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    library.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    library.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    return library


def resident_pages(fd: int, size: int, library=None) -> int:
    """Pages of an open file's first ``size`` bytes in the page cache, by mincore(2) over a map never touched.

    Dirty pages count: a file with any page here may differ on the disk from what a read returns.
    """
    if size <= 0:
        return 0
    library = library or libc()
    address = library.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    try:
        vector = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
        if library.mincore(address, size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        return sum(1 for flag in bytes(vector) if flag & 1)
    finally:
        library.munmap(address, size)


def cached_fraction(paths: Sequence[str], sample: int = 64, seed: int = 0) -> float | None:
    """The share of a random sample of files whose first page is in the page cache (None: cannot tell).

    A read with ``RWF_NOWAIT`` returns at once when the data is cached and fails with
    EAGAIN instead of waiting for the disk.  (The kernel may start reading those first
    pages ahead on the way, so a second look finds them cached: ask once.)
    """
    if not hasattr(os, "preadv") or not hasattr(os, "RWF_NOWAIT") or not paths:
        return None
    chosen = random.Random(seed).sample(range(len(paths)), min(sample, len(paths)))
    buffer, cached, asked = bytearray(PAGE), 0, 0
    for index in chosen:
        try:
            fd = os.open(paths[index], os.O_RDONLY)
        except OSError:
            continue
        try:
            os.preadv(fd, [buffer], 0, os.RWF_NOWAIT)
            cached += 1
        except BlockingIOError:
            pass
        except OSError:  # a filesystem that does not support the flag
            return None
        finally:
            os.close(fd)
        asked += 1
    return cached / asked if asked else None


def mean_file_bytes(paths: Sequence[str], sample: int = 64, seed: int = 0) -> float:
    """The mean size of a random sample of the files (0 when none can be read)."""
    chosen = random.Random(seed).sample(range(len(paths)), min(sample, len(paths)))
    sizes = []
    for index in chosen:
        try:
            sizes.append(os.path.getsize(paths[index]))
        except OSError:
            pass
    return float(np.mean(sizes)) if sizes else 0.0


def on_spinning_disk(path: str) -> bool:
    """Whether the file lies on a disk that says it rotates (sysfs ``queue/rotational``; False when unknown)."""
    try:
        device = os.stat(path).st_dev
        block = os.path.realpath(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
        for folder in (block, os.path.dirname(block)):  # a partition's queue is its disk's
            flag = os.path.join(folder, "queue", "rotational")
            if os.path.exists(flag):
                with open(flag, encoding="ascii") as handle:
                    return handle.read().strip() == "1"
    except OSError:
        pass
    return False
