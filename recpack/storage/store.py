"""The storage protocol: a dataset location's files, read whole or by byte range, listed, and put.

``Store`` is what the rest of recpack sees; ``open_store`` gives a ``LocalStore``
for a path and a ``RemoteStore`` (fsspec) for a URL.  Local reading keeps its own
fast path (memory maps, O_DIRECT writes); the local store is for the few
callers that handle both kinds alike (uploading, conditional puts, tests).

A ``RemoteStore`` holds its URL and options only: the fsspec client is built on
first use in each process (a DataLoader worker never uses a client forked from
its parent, whose connections and event loop belong to the parent), every
request goes through ``retry.with_retries``, and the backend's own retries are
turned off so that budget is the only one.  Credentials and the S3 endpoint come
from the backend's standard chain (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, the
environment, instance roles; for GCS, application default credentials):
recpack never reads, stores or prints them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import StorageError
from .cache import BlockCache, block_key
from .retry import RetryPolicy, ShortRead, with_retries
from .urls import Location, location, shown


@dataclass(frozen=True)
class StorageOptions:
    """How a remote dataset is read; none of these change which records an epoch holds."""

    requests_in_flight: int = 8  # ranged GETs at once per process (each of a DataLoader's workers has its own)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 60.0  # a connection or a read silent this long fails (and is retried)
    cache_dir: str | None = None  # a local folder for blocks of remote files (``cache``); None: no cache
    cache_mb: int = 10_000  # the cache's size limit
    block_mb: int = 8  # the cache's block size

    def __post_init__(self) -> None:
        if self.requests_in_flight < 1 or self.timeout_s <= 0 or self.cache_mb < 0 or self.block_mb < 1:
            raise ValueError("StorageOptions needs requests_in_flight >= 1, timeout_s > 0, cache_mb >= 0, block_mb >= 1")


class Store(Protocol):
    """A dataset location's files, by name relative to it."""

    location: Location

    def read(self, name: str, start: int = 0, end: int | None = None, *,
             identity: tuple[int, int] | None = None) -> bytes | memoryview: ...

    def size(self, name: str) -> int: ...

    def exists(self, name: str) -> bool: ...

    def list(self) -> list[str]: ...

    def put_file(self, local_path: str, name: str) -> None: ...

    def put_bytes(self, name: str, data: bytes, *, if_absent: bool = False) -> None: ...


class AlreadyExists(StorageError):
    """A conditional put found the name taken."""


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


class RemoteStore:
    """A URL's files through fsspec, with retries, per-process clients and the optional block cache."""

    def __init__(self, where: Location, options: StorageOptions = StorageOptions()):
        self.location, self.options = where, options
        self._fs: Any = None
        self._pid = -1
        self._lock = threading.Lock()
        self.cache = (BlockCache(options.cache_dir, options.cache_mb << 20, options.block_mb << 20)
                      if options.cache_dir else None)

    def __getstate__(self) -> dict:
        return {"location": self.location, "options": self.options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["location"], state["options"])

    def __repr__(self) -> str:
        return f"RemoteStore({self.location})"

    # --- the client ---------------------------------------------------------------------------

    def client(self):
        """This process's fsspec filesystem, built on first use here (never one inherited through a fork)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._fs, self._pid = self._new_client(), os.getpid()
        return self._fs

    def _new_client(self):
        import fsspec

        scheme, timeout = self.location.scheme, self.options.timeout_s
        if scheme == "s3":
            config = {"connect_timeout": timeout, "read_timeout": timeout, "retries": {"total_max_attempts": 1}}
            fs = fsspec.filesystem("s3", skip_instance_cache=True, config_kwargs=config)
            fs.retries = 1  # s3fs's own loop: off, ours is the one budget
            return fs
        if scheme in ("http", "https"):
            import aiohttp

            client = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)}
            return fsspec.filesystem(scheme, skip_instance_cache=True, client_kwargs=client)
        return fsspec.filesystem(scheme, skip_instance_cache=True)

    def forget_client(self) -> None:
        """Drop the client, so that the next request builds one that reads the credentials anew (they expired)."""
        self._pid = -1

    # --- the protocol -------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return self.location.join(name)

    def _retried(self, call, what: str):
        return with_retries(call, what, self.options.retry, on_expired=self.forget_client)

    def _get(self, name: str, start: int, end: int | None) -> bytes:
        url = self.url(name)

        def call() -> bytes:
            data = self.client().cat_file(url, start=start, end=end)
            if end is not None and len(data) != end - start:
                raise ShortRead(f"{len(data)} bytes for a range of {end - start}")
            return data

        span = "" if start == 0 and end is None else f" bytes {start}-{'' if end is None else end - 1}"
        try:
            return self._retried(call, url + span)
        except FileNotFoundError:
            raise StorageError(f"{shown(url)}: no such object") from None

    def read(self, name, start=0, end=None, *, identity=None):
        """Bytes start..end-1 of ``name`` (all of it by default); ``identity`` = (size, CRC32C) from the
        manifest lets the block cache serve it."""
        if self.cache is not None and self.cache.enabled and identity is not None:
            size = identity[0]
            key = block_key(shown(self.url(name)), size, identity[1])
            return self.cache.read(key, size, start, size if end is None else end,
                                   lambda low, high: self._get(name, low, high))
        return self._get(name, start, end)

    def size(self, name):
        url = self.url(name)
        try:
            return int(self._retried(lambda: self.client().size(url), url))
        except FileNotFoundError:
            raise StorageError(f"{shown(url)}: no such object") from None

    def exists(self, name):
        url = self.url(name)

        def call() -> bool:
            try:
                self.client().info(url)
                return True
            except FileNotFoundError:
                return False

        return self._retried(call, url)

    def list(self):
        root = self.location.root
        found = self._retried(lambda: self.client().find(root), root)
        prefix = self.client()._strip_protocol(root).rstrip("/") + "/"
        return sorted(path[len(prefix):] for path in found if path.startswith(prefix))

    def put_file(self, local_path, name):
        url = self.url(name)
        self._retried(lambda: self.client().put_file(local_path, url), url)

    def put_bytes(self, name, data, *, if_absent=False):
        """Write ``data`` as ``name``; with ``if_absent``, only if nothing has that name.

        On S3 that is one conditional request (``If-None-Match: *``), which two
        writers cannot both win; where a store refuses the condition (501) or
        has none, it is a check, then a put: a race between two writers there
        is not detected.
        """
        url = self.url(name)
        fs = self.client()
        if if_absent and self.location.scheme == "s3":
            try:
                self._retried(lambda: fs.pipe_file(url, data, IfNoneMatch="*"), url)
                return
            except FileExistsError:
                raise AlreadyExists(f"{shown(url)}: already exists") from None
            except StorageError as error:
                if "NotImplemented" not in str(error) and "501" not in str(error):
                    raise
        if if_absent and self.exists(name):
            raise AlreadyExists(f"{shown(url)}: already exists")
        self._retried(lambda: self.client().pipe_file(url, data), url)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def open_store(path: str | Location, options: StorageOptions | None = None, *, write: bool = False) -> Store:
    """The store of a dataset path or URL (StorageError naming it when recpack cannot serve it)."""
    where = path if isinstance(path, Location) else location(path, write=write)
    if where.is_remote:
        return RemoteStore(where, options or StorageOptions())
    return LocalStore(where)
