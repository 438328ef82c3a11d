"""The page cache: evict files from it and check, with mincore(2), how much of them is still there.

Cold-cache figures are only honest if the eviction worked, so every eviction
is followed by a residency check that says so when it did not.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Iterable

from ..pack.layout import libc as layout_libc
from ..pack.layout import resident_pages

RESIDENT_TOLERANCE = 0.01  # a cold stage with more of its files still cached than this gets a note


@dataclass(frozen=True)
class CacheState:
    """What eviction achieved: ``resident`` is the fraction still cached afterwards (None: unknown)."""

    evicted: bool
    resident: float | None
    note: str | None

    @property
    def cold(self) -> bool:
        return self.evicted and self.resident is not None and self.resident <= RESIDENT_TOLERANCE


def evict(paths: Iterable[str]) -> None:
    """Drop the files' pages from the page cache (only clean, unmapped pages can go; fsync cleans them)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(path: str, libc=None) -> tuple[int, int]:
    """(bytes of the file in the page cache, file size), by mincore(2) over a map that is never touched."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        resident = resident_pages(fd, size, libc)
    except OSError as error:
        raise OSError(error.errno, error.strerror, path) from None
    finally:
        os.close(fd)
    return min(resident * mmap.PAGESIZE, size), size


def resident_fraction(paths: list[str]) -> float:
    libc = layout_libc()
    cached = total = 0
    for path in paths:
        resident, size = resident_bytes(path, libc)
        cached, total = cached + resident, total + size
    return cached / total if total else 0.0


def make_cold(paths: list[str]) -> CacheState:
    """Evict ``paths`` and say whether it worked, in words the user can act on."""
    if not hasattr(os, "posix_fadvise"):
        return CacheState(False, None, "this platform has no posix_fadvise: the files were not evicted, figures may be RAM's")
    try:
        evict(paths)
    except OSError as error:
        return CacheState(False, None, f"eviction failed ({error}): figures may be RAM's")
    try:
        resident = resident_fraction(paths)
    except (OSError, AttributeError) as error:
        return CacheState(True, None, f"evicted, but residency could not be checked ({error}): figures may be RAM's")
    if resident > RESIDENT_TOLERANCE:
        return CacheState(True, resident, f"{resident:.0%} of the files stayed in the page cache after eviction "
                          "(mapped or locked by another process, or the filesystem ignores the advice): "
                          "figures are partly RAM's")
    return CacheState(True, resident, None)


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def make_warm(paths: list[str]) -> str | None:
    """Read the files once so that warm stages all see the page cache, not the first one the disk.

    Returns a note when they cannot all stay cached (more than half the
    available memory), in which case the warm figures mix RAM and disk.
    """
    total = sum(os.path.getsize(path) for path in paths)
    available = available_memory()
    if available is not None and total > available // 2:
        return (f"the files ({total / 1e9:.1f} GB) do not fit in half the free memory ({available / 1e9:.1f} GB): "
                "warm figures mix page cache and disk")
    buffer = bytearray(16 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
    return None


# --- resources ----------------------------------------------------------------------------
