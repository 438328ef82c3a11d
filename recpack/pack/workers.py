"""The packer's worker processes: forked once per pack, dying with it, reporting progress as they go.

Each worker keeps two things for its whole life, set by ``_init_worker``: the shared
progress counters and one set of staging buffers that every shard it writes reuses
(fresh memory costs page faults, and in a VM the host's backing, every time).
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from typing import Callable, Iterable, Iterator, TypeVar

from PIL import Image
from tqdm import tqdm

from ..errors import PackError
from ..processes import WorkerDied, die_with_parent, pool_context, run_tasks
from .writer import StagingBuffers

Task = TypeVar("Task")
Outcome = TypeVar("Outcome")

_progress: tuple | None = None  # (images, bytes) shared counters, set once per worker process
_buffers: StagingBuffers | None = None  # the worker's write buffers, reused for every shard it writes
_shared: object = None  # what every task of the run needs, given once per worker rather than in each task


def _init_worker(images, nbytes, parent: int, shared: object) -> None:
    global _progress, _buffers, _shared
    die_with_parent(parent)
    _progress, _shared = (images, nbytes), shared
    _buffers = StagingBuffers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    # Pillow warns of images over ~89 Mpixel and refuses those over twice that (a bad input, reported);
    # below its limit a large image is just packed: no warning through the progress bar
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def report_progress(images: int, nbytes: int) -> None:
    if _progress is None:
        return
    for counter, amount in zip(_progress, (images, nbytes)):
        with counter.get_lock():
            counter.value += amount


def shared() -> object:
    """The run's ``shared`` object, this worker's own copy (forked: a task may keep state in it for the next)."""
    return _shared


def staging_buffers() -> StagingBuffers | None:
    """This worker's staging buffers (None outside a worker: the writer makes its own)."""
    return _buffers


def run(function: Callable[[Task], Outcome], tasks: Iterable[Task], workers: int, total: int | None,
        show_progress: bool, desc: str = "pack", in_flight: int | None = None,
        shared: object = None) -> Iterator[Outcome]:
    """Run tasks on the packer's worker processes (``processes.run_tasks``); yield each outcome as its task finishes.

    ``total`` is the images the tasks will report, for the progress bar (None:
    unknown); ``shared``, what every task needs, reaches each worker once
    (``shared()``).  On Linux the workers are forked, before this process has any
    thread or LMDB handle (the caller opens the key index after the first outcome).  A
    worker that dies ends the pack with a PackError at once; however the run ends,
    the workers are killed (``run_tasks`` says why).
    """
    context = pool_context()
    images, nbytes = context.Value("q", 0), context.Value("q", 0)
    started = time.monotonic()
    with tqdm(total=total, unit="img", desc=desc, disable=not show_progress, dynamic_ncols=True) as bar:

        def refresh() -> None:
            # read without the counters' locks: a worker killed while holding one must not stall the pack
            bar.update(images.get_obj().value - bar.n)
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.set_postfix_str(f"{nbytes.get_obj().value / elapsed / 1e6:.0f} MB/s", refresh=False)

        try:
            yield from run_tasks(function, tasks, workers, initializer=_init_worker,
                                 initargs=(images, nbytes, os.getpid(), shared), in_flight=in_flight, tick=refresh)
        except WorkerDied as error:
            raise PackError(f"{error}; the shards finished so far are kept: rerun the same command") from None
