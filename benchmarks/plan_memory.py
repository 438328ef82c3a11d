"""Peak memory of `recpack plan` as the list grows, and of one shard-range task reading that plan.

Why: a cluster packs ImageNet-21k (14.2M lines) by planning once on one machine,
so the plan must fit that machine, and each task must not need the whole list.
Lists of 1M and 4M lines (default) over 1,000 tiny real-photo JPEGs, each line
spelling its path differently (``n0NNNNNNN/../small_XXXX.jpg``, 27 characters like
ImageNet's ``n01440764/n01440764_10026.JPEG``; 21,841 classes), are planned into one
shard per 1,400 lines (ImageNet-21k's 14.2M into ~10,000 shards), then shard 0 is
written by ``recpack pack OUT --shard-range 0:1 --workers 1``.  Each process's peak
RSS is the kernel's (wait4), not a sample.  Bytes per line are the growth from the
smaller list to the larger, which leaves the interpreter's own ~45 MB out, and give
the extrapolation to 14.2M lines.

    python benchmarks/plan_memory.py [--lines 1000000 4000000] [--out benchmarks/results/plan_memory.md]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from harness import run_child
from report import machine_lines, table
from settings import REPO
from settings import WORK as BENCH_WORK

sys.path.insert(0, str(REPO / "tools"))
import corpus  # noqa: E402

WORK = BENCH_WORK / "plan-memory"
IMAGENET_21K = 14_197_087
CLASSES = 21_841


def make_list(lines: int) -> Path:
    images = WORK / "images"
    if not images.exists():
        corpus.make_small_jpegs(images, 1000, size=(32, 24))
        for d in range(1000):
            (images / f"n{1440764 + d:08d}").mkdir()
    listing = WORK / f"list-{lines}.txt"
    if not listing.exists():
        with open(listing, "w") as handle:
            handle.write(f"# root: {images}\n")
            for i in range(lines):
                handle.write(f"n{1440764 + (i // 1000) % 1000:08d}/../small_{i % 1000:04d}.jpg\t{i % CLASSES}\n")
    return listing


def measure(command: list[str], log: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one child process."""
    done = run_child(command, log, sample_every=0.02)
    if not done.ok:
        raise SystemExit(f"{' '.join(command)} failed: {done.error_tail()}")
    return done.max_rss / 1e6, done.wall  # the kernel's own peak (wait4), not a sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "plan_memory.md")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    recpack = [sys.executable, "-m", "recpack"]
    rows, figures = [], []
    for lines in args.lines:
        listing = make_list(lines)
        out = WORK / f"out-{lines}"
        shutil.rmtree(out, ignore_errors=True)
        shards = max(1, lines // 1400)
        plan_mb, plan_s = measure(recpack + ["plan", str(listing), str(out), "--shards", str(shards), "--check",
                                             "header", "--no-fsync"], WORK / f"plan-{lines}")
        plan_file = (out / ".recpack-pack" / "plan.bin").stat().st_size
        task_mb, task_s = measure(recpack + ["pack", str(out), "--shard-range", "0:1", "--workers", "1", "--quiet"],
                                  WORK / f"task-{lines}")
        figures.append((lines, plan_mb, task_mb))
        rows.append([f"{lines:,}", str(shards), f"{plan_mb:,.0f}", f"{plan_s:.1f}", f"{plan_file / lines:.0f}",
                     f"{task_mb:,.0f}", f"{task_s:.1f}"])
        print(rows[-1], flush=True)
        shutil.rmtree(out, ignore_errors=True)
    lines_report = ["# recpack plan: peak memory as the list grows", ""] + machine_lines(sys.argv) + [""]
    lines_report += table(["list lines", "shards", "plan: peak RSS (MB)", "plan: wall (s)", "plan file (bytes/line)",
                           "one shard-range task: peak RSS (MB)", "task: wall (s)"], "rrrrrrr", rows)
    if len(figures) >= 2:
        (small, small_mb, small_task), (large, large_mb, large_task) = figures[0], figures[-1]
        per_line = (large_mb - small_mb) * 1e6 / (large - small)
        at_scale = (large_mb + per_line * (IMAGENET_21K - large) / 1e6) / 1e3
        lines_report += ["", f"Growth from {small:,} to {large:,} lines: **{per_line:.0f} bytes a line** for the plan, "
                         f"so ImageNet-21k's {IMAGENET_21K:,} lines would plan in about **{at_scale:.2f} GB** "
                         "(required: well under 2 GB). A shard-range task's peak grew by "
                         f"{large_task - small_task:+.0f} MB over the same growth: it maps the plan and reads its "
                         "shard's slice only."]
    args.out.write_text("\n".join(lines_report) + "\n")
    print("\n".join(lines_report))


if __name__ == "__main__":
    main()
