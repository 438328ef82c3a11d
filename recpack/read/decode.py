"""Decode one record into a uint8 RGB image, doing as little work as the output needs.

Geometry is decided first, from the JPEG header alone: the placement of
``read.geometry`` (which source rectangle lands where on the canvas, the
flip, the padding).  Then the JPEG is decoded at the smallest of the DCT
scales 1/8, 1/4, 1/2 and 1 that still leaves the source rectangle at least
as large as its target, one of two ways, both releasing the GIL so that
decode threads run on all cores:

- a source rectangle of 30% of the image or more (``_PLANES_AREA``):
  ``_libjpeg.place`` decodes the YCbCr planes and resamples them straight onto
  the canvas, converting to RGB only at the target's size;
- smaller crops: libjpeg-turbo decodes only the source rectangle's rows and
  columns to RGB (``_libjpeg.decode_region``), and pillow-simd resamples it
  onto the canvas.  The planes cannot skip rows and columns (libjpeg's raw
  data refuses it), which costs small crops more than the planes save.
Masks (PNG) get the same placement, resampled with nearest neighbour.

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
from ..jpeg._libjpeg import decode_region, place
from ..jpeg.header import read_jpeg_header
from ..jpeg.scales import dct_eighths
from .geometry import MODES, RANDOM_MODES, Placement, choose_placement, decode_scale_eighths


@dataclass(frozen=True)
class Augment:
    """How records become images: the geometry ``mode``, the output ``size`` and the randomness.

    ``size`` is an int (a square) or ``(height, width)``.  ``mode`` None is
    recpack's classic pair: ``random_resized_crop`` when ``train``, else
    ``center_crop``; the others are ``resize`` (whole image to H x W, aspect
    not kept), ``letterbox`` (aspect kept, padded with ``pad_value``),
    ``scale_crop`` (zoom by ``zoom``, then an H x W window, padded where the
    zoomed image is smaller; masks padded with ``ignore_index``) and ``full``
    (the image at its own size: per-sample mode only).  ``read.geometry``
    defines each.  ``train`` draws crops and flips at random; evaluation is
    deterministic.
    """

    size: int | tuple[int, int] = 224
    train: bool = True
    scale: tuple[float, float] = (0.08, 1.0)  # random_resized_crop: fraction of the image's area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # random_resized_crop: aspect of the crop
    flip: bool = True  # random horizontal flip when training
    resize: int | None = None  # center_crop: shorter side before the crop (default: shorter output side / 0.875)
    mode: str | None = None  # None: random_resized_crop when training, else center_crop
    zoom: tuple[float, float] = (0.5, 2.0)  # scale_crop when training: zoom of the stored image
    pad_value: int | tuple[int, int, int] = 0  # image padding (letterbox, scale_crop, a crop past the image)
    ignore_index: int = 255  # mask padding

    def __post_init__(self) -> None:
        sides = (self.size,) if isinstance(self.size, int) else tuple(self.size)
        if len(sides) not in (1, 2) or not all(isinstance(s, int) and s > 0 for s in sides):
            raise ValueError(f"Augment.size must be a positive int or (height, width), got {self.size!r}")
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"Augment.mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.geometry in RANDOM_MODES and not self.train:
            raise ValueError(f"Augment.mode {self.geometry!r} is random: it needs train=True "
                             "(evaluation: 'center_crop', 'resize', 'letterbox' or 'full')")

    @property
    def geometry(self) -> str:
        """The mode in force."""
        return self.mode or ("random_resized_crop" if self.train else "center_crop")

    @property
    def canvas(self) -> tuple[int, int] | None:
        """The output's (height, width), or None when it is each image's own size (``full``)."""
        if self.geometry == "full":
            return None
        return (self.size, self.size) if isinstance(self.size, int) else (int(self.size[0]), int(self.size[1]))

    def placement(self, width: int, height: int, rng: random.Random | None) -> Placement:
        return choose_placement(width, height, self.geometry, self.canvas, rng=rng if self.train else None,
                                flip=self.flip, scale=self.scale, ratio=self.ratio, resize=self.resize, zoom=self.zoom)


def _resample_into(out: np.ndarray, image: Image.Image, source, flip: bool, scale: float, resample,
                   origin=(0, 0)) -> None:
    """Resample the ``source`` rectangle into ``out``, flipped if asked.

    ``source`` is in full-size coordinates; ``image`` was decoded at ``scale`` and
    starts at ``origin`` of that scaled image.  The flip and the RGBX -> RGB
    packing run in Pillow's C code; numpy does one copy into ``out``.
    """
    left, top = source[0] * scale - origin[0], source[1] * scale - origin[1]
    region = (left, top, left + source[2] * scale, top + source[3] * scale)
    region = tuple(min(max(value, 0), limit) for value, limit in zip(region, image.size * 2))
    size = (out.shape[1], out.shape[0])
    if size == image.size and region == (0, 0, *image.size):
        resized = image  # full size: nothing to resample
    else:
        resized = image.resize(size, resample, box=region)
    if flip:
        resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    raw_mode = "RGB" if out.ndim == 3 else resized.mode
    out[...] = np.frombuffer(resized.tobytes("raw", raw_mode), np.uint8).reshape(out.shape)


def _draw(out: np.ndarray | None, image: Image.Image, placement: Placement, scale: float, resample, fill,
          origin=(0, 0), channels: int = 3) -> np.ndarray:
    """Draw ``image`` onto the canvas ``out`` (allocated here when None) as ``placement`` says; padding gets ``fill``."""
    height, width = placement.canvas
    if out is None:
        out = np.empty((height, width, channels) if channels > 1 else (height, width), np.uint8)
    elif out.shape[:2] != placement.canvas:
        raise ValueError(f"output buffer is {out.shape[:2]}, the placement's canvas {placement.canvas}")
    if placement.padded:
        out[...] = fill
    left, top, w, h = placement.drawn
    if w and h:
        _resample_into(out[top : top + h, left : left + w], image, placement.source, placement.flip, scale, resample,
                       origin)
    return out


# The least fraction of the image's area a source rectangle covers for ``_libjpeg.place`` to decode it: it
# decodes every row above the rectangle and every column beside it, which decode_region skips, but saves
# the full-size colour work and Pillow's RGBX resample and copy.  Measured in one process on 500 corpus
# images, alternated, CPU time against the bare decode (noisy: +-5% on a shared machine), thresholds
# 0 / 0.3 / 0.6 / 0.95 / never: random_resized_crop 1.13 / 1.15 / 1.08 / 1.06 / 1.05x, center_crop (77% of
# the area) 1.08 / 1.10 / 1.05 / 0.98 / 0.95x, scale_crop 1.20 / 1.25 / 1.25 / 1.22 / 1.20x.
_PLANES_AREA = 0.3


def _planes_pay(placement: Placement) -> bool:
    """Whether ``_libjpeg.place`` beats decode_region + Pillow for this placement: a rectangle of much of the image."""
    _, _, width, height = placement.source
    image_width, image_height = placement.source_size
    return width * height >= _PLANES_AREA * image_width * image_height


def _place(data, out: np.ndarray | None, placement: Placement, eighths: int, fill) -> np.ndarray | None:
    """The image drawn onto its canvas by ``_libjpeg.place``, or None for a JPEG it does not take (not YCbCr or grey)."""
    height, width = placement.canvas
    canvas = np.empty((height, width, 3), np.uint8) if out is None else out
    if canvas.shape[:2] != placement.canvas:
        raise ValueError(f"output buffer is {canvas.shape[:2]}, the placement's canvas {placement.canvas}")
    left, top, w, h = placement.drawn
    try:
        if not place(data, canvas[top : top + h, left : left + w], eighths, *placement.source, placement.flip):
            return None
    except ValueError as error:
        raise BadImageError(f"image does not decode ({error})") from None
    if placement.padded:  # after: a JPEG place() does not take leaves out untouched for the other path
        _pad_around(canvas, (left, top, w, h), fill)
    return canvas


def _pad_around(canvas: np.ndarray, drawn: tuple[int, int, int, int], fill) -> None:
    """Fill the canvas outside the drawn rectangle."""
    left, top, w, h = drawn
    canvas[:top] = fill
    canvas[top + h :] = fill
    canvas[top : top + h, :left] = fill
    canvas[top : top + h, left + w :] = fill


def _pil_rgb(data) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert("RGB") if image.mode != "RGB" else image
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"image does not decode ({error})") from None


def libjpeg_size(data) -> tuple[int, int] | None:
    """(width, height) of a grayscale or YCbCr/RGB JPEG, which ``_libjpeg`` decodes; None for what Pillow decodes.

    None: not a JPEG, or CMYK/YCCK.  The CRC already vouches for the whole
    record, so the header walk does not look for the end-of-image marker.
    """
    try:
        info = read_jpeg_header(data, require_end=False)
    except BadImageError:
        return None
    return (info.width, info.height) if info.components in (1, 3) else None


def decode_image(data, augment: Augment, rng: random.Random | None,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, Placement]:
    """Decode one record's image into ``out`` ((H, W, 3) uint8; allocated when None); return it and its placement.

    Decoded at the DCT scale that leaves the source rectangle at least as
    large as its target on both axes: a rectangle of much of the image in
    YCbCr planes straight onto the canvas (``_libjpeg.place``); a small one
    only its rows and columns, as RGBX so that Pillow wraps the pixels without
    a copy (Pillow keeps RGB images 4 bytes a pixel), then resampled by Pillow.
    """
    size = libjpeg_size(data)
    if size is None:
        image = _pil_rgb(data)
        placement = augment.placement(*image.size, rng)
        return _draw(out, image, placement, 1.0, Image.Resampling.BILINEAR, augment.pad_value), placement
    width, height = size
    placement = augment.placement(width, height, rng)
    eighths = decode_scale_eighths(placement, dct_eighths)
    if placement.drawn[2] and placement.drawn[3] and _planes_pay(placement) and placement.canvas != (height, width):
        placed = _place(data, out, placement, eighths, augment.pad_value)
        if placed is not None:
            return placed, placement
    scale = eighths / 8
    box_left, box_top, box_width, box_height = placement.source
    left, top = int(box_left * scale), int(box_top * scale)
    right = min(math.ceil((box_left + box_width) * scale) + 1, -(-width * eighths // 8))
    bottom = min(math.ceil((box_top + box_height) * scale) + 1, -(-height * eighths // 8))
    try:
        pixels, x, y, w, h = decode_region(data, left, top, right - left, bottom - top, eighths)
    except ValueError as error:
        raise BadImageError(f"image does not decode ({error})") from None
    if out is None and eighths == 8 and not placement.padded and placement.canvas == (height, width) == (h, w):
        return _rgbx_view(pixels, w, h, placement.flip), placement  # full size: nothing to resample
    image = Image.frombuffer("RGBX", (w, h), pixels, "raw", "RGBX", 0, 1)
    return _draw(out, image, placement, scale, Image.Resampling.BILINEAR, augment.pad_value, (x, y)), placement


def _rgbx_view(pixels: bytearray, width: int, height: int, flip: bool) -> np.ndarray:
    """The decoded RGBX pixels as an (H, W, 3) view with a 4-byte pixel stride, flipped if asked.

    Why a view: repacking RGBX into RGB costs a sixth of the decode itself
    (0.25 ms of 1.6 ms for the corpus's 470 px images), and at full size
    that is all the work there is besides the decode.  Tensors and numpy
    take the stride as it is.
    """
    if flip:
        image = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
        pixels = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes("raw", "RGBX")
    return np.frombuffer(pixels, np.uint8).reshape(height, width, 4)[:, :, :3]


def decode_full(data) -> np.ndarray:
    """The whole image at full size, as ``decode_image`` decodes it: (height, width, 4) uint8 RGBX, X unused.

    For measuring every pixel (``recpack stats``): the same decoder choice and
    pixels as training sees, without the copy into RGB a canvas would cost.
    """
    size = libjpeg_size(data)
    if size is None:
        image = _pil_rgb(data)
        return np.frombuffer(image.tobytes("raw", "RGBX"), np.uint8).reshape(image.height, image.width, 4)
    try:
        pixels, _, _, width, height = decode_region(data, 0, 0, *size, 8)
    except ValueError as error:
        raise BadImageError(f"image does not decode ({error})") from None
    return np.frombuffer(pixels, np.uint8).reshape(height, width, 4)


def load_mask(data, source_size: tuple[int, int]) -> Image.Image:
    """A record's label mask as an L or P image of its image's size (``source_size``: width, height)."""
    try:
        mask = Image.open(io.BytesIO(data))
        mask.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"mask does not decode ({error})") from None
    if mask.size != tuple(source_size):
        width, height = source_size
        raise BadImageError(f"mask is {mask.size[0]}x{mask.size[1]}, its image {width}x{height}")
    if mask.mode not in ("L", "P"):
        if np.asarray(mask).max() > 255:
            raise BadImageError("mask has values above 255, which recpack does not read yet")
        mask = mask.convert("L")
    return mask


def decode_mask(data, placement: Placement, out: np.ndarray | None = None, ignore_index: int = 255) -> np.ndarray:
    """Decode a label mask onto its image's canvas: same source rectangle, flip and padding, nearest neighbour.

    The padding gets ``ignore_index``, which losses skip (``ignore_index=255``
    in ``torch.nn.functional.cross_entropy``).
    """
    mask = load_mask(data, placement.source_size)
    return _draw(out, mask, placement, 1.0, Image.Resampling.NEAREST, ignore_index, channels=1)
