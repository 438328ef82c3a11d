"""The manifest's ``stats`` field and the average image beside it: what ``recpack stats`` writes, what readers trust.

Scale: ``mean``, ``std``, ``min`` and ``max`` are per RGB channel on the 0-1 scale (pixel
value / 255), as torchvision's ``Normalize`` takes them after ``ToTensor``; ``scale`` says
so, and ``normalization`` refuses anything else rather than normalise by numbers 255 times
off.  ``moments`` keeps the exact integer sums on the 0-255 scale, so that statistics of
separately measured parts add up exactly.

The average image is ``stats-mean-<side>-<crc32c>.npy`` (float32, side x side x 3, 0-1
scale), named by its content: a new one never overwrites the file the current manifest
names, so a crash between the two writes leaves the old pair intact.
"""

from __future__ import annotations

import os
from typing import Any

import crc32c
import numpy as np

from ..errors import ManifestError

SCALE = "0-1"
CHANNELS = "RGB"
MEAN_IMAGE_PREFIX = "stats-mean-"
MEAN_IMAGE_SUFFIX = ".npy"


def normalization(stats: dict[str, Any] | None, where: str) -> tuple[list[float], list[float]] | None:
    """The (mean, std) a reader may normalise by, or None when the stats hold none; refuses a wrong scale."""
    if not stats or "mean" not in stats or "std" not in stats:
        return None
    mean, std = stats["mean"], stats["std"]
    scale = stats.get("scale")
    shaped = all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v) for v in (mean, std))
    if scale != SCALE or not shaped:
        raise ManifestError(f"{where}: stats mean/std are not 3 values on the {SCALE} scale (scale {scale!r}); "
                            "rerun recpack stats")
    # values in 0..1 have a mean in 0..1 and a standard deviation of at most 0.5
    if not all(0 <= x <= 1 for x in mean) or not all(0 < x <= 0.5 for x in std):  # NaN fails both
        raise ManifestError(f"{where}: stats mean {mean} / std {std} are not on the {SCALE} scale "
                            "(mean 0..1, std above 0 and at most 0.5); rerun recpack stats")
    return [float(x) for x in mean], [float(x) for x in std]


def write_mean_image(dataset_dir: str, image: np.ndarray, durable: bool = True) -> str:
    """Write the average image (side x side x 3, 0-1 scale) under its content name; return the name."""
    array = np.ascontiguousarray(image, dtype=np.float32)
    name = f"{MEAN_IMAGE_PREFIX}{array.shape[0]}-{crc32c.crc32c(array.tobytes()):08x}{MEAN_IMAGE_SUFFIX}"
    path = os.path.join(dataset_dir, name)
    temporary = path + ".tmp"
    try:
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:  # a full disk, Ctrl-C: no temporary file left beside the dataset
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return name


def load_mean_image(dataset_dir: str, stats: dict[str, Any]) -> np.ndarray | None:
    """The average image the stats name, or None when they name none."""
    name = (stats.get("mean_image") or {}).get("file")
    if not name:
        return None
    path = os.path.join(dataset_dir, name)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: the stats' average image is unreadable ({error})") from None


def is_mean_image(name: str) -> bool:
    return name.startswith(MEAN_IMAGE_PREFIX) and name.endswith((MEAN_IMAGE_SUFFIX, MEAN_IMAGE_SUFFIX + ".tmp"))


def remove_mean_images(dataset_dir: str, keep: str | None) -> None:
    """Remove average images (and their temporary files) other than ``keep``: what earlier runs left."""
    for name in os.listdir(dataset_dir):
        if is_mean_image(name) and name != keep:
            os.unlink(os.path.join(dataset_dir, name))
