"""Run a function over an iterable on a thread pool, yielding results in input order.

The rule: at most ``depth`` calls are submitted but not yet consumed, so
memory is bounded by ``depth`` results whatever the input's length, and work
continues in the background while the consumer is busy.  An exception raised
by a call is re-raised in the consumer, with its original traceback, when the
consumer reaches that item.  Closing the generator (or breaking out of the
loop) cancels what has not started and waits for what has.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def ordered_map(function: Callable[[In], Out], items: Iterable[In], threads: int, depth: int) -> Iterator[Out]:
    if threads < 1 or depth < 1:
        raise ValueError("threads and depth must be at least 1")
    pending: deque[Future] = deque()
    source = iter(items)
    with ThreadPoolExecutor(threads, thread_name_prefix="recpack") as pool:
        try:
            for item in source:
                pending.append(pool.submit(function, item))
                del item  # the pool has it; held here, it would outlive its result (e.g. a whole batch buffer)
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
