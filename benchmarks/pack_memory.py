"""Peak memory of `recpack pack` as the list grows: is it bounded apart from the list itself?

Builds lists of 100k and 1M lines over 1,000 tiny real-photo JPEGs (each line
spells its path differently, ``dNNN/../small_XXXX.jpg``, so every key is
unique), packs each with ``--check header`` into 64 shards, and samples the
resident memory of the whole process tree (main process + workers) every
20 ms with psutil.  Reports the peak of the tree and of the main process.

    python benchmarks/pack_memory.py [--lines 100000 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import corpus  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work" / "memory"


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


def peak_rss(command: list[str]) -> tuple[float, float, float]:
    """(peak RSS of the process tree, peak of the main process, wall seconds), in MB."""
    started = time.monotonic()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL)
    tree_peak = main_peak = 0
    while process.poll() is None:
        try:
            main = process.memory_info().rss
            tree = main + sum(child.memory_info().rss for child in process.children(recursive=True))
        except psutil.Error:
            continue
        tree_peak, main_peak = max(tree_peak, tree), max(main_peak, main)
        time.sleep(0.02)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with {process.returncode}")
    return tree_peak / 1e6, main_peak / 1e6, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    recpack = [sys.executable, "-m", "recpack"]
    print("| list lines | peak RSS, process tree (MB) | peak RSS, main process (MB) | wall (s) | images/s |")
    print("|---:|---:|---:|---:|---:|")
    for lines in args.lines:
        listing = make_list(lines)
        out = WORK / f"out-{lines}"
        shutil.rmtree(out, ignore_errors=True)
        tree, main_process, wall = peak_rss(
            recpack + ["pack", str(listing), str(out), "--shards", "64", "--check", "header", "--quiet"]
        )
        print(f"| {lines:,} | {tree:.0f} | {main_process:.0f} | {wall:.1f} | {lines / wall:,.0f} |", flush=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
