"""recpack's reader against the hardware's ceilings, side by side in one run.

Contenders, alternated round by round so that machine noise hits all alike:
  bare-decode     libjpeg-turbo full-size decode of every image, pre-read bytes, one process per core
  recpack-dl      RecordDataset(batch_size=256, RandomResizedCrop 224 + flip) via DataLoader(num_workers=cores)
  recpack-threads the same with num_workers=0: decode threads in the training process
  raw-warm        RecordDataset(augment=None): records only, CRC-checked, from the page cache
  cat-warm        `cat` of the shard files to /dev/null, from the page cache
Cold-cache pair (--cold, needs root or file ownership for posix_fadvise DONTNEED):
  raw-cold / cat-cold: the same after evicting the shards from the page cache (recpack.measure.pagecache).
The two recpack epochs each run in a fresh interpreter, whose process tree's peak memory is sampled
from outside (summed RSS, and summed PSS, which counts shared pages once: recpack.measure.procstats),
so that the tree measured is the reader's, not this harness's.  The ceilings are ceilings.py's, the
corpus and the packed shards those of compare.py (cached in benchmarks/.work).
--memory-scaling measures peak memory again, sampled every 20 ms, at the full size and at a tenth.

    python benchmarks/bench_read.py [--images 20000] [--rounds 3] [--cold]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ceilings import cat_files, decode_on_all_cores
from compare_packers import ensure_packed, work_folder
from corpus_cache import load_corpus
from harness import run_child
from prefault import prefault
from report import fmt, table
from rounds import Target, median, per_round_ratios, schedule, targets_table
from settings import CPUS

from recpack.measure.pagecache import make_cold

SPEED_SAMPLING = 0.2  # s between memory samples in the timed epochs: each sample costs ~1 ms per process
MEMORY_SAMPLING = 0.02  # s, in the memory-scaling epochs: fine enough for a 2-second epoch's peak too
MEMORY_TARGET = 600e6  # bytes of peak memory (PSS) for the process tree


def packed(images: int) -> Path:
    """recpack's shards of the corpus of ``images`` images (seed 0), packed once and cached."""
    corpus = load_corpus(images, 0)
    work = work_folder(images, 0)
    work.mkdir(parents=True, exist_ok=True)
    result = ensure_packed("recpack", corpus.root, work, repack=False)
    if result["status"] != "ok":
        sys.exit(result["note"])
    return work / "data-recpack"


def recpack_epoch(dataset: Path, workers: int, sampling: float = SPEED_SAMPLING) -> dict:
    """One epoch in a fresh interpreter: {seconds, images, peak_rss, peak_pss} of its process tree."""
    done = run_child([sys.executable, __file__, "_epoch", str(dataset), str(workers)],
                     dataset.parent / "logs" / f"bench-read-epoch-{workers}", sample_every=sampling)
    if not done.ok or done.result is None:
        sys.exit(f"recpack epoch failed: {done.error_tail()}")
    return {**done.result, "peak_rss": done.peak_rss, "peak_pss": done.peak_pss}


def child_epoch(dataset: str, workers: str) -> None:
    import torch

    from recpack import Augment, RecordDataset

    ds = RecordDataset(dataset, batch_size=256, augment=Augment(size=224))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=int(workers))
    started = time.perf_counter()
    count = sum(len(images) for images, _ in loader)
    print(json.dumps({"seconds": time.perf_counter() - started, "images": count}))


def raw_epoch(dataset: Path) -> tuple[float, int]:
    from recpack import RecordDataset

    ds = RecordDataset(str(dataset), batch_size=256, augment=None)
    started = time.perf_counter()
    total = sum(len(image) for images, _ in ds for image in images)
    return time.perf_counter() - started, total


def cold(shards: list[str], measure):
    """``measure`` after evicting the shards, saying so when the eviction did not work."""
    state = make_cold(shards)
    if state.note:
        print(f"  note: {state.note}", flush=True)
    return measure()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also measure after evicting the shards from the page cache")
    parser.add_argument("--memory-scaling", action="store_true",
                        help="also compare peak memory on a dataset a tenth the size (is memory flat in dataset size?)")
    args = parser.parse_args()
    dataset = packed(args.images)
    sources = load_corpus(args.images, 0).paths
    shards = sorted(str(p) for p in dataset.glob("shard-*.rec"))
    prefault()  # a fresh VM backs memory lazily: see benchmarks/prefault.py
    peaks: dict[int, list[dict]] = {}  # the recpack epochs' memory, by loader workers

    def decode():
        result = decode_on_all_cores(sources, CPUS)
        return result["seconds"], result["images"]

    def epoch(workers: int):
        result = recpack_epoch(dataset, workers)
        peaks.setdefault(workers, []).append(result)
        return result["seconds"], result["images"]

    contenders = {"bare-decode": decode, "recpack-dl": lambda: epoch(CPUS), "recpack-threads": lambda: epoch(0),
                  "raw-warm": lambda: raw_epoch(dataset), "cat-warm": lambda: cat_files(shards)}
    if args.cold:
        contenders |= {"raw-cold": lambda: cold(shards, lambda: raw_epoch(dataset)),
                       "cat-cold": lambda: cold(shards, lambda: cat_files(shards))}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index, name in schedule(list(contenders), args.rounds):
        seconds, amount = contenders[name]()
        rates[name].append(amount / seconds)
        print(f"  round {round_index + 1}/{args.rounds} {name:16s} {amount / seconds:12,.0f}", flush=True)

    shard_bytes = sum(Path(shard).stat().st_size for shard in shards)
    print(f"\n{args.images} images, {len(shards)} shards, {shard_bytes / 1e9:.2f} GB, {CPUS} cores\n")
    print("\n".join(table(["contender", "median", "per round", "unit"], "lrll",
                          ([name, fmt(median(values)), " / ".join(fmt(v) for v in values),
                            "bytes/s" if name.startswith(("raw", "cat")) else "images/s"]
                           for name, values in rates.items()))))
    goals = [Target("recpack-dl >= 0.85 x bare-decode", 0.85,
                    per_round_ratios(rates["recpack-dl"], rates["bare-decode"])),
             Target("context: recpack-threads / bare-decode", None,
                    per_round_ratios(rates["recpack-threads"], rates["bare-decode"])),
             Target("context: raw-warm / cat-warm (target: raw-warm >= 1 GB/s)", None,
                    per_round_ratios(rates["raw-warm"], rates["cat-warm"]))]
    if args.cold:
        goals.append(Target("raw-cold >= 0.90 x cat-cold", 0.90,
                            per_round_ratios(rates["raw-cold"], rates["cat-cold"])))
    print("\n" + "\n".join(targets_table(goals)) + "\n")
    print(f"raw-warm = {median(rates['raw-warm']) / 1e9:.2f} GB/s (target >= 1 GB/s)")
    for name, workers in (("recpack-dl", CPUS), ("recpack-threads", 0)):
        rss, pss = (max(m[key] for m in peaks[workers]) for key in ("peak_rss", "peak_pss"))
        print(f"peak memory of the process tree, {name}: summed RSS {rss / 1e6:.0f} MB, PSS {pss / 1e6:.0f} MB "
              f"(target <= {MEMORY_TARGET / 1e6:.0f} MB)")
    if args.memory_scaling:
        # both sizes sampled alike and finely: the timed epochs' coarse sampling misses more of a short epoch's peak
        small, large = (recpack_epoch(packed(n), CPUS, MEMORY_SAMPLING) for n in (args.images // 10, args.images))
        print(f"peak memory, recpack-dl, sampled every {MEMORY_SAMPLING * 1e3:.0f} ms: summed RSS "
              f"{large['peak_rss'] / 1e6:.0f} MB, PSS {large['peak_pss'] / 1e6:.0f} MB at {args.images} images "
              f"(target <= {MEMORY_TARGET / 1e6:.0f} MB); PSS {small['peak_pss'] / 1e6:.0f} MB at "
              f"{args.images // 10}: ratio {large['peak_pss'] / small['peak_pss']:.2f} (target <= 1.10)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_epoch"]:
        child_epoch(*sys.argv[2:4])
    else:
        main()
