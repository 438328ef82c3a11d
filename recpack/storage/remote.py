"""``RemoteStore``: a URL's files through fsspec (http(s)://), and the base of ``s3.S3Store`` and ``gcs.GCSStore``.

The client is built on first use in each process (a DataLoader worker never
uses a client forked from its parent, whose connections and event loop belong
to the parent); every request goes through ``retry.with_retries``, and the
backend's own retries are off, so that budget is the only one.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import StorageError
from .cache import BlockCache, block_key
from .process import ProcessLock, keep_inherited
from .protocol import AlreadyExists, StorageOptions
from .retry import ShortRead, with_retries
from .urls import Location, shown


class RemoteStore:
    """A URL's files through fsspec (http(s)://, any other fsspec scheme), with retries, per-process clients and the block cache.

    Subclasses for other clients (``s3.S3Store``, ``gcs.GCSStore``) replace the client and the
    primitive requests (``_fetch``, ``_size``, ``_exists``, ``_list``, ``_put_file``,
    ``_put``); retries, range checks, the cache and error wording stay here.
    """

    def __init__(self, where: Location, options: StorageOptions = StorageOptions()):
        self.location, self.options = where, options
        self._client: Any = None
        self._pid = -1
        self._lock = ProcessLock()
        self.cache = (BlockCache(options.cache_dir, options.cache_mb << 20, options.block_mb << 20)
                      if options.cache_dir else None)

    def __getstate__(self) -> dict:
        return {"location": self.location, "options": self.options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["location"], state["options"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"

    # --- the client ---------------------------------------------------------------------------

    def client(self):
        """This process's client, built on first use here (never one inherited through a fork)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    if self._pid != -1:  # forked: the parent's client must not be closed here (``keep_inherited``)
                        keep_inherited(self._client)
                    self._client, self._pid = self._new_client(), os.getpid()
        return self._client

    def _new_client(self):
        import fsspec

        scheme, timeout = self.location.scheme, self.options.timeout_s
        if scheme in ("http", "https"):
            import aiohttp

            client = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)}
            return fsspec.filesystem(scheme, skip_instance_cache=True, client_kwargs=client)
        return fsspec.filesystem(scheme, skip_instance_cache=True)

    def forget_client(self) -> None:
        """Drop the client, so that the next request builds one that reads the credentials anew (they expired)."""
        self._pid = -1

    # --- the primitive requests (one try each; FileNotFoundError for a missing object) ---------

    def _fetch(self, url: str, start: int, end: int | None) -> bytes:
        return self.client().cat_file(url, start=start, end=end)

    def _size(self, url: str) -> int:
        return int(self.client().size(url))

    def _exists(self, url: str) -> bool:
        try:
            self.client().info(url)
            return True
        except FileNotFoundError:
            return False

    def _list(self, root: str) -> list[str]:
        prefix = self.client()._strip_protocol(root).rstrip("/") + "/"
        return [path[len(prefix):] for path in self.client().find(root) if path.startswith(prefix)]

    def _put_file(self, local_path: str, url: str) -> None:
        self.client().put_file(local_path, url)

    def _put(self, url: str, data: bytes, if_absent: bool) -> None:
        """A put; with ``if_absent``, FileExistsError if the name is taken (here: a check, then the put)."""
        if if_absent and self._exists(url):
            raise FileExistsError(url)
        self.client().pipe_file(url, data)

    # --- the protocol -------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return self.location.join(name)

    def _retried(self, call, what: str):
        return with_retries(call, what, self.options.retry, on_expired=self.forget_client)

    def _get(self, name: str, start: int, end: int | None) -> bytes:
        url = self.url(name)

        def call() -> bytes:
            data = self._fetch(url, start, end)
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
            return self._retried(lambda: self._size(url), url)
        except FileNotFoundError:
            raise StorageError(f"{shown(url)}: no such object") from None

    def exists(self, name):
        url = self.url(name)
        return self._retried(lambda: self._exists(url), url)

    def list(self):
        root = self.location.root
        return sorted(self._retried(lambda: self._list(root), root))

    def put_file(self, local_path, name):
        url = self.url(name)
        self._retried(lambda: self._put_file(local_path, url), url)

    def put_bytes(self, name, data, *, if_absent=False):
        """Write ``data`` as ``name``; with ``if_absent``, only if nothing has that name.

        On S3 that is one conditional request (``If-None-Match: *``), which two
        writers cannot both win; where a store has no such condition it is a
        check, then a put: a race between two writers there is not detected.
        """
        url = self.url(name)
        try:
            self._retried(lambda: self._put(url, data, if_absent), url)
        except FileExistsError:
            raise AlreadyExists(f"{shown(url)}: already exists") from None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
