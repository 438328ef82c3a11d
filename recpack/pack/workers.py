"""The packer's worker processes: forked once per pack, dying with it, reporting progress as they go.

Each worker keeps two things for its whole life, set by ``_init_worker``: the shared
progress counters and one set of staging buffers that every shard it writes reuses
(fresh memory costs page faults, and in a VM the host's backing, every time).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, TypeVar

from PIL import Image
from tqdm import tqdm

from ..errors import PackError
from ..processes import die_with_parent
from .writer import StagingBuffers

Task = TypeVar("Task")
Outcome = TypeVar("Outcome")

_progress: tuple | None = None  # (images, bytes) shared counters, set once per worker process
_buffers: StagingBuffers | None = None  # the worker's write buffers, reused for every shard it writes


def _init_worker(images, nbytes, parent: int) -> None:
    global _progress, _buffers
    die_with_parent(parent)
    _progress = (images, nbytes)
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


def staging_buffers() -> StagingBuffers | None:
    """This worker's staging buffers (None outside a worker: the writer makes its own)."""
    return _buffers


def run(function: Callable[[Task], Outcome], tasks: Iterable[Task], workers: int, total: int | None,
        show_progress: bool, desc: str = "pack", in_flight: int | None = None) -> Iterator[Outcome]:
    """Run tasks on a process pool; yield each outcome, in this process, as its task finishes.

    At most ``in_flight`` tasks (default: two per worker) are handed out and not yet
    finished, so tasks that carry data (an archive's members) take bounded memory
    however long the stream.  ``total`` is the images the tasks will report, for the
    progress bar (None: unknown).  On Linux the workers are forked, before this
    process has any thread or LMDB handle (the caller opens the key index after the
    first outcome).

    A worker that dies (the OOM killer, a kill -9) ends the pack with a PackError at
    once: ``concurrent.futures`` notices a lost worker, where ``multiprocessing.Pool``
    would replace it and wait forever for its task.  However the run ends (every
    task done, an error here or in a task, Ctrl-C, the caller stopping early), the
    workers are killed, not asked to exit: no task is left for them, one stopped
    mid-shard would only finish it for nothing, and a worker killed while waiting
    for a task keeps the task queue's lock, so that the others never read the
    request to exit and a polite shutdown waits forever.
    """
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    images, nbytes = context.Value("q", 0), context.Value("q", 0)
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(images, nbytes, os.getpid()))
    try:
        yield from _outcomes(pool, function, iter(tasks), in_flight or 2 * workers, images, nbytes, total,
                             show_progress, desc, before, expected=workers)
    finally:
        for process in set(multiprocessing.active_children()) - before:
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)


def _outcomes(pool: ProcessPoolExecutor, function: Callable, tasks: Iterator, in_flight: int, images, nbytes,
              total: int | None, show_progress: bool, desc: str, before: set, expected: int) -> Iterator:
    """Each outcome as it arrives, handing out tasks as slots free up; the progress bar refreshed meanwhile."""
    started = time.monotonic()
    pending: set[Future] = set()
    workers: set = set()  # the pool's processes, to tell how one died
    with tqdm(total=total, unit="img", desc=desc, disable=not show_progress, dynamic_ncols=True) as bar:

        def refresh() -> None:
            # read without the counters' locks: a worker killed while holding one must not stall the pack
            bar.update(images.get_obj().value - bar.n)
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.set_postfix_str(f"{nbytes.get_obj().value / elapsed / 1e6:.0f} MB/s", refresh=False)

        while True:
            while len(pending) < in_flight and (task := next(tasks, None)) is not None:
                pending.add(pool.submit(function, task))
                del task
            workers |= set(multiprocessing.active_children()) - before
            if not pending:
                break
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                pending.discard(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    raise PackError(f"a worker process died ({_how_one_died(workers, expected)}); "
                                    "the shards finished so far are kept: rerun the same command") from None
                yield outcome
            refresh()


def _how_one_died(workers: set, started: int) -> str:
    """The exit of the worker that broke the pool (the pool then stops the others with SIGTERM).

    The pool's own thread reaps them as it goes: their exit codes are read once it has.
    One that died before this process saw it among its children (``started`` were) is
    not in ``workers``, and its cause is then unknown.
    """
    deadline = time.monotonic() + 2
    while any(process.exitcode is None for process in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    codes = [process.exitcode for process in workers if process.exitcode is not None]
    code = next((c for c in codes if c != -signal.SIGTERM), None)
    if code is None and (len(workers) < started or not codes):
        return "cause unknown"
    code = codes[0] if code is None else code
    if code < 0:
        return f"killed by signal {-code}" + (": out of memory, or kill -9" if code == -signal.SIGKILL else "")
    return f"exit status {code}"
