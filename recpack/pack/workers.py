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
import threading
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


def _bounded(tasks: Iterable[Task], slots: threading.Semaphore, stop: threading.Event) -> Iterator[Task]:
    for task in tasks:
        slots.acquire()  # the pool's feeder thread waits here while ``in_flight`` tasks are out
        if stop.is_set():
            return
        yield task


def run(function: Callable[[Task], Outcome], tasks: Iterable[Task], workers: int, total: int | None,
        show_progress: bool, desc: str = "pack", in_flight: int | None = None) -> Iterator[Outcome]:
    """Run tasks on a process pool; yield each outcome, in this process, as its task finishes.

    At most ``in_flight`` tasks (default: two per worker) are handed out and not yet
    finished, so tasks that carry data (an archive's members) take bounded memory
    however long the stream.  ``total`` is the images the tasks will report, for the
    progress bar (None: unknown).  On Linux the workers are forked, before this
    process has any thread or LMDB handle (the caller opens the key index after the
    first outcome).
    """
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    images, nbytes = context.Value("q", 0), context.Value("q", 0)
    slots, stop = threading.Semaphore(in_flight or 2 * workers), threading.Event()
    with context.Pool(workers, initializer=_init_worker, initargs=(images, nbytes, os.getpid())) as pool:
        try:
            yield from _outcomes(pool.imap_unordered(function, _bounded(tasks, slots, stop)), slots, images, nbytes,
                                 total, show_progress, desc)
        finally:  # free the feeder thread, which the pool joins on the way out
            stop.set()
            slots.release(1 << 20)


def _outcomes(results, slots: threading.Semaphore, images, nbytes, total: int | None, show_progress: bool,
              desc: str) -> Iterator:
    """Each outcome as it arrives, freeing its task's slot; the progress bar refreshed meanwhile."""
    started = time.monotonic()
    with tqdm(total=total, unit="img", desc=desc, disable=not show_progress, dynamic_ncols=True) as bar:

        def refresh() -> None:
            bar.update(images.value - bar.n)
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.set_postfix_str(f"{nbytes.value / elapsed / 1e6:.0f} MB/s", refresh=False)

        while True:
            try:
                outcome = results.next(timeout=0.2)
            except multiprocessing.TimeoutError:
                refresh()
                continue
            except StopIteration:
                break
            slots.release()
            yield outcome
            refresh()
