"""Touch the machine's free memory once, so that a fresh virtual machine behaves like a real one.

Why: a freshly booted VM's host backs guest memory lazily, so the first
write to each never-used page costs a host page fault.  Measured on the
project machine just after boot: first touch 0.42 GB/s, a page touched
before 10.5 GB/s; writing a file into never-used page cache ran at
0.4 GB/s, into recycled page cache at 4.3 GB/s.  Any benchmark that fills
the page cache (packing, cold reads) is then slowed by how long the VM has
been up, not by the code.  Touching the free pages once, before measuring,
removes that: the kernel hands them out again later, already backed.
The host takes idle memory back after some minutes, so benchmarks call
this at their start rather than once per boot.

Only free memory is touched (MemFree minus a margin), so the page cache --
the corpus the benchmark is about to read warm -- stays where it is.  On a
machine already warm this takes a few seconds.

    python benchmarks/prefault.py
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

CHUNK = 256 << 20
MARGIN = 1 << 30


def free_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemFree:"):
                return int(line.split()[1]) * 1024
    return 0


def prefault_free_memory(margin: int = MARGIN) -> tuple[int, float]:
    """Write to (MemFree - margin) bytes of fresh memory, then release it; returns (bytes, seconds)."""
    target = max(free_bytes() - margin, 0)
    chunks, started = [], time.perf_counter()
    while len(chunks) * CHUNK < target:
        chunk = np.empty(CHUNK, np.uint8)
        chunk[::4096] = 1  # one write per page is what makes the host back it
        chunks.append(chunk)
    touched = len(chunks) * CHUNK
    del chunks
    return touched, time.perf_counter() - started


def report() -> None:
    """Prefault and say so: how fast it went tells whether the VM was fresh (~0.4 GB/s) or warm."""
    touched, seconds = prefault_free_memory()
    print(f"prefault: touched {touched / 2**30:.1f} GiB of free memory in {seconds:.1f} s "
          f"({touched / max(seconds, 1e-9) / 1e9:.2f} GB/s)", flush=True)


def prefault() -> None:
    """Run ``report`` in a child process: its peak RSS must not become the caller's (and, through
    exec, its children's) ru_maxrss, which the benchmarks report."""
    subprocess.run([sys.executable, __file__], check=True)


if __name__ == "__main__":
    report()
