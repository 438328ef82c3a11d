"""Reading from a simulated hard drive (issue #15): cold epochs under recpack's block-I/O throttle, against warm.

Contenders, each one epoch in a fresh interpreter (harness.run_child), cold and warm in every round:

  imagefolder        torchvision ImageFolder + PIL, RandomResizedCrop 224 + flip, DataLoader(num_workers=cores),
                     shuffled (compare_readers.py's `imagefolder_pil`, in benchmarks/.venv-peers), over a
                     random --files sample of the corpus hard-linked into a folder of its own (the same
                     inodes and blocks: a cold epoch of all 20,000 files takes 7 minutes at ~50 files/s)
  recpack            RecordDataset over `recpack pack --shards 64`, batch 256, RandomResizedCrop 224 + flip,
                     decode threads in the training process (compare_readers.py's `recpack_threads`)
  recpack-256        the same over `recpack pack --shards 64 --resize 256`
  recpack-raw        RecordDataset(augment=None) over the first: the records alone, the disk side of the epoch
  recpack-256-raw    the same over the second
  recpack-paced      the records-only epoch with a consumer that sleeps for each batch as long as a decoder of
  recpack-256-paced  --paced (1,200) / --paced-256 (2,500) images/s would take, the warm rates issue #15 measured
                     on a quiet machine: the overlap of reading and decoding, seen whatever else the machine's
                     cores are doing (a sleeping consumer needs none)

Cold: right before, the same contender runs once unthrottled over a small dataset of its own (the warm-up),
so that the interpreter's files are in the page cache as in a training process already running: the
libraries are on the throttled disk too, and a page of them evicted by memory pressure would cost a
throttled read in the middle of the epoch.  Then every file the contender reads is evicted from the page
cache (posix_fadvise DONTNEED, checked with mincore), and the child runs in recpack's throttle (recpack.measure.throttle: a cgroup holding 110 read
IOPS and 170 MB/s by default on the dataset's disk); the I/Os and bytes the cgroup let through are
recorded.  Warm: the files are read into the page cache first, no throttle.  Directories and inodes stay
cached (eviction cannot drop them without dropping every other process's cache too): an ImageFolder file
costs one seek here, two or three on a truly cold disk.

Targets (issue #15), each the median of per-round ratios (rounds.Target):

  recpack cold      >= 0.90 x min(recpack warm, disk rate)     disk rate: the throttle's MB/s / mean record
  recpack-256 cold  >= 0.90 x recpack-256 warm
  recpack-raw cold  >= 0.90 x disk rate (the read-ahead reaches the disk's pace)
  recpack-paced and recpack-256-paced cold  >= 0.90 x min(their warm, disk rate)

    python benchmarks/bench_hdd.py [--images 20000] [--files 1000] [--rounds 3] [--iops 110] [--mb-s 170]
        [--out benchmarks/results/hdd.md]     (as root: the throttle is a cgroup)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from corpus_cache import load_corpus
from harness import run_child
from report import fmt, machine_lines, mib, per_round, table
from rounds import Target, median, per_round_ratios, schedule, targets_table
from settings import CPUS, HERE, WORK

from recpack.measure.pagecache import make_cold, make_warm
from recpack.measure.throttle import Throttle, throttled

PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"  # torchvision, for the ImageFolder contender
READERS = HERE / "compare_readers.py"


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    command: list[str]
    files: list[str]  # what it reads: evicted before a cold run, read in before a warm one
    images: int
    bytes: int  # compressed image bytes (files) or shard bytes (.rec) an epoch reads
    warmup: list[str]  # the same reader over a small dataset of its own, run before each cold run


def child_raw(dataset: str, paced: float | None = None) -> int:
    """The records-only epoch: RecordDataset(augment=None), timed from the first request to the last batch.

    With ``paced``, each batch is followed by a sleep as long as decoding it at that many images/s would take.
    """
    from recpack import RecordDataset

    data = RecordDataset(dataset, batch_size=256, augment=None, seed=0)
    start, images = time.perf_counter(), 0
    for batch, _ in data:
        images += len(batch)
        if paced:
            time.sleep(len(batch) / paced)
    print(json.dumps({"images": images, "seconds": time.perf_counter() - start}), flush=True)
    return 0


def pack(corpus, out: Path, *extra: str) -> Path:
    if not (out / "recpack.json").exists():
        subprocess.run([sys.executable, "-m", "recpack", "pack", str(corpus.list_file), str(out), "--shards", "64",
                        "--quiet", "--overwrite", *extra], check=True)
    return out


def linked_sample(corpus, count: int, folder: Path, seed: int = 0) -> list[Path]:
    """``count`` corpus files at random, hard-linked into ``folder``/class/ (an ImageFolder of the same blocks)."""
    items = random.Random(seed).sample(corpus.items, min(count, corpus.count))
    links = []
    for relative, _ in items:
        link = folder / relative
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(corpus.root / relative, link)
        links.append(link)
    return links


def dataset_files(dataset: Path) -> list[str]:
    return sorted(str(path) for path in dataset.iterdir() if path.is_file())


def rec_bytes(dataset: Path) -> int:
    return sum(path.stat().st_size for path in dataset.glob("*.rec"))


def manifest_records(dataset: Path) -> int:
    from recpack.format import manifest as mf

    return mf.load(str(dataset)).num_records


def contenders(args, full: Path, small: Path, sample: list[Path], sample_dir: Path, spare: Path,
               spare_dir: Path) -> list[Contender]:
    """``spare``: a small packed dataset, ``spare_dir``: a small ImageFolder, for the warm-ups."""
    recpack = lambda key, path: [sys.executable, str(READERS), key, str(path), "--workers", str(CPUS)]  # noqa: E731
    raw = lambda path, *paced: [sys.executable, __file__, "--child-raw", str(path), *map(str, paced)]  # noqa: E731
    imagefolder = lambda path: [str(PEERS_PYTHON), str(READERS), "imagefolder_pil", str(path),  # noqa: E731
                                "--workers", str(CPUS)]

    def shards(name: str, label: str, command, path: Path, warmup) -> Contender:
        return Contender(name, label, command, dataset_files(path), manifest_records(path), rec_bytes(path), warmup)

    found = [
        shards("recpack", "recpack shards", recpack("recpack_threads", full), full, recpack("recpack_threads", spare)),
        shards("recpack-256", "recpack --resize 256 shards", recpack("recpack_threads", small), small,
               recpack("recpack_threads", spare)),
        shards("recpack-raw", "recpack shards, records only", raw(full), full, raw(spare)),
        shards("recpack-256-raw", "recpack --resize 256 shards, records only", raw(small), small, raw(spare)),
        shards("recpack-paced", f"recpack shards, a consumer paced at {args.paced:,.0f} images/s",
               raw(full, args.paced), full, raw(spare)),
        shards("recpack-256-paced", f"recpack --resize 256 shards, paced at {args.paced_256:,.0f} images/s",
               raw(small, args.paced_256), small, raw(spare)),
    ]
    if PEERS_PYTHON.exists():
        found.insert(0, Contender("imagefolder", "ImageFolder files (torchvision + PIL)", imagefolder(sample_dir),
                                  [str(path) for path in sample], len(sample), sum(p.stat().st_size for p in sample),
                                  imagefolder(spare_dir)))
    else:
        print(f"no {PEERS_PYTHON}: the ImageFolder contender is left out (tools/setup_peers_venv.sh makes it)")
    return found


def cgroup_reads(group: str) -> tuple[int, int] | None:
    """(read I/Os, read bytes) the cgroup let through, from cgroup v1's counters (None elsewhere)."""
    try:
        counts = []
        for name in ("blkio.throttle.io_serviced", "blkio.throttle.io_service_bytes"):
            with open(os.path.join(group, name)) as handle:
                counts.append(sum(int(line.split()[2]) for line in handle if line.split()[1:2] == ["Read"]))
        return counts[0], counts[1]
    except (OSError, IndexError, ValueError):
        return None


def other_throttles() -> list[str]:
    """Other cgroups of the v1 blkio hierarchy with a read throttle and processes in it (another benchmark's)."""
    found = []
    for group in Path("/sys/fs/cgroup/blkio").glob("*/blkio.throttle.read_bps_device"):
        procs = group.parent / "cgroup.procs"
        if group.read_text().strip() and procs.exists() and procs.read_text().strip():
            found.append(str(group.parent))
    return found


def wait_alone(seconds: float) -> list[str]:
    """Wait up to ``seconds`` for other throttled benchmarks to end: they share the disk under the throttle."""
    deadline = time.monotonic() + seconds
    while (others := other_throttles()) and time.monotonic() < deadline:
        print(f"  waiting for {', '.join(others)} to finish (another throttled run on this disk)", flush=True)
        time.sleep(10)
    return others


def run_once(contender: Contender, cold: bool, throttle: Throttle, log: Path, dataset_dir: str,
             wait: float) -> dict | None:
    shared = wait_alone(wait) if cold else []
    if cold:
        run_child(contender.warmup, log.with_name(log.name + "-warmup"))
        state = make_cold(contender.files)
        with throttled([dataset_dir], throttle) as group:
            run = run_child(contender.command, log)
            disk = cgroup_reads(group)
    else:
        note = make_warm(contender.files)
        if note:
            print(f"  note: {note}")
        state, disk = None, None
        run = run_child(contender.command, log)
    if not run.ok or not run.result or run.result.get("status", "ok") != "ok":
        print(f"  {contender.name} {'cold' if cold else 'warm'} FAILED: {run.error_tail()}")
        return None
    seconds, images = run.result["seconds"], run.result["images"]
    return {"images_s": images / seconds, "mb_s": contender.bytes * images / contender.images / seconds / 1e6,
            "seconds": seconds, "images": images, "peak_pss": run.peak_pss, "peak_rss": run.peak_rss,
            "resident": None if state is None else state.resident, "ios": disk[0] if disk else None,
            "disk_bytes": disk[1] if disk else None, "shared": bool(shared or (cold and other_throttles()))}


def main() -> int:
    if "--child-raw" in sys.argv:
        rest = sys.argv[sys.argv.index("--child-raw") + 1:]
        return child_raw(rest[0], float(rest[1]) if len(rest) > 1 else None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still leaves the throttle's cgroup
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="corpus size (benchmarks/corpus_cache.py)")
    parser.add_argument("--files", type=int, default=1000, help="ImageFolder sample read per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iops", type=int, default=110)
    parser.add_argument("--mb-s", type=float, default=170.0)
    parser.add_argument("--paced", type=float, default=1200.0, help="images/s of recpack-paced's consumer")
    parser.add_argument("--paced-256", type=float, default=2500.0, help="images/s of recpack-256-paced's consumer")
    parser.add_argument("--only", default=None, help="comma-separated contender names")
    parser.add_argument("--wait-alone", type=float, default=900.0,
                        help="seconds a cold run waits for other throttled runs on the machine to end")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "hdd.md")
    args = parser.parse_args()

    corpus = load_corpus(args.images, 0)
    work = WORK / f"hdd-read-{args.images}"
    full = pack(corpus, work / "recpack")
    small = pack(corpus, work / "recpack-256", "--resize", "256")
    sample_dir = work / f"imagefolder-{args.files}"
    sample = linked_sample(corpus, args.files, sample_dir)
    spare_dir = work / "imagefolder-warmup"
    spare_files = linked_sample(corpus, 256, spare_dir, seed=1)
    spare = work / "recpack-warmup"
    if not (spare / "recpack.json").exists():
        spare_list = work / "warmup.txt"
        spare_list.write_text("".join(f"{path}\t0\n" for path in spare_files))
        subprocess.run([sys.executable, "-m", "recpack", "pack", str(spare_list), str(spare), "--shards", "4",
                        "--quiet", "--overwrite"], check=True)
    throttle = Throttle(args.iops, args.mb_s)
    runs = contenders(args, full, small, sample, sample_dir, spare, spare_dir)
    if args.only:
        runs = [c for c in runs if c.name in args.only.split(",")]
    results: dict[tuple[str, bool], list[dict | None]] = {(c.name, cold): [] for c in runs for cold in (True, False)}
    for round_index, contender in schedule(runs, args.rounds, rotate=True):
        for cold in (True, False):  # each contender's pair back to back: a slow minute hits both sides of its ratio
            where = str(sample_dir if contender.name == "imagefolder" else full)
            result = run_once(contender, cold, throttle, work / "logs" / f"{contender.name}-{cold}-{round_index}", where,
                              args.wait_alone)
            results[contender.name, cold].append(result)
            if result:
                disk = (f"  {result['ios']:,} I/Os, {result['disk_bytes'] / max(result['ios'], 1) / 1e6:.2f} MB each, "
                        f"disk/needed {result['disk_bytes'] / (contender.bytes * result['images'] / contender.images):.3f}"
                        if result["ios"] else "")
                print(f"round {round_index + 1} {contender.name:16s} {'cold' if cold else 'warm'} "
                      f"{result['images_s']:8,.0f} images/s {result['mb_s']:6.0f} MB/s{disk}", flush=True)
    write_report(args, corpus, runs, results, throttle)
    return 0


def write_report(args, corpus, runs: list[Contender], results, throttle: Throttle) -> None:
    def values(name: str, cold: bool, key: str = "images_s") -> list[float | None]:
        return [r[key] if r else None for r in results[name, cold]]

    def med(name: str, cold: bool, key: str = "images_s") -> float | None:
        return median([v for v in values(name, cold, key) if v is not None])

    by_name = {c.name: c for c in runs}
    rows = []
    for c in runs:
        cold_ios = [r for r in results[c.name, True] if r and r["ios"]]
        per_io = median([r["disk_bytes"] / r["ios"] / 1e6 for r in cold_ios])
        read_ratio = median([r["disk_bytes"] / (c.bytes * r["images"] / c.images) for r in cold_ios])
        rows.append([c.label, fmt(med(c.name, True)), fmt(med(c.name, True, "mb_s")), fmt(med(c.name, False)),
                     fmt(med(c.name, False, "mb_s")), fmt(median(per_round_ratios(values(c.name, True),
                                                                                 values(c.name, False))), ".2f"),
                     fmt(per_io, ".2f"), fmt(read_ratio, ".3f"), mib(med(c.name, True, "peak_pss")),
                     per_round(values(c.name, True)), per_round(values(c.name, False))])
    targets = []

    def disk_rate(name: str) -> float:
        c = by_name[name]
        return throttle.bytes_per_s / (c.bytes / c.images)

    if "recpack" in by_name:
        bound = [min(w, disk_rate("recpack")) if w else None for w in values("recpack", False)]
        targets.append(Target(f"recpack cold / min(warm, disk rate {disk_rate('recpack'):,.0f} images/s)", 0.90,
                              per_round_ratios(values("recpack", True), bound)))
    if "recpack-256" in by_name:
        targets.append(Target("recpack --resize 256 cold / warm", 0.90,
                              per_round_ratios(values("recpack-256", True), values("recpack-256", False))))
    for name in ("recpack-paced", "recpack-256-paced"):
        if name in by_name:
            bound = [min(w, disk_rate(name)) if w else None for w in values(name, False)]
            targets.append(Target(f"{by_name[name].label}: cold / min(warm, disk rate)", 0.90,
                                  per_round_ratios(values(name, True), bound)))
    for name in ("recpack-raw", "recpack-256-raw"):
        if name in by_name:
            rate = disk_rate(name)
            targets.append(Target(f"{by_name[name].label}, cold / disk rate ({rate:,.0f} images/s)",
                                  0.90 if name == "recpack-raw" else None,
                                  per_round_ratios(values(name, True), [rate] * args.rounds)))
    if "imagefolder" in by_name and "recpack" in by_name:
        targets.append(Target("recpack cold / ImageFolder cold (images/s)", None,
                              per_round_ratios(values("recpack", True), values("imagefolder", True))))
    full = by_name.get("recpack")
    lines = [
        f"# Reading from a simulated HDD ({throttle.describe()}): cold against warm", "",
        *machine_lines(sys.argv), "",
        f"Corpus: {corpus.count:,} JPEGs ({corpus.total_bytes / 1e9:.2f} GB); shards: 64 per dataset"
        + (f", {full.bytes / full.images / 1e3:.1f} KB per record" if full else "")
        + (f"; --resize 256: {by_name['recpack-256'].bytes / by_name['recpack-256'].images / 1e3:.1f} KB per record"
           if "recpack-256" in by_name else "")
        + f". {args.rounds} rounds; in each, every contender cold then warm; figures are medians of rounds.", "",
        "Cold: the contender's files evicted from the page cache, the epoch run inside recpack's cgroup throttle "
        "(`recpack.measure.throttle`); I/Os and bytes are the cgroup's counters. Warm: files read into the page "
        "cache first, no throttle. MB/s: compressed image bytes (shard bytes for recpack) per second. "
        "PSS: peak of the contender's process tree, cold.", "",
        *table(["contender", "cold images/s", "cold MB/s", "warm images/s", "warm MB/s", "cold/warm",
                "MB per I/O", "disk/needed", "PSS MiB", "cold per round", "warm per round"], "lrrrrrrrrll", rows),
        "", *targets_table(targets), "",
    ]
    shared = sum(1 for runs_ in results.values() for r in runs_ if r and r["shared"])
    if shared:
        lines += [f"Note: {shared} cold run(s) overlapped another throttled run on this machine (sharing the disk).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
