"""Worker processes that never outlive the command that forked them (ground floor: pack and measure use it)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` dies (Linux; elsewhere a no-op).

    Why: the workers of a pack or of ``recpack stats`` hold the output folder's lock
    (inherited), and a pack's would finish its shard and rename it into place under
    a rerun; one outliving a killed command would keep every rerun refused or mix two
    runs.  With this, none outlives its command.
    """
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
