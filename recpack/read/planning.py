"""The epoch plan: which records each rank and DataLoader worker reads, and in which order.

Nothing here touches files, torch or global random state: every result is a
function of the numbers passed in, so it is the same in every process and
easy to test over grids of parameters.
"""

from __future__ import annotations

import numpy as np


# An epoch is planned in three steps, each a pure function:
#   1. epoch_sequence: every shard is cut into windows of ``window`` records (their
#      boundaries shifted by a random phase per epoch and shard), and the windows of
#      all shards are shuffled.  Read in that order, a window is one sequential read.
#   2. rank_span: each rank takes a contiguous, equally long slice of that sequence
#      (padded by wrapping around, or with the remainder dropped).
#   3. rank_groups: the slice is cut into groups of ``group`` records (a multiple of
#      the batch size); a group is the unit of shuffling (its records are permuted),
#      of work (groups go round-robin to DataLoader workers) and of resume.


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(key) for key in keys])


def epoch_sequence(
    shard_sizes: list[int], seed: int, epoch: int, shuffle: bool, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The epoch's windows as arrays (shard, first record, record count), in reading order."""
    shards, starts, counts = [], [], []
    rng = _rng(seed, epoch, 0)
    for shard, size in enumerate(shard_sizes):
        phase = int(rng.integers(window)) if shuffle and size > window else 0
        edges = [0] + list(range(phase or window, size, window)) + [size]
        for first, stop in zip(edges[:-1], edges[1:]):
            if stop > first:
                shards.append(shard)
                starts.append(first)
                counts.append(stop - first)
    order = rng.permutation(len(shards)) if shuffle else np.arange(len(shards))
    return (np.asarray(shards, np.int64)[order], np.asarray(starts, np.int64)[order], np.asarray(counts, np.int64)[order])


def rank_span(total: int, rank: int, world: int, pad: bool) -> tuple[int, int]:
    """(start, length) of this rank's slice of the epoch sequence; equal lengths on every rank.

    With ``pad`` the slice may run past ``total`` and wraps to the start (some
    records are seen twice); without, the last ``total % world`` records are skipped.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in range for world size {world}")
    length = -(-total // world) if pad else total // world
    return rank * length, length


def rank_groups(span_length: int, group: int) -> list[tuple[int, int]]:
    """(offset in the rank's span, record count) of each group; only the last may be short."""
    return [(start, min(group, span_length - start)) for start in range(0, span_length, group)]


def group_permutation(count: int, seed: int, epoch: int, group_key: int, shuffle: bool) -> np.ndarray:
    """The order in which a group's records are yielded (identity when not shuffling)."""
    return _rng(seed, epoch, 1, group_key).permutation(count) if shuffle else np.arange(count)


def locate(positions: np.ndarray, window_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions in the epoch sequence (taken modulo its length): (window index, offset in window)."""
    ends = np.cumsum(window_counts)
    positions = positions % ends[-1]
    windows = np.searchsorted(ends, positions, side="right")
    return windows, positions - (ends[windows] - window_counts[windows])


def worker_groups(group_ids: list[int], worker: int, workers: int) -> list[int]:
    """The groups one DataLoader worker handles: every ``workers``-th, starting at ``worker``."""
    return group_ids[worker::workers]


def round_robin_consumed(batches_per_worker: list[int], batches_seen: int) -> list[int]:
    """How many batches each worker had delivered after the DataLoader yielded ``batches_seen``.

    The DataLoader takes one batch from each worker in turn and skips workers
    that are exhausted; this replays that rule.
    """
    delivered = [0] * len(batches_per_worker)
    remaining = batches_seen
    while remaining > 0:
        progressed = False
        for worker, available in enumerate(batches_per_worker):
            if remaining == 0:
                break
            if delivered[worker] < available:
                delivered[worker] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"{batches_seen} batches is more than the epoch holds ({sum(batches_per_worker)})")
    return delivered


class EpochPlan:
    """One rank's epoch: its groups, and which (shard, record) each group position holds."""

    def __init__(self, shard_sizes: list[int], *, seed: int, epoch: int, shuffle: bool, window: int,
                 group: int, rank: int, world: int, pad: bool):
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.window_shards, self.window_starts, self.window_counts = epoch_sequence(
            shard_sizes, seed, epoch, shuffle, window
        )
        self.total = int(sum(shard_sizes))
        self.span_start, self.span_length = rank_span(self.total, rank, world, pad)
        self.groups = rank_groups(self.span_length, group)

    def group_records(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, record) arrays of one group, in the order they are yielded."""
        offset, count = self.groups[index]
        positions = self.span_start + offset + np.arange(count)
        windows, within = locate(positions, self.window_counts)
        order = group_permutation(count, self.seed, self.epoch, self.span_start + offset, self.shuffle)
        return self.window_shards[windows][order], (self.window_starts[windows] + within)[order]


def read_runs(shards: np.ndarray, records: np.ndarray) -> list[tuple[int, int, int]]:
    """Cover a set of (shard, record) with (shard, first, stop) runs of consecutive records, in file order."""
    keys = np.unique(shards.astype(np.int64) << 40 | records.astype(np.int64))
    shard_of, record_of = keys >> 40, keys & ((1 << 40) - 1)
    breaks = np.flatnonzero((np.diff(shard_of) != 0) | (np.diff(record_of) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(keys)]])
    return [(int(shard_of[a]), int(record_of[a]), int(record_of[b - 1]) + 1) for a, b in zip(starts, stops)]
