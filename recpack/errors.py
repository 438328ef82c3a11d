"""The exceptions recpack raises on purpose.  Every one carries a one-line message
that names the file, line, shard or record at fault; the CLI prints it without a
traceback and exits non-zero.

    RecpackError
    +-- ListFileError            a line of an image list cannot be parsed
    +-- BadImageError            one input image is unusable (pack reports and skips it)
    +-- DatasetError             a packed dataset cannot be used
    |   +-- IncompleteDatasetError   no manifest: a pack was interrupted or never ran
    |   +-- ManifestError            the manifest is unreadable or inconsistent
    |   +-- CorruptRecordError       framing or checksum of one record is wrong
    +-- PackError                packing stopped (e.g. --strict and a bad input)
    +-- StorageError             a URL recpack cannot serve, or a store that failed past its retries
"""

from __future__ import annotations


class RecpackError(Exception):
    """Base class: a problem with the user's data or arguments, not a bug in recpack."""


class ListFileError(RecpackError):
    def __init__(self, path: str, line_number: int, problem: str):
        super().__init__(f"{path}:{line_number}: {problem}")
        self.path, self.line_number, self.problem = path, line_number, problem

    def __reduce__(self):  # survive pickling between processes
        return type(self), (self.path, self.line_number, self.problem)


class BadImageError(RecpackError):
    """Raised by the per-image checks; ``reason`` is short enough for a report column."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DatasetError(RecpackError):
    pass


class IncompleteDatasetError(DatasetError):
    pass


class ManifestError(DatasetError):
    pass


class CorruptRecordError(DatasetError):
    """``CorruptRecordError(shard, record, problem)``; with one argument, a ready message.

    The one-argument form is how torch's DataLoader rebuilds an exception from
    a worker process (with the worker's traceback in the message), so the
    training loop can still catch this type.
    """

    def __init__(self, shard: str, record: int | None = None, problem: str = ""):
        super().__init__(shard if record is None else f"{shard}: record {record}: {problem}")
        self.shard, self.record, self.problem = shard, record, problem

    def __reduce__(self):
        return type(self), (self.shard, self.record, self.problem)


class PackError(RecpackError):
    pass


class StorageError(RecpackError):
    """A URL recpack cannot serve (unknown scheme, missing backend), or a read or write that failed
    after its retries; the message names the URL without credentials (``storage.urls.shown``)."""
