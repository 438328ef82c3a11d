"""An optional local cache of remote files, in fixed blocks, bounded in bytes, least recently used evicted first.

Why blocks and not whole shards: a rank reads a different part of each shard
every epoch, so a whole-shard cache would download what it does not need yet;
blocks (8 MiB by default, a little more than a 64-record window of ImageNet
JPEGs) are fetched when a window needs them, one ranged GET per run of missing
blocks, and serve the neighbouring windows of later epochs.  A block's name is a
hash of its file's URL, size and CRC32C (from the manifest) and its number, so a
repacked dataset at the same URL never reads stale blocks.

The rule: a block is kept only if it fits (``block_bytes <= limit_bytes``); once
written, the least recently used blocks are deleted until the total is back
under the limit.  Nothing ever waits for space: when the limit is smaller than
a block the cache stays empty and every read streams from the store, so a
limit smaller than what is read can slow an epoch but never stop it.

Several processes (DataLoader workers, ranks on one machine) may share a cache
folder: the ledger of blocks, sizes and last uses is an SQLite table, each block
is written under a temporary name and renamed, and a block deleted while
another process reads it stays readable to that process (POSIX unlink).  The
total can pass the limit by the blocks being written at that moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from typing import Callable

from .process import ProcessLock, keep_inherited

LEDGER_NAME = "ledger.sqlite"
_ORPHAN_AGE_S = 300  # a block file with no ledger row, older than this, is a crashed writer's: removed on open


def block_key(url: str, size: int, crc: int) -> str:
    """The name blocks of one remote file's content share (the URL without secrets, its size and CRC32C)."""
    return hashlib.sha256(f"{url}|{size}|{crc:08x}".encode()).hexdigest()[:32]


class BlockCache:
    """``read(key, size, start, end, fetch)``: bytes start..end-1 of a file of ``size`` bytes, from the cache
    where it has them and from ``fetch(start, end)`` (the store's ranged read) where it has not.

    Opened lazily in each process (the SQLite connection must not cross a fork).
    """

    def __init__(self, folder: str, limit_bytes: int, block_bytes: int = 8 << 20):
        if limit_bytes < 0 or block_bytes < 1:
            raise ValueError("a cache needs limit_bytes >= 0 and block_bytes >= 1")
        self.folder, self.limit_bytes, self.block_bytes = folder, limit_bytes, block_bytes
        self._db: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = ProcessLock()

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "limit_bytes": self.limit_bytes, "block_bytes": self.block_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def enabled(self) -> bool:
        return self.block_bytes <= self.limit_bytes

    def read(self, key: str, size: int, start: int, end: int, fetch: Callable[[int, int], bytes]) -> memoryview:
        if not self.enabled or end <= start:
            return memoryview(fetch(start, end))
        size_b = self.block_bytes
        first, last = start // size_b, (end - 1) // size_b
        pieces: dict[int, bytes] = {}
        for block in range(first, last + 1):
            data = self._get(key, block)
            if data is not None:
                pieces[block] = data
        missing = [block for block in range(first, last + 1) if block not in pieces]
        for run in _runs(missing):
            low, high = run[0] * size_b, min((run[-1] + 1) * size_b, size)
            data = memoryview(fetch(low, high))
            for block in run:
                piece = bytes(data[block * size_b - low : min((block + 1) * size_b, size) - low])
                pieces[block] = piece
                self._put(key, block, piece)
        joined = b"".join(pieces[block] for block in range(first, last + 1))
        base = first * size_b
        return memoryview(joined)[start - base : end - base]

    # --- blocks and the ledger -------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, "blocks", name[:2], name)

    def _ledger(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            if self._pid != -1:  # forked: the parent's connection must not be closed here
                keep_inherited(self._db)
            os.makedirs(os.path.join(self.folder, "blocks"), exist_ok=True)
            db = sqlite3.connect(os.path.join(self.folder, LEDGER_NAME), timeout=60, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS blocks (name TEXT PRIMARY KEY, bytes INTEGER, used REAL)")
            db.execute("CREATE INDEX IF NOT EXISTS blocks_by_use ON blocks (used)")
            self._db, self._pid = db, os.getpid()
            self._remove_orphans()
        return self._db

    def _get(self, key: str, block: int) -> bytes | None:
        name = f"{key}.{block}"
        try:
            with open(self._path(name), "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        with self._lock:
            self._ledger().execute("UPDATE blocks SET used = ? WHERE name = ?", (time.time(), name))
        return data

    def _put(self, key: str, block: int, data: bytes) -> None:
        if len(data) > self.limit_bytes:
            return
        name = f"{key}.{block}"
        path = self._path(name)
        with self._lock:
            db = self._ledger()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?)", (name, len(data), time.time()))
                self._evict(db, keep=name)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _evict(self, db: sqlite3.Connection, keep: str) -> None:
        """Delete least recently used blocks until the total fits the limit (inside the caller's transaction)."""
        total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM blocks").fetchone()[0]
        while total > self.limit_bytes:
            oldest = db.execute("SELECT name, bytes FROM blocks WHERE name != ? ORDER BY used LIMIT 64",
                                (keep,)).fetchall()
            if not oldest:
                break
            for name, nbytes in oldest:
                db.execute("DELETE FROM blocks WHERE name = ?", (name,))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(name))
                total -= nbytes
                if total <= self.limit_bytes:
                    break

    def _remove_orphans(self) -> None:
        """Block files without a ledger row (a writer died between the rename and the row): not counted, so removed."""
        known = {name for (name,) in self._db.execute("SELECT name FROM blocks")}
        now = time.time()
        for folder, _, names in os.walk(os.path.join(self.folder, "blocks")):
            for name in names:
                path = os.path.join(folder, name)
                if name not in known:
                    with contextlib.suppress(FileNotFoundError):
                        if now - os.stat(path).st_mtime > _ORPHAN_AGE_S:
                            os.unlink(path)

    def total_bytes(self) -> int:
        """Bytes the ledger counts (what the limit bounds)."""
        with self._lock:
            return self._ledger().execute("SELECT COALESCE(SUM(bytes), 0) FROM blocks").fetchone()[0]

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        elif self._db is not None:
            keep_inherited(self._db)
        self._db, self._pid = None, -1


def _runs(blocks: list[int]) -> list[list[int]]:
    """Consecutive numbers grouped: [1, 2, 4] -> [[1, 2], [4]]."""
    runs: list[list[int]] = []
    for block in blocks:
        if runs and runs[-1][-1] + 1 == block:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs
