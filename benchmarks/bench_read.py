"""recpack's reader against the hardware's ceilings, side by side in one run.

Contenders, alternated round by round so that machine noise hits all alike:
  bare-decode     libjpeg-turbo full-size decode of every image, pre-read bytes, one process per core
  recpack-dl      RecordDataset(batch_size=256, RandomResizedCrop 224 + flip) via DataLoader(num_workers=cores)
  recpack-threads the same with num_workers=0: decode threads in the training process
  raw-warm        RecordDataset(augment=None): records only, CRC-checked, from the page cache
  cat-warm        `cat` of the shard files to /dev/null, from the page cache
Cold-cache pair (--cold, needs root or file ownership for posix_fadvise DONTNEED):
  raw-cold / cat-cold: the same after evicting the shards from the page cache.
Peak RSS of the whole process tree is sampled for recpack-dl and recpack-threads (sum of RSS, and
sum of PSS, which counts shared pages once); each of these epochs runs in a fresh interpreter, so
that the tree measured is the reader's, not this harness's with its leftovers from other contenders.
--memory-scaling measures peak memory again, sampled every 20 ms, at the full size and at a tenth.

    python benchmarks/bench_read.py [--images 20000] [--rounds 3] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from prefault import prefault
from recpack.measure.procstats import TreeMemory

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"
CORES = os.cpu_count() or 1


def corpus(images: int) -> Path:
    folder = WORK / f"corpus-{images}-s0"
    if not (folder / "list.txt").exists():
        subprocess.run([sys.executable, str(ROOT / "make_corpus.py"), str(folder), "--images", str(images)], check=True)
    return folder


def packed(images: int) -> Path:
    out = WORK / f"packed-{images}"
    if not (out / "recpack.json").exists():
        subprocess.run([sys.executable, "-m", "recpack", "pack", str(corpus(images) / "list.txt"), str(out),
                        "--shards", "64", "--overwrite", "--quiet"], check=True)
    return out


def shard_files(dataset: Path) -> list[str]:
    return sorted(str(p) for p in dataset.glob("shard-*.rec"))


def evict(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _decode_files(paths: list[str]) -> tuple[float, int]:
    """Read the files first, then time only their decoding (full size, RGB)."""
    from turbojpeg import TJPF_RGB, TurboJPEG

    tj = TurboJPEG()
    datas = [Path(path).read_bytes() for path in paths]
    started = time.perf_counter()
    for data in datas:
        tj.decode(data, pixel_format=TJPF_RGB)
    return time.perf_counter() - started, len(datas)


def bare_decode(paths: list[str]) -> tuple[float, int]:
    """One process per core, each decoding its share; the rate is the sum of their rates."""
    with ProcessPoolExecutor(CORES) as pool:
        results = list(pool.map(_decode_files, [paths[i::CORES] for i in range(CORES)]))
    count = sum(n for _, n in results)
    return count / sum(n / seconds for seconds, n in results), count


SPEED_SAMPLING = 0.2  # s between memory samples in the timed epochs: each sample costs ~1 ms per process
MEMORY_SAMPLING = 0.02  # s, in the memory-scaling epochs: fine enough for a 2-second epoch's peak too


def recpack_epoch(dataset: Path, workers: int, sampling: float = SPEED_SAMPLING) -> tuple[float, int, dict]:
    """One epoch in a fresh interpreter, so that the memory measured is the reader's and not this harness's.

    Returns (seconds, images, peak memory of the child's process tree, sampled every ``sampling`` s).
    """
    out = subprocess.run([sys.executable, __file__, "_epoch", str(dataset), str(workers), str(sampling)],
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], result["images"], result


def child_epoch(dataset: str, workers: str, sampling: str) -> None:
    import torch

    from recpack import RecordDataset
    from recpack import Augment

    ds = RecordDataset(dataset, batch_size=256, augment=Augment(size=224))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=int(workers))
    with TreeMemory(float(sampling)) as memory:
        started = time.perf_counter()
        count = sum(len(images) for images, _ in loader)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "images": count, "peak_rss": memory.peak_rss, "peak_pss": memory.peak_pss}))


def raw_epoch(dataset: Path) -> tuple[float, int]:
    from recpack import RecordDataset

    ds = RecordDataset(str(dataset), batch_size=256, augment=None)
    started = time.perf_counter()
    total = sum(len(image) for images, _ in ds for image in images)
    return time.perf_counter() - started, total


def cat(paths: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started, sum(os.path.getsize(p) for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also measure after evicting the shards from the page cache")
    parser.add_argument("--memory-scaling", action="store_true",
                        help="also compare peak memory on a dataset a tenth the size (is memory flat in dataset size?)")
    args = parser.parse_args()
    dataset = packed(args.images)
    prefault()  # a fresh VM backs memory lazily: see benchmarks/prefault.py
    shards = shard_files(dataset)
    sources = sorted(str(p) for p in (corpus(args.images)).rglob("*.jpg"))
    rates: dict[str, list[float]] = {}
    peaks: list[dict] = []  # peak memory of each recpack-dl epoch
    thread_peaks: list[dict] = []

    def record(name: str, seconds: float, amount: float) -> None:
        rates.setdefault(name, []).append(amount / seconds)
        print(f"  {name:16s} {amount / seconds:12,.0f}", flush=True)

    for round_number in range(args.rounds):
        print(f"round {round_number + 1}/{args.rounds}", flush=True)
        record("bare-decode", *bare_decode(sources))
        seconds, images, memory = recpack_epoch(dataset, CORES)
        record("recpack-dl", seconds, images)
        peaks.append(memory)
        seconds, images, memory = recpack_epoch(dataset, 0)
        record("recpack-threads", seconds, images)
        thread_peaks.append(memory)
        record("raw-warm", *raw_epoch(dataset))
        record("cat-warm", *cat(shards))
        if args.cold:
            evict(shards)
            record("raw-cold", *raw_epoch(dataset))
            evict(shards)
            record("cat-cold", *cat(shards))
    median = {name: statistics.median(values) for name, values in rates.items()}
    print()
    print(f"{args.images} images, {len(shards)} shards, {sum(map(os.path.getsize, shards)) / 1e9:.2f} GB, {CORES} cores")
    print("| contender | median | unit |")
    print("|---|---:|---|")
    for name, value in median.items():
        unit = "bytes/s" if name.startswith(("raw", "cat")) else "images/s"
        print(f"| {name} | {value:,.0f} | {unit} |")
    print()
    print(f"recpack-dl / bare-decode      = {median['recpack-dl'] / median['bare-decode']:.2f}  (target >= 0.85)")
    print(f"recpack-threads / bare-decode = {median['recpack-threads'] / median['bare-decode']:.2f}")
    print(f"raw-warm = {median['raw-warm'] / 1e9:.2f} GB/s (target >= 1 GB/s); raw-warm / cat-warm = {median['raw-warm'] / median['cat-warm']:.2f}")
    if args.cold:
        print(f"raw-cold / cat-cold = {median['raw-cold'] / median['cat-cold']:.2f}  (target >= 0.90)")
    for name, samples in (("recpack-dl", peaks), ("recpack-threads", thread_peaks)):
        rss, pss = max(m["peak_rss"] for m in samples), max(m["peak_pss"] for m in samples)
        print(f"peak memory of the process tree, {name}: summed RSS {rss / 1e6:.0f} MB, PSS {pss / 1e6:.0f} MB (target <= 600 MB)")
    if args.memory_scaling:
        # both sizes sampled alike and finely: the timed epochs' coarse sampling misses more of a short epoch's peak
        small, large = (recpack_epoch(packed(n), CORES, MEMORY_SAMPLING)[2] for n in (args.images // 10, args.images))
        print(f"peak memory, recpack-dl, sampled every {MEMORY_SAMPLING * 1e3:.0f} ms: summed RSS {large['peak_rss'] / 1e6:.0f} MB, "
              f"PSS {large['peak_pss'] / 1e6:.0f} MB at {args.images} images (target <= 600 MB); "
              f"PSS {small['peak_pss'] / 1e6:.0f} MB at {args.images // 10}: ratio {large['peak_pss'] / small['peak_pss']:.2f} "
              f"(target <= 1.10)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_epoch"]:
        child_epoch(*sys.argv[2:5])
    else:
        main()
