"""The reader's grouped options, free of torch so that planning and the I/O model can use them too."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadOptions:
    """How records are fetched; none of these change which records an epoch holds."""

    shuffle_buffer: int = 256  # records shuffled together (rounded up to a multiple of the batch size)
    window: int = 64  # records read in one sequential run before jumping to another shard
    threads: int | None = None  # decode threads per process (default: cores / DataLoader workers)
    # decode tasks (of 16 records) in flight per thread; default 4 in the training process, and 1 in a
    # DataLoader worker, whose single thread then finishes a batch before it starts the next: one
    # batch buffer per worker instead of two, at the same speed
    decode_depth: int | None = None
    verify: bool = True  # check each record's CRC32C before use
    # read-ahead (``readahead``): the records of the next groups are read this many seconds of the
    # measured pace ahead of their use, and never more than this many MB per process
    readahead_s: float = 1.0
    readahead_mb: int = 256


@dataclass(frozen=True)
class Partition:
    """Who this process reads for.  ``rank``/``world`` default to torch.distributed, then RANK/WORLD_SIZE."""

    rank: int | None = None
    world: int | None = None
    uneven: str = "pad"  # "pad": repeat a few records so every rank sees the same count; "drop": skip them

    def __post_init__(self) -> None:
        if self.uneven not in ("pad", "drop"):
            raise ValueError("partition.uneven must be 'pad' or 'drop'")

    def resolve(self) -> tuple[int, int]:
        """(rank, world): as given, else from an initialised torch.distributed, else the environment."""
        if self.rank is not None and self.world is not None:
            return self.rank, self.world
        import torch.distributed  # here, not above: only a training process asks, and it has torch loaded

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
