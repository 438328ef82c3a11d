"""What a driver is given and gives back: a task per shard range, and the ranges that failed past the retries."""

from __future__ import annotations

from typing import Callable

RangeTask = Callable[[str, int, int], tuple]  # (OUT, first shard, stop) -> a small picklable summary
Failures = dict[tuple[int, int], str]  # (first, stop) -> why its last attempt failed
