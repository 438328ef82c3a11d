"""Peak memory of `recpack pack` as the list grows: is it bounded apart from the list itself?

Builds lists of 100k and 1M lines over 1,000 tiny real-photo JPEGs (each line
spells its path differently, ``dNNN/../small_XXXX.jpg``, so every key is
unique), packs each with ``--check header`` into 64 shards, and samples the
resident memory of the whole process tree (main process + workers) every
50 ms (harness.run_child: recpack.measure.procstats).  Reports the peak
summed RSS and PSS of the tree (forked workers share the list's pages: RSS
counts them per process, PSS once) and the main process's RSS.

    python benchmarks/pack_memory.py [--lines 100000 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from harness import run_child
from settings import REPO
from settings import WORK as BENCH_WORK

sys.path.insert(0, str(REPO / "tools"))
import corpus  # noqa: E402

WORK = BENCH_WORK / "memory"


def make_list(lines: int) -> Path:
    images = WORK / "images"
    if not images.exists():
        corpus.make_small_jpegs(images, 1000, size=(32, 24))
        for d in range(1000):
            (images / f"d{d:03d}").mkdir()
    listing = WORK / f"list-{lines}.txt"
    if not listing.exists():
        with open(listing, "w") as handle:
            handle.write(f"# root: {images}\n")
            for i in range(lines):
                handle.write(f"d{(i // 1000) % 1000:03d}/../small_{i % 1000:04d}.jpg\t{i % 1000}\n")
    return listing


def peak_memory(command: list[str], log: Path) -> tuple[float, float, float, float]:
    """(peak summed RSS and PSS of the process tree, peak RSS of the main process in MB; wall seconds)."""
    done = run_child(command, log, sample_every=0.05)
    if not done.ok:
        raise SystemExit(f"{' '.join(command)} failed: {done.error_tail()}")
    return done.peak_rss / 1e6, done.peak_pss / 1e6, done.peak_root_rss / 1e6, done.wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    recpack = [sys.executable, "-m", "recpack"]
    print("| list lines | peak summed RSS, tree (MB) | peak PSS, tree (MB) | peak RSS, main process (MB) | wall (s) | images/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for lines in args.lines:
        listing = make_list(lines)
        out = WORK / f"out-{lines}"
        shutil.rmtree(out, ignore_errors=True)
        tree, proportional, main_process, wall = peak_memory(
            recpack + ["pack", str(listing), str(out), "--shards", "64", "--check", "header", "--quiet"],
            WORK / f"pack-{lines}",
        )
        print(f"| {lines:,} | {tree:.0f} | {proportional:.0f} | {main_process:.0f} | {wall:.1f} | {lines / wall:,.0f} |",
              flush=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
