"""Worker processes that never outlive the command that forked them (ground floor: pack and measure use it).

``run_tasks`` is the one process pool of recpack: the packer's workers and ``recpack
stats``' run on it.  ``die_with_parent`` is what each worker calls first.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, TypeVar

Task = TypeVar("Task")
Outcome = TypeVar("Outcome")

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


class WorkerDied(Exception):
    """A worker process of ``run_tasks`` died; the message says how.  The caller words it for its command."""


def pool_context():
    """The start method the pool's workers use: fork on Linux (the modules already imported come along), else spawn.

    Shared objects the workers get through ``initargs`` (``multiprocessing.Value``)
    must come from this context.
    """
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def run_tasks(function: Callable[[Task], Outcome], tasks: Iterable[Task], workers: int, *,
              initializer: Callable | None = None, initargs: tuple = (), in_flight: int | None = None,
              tick: Callable[[], None] | None = None) -> Iterator[Outcome]:
    """Run tasks on ``workers`` processes; yield each outcome, in this process, as its task finishes.

    At most ``in_flight`` tasks (default: two per worker) are handed out and not yet
    finished, so tasks that carry data take bounded memory however long the stream,
    and a worker finds its next task waiting when it ends one.  ``tick`` is called
    between outcomes, at least every 0.2 s (a progress bar's refresh).  On Linux the
    workers are forked: they start with this process's modules, without importing.

    A worker that dies (the OOM killer, a kill -9) raises ``WorkerDied`` at once:
    ``concurrent.futures`` notices a lost worker, where ``multiprocessing.Pool`` would
    replace it and wait forever for its task.  An exception raised by a task comes
    back here as itself.  However the run ends (every task done, an error, Ctrl-C,
    the caller stopping early), the workers are killed, not asked to exit: no task
    is left for them, and a worker killed while waiting for a task keeps the task
    queue's lock, so that the others never read the request to exit and a polite
    shutdown waits forever (and one killed mid-outcome, ``_close_result_writer``).
    """
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=initializer, initargs=initargs)
    try:
        yield from _outcomes(pool, function, iter(tasks), in_flight or 2 * workers, tick, before, workers)
    finally:
        for process in set(multiprocessing.active_children()) - before:
            process.kill()
        _close_result_writer(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _close_result_writer(pool: ProcessPoolExecutor) -> None:
    """Close this process's end for writing of the pool's result pipe (only workers write to it).

    Why: a worker killed while writing an outcome larger than the pipe holds leaves
    part of a message in it, and the pool's thread waits for the rest; with every
    writer's end closed (the killed workers' by the kernel) it reads the end of the
    pipe instead, and the shutdown that joins it returns.  ``_result_queue`` is
    ``concurrent.futures``' own (CPython 3.8-3.13); without it, nothing is done.
    """
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()


def _outcomes(pool: ProcessPoolExecutor, function: Callable, tasks: Iterator, in_flight: int,
              tick: Callable[[], None] | None, before: set, expected: int) -> Iterator:
    """Each outcome as it arrives, handing out tasks as slots free up."""
    pending: set[Future] = set()
    workers: set = set()  # the pool's processes, to tell how one died
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
                raise WorkerDied(f"a worker process died ({_how_one_died(workers, expected)})") from None
            yield outcome
        if tick is not None:
            tick()


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
