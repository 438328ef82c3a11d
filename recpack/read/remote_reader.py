"""A shard at a URL: the same records as ``ShardReader``'s, read by ranged requests through a ``Store``.

A run of records (a window, or the part of one a group needs) is one ranged GET
of exactly its bytes, not the whole shard: a rank reads a part of each shard
per epoch.  Concurrency comes from the caller's reader threads, one request
each (``RecordDataset`` gives a remote dataset ``StorageOptions.requests_in_flight``
of them per process); retries and the optional block cache are the store's.
Everything else -- framing, CRC checks, damaged records as values -- is
``ShardReader``'s own code, given the bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import crc32c
import numpy as np

from ..errors import DatasetError, RecpackError
from ..format import manifest as mf
from ..format.schema import RECORD_INDEX_DTYPE
from ..storage.process import ProcessLock
from ..storage.store import RemoteStore, Store
from ..storage.urls import shown
from .shard_reader import ShardReader


def remote_readers(store: Store, shards: tuple[mf.ShardFiles, ...]) -> list[RemoteShardReader]:
    """Readers of a remote dataset's shards, sharing one ``RecordIndexes`` (their .rpi files fetched together)."""
    indexes = RecordIndexes(store, shards)
    return [RemoteShardReader(store, shard, indexes=indexes, position=position) for position, shard in enumerate(shards)]


class RecordIndexes:
    """Every shard's record index (.rpi), fetched together on first use in each process.

    Why together: an epoch's first groups draw windows from nearly every shard,
    and fetched one at a time as planning meets them, 1,000 shards would cost
    1,000 round trips before the first batch, in every DataLoader worker.
    """

    def __init__(self, store: Store, shards: tuple[mf.ShardFiles, ...]):
        self.store, self.shards = store, shards
        self._rows: list[np.ndarray] | None = None
        self._pid = -1
        self._lock = ProcessLock()

    def __getstate__(self) -> dict:
        return {"store": self.store, "shards": self.shards}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["store"], state["shards"])

    def rows(self, position: int) -> np.ndarray:
        with self._lock:
            if self._pid != os.getpid():
                threads = getattr(getattr(self.store, "options", None), "requests_in_flight", 8)
                with ThreadPoolExecutor(threads, thread_name_prefix="recpack-index") as pool:
                    self._rows = list(pool.map(lambda shard: load_remote_rpi(self.store, shard), self.shards))
                self._pid = os.getpid()
        return self._rows[position]


def load_remote_rpi(store: Store, shard: mf.ShardFiles) -> np.ndarray:
    """A shard's .rpi rows from the store, checked against the manifest's size and CRC32C first."""
    info = shard.rpi
    data = bytes(store.read(info.name, identity=(info.bytes, info.crc32c)))
    where = shown(store.url(info.name))
    if len(data) != info.bytes or crc32c.crc32c(data) != info.crc32c:
        raise DatasetError(f"{where}: {len(data)} bytes, CRC32C {crc32c.crc32c(data):08x}; "
                           f"the manifest says {info.bytes} bytes, {info.crc32c:08x} (replaced or damaged)")
    rows = np.load(io.BytesIO(data), allow_pickle=False)
    if rows.dtype != RECORD_INDEX_DTYPE or rows.ndim != 1 or len(rows) != shard.records:
        raise DatasetError(f"{where}: not the record index of {shard.records} records the manifest lists")
    return rows


class RemoteShardReader(ShardReader):
    """One shard of a dataset at a URL; pickles as the store's URL and the manifest's entry, no client."""

    def __init__(self, store: RemoteStore | Store, shard: mf.ShardFiles, index_rows: np.ndarray | None = None,
                 indexes: RecordIndexes | None = None, position: int = 0):
        super().__init__(shown(store.url(shard.rec.name)), shown(store.url(shard.rpi.name)), shard.stem, index_rows)
        self.store, self.shard, self.indexes, self.position = store, shard, indexes, position

    def __getstate__(self) -> dict:
        return {"store": self.store, "shard": self.shard, "index_rows": self.index_rows, "indexes": self.indexes,
                "position": self.position}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = (self.indexes.rows(self.position) if self.indexes is not None
                          else load_remote_rpi(self.store, self.shard))
        return self._rows

    def file_size(self) -> int:
        return self.shard.rec.bytes

    def _open(self) -> int:
        raise RecpackError(f"{self.rec_path}: a remote shard has no file descriptor")

    def advise_willneed(self, first: int, stop: int) -> None:
        """Nothing to advise: a remote run is read when asked, by as many threads as the caller runs."""

    def read_run(self, first: int, stop: int, verify: bool = True):
        start = int(self.rows[first]["offset"])
        info = self.shard.rec
        data = self.store.read(info.name, start, self._end_of(stop - 1), identity=(info.bytes, info.crc32c))
        return self.parse_run(memoryview(data), start, first, stop, verify)

    @contextlib.contextmanager
    def _stream(self) -> Iterator[_RangeStream]:
        yield _RangeStream(self.store, self.shard.rec.name, self.shard.rec.bytes)

    def _range(self, offset: int, size: int) -> bytes:
        return bytes(self.store.read(self.shard.rec.name, offset, offset + size))

    def close(self) -> None:
        """Nothing of this reader's own to close: the store's client lives as long as the process."""


class _RangeStream:
    """``seek`` and ``read(n)`` over a remote file of known size, one ranged read per call."""

    def __init__(self, store: Store, name: str, size: int):
        self.store, self.name, self.size, self.position = store, name, size, 0

    def seek(self, position: int) -> None:
        self.position = position

    def read(self, count: int) -> bytes:
        end = min(self.position + count, self.size)
        if end <= self.position:
            return b""
        data = bytes(self.store.read(self.name, self.position, end))
        self.position = end
        return data
