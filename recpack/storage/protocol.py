"""The storage protocol's types: ``Store`` (what the rest of recpack sees), ``StorageOptions``, ``AlreadyExists``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..errors import StorageError
from .retry import RetryPolicy

__all__ = ["AlreadyExists", "RetryPolicy", "StorageOptions", "Store"]
from .urls import Location


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
