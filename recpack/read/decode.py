"""Decode one record into a fixed-size uint8 RGB image, doing as little work as the output needs.

Geometry is decided first, from the JPEG header alone: the crop box (random
resized crop for training, shorter-side resize + centre crop for evaluation)
and the flip.  Then libjpeg-turbo decodes only the crop's rows and columns
(``_libjpeg``), at the smallest of the DCT scales 1/8, 1/4, 1/2 and 1 that
still leaves the crop at least as large as the output, and pillow-simd
resamples the crop into the output.  Both release the GIL, so decode threads
run on all cores.
Masks (PNG) get the same box and flip, resampled with nearest neighbour.

Sources that are not YCbCr or grayscale JPEGs (CMYK JPEGs, PNGs -- possible in
imported MXNet ``.rec`` files) go through Pillow and come out RGB.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import BadImageError
from ..jpeg._libjpeg import decode_region
from ..jpeg.header import read_jpeg_header
from ..jpeg.scales import dct_eighths


@dataclass(frozen=True)
class Augment:
    """How records become images.  ``train`` picks random crops and flips; otherwise a centre crop."""

    size: int = 224
    train: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True  # random horizontal flip when training
    resize: int | None = None  # evaluation: shorter side before the centre crop (default size / 0.875)


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    width: float
    height: float
    flip: bool


def random_resized_crop(width: int, height: int, augment: Augment, rng: random.Random) -> Box:
    """Sample the crop as torchvision's RandomResizedCrop does: 10 tries, then a centre crop."""
    area = width * height
    log_ratio = (math.log(augment.ratio[0]), math.log(augment.ratio[1]))
    flip = augment.flip and bool(rng.random() < 0.5)
    for _ in range(10):
        target_area = area * rng.uniform(*augment.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return Box(rng.randint(0, width - w), rng.randint(0, height - h), w, h, flip)
    in_ratio = width / height
    if in_ratio < augment.ratio[0]:
        w, h = width, round(width / augment.ratio[0])
    elif in_ratio > augment.ratio[1]:
        w, h = round(height * augment.ratio[1]), height
    else:
        w, h = width, height
    return Box((width - w) // 2, (height - h) // 2, w, h, flip)


def center_crop(width: int, height: int, augment: Augment) -> Box:
    """Resize the shorter side to ``resize`` then take the central size x size square, as one box."""
    shorter = augment.resize or round(augment.size / 0.875)
    side = min(width, height) * augment.size / shorter
    return Box((width - side) / 2, (height - side) / 2, side, side, False)


def choose_box(width: int, height: int, augment: Augment, rng: random.Random | None) -> Box:
    if augment.train:
        return random_resized_crop(width, height, augment, rng)
    return center_crop(width, height, augment)


def _resample_into(out: np.ndarray, image: Image.Image, box: Box, scale: int, resample, origin=(0, 0)) -> None:
    """Resample ``box`` into ``out``, flipped if asked.

    ``box`` is in full-size coordinates; ``image`` was decoded at ``scale`` and
    starts at ``origin`` of that scaled image.  The flip and the RGBX -> RGB
    packing run in Pillow's C code; numpy does one contiguous copy into the slot.
    """
    left, top = box.left * scale - origin[0], box.top * scale - origin[1]
    region = (left, top, left + box.width * scale, top + box.height * scale)
    region = tuple(min(max(value, 0), limit) for value, limit in zip(region, image.size * 2))
    resized = image.resize((out.shape[1], out.shape[0]), resample, box=region)
    if box.flip:
        resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    raw_mode = "RGB" if out.ndim == 3 else resized.mode
    out[...] = np.frombuffer(resized.tobytes("raw", raw_mode), np.uint8).reshape(out.shape)


def _pil_rgb(data) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert("RGB") if image.mode != "RGB" else image
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"image does not decode ({error})") from None


def decode_image(data, augment: Augment, rng: random.Random | None, out: np.ndarray) -> tuple[Box, tuple[int, int]]:
    """Decode one record's image into ``out`` ((size, size, 3) uint8); return the box and source size for its mask.

    Only the crop's rows and columns are decoded (``_libjpeg``), at the DCT
    scale chosen from the box, as RGBX so that Pillow wraps the pixels
    without a copy (Pillow keeps RGB images 4 bytes a pixel).
    """
    try:
        info = read_jpeg_header(data, require_end=False)  # the CRC already vouches for the whole record
        width, height, components = info.width, info.height, info.components
    except BadImageError:
        components = None
    if components not in (1, 3):  # not a JPEG, or CMYK/YCCK: Pillow decodes and converts
        image = _pil_rgb(data)
        box = choose_box(*image.size, augment, rng)
        _resample_into(out, image, box, 1.0, Image.Resampling.BILINEAR)
        return box, image.size
    box = choose_box(width, height, augment, rng)
    eighths = dct_eighths(min(box.width, box.height), augment.size)
    scale = eighths / 8
    left, top = int(box.left * scale), int(box.top * scale)
    right = min(math.ceil((box.left + box.width) * scale) + 1, -(-width * eighths // 8))
    bottom = min(math.ceil((box.top + box.height) * scale) + 1, -(-height * eighths // 8))
    try:
        pixels, x, y, w, h = decode_region(data, left, top, right - left, bottom - top, eighths)
    except ValueError as error:
        raise BadImageError(f"image does not decode ({error})") from None
    image = Image.frombuffer("RGBX", (w, h), pixels, "raw", "RGBX", 0, 1)
    _resample_into(out, image, box, scale, Image.Resampling.BILINEAR, origin=(x, y))
    return box, (width, height)


def decode_mask(data, box: Box, source_size: tuple[int, int], out: np.ndarray) -> None:
    """Decode a label mask into ``out`` ((size, size) uint8), cut and resized like its image, nearest neighbour."""
    try:
        mask = Image.open(io.BytesIO(data))
        mask.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"mask does not decode ({error})") from None
    if mask.size != source_size:
        raise BadImageError(f"mask is {mask.size[0]}x{mask.size[1]}, its image {source_size[0]}x{source_size[1]}")
    if mask.mode not in ("L", "P"):
        if np.asarray(mask).max() > 255:
            raise BadImageError("mask has values above 255, which recpack does not read yet")
        mask = mask.convert("L")
    _resample_into(out, mask, box, 1.0, Image.Resampling.NEAREST)
