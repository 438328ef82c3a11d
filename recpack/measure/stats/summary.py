"""From a ``Tally`` to the manifest's ``stats`` (``format.stats``), and back to a few lines for people.

Pure functions of numbers: the exact moments become float means and deviations here, a
sample's per-image moments become 95% confidence intervals, mask pixel counts become
median-frequency class weights.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import numpy as np

from ...format import stats as contract
from .tally import BYTE_BINS_PER_OCTAVE, CHANNELS, HISTOGRAM_STEP, Tally

Z95 = 1.959963984540054  # the normal distribution's two-sided 95% point
PLOT_BINS_PER_OCTAVE = 16  # the size histograms kept for the picture: bins 4.4% wide
PIXEL_HISTOGRAM_BINS = 64  # the pixel histograms kept for the picture: 4 levels a bin


def mean_std(pixels: int, sums: Sequence[int], squares: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation, on the 0-255 scale.

    The variance is (N*Q - S^2) / N^2 computed on exact integers and rounded once, so no
    cancellation can creep in however many pixels there are.
    """
    means = [s / pixels for s in sums]
    stds = [math.sqrt((pixels * q - s * s) / (pixels * pixels)) for s, q in zip(sums, squares)]
    return means, stds


def sample_intervals(per_image: np.ndarray, population: int) -> tuple[np.ndarray, np.ndarray]:
    """95% confidence intervals, (channels, 2) on the 0-255 scale, for the mean and the std from sampled images.

    ``per_image`` rows are (pixels, sums..., squares...) of images drawn without
    replacement from ``population`` records.  Pixels of one image are not independent
    draws, images are: both statistics are ratios of per-image totals, so their standard
    errors come from the images' linearised contributions (the delta method), with the
    finite-population correction 1 - n/N.
    """
    rows = np.asarray(per_image, np.float64)
    n = len(rows)
    count, sums, squares = rows[:, :1], rows[:, 1 : 1 + CHANNELS], rows[:, 1 + CHANNELS :]
    total, mean_count = count.sum(), count.mean()
    mean = sums.sum(0) / total
    second = squares.sum(0) / total
    std = np.sqrt(np.maximum(second - mean * mean, 0.0))
    mean_terms = (sums - mean * count) / mean_count
    second_terms = (squares - second * count) / mean_count
    std_terms = (second_terms - 2 * mean * mean_terms) / np.where(std > 0, 2 * std, 1.0)
    correction = max(1.0 - n / population, 0.0)

    def half_width(terms: np.ndarray) -> np.ndarray:
        return Z95 * np.sqrt(correction * terms.var(0, ddof=1) / n)

    return (np.stack([mean - half_width(mean_terms), mean + half_width(mean_terms)], 1),
            np.stack([std - half_width(std_terms), std + half_width(std_terms)], 1))


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Class frequencies and weights by median-frequency balancing, for classes 0..the largest that occurs.

    freq_c = pixels of class c / pixels of the images where c occurs, and
    weight_c = median(freq) / freq_c over the classes that occur; a class that
    never occurs gets frequency and weight 0 (no pixel of it reaches the loss).
    """
    present = np.flatnonzero(pixels)
    if not len(present):
        return [], []
    size = int(present[-1]) + 1
    frequency = np.zeros(size)
    frequency[present] = pixels[present].astype(np.float64) / image_pixels[present].astype(np.float64)
    median = float(np.median(frequency[present]))
    weights = np.zeros(size)
    weights[present] = median / frequency[present]
    return frequency.tolist(), weights.tolist()


def _nearest_rank(sorted_values: list, cumulative: np.ndarray, q: float):
    return sorted_values[int(np.searchsorted(cumulative, max(1, math.ceil(q * cumulative[-1]))))]


def _log_histogram(bins: Counter) -> dict[str, list[int]]:
    """Counts on log bins PLOT_BINS_PER_OCTAVE to the octave (bin b: [2^(b/16), 2^((b+1)/16))): edges (rounded) and counts."""
    first, last = min(bins), max(bins)
    edges = [round(2 ** (b / PLOT_BINS_PER_OCTAVE)) for b in range(first, last + 2)]
    return {"edges": edges, "counts": [bins[b] for b in range(first, last + 1)]}


def _plot_bin(value: int) -> int:
    return math.floor(math.log2(max(value, 1)) * PLOT_BINS_PER_OCTAVE)


def distribution(counts: Counter) -> dict[str, Any]:
    """min, median, percentiles 5 and 95 (nearest rank), max, mean and a log histogram of exact value counts."""
    values = sorted(counts)
    cumulative = np.cumsum([counts[v] for v in values])
    summary = {"min": values[0], "max": values[-1], "mean": sum(v * n for v, n in counts.items()) / int(cumulative[-1])}
    for name, q in (("p5", 0.05), ("median", 0.5), ("p95", 0.95)):
        summary[name] = _nearest_rank(values, cumulative, q)
    bins = Counter()
    for value, n in counts.items():
        bins[_plot_bin(value)] += n
    return {**summary, "histogram": _log_histogram(bins)}


def byte_distribution(tally: Tally) -> dict[str, Any]:
    """Record sizes: exact min, max and mean; percentiles from the 1.1%-wide bins (their lower edges)."""
    bins = sorted(tally.byte_bins)
    cumulative = np.cumsum([tally.byte_bins[b] for b in bins])
    summary: dict[str, Any] = {"min": tally.bytes_low, "max": tally.bytes_high,
                               "mean": tally.bytes_total / tally.images}
    for name, q in (("p5", 0.05), ("median", 0.5), ("p95", 0.95)):
        summary[name] = round(2 ** (_nearest_rank(bins, cumulative, q) / BYTE_BINS_PER_OCTAVE))
    coarse = Counter()  # whole fine bins into each coarse one: 64 to the octave into 16
    for b, n in tally.byte_bins.items():
        coarse[b // (BYTE_BINS_PER_OCTAVE // PLOT_BINS_PER_OCTAVE)] += n
    return {**summary, "histogram": _log_histogram(coarse)}


def _label_summary(tally: Tally, label_width: int) -> dict[str, Any]:
    kind = "single" if label_width == 1 else "multi"
    if tally.labels_overflow:
        return {"kind": kind, "overflow": True}
    values = sorted(tally.labels)
    return {"kind": kind, "values": [int(v) if float(v).is_integer() else v for v in values],
            "records": [tally.labels[v] for v in values]}


def mean_image(tally: Tally) -> np.ndarray | None:
    """The average image, (side, side, 3) float32 on the 0-1 scale; None without one or without images."""
    if tally.mean_image is None or not tally.images:
        return None
    return (tally.mean_image.astype(np.float64) / (255.0 * tally.images)).astype(np.float32)


def summarize(tally: Tally, *, label_width: int, has_masks: bool, ignore_index: int | None,
              computed: dict[str, Any], population: int) -> dict[str, Any]:
    """The manifest's ``stats``; ``computed`` says how (method, records, seed, date ...)."""
    stats: dict[str, Any] = {"scale": contract.SCALE, "channels": contract.CHANNELS}
    if tally.images:
        means, stds = mean_std(tally.pixels, tally.sums, tally.squares)
        stats.update(mean=[m / 255 for m in means], std=[s / 255 for s in stds],
                     min=[v / 255 for v in tally.low], max=[v / 255 for v in tally.high])
        if tally.keep_per_image and 1 < len(tally.per_image) < population:
            mean_ci, std_ci = sample_intervals(np.array(tally.per_image), population)
            stats["interval95"] = {"mean": (mean_ci / 255).tolist(), "std": (std_ci / 255).tolist()}
    stats["computed"] = computed
    stats["images"], stats["pixels"] = tally.images, tally.pixels
    stats["moments"] = {"sum": list(tally.sums), "sum_sq": list(tally.squares)}
    if tally.images:
        coarse = tally.pixel_histogram.reshape(CHANNELS, PIXEL_HISTOGRAM_BINS, -1).sum(2)
        stats["pixel_histogram"] = {"bin_width": 256 // PIXEL_HISTOGRAM_BINS, "every": HISTOGRAM_STEP,
                                    "counts": coarse.astype(int).tolist()}
        stats["width"], stats["height"] = distribution(tally.widths), distribution(tally.heights)
        stats["bytes"] = byte_distribution(tally)
    stats["labels"] = _label_summary(tally, label_width)
    if has_masks:
        frequency, weights = median_frequency_weights(tally.mask_pixels, tally.mask_image_pixels)
        size = len(frequency)
        stats["masks"] = {"ignore_index": ignore_index, "pixels": tally.mask_pixels[:size].astype(int).tolist(),
                          "image_pixels": tally.mask_image_pixels[:size].astype(int).tolist(),
                          "frequency": frequency, "weights": weights}
    stats["failed"] = {"count": tally.failures, "records": [message for _, _, message in tally.failed]}
    return stats


def _values(values: Sequence[float]) -> str:
    return " ".join(f"{v:.4f}" for v in values)


def describe(stats: dict[str, Any]) -> list[str]:
    """A few lines on what the statistics say and how they were computed (``recpack info``, ``recpack stats``)."""
    computed = stats.get("computed", {})
    how = (f"sample of {computed.get('records', 0):,} of {computed.get('of', 0):,} records (seed {computed.get('seed')})"
           if computed.get("method") == "sample" else f"every record ({computed.get('records', 0):,})")
    failed = stats.get("failed", {}).get("count", 0)
    lines = [f"{how} on {computed.get('date')}, {failed} failed to decode"]
    if "mean" not in stats:
        return lines
    interval = stats.get("interval95")
    for name in ("mean", "std"):
        line = f"{name:5s} {_values(stats[name])}"
        if interval:
            line += "  (95%: " + ", ".join(f"{lo:.4f}-{hi:.4f}" for lo, hi in interval[name]) + ")"
        lines.append(line)
    lines.append(f"range {_values(stats['min'])} - {_values(stats['max'])}  ({stats['channels']}, {stats['scale']} scale)")
    width, height, size = stats["width"], stats["height"], stats["bytes"]
    lines.append(f"size  {width['min']}-{width['max']} x {height['min']}-{height['max']} px "
                 f"(median {width['median']} x {height['median']}), {size['mean'] / 1e3:.1f} KB a record on average")
    labels = stats.get("labels", {})
    if labels.get("values"):
        records = labels["records"]
        lines.append(f"{'class' if labels['kind'] == 'single' else 'label'} {len(records)} values, "
                     f"{min(records):,}-{max(records):,} records each")
    masks = stats.get("masks")
    if masks and masks["weights"]:
        shown = " ".join(f"{w:.3g}" for w in masks["weights"][:12]) + (" ..." if len(masks["weights"]) > 12 else "")
        lines.append(f"masks {len(masks['weights'])} classes, median-frequency weights {shown}")
    if stats.get("mean_image"):
        lines.append(f"image {stats['mean_image']['file']} (the average image, {stats['mean_image']['side']} px square)")
    return lines
