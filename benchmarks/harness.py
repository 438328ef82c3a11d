"""The parent side of every benchmark: one contender's run as a child process, timed and watched.

``run_child`` starts the command, samples the summed RSS and PSS of its
whole process tree (recpack.measure.procstats, the sampler ``recpack bench``
uses), takes the largest single process's peak from wait4's ru_maxrss, and
reads the child's result: the last line of its stdout that is a JSON object
(a child that times itself prints ``{"seconds": ..., ...}`` last).  Its
stdout and stderr go to log files.

Parent side only: it imports recpack, which benchmarks/.venv-mxnet lacks, so
no module that a child process imports may import this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from recpack.measure.procstats import TreeMemory


@dataclass
class ChildRun:
    returncode: int
    wall: float  # the whole child process, start to exit
    peak_rss: int  # summed RSS of the tree, sampled: counts pages shared between processes once per process
    peak_pss: int  # summed PSS of the tree, sampled: shared pages split between their sharers
    peak_root_rss: int  # RSS of the child process alone (not its workers), sampled
    max_rss: int  # ru_maxrss from wait4: the largest single process of the tree, over its whole life
    result: dict | None  # the child's last JSON line on stdout
    timed_out: bool
    log: Path  # stem of the .out and .err files

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def error_tail(self, chars: int = 300) -> str:
        """The end of the child's stderr, to say why it failed."""
        lines = [line for line in self.log.with_suffix(".err").read_text().splitlines() if line.strip()]
        text = "timed out" if self.timed_out else (lines[-1] if lines else f"exit {self.returncode}")
        return f"{text[-chars:]} (log: {self.log.with_suffix('.err')})"


def last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    return None


def run_child(cmd: list[str], log: Path, cwd: Path | None = None, timeout: float | None = None,
              sample_every: float = 0.1) -> ChildRun:
    """Run ``cmd`` to its end (or kill it after ``timeout`` s); ``log`` names its log files (LOG.out, LOG.err).

    Dirty pages of whatever ran before are flushed first, so that no contender
    pays for another's writes.
    """
    os.sync()
    log.parent.mkdir(parents=True, exist_ok=True)
    expired = threading.Event()
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd)
        timer = threading.Timer(timeout, lambda: (expired.set(), proc.kill())) if timeout else None
        with TreeMemory(sample_every, pid=proc.pid) as memory:
            if timer:
                timer.start()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not signal or wait for it
            if timer:
                timer.cancel()
    return ChildRun(proc.returncode, wall, memory.peak_rss, memory.peak_pss, memory.peak_root_rss,
                    usage.ru_maxrss * 1024, last_json(log.with_suffix(".out").read_text()), expired.is_set(), log)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0
