"""The report picture of ``recpack stats --plot``: sizes, classes, pixel values and the average image.

Drawn from the manifest's ``stats`` and the average image alone, so any dataset with
statistics can be pictured again without another pass.  matplotlib is optional (the
``plot`` extra); it is imported here only, through its object API (no pyplot state).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ...errors import RecpackError

CHANNEL_COLOURS = ("#d62728", "#2ca02c", "#1f77b4")
MAX_NAMED_BARS = 40  # up to this many classes get a named bar each
MAX_CLASS_BARS = 200  # more classes than this are shown as a sorted profile


def check_destination(path: str) -> None:
    """Refuse, in one line, a report that could not be drawn or written: before a pass, not after it."""
    _matplotlib()
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        example = os.path.join(path, "report.png")
        raise RecpackError(f"--plot {path}: a folder; give the picture's file name (e.g. {example})")
    if not os.path.isdir(folder):
        raise RecpackError(f"--plot {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK):
        raise RecpackError(f"--plot {path}: the folder {folder} is not writable")


def _matplotlib():
    """matplotlib's Figure and its Agg canvas, or the one line saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RecpackError("--plot needs matplotlib: pip install 'recpack[plot]'") from None
    return Figure, FigureCanvasAgg


def _figure():
    Figure, FigureCanvasAgg = _matplotlib()
    figure = Figure(figsize=(15, 10.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _steps(axes, histogram: dict[str, list[int]], label: str, colour: str | None = None) -> None:
    axes.stairs(histogram["counts"], histogram["edges"], label=label, color=colour, linewidth=1.5)


def _sizes(axes, stats: dict[str, Any]) -> None:
    for name, colour in (("width", "#9467bd"), ("height", "#ff7f0e")):
        d = stats[name]
        _steps(axes, d["histogram"], f"{name}: median {d['median']}, {d['min']}-{d['max']}", colour)
    axes.set_xscale("log")
    axes.set_xlabel("pixels")
    axes.set_ylabel("images")
    axes.set_title("Image sizes")
    axes.legend(fontsize=8)


def _bytes(axes, stats: dict[str, Any]) -> None:
    d = stats["bytes"]
    histogram = {"edges": [e / 1e3 for e in d["histogram"]["edges"]], "counts": d["histogram"]["counts"]}
    _steps(axes, histogram, f"mean {d['mean'] / 1e3:.1f} KB, median ~{d['median'] / 1e3:.1f} KB", "#8c564b")
    axes.set_xscale("log")
    axes.set_xlabel("KB per image")
    axes.set_ylabel("images")
    axes.set_title("Bytes per image")
    axes.legend(fontsize=8)


def _classes(axes, stats: dict[str, Any], classes: Sequence[str] | None) -> None:
    labels = stats.get("labels", {})
    if labels.get("overflow") or not labels.get("values"):
        axes.text(0.5, 0.5, "labels are not class indices", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    values, records = labels["values"], labels["records"]
    noun = "class" if labels["kind"] == "single" else "label"
    if len(values) <= MAX_NAMED_BARS:
        names = [classes[v] if classes and isinstance(v, int) and 0 <= v < len(classes) else str(v) for v in values]
        axes.bar(range(len(values)), records, color="#7f7f7f")
        axes.set_xticks(range(len(values)), names, rotation=90, fontsize=7 if len(values) > 20 else 9)
        axes.set_xlabel(noun)
    elif len(values) <= MAX_CLASS_BARS:
        axes.bar(values, records, color="#7f7f7f", width=1.0)
        axes.set_xlabel(f"{noun} ({len(values)} values)")
    else:
        axes.plot(sorted(records, reverse=True), color="#7f7f7f")
        axes.set_xlabel(f"{len(values)} {noun} values, most records first")
    axes.set_ylabel("records")
    axes.set_title(f"Records per {noun}")


def _pixels(axes, stats: dict[str, Any]) -> None:
    histogram = stats["pixel_histogram"]
    width = histogram["bin_width"]
    edges = np.arange(0, 257, width) / 255
    for counts, name, colour, mean in zip(histogram["counts"], "RGB", CHANNEL_COLOURS, stats["mean"]):
        total = max(sum(counts), 1)
        axes.stairs(np.asarray(counts) / total, edges, color=colour, label=f"{name}: mean {mean:.3f}", linewidth=1.5)
    axes.set_xlabel("pixel value (0-1 scale)")
    axes.set_ylabel("fraction of pixels")
    axes.set_title(f"Pixel values (1 pixel in {histogram['every']})")
    axes.legend(fontsize=8)


def _average(axes, image: np.ndarray | None) -> None:
    if image is None:
        axes.text(0.5, 0.5, "no average image", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.imshow(np.clip(image, 0, 1), interpolation="nearest")
        axes.set_title(f"Average image ({image.shape[1]}x{image.shape[0]}, each image squashed)")
    axes.set_axis_off()


def _weights(axes, masks: dict[str, Any]) -> None:
    weights = masks["weights"]
    axes.bar(range(len(weights)), weights, color="#17becf")
    axes.set_xlabel("mask class")
    axes.set_ylabel("weight")
    ignored = masks.get("ignore_index")
    axes.set_title("Median-frequency class weights" + (f" (ignoring {ignored})" if ignored is not None else ""))


def _channels(axes, stats: dict[str, Any]) -> None:
    """Mean and standard deviation per channel, with their 95% intervals when sampled."""
    interval = stats.get("interval95")
    for offset, name in ((-0.2, "mean"), (0.2, "std")):
        values = np.asarray(stats[name])
        errors = None
        if interval:
            bounds = np.asarray(interval[name])
            errors = np.abs(bounds.T - values)
        axes.bar(np.arange(3) + offset, values, 0.4, yerr=errors, capsize=4, color=CHANNEL_COLOURS,
                 alpha=1.0 if name == "mean" else 0.5, label=name)
    axes.set_xticks(range(3), [f"{c}\nmean | std" for c in "RGB"])
    axes.set_ylabel("0-1 scale")
    axes.set_title("Mean and std per channel" + (" (95% intervals)" if interval else ""))


def _text(axes, lines: list[str]) -> None:
    axes.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9, transform=axes.transAxes)
    axes.set_axis_off()


def write_report(path: str, stats: dict[str, Any], image: np.ndarray | None, lines: list[str],
                 classes: Sequence[str] | None = None) -> None:
    """Draw the report into ``path`` (PNG); ``lines`` is the text summary shown beside the charts."""
    if "mean" not in stats:
        raise RecpackError("nothing to plot: no image decoded")
    figure = _figure()
    panels = figure.subplot_mosaic([["sizes", "bytes", "classes"], ["pixels", "average", "extra"],
                                    ["text", "text", "text"]], height_ratios=[1, 1, 0.32])
    _sizes(panels["sizes"], stats)
    _bytes(panels["bytes"], stats)
    _classes(panels["classes"], stats, classes)
    _pixels(panels["pixels"], stats)
    _average(panels["average"], image)
    if "masks" in stats and stats["masks"]["weights"]:
        _weights(panels["extra"], stats["masks"])
    else:
        _channels(panels["extra"], stats)
    _text(panels["text"], lines)
    figure.suptitle("recpack stats", fontsize=14)
    figure.savefig(path)
