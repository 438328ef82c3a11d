"""Pure functions that decide which records go where and in which order.

Nothing here touches files, torch or global random state: every result is a
function of the numbers passed in, so it is the same in every process and
easy to test over grids of parameters.
"""

from __future__ import annotations

import numpy as np


def shuffled_order(count: int, seed: int) -> np.ndarray:
    """A permutation of range(count) drawn from ``seed`` alone."""
    return np.random.default_rng(seed).permutation(count)


def split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    """Cut range(count) into ``parts`` contiguous (start, stop) ranges whose sizes differ by at most one."""
    if parts < 1:
        raise ValueError("parts must be at least 1")
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for part in range(parts):
        stop = start + base + (1 if part < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges
