"""Packing from a simulated spinning disk: a tar read once, a cold file list in disk order, against list order.

Every run starts cold (the sources evicted from the page cache, then read under recpack's
block-I/O throttle, 110 read IOPS and 170 MB/s by default: ``recpack.measure.throttle``)
and is a whole ``recpack pack`` process writing a new folder (the last round's output is
deleted before the clock starts, not by --overwrite inside the run).  Contenders alternate round by round; the targets
(issue #15) are medians of per-round ratios:

    tar, default decode check       >= 0.80 x the throttle's 170 MB/s (and against `cat` of the tar)
    cold list in disk order          >= 5 x 110 images/s (list order pays a request per file)

The list's files are copied (once, in list order, as an extraction writes them) onto an
ext4 image on a loop device, mounted for the run and throttled like the tar's disk: a
disk-order pack reads them from their block device, which root cannot open on this VM's
own disk.  Disk order is run with and without those device reads.

The spill of a disk-order pack smaller than half the free memory (as here) is held in memory
files, never written to a disk, unless a contender says ``--spill-dir``: "spill on disk"
puts it on the throttled disk, as every pack did before memory spills (written, fsynced,
then read back from the page cache: on a 1 TB source it would be read from the disk again),
and "spill elsewhere" on another device (/dev/shm, standing in for an SSD).

    python benchmarks/bench_hdd_pack.py [--images 20000] [--list-images 1500] [--rounds 3]
        [--out benchmarks/results/hdd-pack.md]    (as root: the throttle is a cgroup)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from contextlib import contextmanager

from corpus_cache import load_corpus
from harness import run_child
from report import fmt, load_average, machine_lines, per_round, table
from rounds import Target, median, per_round_ratios, schedule, targets_table
from settings import WORK

from recpack.measure.pagecache import evict
from recpack.measure.throttle import Throttle, throttled

RECPACK = [sys.executable, "-m", "recpack"]


def make_tar(corpus, path: Path) -> Path:
    """The corpus as one uncompressed tar of class folders (made once)."""
    if not path.exists():
        partial = path.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive:
            for relative, _ in corpus.items:
                archive.add(corpus.root / relative, arcname=relative)
        partial.rename(path)
    return path


def make_subset_list(items, root: Path, path: Path) -> tuple[Path, list[Path], int]:
    """A list of ``items`` under ``root`` (a cold list-order pack of all 20,000 takes minutes)."""
    path.write_text(f"# root: {root}\n" + "".join(f"{relative}\t{label}\n" for relative, label in items))
    files = [root / relative for relative, _ in items]
    return path, files, sum(f.stat().st_size for f in files)


LIST_DISK_SLACK = 1.3  # the ext4 image's size over the files': metadata, and room for a spill if one lands there


@contextmanager
def list_disk(files: list[Path], root: Path, work: Path):
    """The files (relative to ``root``) on an ext4 image mounted from a loop device; yields the mounted root."""
    image, mount, done = work / "list-ext4.img", work / "list-disk", work / "list-ext4.complete"
    mount.mkdir(exist_ok=True)
    if not done.exists():
        image.unlink(missing_ok=True)
        size = int(sum(f.stat().st_size for f in files) * LIST_DISK_SLACK) + (64 << 20)
        with open(image, "wb") as handle:
            handle.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", device, str(mount)], check=True)
        try:
            if not done.exists():
                for f in files:
                    target = mount / "corpus" / f.relative_to(root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target)
                os.sync()
                done.touch()
            yield mount / "corpus"
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def contenders(tar: Path, subset: Path, spill_elsewhere: Path, out: Path,
               spill_on_disk: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (command, which sources it reads)."""
    pack = RECPACK + ["pack"]
    return {
        "cat_tar": (["dd", f"if={tar}", "of=/dev/null", "bs=4M", "status=none"], "tar"),  # cat, without a log of it
        "pack_tar": (pack + [str(tar), str(out / "tar"), "--shards", "64", "--quiet", "--overwrite"], "tar"),
        "pack_tar_spill_elsewhere": (pack + [str(tar), str(out / "tar2"), "--shards", "64", "--quiet", "--overwrite",
                                             "--spill-dir", str(spill_elsewhere)], "tar"),
        "pack_tar_spill_on_disk": (pack + [str(tar), str(out / "tar3"), "--shards", "64", "--quiet", "--overwrite",
                                           "--spill-dir", str(spill_on_disk)], "tar"),
        "list_in_list_order": (pack + [str(subset), str(out / "list"), "--shards", "8", "--quiet", "--overwrite",
                                       "--order", "list"], "subset"),
        "list_in_disk_order": (pack + [str(subset), str(out / "disk"), "--shards", "8", "--quiet", "--overwrite",
                                       "--order", "disk"], "subset"),
        "list_in_disk_order_check_header": (pack + [str(subset), str(out / "disk3"), "--shards", "8", "--quiet",
                                                    "--overwrite", "--order", "disk", "--check", "header"], "subset"),
        "list_in_disk_order_no_device_reads": (pack + [str(subset), str(out / "disk2"), "--shards", "8", "--quiet",
                                                       "--overwrite", "--order", "disk", "--no-device-reads"],
                                               "subset"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--list-images", type=int, default=1500, help="files in the cold list-order comparison")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iops", type=int, default=110)
    parser.add_argument("--mb-s", type=float, default=170.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hdd-pack.md")
    args = parser.parse_args()

    corpus = load_corpus(args.images, 0)
    work = WORK / f"hdd-pack-{args.images}"
    work.mkdir(parents=True, exist_ok=True)
    tar = make_tar(corpus, work / "corpus.tar")
    items = corpus.items[: args.list_images]
    with list_disk([corpus.root / relative for relative, _ in items], corpus.root, work) as list_root:
        return run(args, corpus, work, tar, make_subset_list(items, list_root, work / "subset.txt"))


def run(args, corpus, work: Path, tar: Path, subset_list: tuple[Path, list[Path], int]) -> int:
    subset, subset_files, subset_bytes = subset_list
    spill_elsewhere = Path("/dev/shm") / "recpack-bench-spill"  # another device: memory, standing in for an SSD
    spill_on_disk = work / "spill"  # the throttled disk, as the tar
    runs = contenders(tar, subset, spill_elsewhere, work / "out", spill_on_disk)
    sources = {"tar": ([tar], tar.stat().st_size, corpus.count), "subset": (subset_files, subset_bytes, len(subset_files))}
    throttle = Throttle(args.iops, args.mb_s)
    results: dict[str, list[dict | None]] = {name: [] for name in runs}
    load_before = load_average()
    subprocess.run(RECPACK + ["--version"], check=True, capture_output=True)  # the interpreter's files, cached
    for round_index, name in schedule(list(runs), args.rounds, rotate=True):
        command, reads = runs[name]
        files, nbytes, images = sources[reads]
        shutil.rmtree(work / "out", ignore_errors=True)  # each pack writes a new folder, as a user's first pack does
        evict([str(f) for f in files])
        with throttled([str(tar.parent), str(subset_files[0])], throttle):
            run = run_child(command, work / "logs" / f"{name}-{round_index}")
        shutil.rmtree(spill_elsewhere, ignore_errors=True)
        shutil.rmtree(spill_on_disk, ignore_errors=True)
        ok = run.ok
        results[name].append({"wall": run.wall, "mb_s": nbytes / run.wall / 1e6, "images_s": images / run.wall}
                             if ok else None)
        print(f"round {round_index + 1} {name:28s} " + (f"{run.wall:6.1f} s  {nbytes / run.wall / 1e6:6.0f} MB/s  "
              f"{images / run.wall:7.0f} images/s" if ok else f"FAILED: {run.error_tail()}"), flush=True)

    def values(name: str, key: str) -> list[float | None]:
        return [r[key] if r else None for r in results[name]]

    limit = [args.mb_s] * args.rounds
    targets = [
        Target("pack of the tar (default decode check) / the throttle's MB/s", 0.80,
               per_round_ratios(values("pack_tar", "mb_s"), limit)),
        Target("the same, spill on another device / the throttle's MB/s", 0.80,
               per_round_ratios(values("pack_tar_spill_elsewhere", "mb_s"), limit)),
        Target("the same, spill on the throttled disk (before memory spills) / the throttle's MB/s", None,
               per_round_ratios(values("pack_tar_spill_on_disk", "mb_s"), limit)),
        Target("pack of the tar, spill in memory / spill on the throttled disk", None,
               per_round_ratios(values("pack_tar", "mb_s"), values("pack_tar_spill_on_disk", "mb_s"))),
        Target("pack of the tar / cat of the tar (what the throttle delivered)", None,
               per_round_ratios(values("pack_tar", "mb_s"), values("cat_tar", "mb_s"))),
        Target("cold list, disk order / 110 images/s (one seek per file)", 5.0,
               per_round_ratios(values("list_in_disk_order", "images_s"), [110.0] * args.rounds)),
        Target("cold list, disk order / list order (images/s)", None,
               per_round_ratios(values("list_in_disk_order", "images_s"), values("list_in_list_order", "images_s"))),
        Target("the same, --check header (less CPU a file) / 110 images/s", None,
               per_round_ratios(values("list_in_disk_order_check_header", "images_s"), [110.0] * args.rounds)),
        Target("cold list, disk order without device reads / list order", None,
               per_round_ratios(values("list_in_disk_order_no_device_reads", "images_s"),
                                values("list_in_list_order", "images_s"))),
    ]
    rows = ([name, fmt(median([v for v in values(name, "images_s") if v])),
             fmt(median([v for v in values(name, "mb_s") if v])), per_round(values(name, "images_s"))]
            for name in runs)
    lines = [f"# Packing from a simulated HDD ({throttle.describe()}), cold", "", *machine_lines(sys.argv), "",
             f"Tar: {corpus.count:,} JPEGs, {tar.stat().st_size / 1e9:.2f} GB; list comparison: the first "
             f"{len(subset_files):,} of them as files, copied in list order onto an ext4 image on a loop device "
             "(throttled alike; root may not open this VM's own disk, and device reads need that). Whole "
             "`recpack pack` processes (2 workers, default decode check, fsync), sources evicted before every run, "
             f"medians of rounds. Load average (1/5/15 min) before: {load_before}; after: {load_average()}.", "",
             *table(["contender", "images/s", "MB/s", "per round (images/s)"], "lrrl", rows), "",
             *targets_table(targets), ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
