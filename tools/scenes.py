"""Generated scenes for segmentation and detection: shapes of a few classes on a textured background.

Each scene comes with its pixel-label mask and its boxes, all derived from one
class map, so they agree by construction.  Used by the segmentation example,
the geometry figure and the tests; deterministic for a seed.

    python tools/scenes.py segmentation OUT --images 64      # OUT/list.txt: image<TAB>mask lines
    python tools/scenes.py detection OUT --images 64         # OUT/det.lst: im2rec detection list
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = 4  # 0 is the background; shapes are 1..3
COLOURS = np.array([[70, 90, 60], [220, 60, 50], [60, 110, 220], [235, 200, 60]], np.int32)


def scene(width: int, height: int, seed: int, shapes: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB pixels, class mask, boxes [class, xmin, ymin, xmax, ymax] normalised) of one scene.

    Shapes are rectangles and ellipses; a later shape covers earlier ones, and
    a box bounds what is left visible of its shape (a shape hidden entirely has none).
    """
    rng = np.random.default_rng(seed)
    ids = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(ids)
    classes = []
    for index in range(shapes):
        w, h = int(rng.integers(width // 8, width // 2)), int(rng.integers(height // 8, height // 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=index + 1)
        classes.append(int(rng.integers(1, CLASSES)))
    instance = np.asarray(ids)
    mask = np.zeros((height, width), np.uint8)
    boxes = []
    for index, cls in enumerate(classes):
        ys, xs = np.nonzero(instance == index + 1)
        if not len(xs):
            continue
        mask[instance == index + 1] = cls
        boxes.append([cls, xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height])
    texture = rng.normal(0, 12, (height, width, 1)) + 8 * np.sin(np.arange(width) / 7.0)[None, :, None]
    pixels = np.clip(COLOURS[mask] + texture, 0, 255).astype(np.uint8)
    return pixels, mask, np.array(boxes, np.float32).reshape(-1, 5)


def _sizes(count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(160, 400)), int(rng.integers(120, 300))) for _ in range(count)]


def write_segmentation_set(folder: Path, images: int, seed: int = 0) -> Path:
    """JPEGs and PNG masks in ``folder``, and ``folder/list.txt`` (``image<TAB>mask``); returns the list."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (width, height) in enumerate(_sizes(images, seed)):
        pixels, mask, _ = scene(width, height, seed * 100_003 + index)
        Image.fromarray(pixels).save(folder / f"{index:05d}.jpg", quality=92)
        Image.fromarray(mask).save(folder / f"{index:05d}.png")
        lines.append(f"{index:05d}.jpg\t{index:05d}.png")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def detection_labels(boxes: np.ndarray) -> list[float]:
    """MXNet's detection label vector: header width 2, object width 5, then the objects."""
    return [2.0, 5.0, *boxes.reshape(-1).tolist()]


def write_detection_set(folder: Path, images: int, seed: int = 0) -> Path:
    """JPEGs in ``folder`` and ``folder/det.lst``, an im2rec detection list; returns the list."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (width, height) in enumerate(_sizes(images, seed)):
        pixels, _, boxes = scene(width, height, seed * 100_003 + index)
        Image.fromarray(pixels).save(folder / f"{index:05d}.jpg", quality=92)
        labels = "\t".join(f"{value:.6g}" for value in detection_labels(boxes))
        lines.append(f"{index}\t{labels}\t{index:05d}.jpg")
    (folder / "det.lst").write_text("\n".join(lines) + "\n")
    return folder / "det.lst"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("segmentation", "detection"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write = write_segmentation_set if args.kind == "segmentation" else write_detection_set
    print(write(args.out, args.images, args.seed))


if __name__ == "__main__":
    main()
