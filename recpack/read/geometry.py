"""Where every output pixel comes from: the geometry modes as pure functions of sizes, options and a random source.

Every mode chooses one ``Placement``: a rectangle of the source image (full-size
pixels, inside the image) that lands on a rectangle of the output canvas (whole
pixels, inside the canvas); the rest of the canvas is padding, and a flip mirrors
the whole canvas.  The image, its mask and its boxes all go through the same
placement, which is why they cannot drift apart: the decoder reads the source
rectangle at the smallest sufficient DCT scale, the mask is sampled from it with
nearest neighbour, and ``place_boxes`` maps the boxes with the same affine map.

    mode                  source rectangle               target rectangle          canvas
    random_resized_crop   random area/aspect (train)     the whole canvas          H x W
    center_crop           centre, shorter side scaled    the whole canvas (padded  H x W
                          to ``resize``                  if the crop leaves the image)
    resize                the whole image                the whole canvas          H x W
    letterbox             the whole image                centred, aspect kept      H x W
    scale_crop            a random H x W window of the   top-left, as much of it   H x W
                          image zoomed by ``zoom``       as the zoomed image fills
    full                  the whole image                the whole canvas          the image's own size

Nothing here decodes or allocates: the functions are tested over grids of sizes
(``tests/test_geometry.py``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

MODES = ("random_resized_crop", "center_crop", "resize", "letterbox", "scale_crop", "full")
# modes that draw from the random source beyond the flip: they need train=True
RANDOM_MODES = ("random_resized_crop",)


@dataclass(frozen=True)
class Placement:
    """A source rectangle (float, full-size pixels) drawn onto a target rectangle (int) of a canvas, maybe mirrored.

    ``flip`` mirrors the whole canvas after drawing, padding included, as a
    flip after a padded crop does in torchvision's and mmseg's pipelines.
    """

    source: tuple[float, float, float, float]  # left, top, width, height in the source image
    target: tuple[int, int, int, int]  # left, top, width, height on the canvas, before the flip
    canvas: tuple[int, int]  # (height, width)
    flip: bool
    source_size: tuple[int, int]  # the source image's (width, height)

    @property
    def drawn(self) -> tuple[int, int, int, int]:
        """The target rectangle where the pixels end up, after the flip."""
        left, top, width, height = self.target
        return (self.canvas[1] - left - width if self.flip else left), top, width, height

    @property
    def padded(self) -> bool:
        return self.target != (0, 0, self.canvas[1], self.canvas[0])

    def as_row(self) -> list[float]:
        """What a caller needs to map outputs back to the source (``PLACEMENT_COLUMNS``)."""
        return [*self.drawn, *self.source, float(self.flip), *self.source_size]


# drawn rectangle on the output (the rest is padding), source rectangle it shows, flip, source image size
PLACEMENT_COLUMNS = ("left", "top", "width", "height", "source_left", "source_top", "source_width",
                     "source_height", "flip", "image_width", "image_height")


def random_resized_crop(width: int, height: int, scale, ratio, flip: bool,
                        rng: random.Random) -> tuple[float, float, float, float, bool]:
    """(left, top, width, height, flip) as torchvision's RandomResizedCrop samples it: 10 tries, then a centre crop.

    The flip is drawn first: the order of draws is part of the result for a
    given seed, and recpack's earlier releases drew it first.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    flipped = flip and bool(rng.random() < 0.5)
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h, flipped
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h, flipped


def _clipped(box: tuple[float, float, float, float], canvas: tuple[int, int], width: int, height: int,
             flip: bool) -> Placement:
    """Draw ``box`` (which may reach beyond the image) over the whole canvas, keeping only what lies in the image.

    The visible part's target edges are rounded inward to whole pixels and
    its source edges recomputed from them, so the map stays exactly the same
    affine map and the source rectangle never leaves the image.
    """
    left, top, box_w, box_h = box
    out_h, out_w = canvas
    sx, sy = out_w / box_w, out_h / box_h
    x0 = min(max(math.ceil(-left * sx - 1e-9), 0), out_w)
    x1 = min(max(math.floor((width - left) * sx + 1e-9), x0), out_w)
    y0 = min(max(math.ceil(-top * sy - 1e-9), 0), out_h)
    y1 = min(max(math.floor((height - top) * sy + 1e-9), y0), out_h)
    if (x0, y0, x1, y1) == (0, 0, out_w, out_h):
        return Placement(box, (0, 0, out_w, out_h), canvas, flip, (width, height))
    source = (left + x0 / sx, top + y0 / sy, (x1 - x0) / sx, (y1 - y0) / sy)
    return Placement(source, (x0, y0, x1 - x0, y1 - y0), canvas, flip, (width, height))


def center_crop(width: int, height: int, canvas: tuple[int, int], resize: int | None, flip: bool = False) -> Placement:
    """Scale the shorter side to ``resize`` (default: the canvas's shorter side / 0.875), take the central H x W.

    The box is computed as recpack always has for squares (shorter source
    side x size / resize), so evaluation pixels do not change.  A canvas of
    another aspect than the image can reach past it: that part is padding.
    """
    out_h, out_w = canvas
    shorter = resize or round(min(out_h, out_w) / 0.875)
    side_w = min(width, height) * out_w / shorter
    side_h = min(width, height) * out_h / shorter
    return _clipped(((width - side_w) / 2, (height - side_h) / 2, side_w, side_h), canvas, width, height, flip)


def letterbox(width: int, height: int, canvas: tuple[int, int], flip: bool) -> Placement:
    """The whole image, scaled to fit the canvas with its aspect kept, centred; the bands around it are padding."""
    out_h, out_w = canvas
    scale = min(out_w / width, out_h / height)
    target_w = min(max(round(width * scale), 1), out_w)
    target_h = min(max(round(height * scale), 1), out_h)
    left, top = (out_w - target_w) // 2, (out_h - target_h) // 2
    return Placement((0.0, 0.0, float(width), float(height)), (left, top, target_w, target_h), canvas, flip,
                     (width, height))


def scale_crop(width: int, height: int, canvas: tuple[int, int], zoom: float, flip: bool,
               rng: random.Random | None) -> Placement:
    """Zoom the image by ``zoom``, then take an H x W window of it: random when training, else centred.

    Where the zoomed image is smaller than the window it is placed at the
    top left and the rest is padding (as torchvision's segmentation reference
    and mmseg pad, right and bottom), so the crop offset is 0 on that axis.
    """
    out_h, out_w = canvas
    zoomed_w, zoomed_h = max(round(width * zoom), 1), max(round(height * zoom), 1)
    spare_w, spare_h = max(zoomed_w - out_w, 0), max(zoomed_h - out_h, 0)
    if rng is None:
        x, y = spare_w // 2, spare_h // 2
    else:
        x, y = rng.randint(0, spare_w), rng.randint(0, spare_h)
    visible_w, visible_h = min(out_w, zoomed_w), min(out_h, zoomed_h)
    kx, ky = width / zoomed_w, height / zoomed_h
    source = (x * kx, y * ky, visible_w * kx, visible_h * ky)
    return Placement(source, (0, 0, visible_w, visible_h), canvas, flip, (width, height))


def whole(width: int, height: int, canvas: tuple[int, int] | None, flip: bool) -> Placement:
    """The whole image over the whole canvas (``resize``), or at its own size (``full``: canvas None)."""
    out_h, out_w = canvas if canvas is not None else (height, width)
    return Placement((0.0, 0.0, float(width), float(height)), (0, 0, out_w, out_h), (out_h, out_w), flip,
                     (width, height))


def choose_placement(width: int, height: int, mode: str, canvas: tuple[int, int] | None, *,
                     rng: random.Random | None, flip: bool = True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                     resize: int | None = None, zoom=(0.5, 2.0)) -> Placement:
    """The placement ``mode`` takes for a ``width`` x ``height`` source; ``rng`` None means evaluation (no randomness).

    Random draws come in a fixed order for a given seed: the flip first, then the mode's own.
    """
    if mode == "random_resized_crop":
        left, top, w, h, flipped = random_resized_crop(width, height, scale, ratio, flip, rng)
        return Placement((left, top, w, h), (0, 0, canvas[1], canvas[0]), canvas, flipped, (width, height))
    flipped = rng is not None and flip and bool(rng.random() < 0.5)
    if mode == "center_crop":
        return center_crop(width, height, canvas, resize, flipped)
    if mode == "resize":
        return whole(width, height, canvas, flipped)
    if mode == "full":
        return whole(width, height, None, flipped)
    if mode == "letterbox":
        return letterbox(width, height, canvas, flipped)
    if mode == "scale_crop":
        zoom_factor = rng.uniform(*zoom) if rng is not None else 1.0
        return scale_crop(width, height, canvas, zoom_factor, flipped, rng)
    raise ValueError(f"unknown geometry mode {mode!r} (one of {', '.join(MODES)})")


def decode_scale_eighths(placement: Placement, eighths_for) -> int:
    """The DCT scale (in eighths) that leaves the source rectangle at least as large as its target on both axes."""
    _, _, source_w, source_h = placement.source
    _, _, target_w, target_h = placement.target
    return max(eighths_for(source_w, target_w), eighths_for(source_h, target_h))


def place_boxes(boxes: np.ndarray, placement: Placement, min_visible: float) -> np.ndarray:
    """Boxes ``[class, xmin, ymin, xmax, ymax, extra...]`` (normalised to the source) moved onto the canvas.

    Each box goes through the placement's affine map, is clipped to the target
    rectangle (the image's pixels on the canvas: never the padding), and is
    kept only if at least ``min_visible`` of its area is left (MXNet's
    ``min_eject_coverage``; a box with no area left is always dropped).  Then
    the flip, and coordinates normalised to the canvas.  Extra columns ride along.
    """
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] < 5:
        raise ValueError(f"boxes must be rows of [class, xmin, ymin, xmax, ymax, ...], got shape {boxes.shape}")
    if not len(boxes):
        return boxes.copy()
    src_w, src_h = placement.source_size
    s_left, s_top, s_width, s_height = placement.source
    t_left, t_top, t_width, t_height = placement.target
    out_h, out_w = placement.canvas
    kx, ky = t_width / s_width, t_height / s_height
    xs = (boxes[:, [1, 3]].astype(np.float64) * src_w - s_left) * kx + t_left
    ys = (boxes[:, [2, 4]].astype(np.float64) * src_h - s_top) * ky + t_top
    area = (xs[:, 1] - xs[:, 0]) * (ys[:, 1] - ys[:, 0])
    cx = np.clip(xs, t_left, t_left + t_width)
    cy = np.clip(ys, t_top, t_top + t_height)
    kept_area = (cx[:, 1] - cx[:, 0]) * (cy[:, 1] - cy[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (kept_area > 0) & (kept_area >= min_visible * area)
    if placement.flip:
        cx = out_w - cx[:, ::-1]
    out = boxes[keep].copy()
    out[:, [1, 3]] = cx[keep] / out_w
    out[:, [2, 4]] = cy[keep] / out_h
    return out
