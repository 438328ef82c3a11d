"""Partial statistics of some records, mergeable: every field is an exact integer count or sum.

Why integers and not float64 Welford/Chan: pixel values are whole numbers 0..255, so the
per-channel sums of values and of squares of any set of images are exact integers
(Python ints never overflow).  Merging two parts is then addition, and the statistics of
any split of a dataset -- threads, processes, shard ranges measured on other days -- are
*equal* to one pass's, not merely within rounding.  Floats appear once, at the end
(``summary``), where the variance is taken as (N*Q - S*S) / N^2 in exact arithmetic.

The average image is the sum of every image squashed to side x side as 8-bit pixels
(``_pixels``), so it merges exactly too.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

CHANNELS = 3
BYTE_BINS_PER_OCTAVE = 64  # record sizes are binned on a log scale: bins 1.1% wide
MAX_LABEL_VALUES = 100_000  # past this many distinct label values they are not class labels: counting stops
MAX_NAMED_FAILURES = 1000  # failures past this are counted, not named
# The pixel histograms (for the picture) count every 31st pixel: scattered increments over every
# pixel would cost a third of the decode.  31, not a round number, so that the sampled columns move
# from row to row.  Everything else counts every pixel.
HISTOGRAM_STEP = 31


def byte_bin(size: int) -> int:
    """The log-scale bin of a record size in bytes: bin b holds sizes in [2^(b/64), 2^((b+1)/64))."""
    return math.floor(math.log2(max(size, 1)) * BYTE_BINS_PER_OCTAVE)


@dataclass
class Tally:
    """What a pass has seen so far.  ``mean_size`` None: no average image; ``keep_per_image``: sampling."""

    mean_size: int | None = 224
    keep_per_image: bool = False
    records: int = 0  # records whose payload was read (their labels counted)
    images: int = 0  # images decoded
    pixels: int = 0  # pixels of those images (per channel)
    sums: list[int] = field(default_factory=lambda: [0] * CHANNELS)
    squares: list[int] = field(default_factory=lambda: [0] * CHANNELS)
    low: list[int] = field(default_factory=lambda: [255] * CHANNELS)
    high: list[int] = field(default_factory=lambda: [0] * CHANNELS)
    pixel_histogram: np.ndarray = field(default_factory=lambda: np.zeros((CHANNELS, 256), np.uint64))  # HISTOGRAM_STEP
    mean_image: np.ndarray | None = None  # (side, side, 3) uint64: sums of the squashed images' pixels
    # (None after construction only in a worker's tally whose sums were added elsewhere: see run._measure_task)
    widths: Counter = field(default_factory=Counter)
    heights: Counter = field(default_factory=Counter)
    byte_bins: Counter = field(default_factory=Counter)  # byte_bin(size) -> records
    bytes_total: int = 0
    bytes_low: int | None = None
    bytes_high: int = 0
    labels: Counter = field(default_factory=Counter)  # label value -> records carrying it
    labels_overflow: bool = False
    mask_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.uint64))  # mask class -> pixels
    mask_image_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.uint64))  # pixels of images with it
    failures: int = 0  # records whose payload or image (or mask) did not read
    failed: list[tuple[int, int, str]] = field(default_factory=list)  # (shard, record, message), the first ones
    per_image: list[tuple[int, ...]] = field(default_factory=list)  # (pixels, sums..., squares...) when sampling

    def __post_init__(self) -> None:
        if self.mean_image is None and self.mean_size:
            self.mean_image = np.zeros((self.mean_size, self.mean_size, CHANNELS), np.uint64)

    # --- adding one record ----------------------------------------------------------------

    def add_record(self, labels) -> None:
        """One record's labels: a single label counts its record once; several count it once per distinct value."""
        self.records += 1
        if self.labels_overflow:
            return
        values = [float(labels[0])] if len(labels) == 1 else sorted(set(map(float, labels)))
        for value in values:
            self.labels[value] += 1
        if len(self.labels) > MAX_LABEL_VALUES:
            self.labels_overflow, self.labels = True, Counter()

    def add_image(self, width: int, height: int, size: int, moments: tuple) -> None:
        """One decoded image: its size, record bytes, and ``_pixels.moments``' (sums, squares, minima, maxima)."""
        sums, squares, low, high = moments
        self.images += 1
        self.pixels += width * height
        for c in range(CHANNELS):
            self.sums[c] += sums[c]
            self.squares[c] += squares[c]
            self.low[c] = min(self.low[c], low[c])
            self.high[c] = max(self.high[c], high[c])
        self.widths[width] += 1
        self.heights[height] += 1
        self.byte_bins[byte_bin(size)] += 1
        self.bytes_total += size
        self.bytes_low = size if self.bytes_low is None else min(self.bytes_low, size)
        self.bytes_high = max(self.bytes_high, size)
        if self.keep_per_image:
            self.per_image.append((width * height, *sums[:CHANNELS], *squares[:CHANNELS]))

    def add_mask(self, counts: np.ndarray, ignore_index: int | None) -> None:
        """One mask's pixel count per class (256 values); ``ignore_index`` is left out of every count."""
        if ignore_index is not None:
            counts = counts.copy()
            counts[ignore_index] = 0
        self.mask_pixels += counts
        self.mask_image_pixels[counts > 0] += counts.sum(dtype=np.uint64)

    def add_failure(self, shard: int, record: int, message: str) -> None:
        self.failures += 1
        if len(self.failed) < MAX_NAMED_FAILURES:
            self.failed.append((shard, record, message))


def _sum_images(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Average-image sums added; None counts as none (a worker's tally whose sums went elsewhere, ``run``)."""
    return a if b is None else b if a is None else a + b


def _counts_added(a: Counter, b: Counter) -> Counter:
    """a + b in the time of the smaller: Counter's ``+`` walks both, and a pass's merged counts grow with each unit."""
    larger, smaller = (a, b) if len(a) >= len(b) else (b, a)
    total = larger.copy()
    total.update(smaller)
    return total


def merge(a: Tally, b: Tally) -> Tally:
    """The tally of both parts' records, as one pass over them would have made it (exactly)."""
    if a.mean_size != b.mean_size:
        raise ValueError(f"cannot merge tallies with average images of {a.mean_size} and {b.mean_size} pixels")
    labels_overflow = a.labels_overflow or b.labels_overflow
    return Tally(
        mean_size=a.mean_size,
        keep_per_image=a.keep_per_image or b.keep_per_image,
        records=a.records + b.records,
        images=a.images + b.images,
        pixels=a.pixels + b.pixels,
        sums=[x + y for x, y in zip(a.sums, b.sums)],
        squares=[x + y for x, y in zip(a.squares, b.squares)],
        low=[min(x, y) for x, y in zip(a.low, b.low)],
        high=[max(x, y) for x, y in zip(a.high, b.high)],
        pixel_histogram=a.pixel_histogram + b.pixel_histogram,
        mean_image=_sum_images(a.mean_image, b.mean_image),
        widths=_counts_added(a.widths, b.widths),
        heights=_counts_added(a.heights, b.heights),
        byte_bins=_counts_added(a.byte_bins, b.byte_bins),
        bytes_total=a.bytes_total + b.bytes_total,
        bytes_low=min((x for x in (a.bytes_low, b.bytes_low) if x is not None), default=None),
        bytes_high=max(a.bytes_high, b.bytes_high),
        labels=Counter() if labels_overflow else _counts_added(a.labels, b.labels),
        labels_overflow=labels_overflow,
        mask_pixels=a.mask_pixels + b.mask_pixels,
        mask_image_pixels=a.mask_image_pixels + b.mask_image_pixels,
        failures=a.failures + b.failures,
        failed=sorted(a.failed + b.failed)[:MAX_NAMED_FAILURES],
        per_image=sorted(a.per_image + b.per_image),
    )
