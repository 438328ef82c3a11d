"""The LMDB key index of a dataset: source key -> (shard, record in shard, byte offset).

It lets ``recpack get OUT KEY`` find one image by the name it had in the
source list without reading any shard.  Keys are the paths as written in the
list (UTF-8); a key listed twice keeps its last record.

Beside the keys, reserved entries (``\\0shard N``: no path holds a NUL, and they sort
first) keep each shard's ``.rec`` size and CRC32C as the pack that wrote the index saw
them, so that an index left from another pack (a stale one) is recognised even where
its offsets happen to agree with this dataset's.
"""

from __future__ import annotations

import errno
import itertools
import os
import struct
from typing import Iterable, Iterator

import lmdb

from ..errors import DatasetError
from .manifest import KEY_INDEX_NAME, Manifest

_VALUE = struct.Struct("<IIQ")
_MAP_SIZE = 1 << 40  # address space only: LMDB files grow with what is written
_SHARD_PREFIX = b"\0shard "
_SHARD_VALUE = struct.Struct("<QI")  # the shard's .rec: bytes, CRC32C


def open_for_writing(dataset_dir: str) -> lmdb.Environment:
    """An environment whose commits do not fsync: ``close_for_writing`` syncs once at the end."""
    path = os.path.join(dataset_dir, KEY_INDEX_NAME)
    try:
        return lmdb.open(path, map_size=_MAP_SIZE, subdir=True, sync=False)
    except lmdb.Error as error:
        detail = " ".join(str(error).split()).removeprefix(f"{path}: ")
        raise OSError(errno.EIO, detail, path) from None


def add(env: lmdb.Environment, shard: int, entries: Iterable[tuple[str, int, int]],
        rec: tuple[int, int] | None = None) -> None:
    """Store (key, record in shard, offset) entries of one shard in a single transaction.

    ``rec`` is the shard's .rec (bytes, CRC32C), kept to recognise a stale index later.
    A failed write (a full disk) is an OSError naming the index, as any other file's would be.
    """
    items = ((key.encode("utf-8"), _VALUE.pack(shard, record, offset)) for key, record, offset in entries)
    if rec is not None:
        items = itertools.chain([(_SHARD_PREFIX + str(shard).encode(), _SHARD_VALUE.pack(*rec))], items)
    try:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(items)
    except lmdb.Error as error:
        raise _write_failed(env, error) from None


def close_for_writing(env: lmdb.Environment, durable: bool) -> None:
    """Close an index opened by ``open_for_writing``, first flushing it to stable storage if ``durable``."""
    try:
        if durable:
            env.sync(True)
    except lmdb.Error as error:
        raise _write_failed(env, error) from None
    finally:
        env.close()


def _write_failed(env: lmdb.Environment, error: lmdb.Error) -> OSError:
    path = env.path()
    detail = " ".join(str(error).split()).removeprefix(f"{path}: ")
    return OSError(errno.EIO, detail, path)


def expected(manifest: Manifest) -> bool:
    """Whether the dataset should have a key index: every packed one does, an imported one need not.

    The manifest records no flag for it, and needs none: every manifest that
    ``recpack pack`` wrote, since the first format version, has ``keys.lmdb``
    beside it, while ``recpack import`` writes none (its .rec files name no
    source keys) and is the only writer that sets ``created["imported"]``.
    """
    return not manifest.created.get("imported")


def _open_readonly(dataset_dir: str) -> lmdb.Environment:
    """The key index opened for reading without writing a byte (no lock file); one-line errors."""
    path = os.path.join(dataset_dir, KEY_INDEX_NAME)
    if not os.path.exists(path):
        raise DatasetError(f"{dataset_dir}: no key index ({KEY_INDEX_NAME}); it is written by recpack pack")
    try:
        env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    except lmdb.Error as error:
        raise _unreadable(path, error) from None
    try:
        _check_not_truncated(path, env)
    except BaseException:
        env.close()
        raise
    return env


def _check_not_truncated(path: str, env: lmdb.Environment) -> None:
    """Refuse a data file shorter than the pages LMDB's header says it holds.

    LMDB maps the file and trusts that header: a read past a truncated file's
    end is a SIGBUS that kills the process, not an error.  The header alone
    (its meta pages) is read here.
    """
    data_file = os.path.join(path, "data.mdb")
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(data_file)
    if size < needed:
        raise DatasetError(f"{data_file}: truncated key index ({size} bytes, its header says {needed})")


def _unreadable(path: str, error: lmdb.Error) -> DatasetError:
    """One line naming the index; LMDB's message repeats the path, so that is dropped."""
    detail = " ".join(str(error).split()).removeprefix(f"{path}: ")
    return DatasetError(f"{path}: unreadable key index ({detail})")


def count(dataset_dir: str) -> int:
    """How many keys the index holds (from LMDB's own statistics: only the reserved entries are read)."""
    env = _open_readonly(dataset_dir)
    try:
        with env.begin() as txn:
            return int(env.stat()["entries"]) - len(_shard_files(txn))
    finally:
        env.close()


def shard_files(dataset_dir: str) -> dict[int, tuple[int, int]]:
    """Shard -> its .rec's (bytes, CRC32C) as the pack that wrote the index saw them (empty if it kept none)."""
    env = _open_readonly(dataset_dir)
    try:
        with env.begin() as txn:
            return _shard_files(txn)
    except lmdb.Error as error:
        raise _unreadable(os.path.join(dataset_dir, KEY_INDEX_NAME), error) from None
    finally:
        env.close()


def _shard_files(txn: lmdb.Transaction) -> dict[int, tuple[int, int]]:
    cursor = txn.cursor()
    found = {}
    if cursor.set_range(_SHARD_PREFIX):
        for key, value in cursor:
            if not key.startswith(_SHARD_PREFIX):
                break
            found[int(key[len(_SHARD_PREFIX):])] = _SHARD_VALUE.unpack(value)
    return found


def entries(dataset_dir: str) -> Iterator[tuple[str, int, int, int]]:
    """Every (key, shard, record, offset) the index holds, in key order (the reserved entries left out)."""
    env = _open_readonly(dataset_dir)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                if not key.startswith(b"\0"):
                    yield (key.decode("utf-8", "replace"), *_VALUE.unpack(value))
    except (lmdb.Error, struct.error) as error:
        raise DatasetError(f"{os.path.join(dataset_dir, KEY_INDEX_NAME)}: unreadable key index ({error})") from None
    finally:
        env.close()


def lookup(dataset_dir: str, key: str) -> tuple[int, int, int] | None:
    """(shard, record, offset) of ``key``, or None when no record has that key."""
    env = _open_readonly(dataset_dir)
    try:
        with env.begin() as txn:
            value = txn.get(key.encode("utf-8"))
    except lmdb.Error as error:
        raise _unreadable(os.path.join(dataset_dir, KEY_INDEX_NAME), error) from None
    finally:
        env.close()
    return None if value is None else _VALUE.unpack(value)
