"""One rank of tests/test_distributed_s3.py, started by torchrun: read a bucket's dataset in several setups.

For each (dataset URL, DataLoader workers, batch size) it reads one epoch as this
rank and gathers every rank's labels and batch count with torch.distributed
(gloo); rank 0 writes them all to the JSON file named on the command line.
The labels name the records (the test packs each image with its line number).
"""

import json
import sys

import torch.distributed as dist
from torch.utils.data import DataLoader

from recpack import RecordDataset


def epoch(url: str, workers: int, batch: int) -> dict:
    dataset = RecordDataset(url, batch_size=batch, augment=None, shuffle=True, seed=7)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    labels, batches = [], 0
    for _, targets in loader:
        labels += [int(label) for label in targets]
        batches += 1
    return {"labels": labels, "batches": batches, "len": len(dataset)}


def main() -> None:
    out, setups = sys.argv[1], json.loads(sys.argv[2])
    dist.init_process_group("gloo")
    results = []
    for url, workers, batch in setups:
        mine = epoch(url, workers, batch)
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        results.append({"setup": [url, workers, batch], "ranks": every})
    if dist.get_rank() == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
