"""``ProcessLock``: a thread lock that a forked child gets afresh.

Why: a DataLoader worker is a fork of the training process.  A plain lock that
one of the parent's threads held at that moment (a reader fetching, the cache
writing its ledger) stays held forever in the child, whose copy of that thread
does not exist; the first use there would hang.
"""

from __future__ import annotations

import os
import threading


class ProcessLock:
    def __init__(self) -> None:
        self._pid, self._lock = os.getpid(), threading.Lock()

    def __enter__(self) -> "ProcessLock":
        if self._pid != os.getpid():  # first use in a forked child: the inherited lock may be held by no one alive
            self._pid, self._lock = os.getpid(), threading.Lock()
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


_INHERITED: list[object] = []


def keep_inherited(client: object) -> None:
    """Hold a client a forked child inherited, for the child's whole life, unused.

    Why: its connections are the parent's sockets.  Dropped in the child, the
    client's finalizer would close them there (aiohttp's connector, a TLS
    goodbye, SQLite's checkpoint), and the parent's next request on a pooled
    connection waited for its read timeout (60 s, seen with an HTTP dataset
    read by DataLoader workers and then verified by the training process).
    """
    if client is not None:
        _INHERITED.append(client)
