"""What each shard of a pack holds: pure functions of the source, the seed and the options.

Nothing here touches files or global random state, so the same arguments give the same
plan in every process, on every attempt: a shard's bytes depend on the source, the seed
and the options alone, never on ``workers`` or on timing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Container, Iterator

import numpy as np

from ..errors import PackError
from ..format.framing import MAGIC
from ..format.manifest import FORMAT_VERSION
from .archive import ArchiveSource
from .prepare import PrepareOptions
from .sources import Source, SourceItem

ORDERS = ("auto", "list", "disk")

DEFAULT_SEED = 0
SHUFFLE = "splitmix64-keys"  # the shuffle's name, in the fingerprint and the manifest: packs made with another differ


@dataclass(frozen=True)
class PackOptions:
    shards: int = 64
    seed: int = DEFAULT_SEED
    workers: int | None = None  # processes; None means all cores
    prepare: PrepareOptions = field(default_factory=PrepareOptions)
    strict: bool = False  # any bad input fails the pack
    fsync: bool = True  # make every shard durable before the manifest commits the dataset
    overwrite: bool = False  # replace a complete dataset in OUT
    # the order inputs are read in, and how; none of these changes a byte of the output
    order: str = "auto"  # "list", "disk" (spill, then write), or "auto": disk for archives and uncached lists
    spill_dir: str | None = None  # where a disk-order pack parks prepared records (default: in OUT)
    spill_memory: int = 1 << 30  # bytes per spill bucket: what the second pass maps at a time
    device_reads: bool = True  # disk order may read a list's files from their block device (device_reads)

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise PackError(f"--shards must be at least 1, not {self.shards}")
        if self.order not in ORDERS:
            raise PackError(f"order must be one of {', '.join(ORDERS)}, not {self.order!r}")


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z):
    """SplitMix64's finaliser: a bijection of 64-bit words that scrambles every bit (Python int or uint64 array)."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z if isinstance(z, np.ndarray) else z & _MASK64)
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z = (z if isinstance(z, np.ndarray) else z & _MASK64)
    return z ^ (z >> 31)


def shuffle_keys(seed: int, indices: np.ndarray) -> np.ndarray:
    """A 64-bit key for each item, from (seed, item index) alone: sorting by key is the pack's shuffle.

    Why keys and not a permutation of N: an item's key is known the moment it is
    read, without knowing how many items follow, so a tar can be packed in one
    pass in the order it is read (``spill``), and a list read in any order gives
    the same shards.  Ties (two equal keys) are broken by the index.
    """
    base = np.uint64(_mix64(seed & _MASK64))
    with np.errstate(over="ignore"):
        return _mix64(base + (np.asarray(indices, dtype=np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN))


def shuffled_order(count: int, seed: int) -> np.ndarray:
    """A permutation of range(count): the items sorted by their shuffle keys.

    The keys are drawn a slice at a time: drawn at once, their temporaries would
    cost five times the keys' own 8 bytes a line (a 14.2M list: 0.6 GB).
    """
    keys = np.empty(count, dtype=np.uint64)
    for start in range(0, count, 1 << 20):
        stop = min(count, start + (1 << 20))
        keys[start:stop] = shuffle_keys(seed, np.arange(start, stop))
    return np.argsort(keys, kind="stable")


def split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    """Cut range(count) into ``parts`` contiguous (start, stop) ranges whose sizes differ by at most one."""
    if parts < 1:
        raise ValueError("parts must be at least 1")
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for part in range(parts):
        stop = start + base + (1 if part < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def shard_spans(source: Source, options: PackOptions) -> list[tuple[int, int]]:
    """Each shard's (start, stop) in the shuffled list; refuses more shards than images."""
    if options.shards > len(source):
        raise PackError(f"--shards {options.shards} exceeds the number of images ({len(source)}) in {source.description}")
    return split_evenly(len(source), options.shards)


def fingerprint(source: Source | ArchiveSource, options: PackOptions) -> str:
    """A hash of everything that decides the shards' bytes (not workers, strictness or read order)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([MAGIC, FORMAT_VERSION, SHUFFLE, options.shards, options.seed, asdict(options.prepare)]).encode())
    if isinstance(source, ArchiveSource):  # its items are only known by reading it: its files stand for them
        digest.update(json.dumps([(path, os.stat(path).st_size, os.stat(path).st_mtime_ns)
                                  for path in source.archives]).encode())
        return digest.hexdigest()
    digest.update(f"{source.root}\0{sorted(source.masks.items())}\n".encode())
    digest.update(source.lines)  # the columns as they lie: no copy of a huge list
    digest.update(source.keys.blob)
    digest.update(source.keys.ends)
    digest.update(repr(source.labels.distinct).encode())
    digest.update(source.labels.codes)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardTask:
    index: int
    out_dir: str
    items: list[SourceItem]
    prepare: PrepareOptions
    strict: bool
    attempt: str | None = None  # names this attempt's temporary files, when attempts may run at once (shard ranges)

    @property
    def stem(self) -> str:
        return shard_stem(self.index)


def plan_tasks(source: Source, out_dir: str, options: PackOptions, spans: list[tuple[int, int]],
               skip: Container[int] = ()) -> Iterator[ShardTask]:
    """One task per shard not in ``skip``: its span of the shuffled list, resolved into items.

    A generator, so that a shard's items exist only while its task is queued.
    """
    order = shuffled_order(len(source), options.seed)
    for index, (start, stop) in enumerate(spans):
        if index not in skip:
            items = [source.item(i) for i in order[start:stop].tolist()]
            yield ShardTask(index, out_dir, items, options.prepare, options.strict)
