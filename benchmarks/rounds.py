"""Rounds: every contender once per round, in turn, and targets judged on ratios within a round.

Why: the machines are shared and noisy, so one-shot absolute numbers
mislead.  Two contenders of one round ran seconds apart, so a slow minute
hurts both sides of their ratio alike; a target is judged on the median of
those per-round ratios, never on a ratio of medians taken at different
times.

Standard library only.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from report import fmt, per_round, table

T = TypeVar("T")


def schedule(items: Sequence[T], rounds: int, rotate: bool = False) -> Iterator[tuple[int, T]]:
    """(round, item) for every item in every round: A B C A B C ..., or with ``rotate`` A B C B C A C A B ...

    Rotating keeps a slow drift of the machine from always favouring whoever runs first.
    """
    items = list(items)
    for round_index in range(rounds):
        shift = round_index % len(items) if rotate and items else 0
        for item in items[shift:] + items[:shift]:
            yield round_index, item


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def per_round_ratios(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> list[float]:
    """x / y for each round where both contenders gave a figure (a failed run gives None)."""
    return [x / y for x, y in zip(numerators, denominators) if x and y]


@dataclass
class Target:
    text: str
    required: float | None  # None: context, not a target
    ratios: list[float] | None  # per round; None or empty: not run

    @property
    def verdict(self) -> str:
        if not self.ratios:
            return "NOT RUN"
        if self.required is None:
            return "context"
        return "PASS" if median(self.ratios) >= self.required else "FAIL"


def targets_table(targets: Sequence[Target]) -> list[str]:
    return table(
        ["target", "required", "measured ratio (median of rounds)", "per-round ratios", "result"], "lrrll",
        ([t.text, fmt(t.required, ".2f"), fmt(median(t.ratios or []), ".2f"), per_round(t.ratios or [], ".2f"),
          t.verdict] for t in targets))
