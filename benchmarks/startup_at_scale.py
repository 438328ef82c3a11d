"""What opening a dataset costs at ImageNet-21k scale: 14.2M records in 10,000 shards.

A synthetic manifest (no data: nothing here reads a shard) is enough, because
startup must not touch per-record data: the manifest holds one entry per
shard, and each shard's record index (.rpi) is loaded only when that shard is
read.  Times the import, construction, ``len``, one epoch's plan, the first
group's records, and ``state_dict``, for one rank of ``--world``.

    python benchmarks/startup_at_scale.py [--records 14200000] [--shards 10000] [--world 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time


def write_manifest(folder: str, records: int, shards: int) -> int:
    from recpack.format import manifest as mf
    from recpack.format.manifest import FileInfo, ShardFiles

    counts = [records // shards + (1 if i < records % shards else 0) for i in range(shards)]
    files = tuple(
        ShardFiles(f"shard-{i:05d}", n, FileInfo(f"shard-{i:05d}.rec", n * 110_000, 0),
                   FileInfo(f"shard-{i:05d}.idx", n * 12, 0), FileInfo(f"shard-{i:05d}.rpi", n * 20 + 128, 0))
        for i, n in enumerate(counts)
    )
    mf.save(folder, mf.Manifest(files, classes=tuple(f"n{i:08d}" for i in range(21_841))), durable=False)
    return os.path.getsize(os.path.join(folder, mf.MANIFEST_NAME))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=14_200_000)
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--world", type=int, default=64, help="ranks; rank 0's share is timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        manifest_bytes = write_manifest(folder, args.records, args.shards)
        started = time.perf_counter()
        from recpack import Augment, Partition, RecordDataset

        imported = time.perf_counter()
        dataset = RecordDataset(folder, batch_size=256, augment=Augment(size=224),
                                partition=Partition(rank=0, world=args.world))
        built = time.perf_counter()
        batches = len(dataset)
        measured = time.perf_counter()
        plan = dataset.plan()
        planned = time.perf_counter()
        plan.group_records(0)
        grouped = time.perf_counter()
        dataset.state_dict(batches_seen=batches // 2, num_workers=8)
        saved = time.perf_counter()
    print(f"{args.records:,} records in {args.shards:,} shards, rank 0 of {args.world}: "
          f"manifest {manifest_bytes / 1e6:.1f} MB")
    for name, seconds in (("import recpack (and torch)", imported - started), ("RecordDataset(...)", built - imported),
                          (f"len() = {batches:,} batches", measured - built),
                          (f"epoch plan ({len(plan.groups):,} groups)", planned - measured),
                          ("first group's records", grouped - planned), ("state_dict, 8 workers", saved - grouped)):
        print(f"  {name:32s} {seconds * 1e3:9.1f} ms")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (torch's import alone is ~230)")


if __name__ == "__main__":
    main()
