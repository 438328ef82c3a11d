"""CPU time and memory of a process tree, read from /proc (no dependency beyond the standard library).

Summed RSS counts pages shared between processes (torch's libraries, batches
in shared memory) once per process; PSS divides them among the sharers.
Both are reported, so neither flatters nor punishes worker processes.
"""

from __future__ import annotations

import os
import resource
import threading

def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc (every thread's ``children`` list)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
        except OSError:
            pass
    return found


def process_tree(pid: int) -> list[int]:
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue += _children(current)
    return tree


def _rss_pss(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one process, both from one read of smaps_rollup.

    One read, so that the two are of the same instant (statm's RSS comes from
    counters that can lag the page tables smaps walks).
    """
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith(("Rss:", "Pss:")):
                found[line[:3]] = int(line.split()[1]) * 1024
    return found["Rss"], found["Pss"]


def _tree_sample(pid: int) -> tuple[int, int, int]:
    """(summed RSS, summed PSS, RSS of ``pid`` alone) in bytes of ``pid`` and its descendants, now."""
    rss = pss = root_rss = 0
    for member in process_tree(pid):
        try:
            member_rss, member_pss = _rss_pss(member)
        except (OSError, ValueError, IndexError, KeyError):
            continue  # a process that just exited
        rss, pss = rss + member_rss, pss + member_pss
        if member == pid:
            root_rss = member_rss
    return rss, pss, root_rss


def tree_memory(pid: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) in bytes of ``pid`` and its descendants, now."""
    rss, pss, _ = _tree_sample(pid)
    return rss, pss


class TreeMemory:
    """Peak summed RSS and PSS of a process and its descendants, sampled every ``interval`` s.

    The tree's root is this process, or ``pid`` (a child this process started:
    the benchmarks sample each contender's process tree from outside it).
    Summed RSS counts a page shared by several processes (torch's libraries,
    batches in shared memory) once per process; PSS splits it between them,
    so summed PSS is the tree's real footprint.  Both are reported, and the
    root's own RSS apart (``peak_root_rss``).  Sampling misses what lives
    shorter than ``interval``; each sample costs about 1 ms per process.
    """

    def __init__(self, interval: float = 0.2, pid: int | None = None):
        self.interval = interval
        self.pid = os.getpid() if pid is None else pid
        self.peak_rss = self.peak_pss = self.peak_root_rss = 0
        self.available = os.path.exists(f"/proc/{os.getpid()}/smaps_rollup")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="recpack-bench-memory")

    def sample(self) -> None:
        rss, pss, root_rss = _tree_sample(self.pid)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.peak_root_rss = max(self.peak_root_rss, root_rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeMemory:
        if self.available:
            self.sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.available:
            self._stop.set()
            self._thread.join()
            self.sample()


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have exited (DataLoader workers, once joined).

    From getrusage (microseconds), not os.times (10 ms ticks): a short stage must not read as 0.
    """
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
