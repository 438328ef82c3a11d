"""Where a list's files lie, and whether they are cached: what decides the order a pack reads them in.

On a spinning disk a shuffled list costs a seek per file (~110 files/s); the same files
read in the order they lie on the disk stream at nearly the sequential rate.  Inode
numbers stand in for that order: a filesystem that allocates inodes as files are
written (ext4, XFS) places their data the same way, so files written together (an
extracted archive, a copied folder) have neighbouring inodes and neighbouring blocks.
They come from the directory entries (``d_ino``), one listing per folder, without a
stat or an open per file, which on a cold disk would cost the very seeks this avoids.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from typing import Sequence

import numpy as np

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
