"""The storage protocol (``protocol.Store``) and its stores: a dataset location's files, read whole or by
byte range, listed, and put.

``open_store`` gives a ``LocalStore`` for a path, an ``s3.S3Store`` for ``s3://``,
a ``gcs.GCSStore`` for ``gs://`` and a ``remote.RemoteStore`` (fsspec) for ``http(s)://``.  Local
reading keeps its own fast path (memory maps, O_DIRECT writes); the local store
is for the few callers that handle both kinds alike (verify, uploads, tests).

A remote store holds its URL and options only: its client is built on first use
in each process, every request goes through ``retry.with_retries`` (the
backend's own retries are off), and credentials and the S3 endpoint come from
the backend's standard chain (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, the
environment, instance roles; for GCS, application default credentials):
recpack never reads, stores or prints them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil

from .gcs import GCSStore
from .protocol import AlreadyExists, StorageOptions, Store
from .remote import RemoteStore
from .s3 import S3Store
from .urls import Location, location

__all__ = ["AlreadyExists", "GCSStore", "LocalStore", "RemoteStore", "S3Store", "StorageOptions", "Store", "open_store"]


class LocalStore:
    def __init__(self, where: Location):
        self.location = where

    def _path(self, name: str) -> str:
        return os.path.join(self.location.root, name)

    def read(self, name, start=0, end=None, *, identity=None):
        with open(self._path(name), "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size if end is None else end
            return os.pread(handle.fileno(), max(size - start, 0), start)

    def size(self, name):
        return os.path.getsize(self._path(name))

    def exists(self, name):
        return os.path.exists(self._path(name))

    def list(self):
        root = self.location.root
        return sorted(os.path.relpath(os.path.join(folder, name), root)
                      for folder, _, names in os.walk(root) for name in names)

    def put_file(self, local_path, name):
        target = self._path(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(local_path, target + ".tmp")
        os.replace(target + ".tmp", target)

    def put_bytes(self, name, data, *, if_absent=False):
        target = self._path(name)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
        try:
            if if_absent:  # link(2) fails if the name exists: a conditional put in one step
                try:
                    os.link(temporary, target)
                except FileExistsError:
                    raise AlreadyExists(f"{target}: already exists") from None
            else:
                os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def open_store(path: str | Location, options: StorageOptions | None = None, *, write: bool = False) -> Store:
    """The store of a dataset path or URL (StorageError naming it when recpack cannot serve it)."""
    where = path if isinstance(path, Location) else location(path, write=write)
    if where.is_remote:
        return _remote_store(where, options or StorageOptions())
    return LocalStore(where)


@functools.lru_cache(maxsize=64)
def _remote_store(where: Location, options: StorageOptions) -> RemoteStore:
    """One store per location and options in a process, so that its client (made on first use, a few hundred
    ms for botocore) serves every caller: verify opens the store once per shard."""
    kind = {"s3": S3Store, "gs": GCSStore, "gcs": GCSStore}.get(where.scheme, RemoteStore)
    return kind(where, options)
