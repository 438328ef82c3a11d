"""The packer's worker processes: forked once per pack, dying with it, reporting progress as they go.

Each worker keeps two things for its whole life, set by ``_init_worker``: the shared
progress counters and one set of staging buffers that every shard it writes reuses
(fresh memory costs page faults, and in a VM the host's backing, every time).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
import warnings
from typing import Callable, Iterable, Iterator, TypeVar

from PIL import Image
from tqdm import tqdm

from .writer import StagingBuffers

Task = TypeVar("Task")
Outcome = TypeVar("Outcome")

_progress: tuple | None = None  # (images, bytes) shared counters, set once per worker process
_buffers: StagingBuffers | None = None  # the worker's write buffers, reused for every shard it writes
_PR_SET_PDEATHSIG = 1


def _init_worker(images, nbytes, parent: int) -> None:
    global _progress, _buffers
    _die_with_parent(parent)
    _progress = (images, nbytes)
    _buffers = StagingBuffers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    # Pillow warns of images over ~89 Mpixel and refuses those over twice that (a bad input, reported);
    # below its limit a large image is just packed: no warning through the progress bar
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the pack process dies (Linux; elsewhere a no-op).

    Why: a worker outliving a killed pack would finish its shard and rename it
    into place under a rerun.  The workers hold the folder's lock too
    (inherited), so a rerun is refused while any of them lives; with this,
    none outlives the pack.
    """
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def report_progress(images: int, nbytes: int) -> None:
    if _progress is None:
        return
    for counter, amount in zip(_progress, (images, nbytes)):
        with counter.get_lock():
            counter.value += amount


def staging_buffers() -> StagingBuffers | None:
    """This worker's staging buffers (None outside a worker: the writer makes its own)."""
    return _buffers


def run(function: Callable[[Task], Outcome], tasks: Iterable[Task], count: int, workers: int, total: int,
        show_progress: bool, desc: str = "pack") -> Iterator[Outcome]:
    """Run ``count`` tasks on a process pool; yield each outcome, in this process, as its task finishes.

    ``total`` is the images the tasks will report, for the progress bar.  On Linux
    the workers are forked, before this process has any thread or LMDB handle (the
    caller opens the key index after the first outcome).
    """
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    images, nbytes = context.Value("q", 0), context.Value("q", 0)
    with context.Pool(workers, initializer=_init_worker, initargs=(images, nbytes, os.getpid())) as pool:
        started = time.monotonic()
        with tqdm(total=total, unit="img", desc=desc, disable=not show_progress, dynamic_ncols=True) as bar:

            def refresh() -> None:
                bar.update(images.value - bar.n)
                elapsed = max(time.monotonic() - started, 1e-9)
                bar.set_postfix_str(f"{nbytes.value / elapsed / 1e6:.0f} MB/s", refresh=False)

            results = pool.imap_unordered(function, tasks)
            for _ in range(count):
                while True:
                    try:
                        outcome = results.next(timeout=0.2)
                        break
                    except multiprocessing.TimeoutError:
                        refresh()
                yield outcome
                refresh()
