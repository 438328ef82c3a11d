"""Image, mask and boxes stay aligned through every geometry mode, decoded for real.

The images are grids of flat palette colours; each mask is derived from its
image's decoded pixels (the nearest palette colour), so a mask pixel names the
colour its image shows there.  For every mode, in training (several seeds) and
in evaluation, three checks:

- the mask is exactly the nearest-neighbour sample the placement prescribes,
  computed here with numpy (padding = ignore_index);
- the image matches a reference drawn from a full-size Pillow decode with the
  same placement (a one-pixel shift on these hard edges costs far more than
  the tolerance), and its padding is exactly the pad value;
- wherever the mask is flat around a pixel, the image's colour there is the
  mask's class.

Boxes: box-shaped masks go through the same placement as their boxes, and
each kept box must bound its mask pixels within a pixel.
"""

import io
import random

import numpy as np
import pytest
from PIL import Image

from recpack.read.decode import Augment, decode_image, decode_mask
from recpack.read.geometry import place_boxes

PALETTE = np.array([[230, 30, 30], [30, 200, 40], [40, 60, 230], [240, 230, 40],
                    [30, 220, 220], [220, 40, 220], [245, 245, 245], [20, 20, 20]], np.int32)
IGNORE = 255
PAD = (7, 8, 9)

CASES = [  # (mode, size, extra Augment options)
    ("random_resized_crop", (96, 128), {}),
    ("center_crop", (96, 96), {}),
    ("center_crop", (64, 160), {}),  # wider than the scaled image: padded left and right
    ("resize", (100, 150), {}),
    ("letterbox", (128, 128), {}),
    ("letterbox", (90, 200), {}),
    ("scale_crop", (128, 160), {"zoom": (0.3, 1.5)}),  # small zooms pad right and bottom
    ("full", 1, {}),
]


def nearest_class(pixels: np.ndarray) -> np.ndarray:
    distances = ((pixels[..., None, :].astype(np.int32) - PALETTE) ** 2).sum(-1)
    return distances.argmin(-1).astype(np.uint8)


def cell_scene(width: int, height: int, cell: int, seed: int) -> tuple[bytes, bytes]:
    """(JPEG, PNG mask derived from the JPEG's decoded pixels) of a grid of flat palette cells."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(PALETTE), (-(-height // cell), -(-width // cell)))
    pixels = PALETTE[classes.repeat(cell, 0).repeat(cell, 1)[:height, :width]].astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=95, subsampling=0)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg.getvalue())).convert("RGB"))
    mask = io.BytesIO()
    Image.fromarray(nearest_class(decoded)).save(mask, format="PNG")
    return jpeg.getvalue(), mask.getvalue()


def expected_mask(source_mask: np.ndarray, placement) -> tuple[np.ndarray, np.ndarray]:
    """(mask, trusted) by the placement's own map: output pixel centres sampled from the source, nearest neighbour.

    ``trusted`` is False where a sample falls within 1e-3 of a source pixel
    edge, where Pillow's fixed-point arithmetic may round the other way.
    """
    height, width = placement.canvas
    out = np.full((height, width), IGNORE, np.uint8)
    trusted = np.ones((height, width), bool)
    left, top, w, h = placement.target
    s_left, s_top, s_w, s_h = placement.source
    u = s_left + (np.arange(w) + 0.5) * s_w / w
    v = s_top + (np.arange(h) + 0.5) * s_h / h
    cols = np.clip(np.floor(u).astype(int), 0, source_mask.shape[1] - 1)
    rows = np.clip(np.floor(v).astype(int), 0, source_mask.shape[0] - 1)
    near = lambda x: np.abs(x - np.round(x)) < 1e-3  # noqa: E731
    out[top : top + h, left : left + w] = source_mask[rows[:, None], cols[None, :]]
    trusted[top : top + h, left : left + w] = ~(near(v)[:, None] | near(u)[None, :])
    if placement.flip:
        out, trusted = out[:, ::-1], trusted[:, ::-1]
    return out, trusted


def reference_image(jpeg: bytes, placement) -> np.ndarray:
    """The placement drawn from a full-size Pillow decode: what recpack's cropped, DCT-scaled decode must match."""
    full = Image.open(io.BytesIO(jpeg)).convert("RGB")
    height, width = placement.canvas
    out = np.empty((height, width, 3), np.uint8)
    out[...] = PAD
    left, top, w, h = placement.target
    s_left, s_top, s_w, s_h = placement.source
    drawn = full.resize((w, h), Image.Resampling.BILINEAR, box=(s_left, s_top, s_left + s_w, s_top + s_h))
    out[top : top + h, left : left + w] = np.asarray(drawn)
    return out[:, ::-1] if placement.flip else out


def flat_neighbourhood(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds one class (and no padding)."""
    padded = np.pad(mask, 1, mode="edge")
    flat = np.ones(mask.shape, bool)
    for dy in range(3):
        for dx in range(3):
            flat &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] == mask
    return flat & (mask != IGNORE)


@pytest.fixture(scope="module")
def scene():
    jpeg, mask = cell_scene(320, 240, 24, seed=5)
    return jpeg, mask, np.asarray(Image.open(io.BytesIO(mask)))


@pytest.mark.parametrize("mode, size, options", CASES, ids=[f"{m}-{s}" for m, s, _ in CASES])
def test_image_and_mask_follow_the_placement_exactly(scene, mode, size, options):
    jpeg, mask_png, source_mask = scene
    runs = [(True, seed) for seed in range(6)] + ([] if mode == "random_resized_crop" else [(False, None)])
    flips = 0
    for train, seed in runs:
        augment = Augment(size=size, mode=mode, train=train, pad_value=PAD, ignore_index=IGNORE, **options)
        image, placement = decode_image(jpeg, augment, random.Random(seed) if train else None)
        mask = decode_mask(mask_png, placement, None, IGNORE)
        flips += placement.flip
        assert image.shape[:2] == mask.shape == placement.canvas

        wanted, trusted = expected_mask(source_mask, placement)
        assert (mask[trusted] == wanted[trusted]).all(), f"mask off its placement ({mode}, seed {seed})"

        pad = mask == IGNORE
        assert (image[pad] == PAD).all() and pad.sum() == placement.canvas[0] * placement.canvas[1] - \
            placement.target[2] * placement.target[3]
        reference = reference_image(jpeg, placement).astype(int)
        difference = np.abs(image.astype(int) - reference)[~pad]
        assert difference.mean() < 4, f"image off its placement ({mode}, seed {seed}): {difference.mean():.1f}"

        flat = flat_neighbourhood(mask)
        assert flat.sum() > 0.3 * (~pad).sum()
        assert (nearest_class(image)[flat] == mask[flat]).all(), f"image and mask disagree ({mode}, seed {seed})"
    if mode != "center_crop":
        assert flips, "no training run flipped: the flip went untested"


def box_scene(width: int, height: int, seed: int) -> tuple[bytes, bytes, np.ndarray]:
    """(JPEG, PNG mask with box i's pixels = i + 1, boxes [class, xmin, ymin, xmax, ymax] normalised)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    boxes = []
    for index in range(12):  # disjoint boxes, each on its own band of columns
        x0 = index * width // 12 + int(rng.integers(0, 4))
        x1 = (index + 1) * width // 12 - int(rng.integers(1, 4))
        y0 = int(rng.integers(0, height - 20))
        y1 = int(rng.integers(y0 + 10, height + 1))
        mask[y0:y1, x0:x1] = index + 1
        boxes.append([index, x0 / width, y0 / height, x1 / width, y1 / height])
    pixels = PALETTE[mask % len(PALETTE)].astype(np.uint8)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=90)
    Image.fromarray(mask).save(png, format="PNG")
    return jpeg.getvalue(), png.getvalue(), np.array(boxes, np.float32)


@pytest.mark.parametrize("mode, size, options", CASES, ids=[f"{m}-{s}" for m, s, _ in CASES])
def test_boxes_bound_their_own_mask_pixels_after_every_mode(mode, size, options):
    jpeg, mask_png, boxes = box_scene(360, 200, seed=2)
    runs = [(True, seed) for seed in range(8)] + ([] if mode == "random_resized_crop" else [(False, None)])
    for train, seed in runs:
        augment = Augment(size=size, mode=mode, train=train, ignore_index=IGNORE, **options)
        _, placement = decode_image(jpeg, augment, random.Random(seed) if train else None)
        mask = decode_mask(mask_png, placement, None, IGNORE)
        kept = place_boxes(boxes, placement, 0.3)
        height, width = placement.canvas
        for row in kept:
            ys, xs = np.nonzero(mask == int(row[0]) + 1)
            assert len(xs), f"box {row[0]:g} kept but none of its pixels are visible ({mode}, seed {seed})"
            bounds = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / [width, height, width, height]
            assert np.abs(bounds - row[1:5]).max() <= 1.01 / min(width, height), (mode, seed, row, bounds)
        dropped = set(range(len(boxes))) - {int(c) for c in kept[:, 0]}
        for index in dropped:  # dropped ones show little or nothing of themselves
            visible = (mask == index + 1).sum()
            x0, y0, x1, y1 = boxes[index, 1:5]
            scale = (placement.target[2] / placement.source[2]) * (placement.target[3] / placement.source[3])
            whole = (x1 - x0) * 360 * (y1 - y0) * 200 * scale
            assert visible <= 0.3 * whole + 2 * (width + height), (mode, seed, index, visible, whole)
