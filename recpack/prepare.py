"""Turn one input file into the bytes a record stores: the packing policy for images and masks.

Decisions, in one place:

* JPEGs are stored byte-identical when they are 3-component and upright.
  ``check="decode"`` (the default) first decodes them at 1/8 scale, which
  runs the whole entropy decoder and so finds corrupt data; ``check="header"``
  only walks their markers (see ``jpeg_header``).
* Everything else becomes an RGB JPEG at ``quality``: PNG, BMP, WebP, GIF,
  TIFF..., and also grayscale and CMYK JPEGs, so that every record decodes to
  3 channels in every reader.  The file's content decides its type, never its
  extension.
* EXIF orientation is applied at pack time: a JPEG whose orientation tag is
  not 1 is decoded, turned upright and re-encoded (without EXIF).  Readers
  disagree on whether to honour the tag (OpenCV does, PIL and libjpeg do not),
  so storing upright pixels is the only way all of them see the same image.
* Alpha is composited over white: transparent pixels become white instead of
  whatever colour happens to hide under them.
* 16-bit images are scaled to 8 bits (value / 257), not clipped.
* ``resize`` shrinks the shorter side to that many pixels (never enlarges;
  images already small enough are kept as they are).
* Masks must be lossless (PNG as is; BMP/TIFF/GIF are re-saved as PNG keeping
  their mode, so palette indices survive), must match the image's size, and
  get the image's orientation and resize (nearest neighbour).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from turbojpeg import TJPF_GRAY, TJPF_RGB, TJSAMP_420, TurboJPEG

from .errors import BadImageError
from ._jpegcrop import check as check_jpeg
from .jpeg_header import JpegInfo, is_jpeg, read_jpeg_header

Check = Literal["decode", "header"]
CHECKS: tuple[Check, ...] = ("decode", "header")


@dataclass(frozen=True)
class PrepareOptions:
    check: Check = "decode"
    resize: int | None = None  # target shorter side, or None to keep sizes
    quality: int = 95  # JPEG quality wherever an image is (re-)encoded


@dataclass(frozen=True)
class Prepared:
    image: bytes
    mask: bytes = b""
    reencoded: bool = False
    source_bytes: int = 0  # size of the input files read


@lru_cache(maxsize=None)
def turbojpeg() -> TurboJPEG:
    """One TurboJPEG binding per process (loading the library costs milliseconds)."""
    return TurboJPEG()


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except IsADirectoryError:
        raise BadImageError("is a directory") from None
    except FileNotFoundError:
        raise BadImageError("no such file") from None
    except OSError as error:
        raise BadImageError(f"unreadable ({error.strerror})") from None
    if not data:
        raise BadImageError("empty file")
    return data


def _tj_decode(data: bytes, pixel_format: int, scaling_factor: tuple[int, int] | None = None) -> np.ndarray:
    """libjpeg-turbo decode that fails on damaged data.

    libjpeg reports damaged entropy data as *warnings* and still returns an
    image with grey blocks, so warnings count as failures here -- except the
    harmless "extraneous bytes before marker", common in real camera files.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pixels = turbojpeg().decode(data, pixel_format=pixel_format, scaling_factor=scaling_factor)
        except OSError as error:
            raise BadImageError(f"does not decode ({error})") from None
    for warning in caught:
        message = str(warning.message)
        if "extraneous bytes before marker" not in message:
            raise BadImageError(f"does not decode cleanly ({message})")
    return pixels


def _decode_check(data: bytes) -> None:
    """Run the whole entropy decoder; the reconstruction it would feed cannot fail, so it is skipped."""
    try:
        check_jpeg(data)
    except ValueError as error:
        raise BadImageError(f"does not decode cleanly ({error})") from None


def _gray_to_color_jpeg(data: bytes, quality: int) -> tuple[Image.Image, bytes]:
    """A grayscale JPEG re-encoded as a 3-component one, without any colour conversion.

    The gray image becomes the luma plane and both chroma planes are flat
    (128), which is exactly what converting it to RGB and encoding that gives,
    for about half the work.  Decoding it is also the decode check.
    """
    gray = _tj_decode(data, TJPF_GRAY)[:, :, 0]
    height, width = gray.shape
    padded = lambda n: (n + 3) & ~3  # noqa: E731  (PyTurboJPEG pads YUV rows to 4 bytes)
    luma = padded(width) * height
    chroma = padded(-(-width // 2)) * -(-height // 2)
    yuv = np.full(luma + 2 * chroma, 128, np.uint8)
    yuv[:luma].reshape(height, padded(width))[:, :width] = gray
    jpeg = turbojpeg().encode_from_yuv(yuv, height, width, quality=quality, jpeg_subsample=TJSAMP_420)
    return Image.fromarray(gray, "L"), jpeg


def _open_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"not a decodable image ({error})") from None
    return image


def _to_8bit_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        scaled = (np.asarray(image, dtype=np.float32) / 257.0).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _shrunk_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    scale = shorter / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _needs_resize(width: int, height: int, resize: int | None) -> bool:
    return resize is not None and min(width, height) > resize


def _encode(image: Image.Image, quality: int) -> bytes:
    pixels = np.ascontiguousarray(np.asarray(image))
    return turbojpeg().encode(pixels, quality=quality, pixel_format=TJPF_RGB, jpeg_subsample=TJSAMP_420)


def _decode_jpeg_for_resize(data: bytes, info: JpegInfo, shorter: int) -> Image.Image:
    """Decode a 3-component JPEG at the smallest DCT scale M/8 that still leaves ``shorter`` pixels."""
    side = min(info.width, info.height)
    eighths = next((m for m in range(1, 8) if -(-side * m // 8) >= shorter), 8)
    divisor = math.gcd(eighths, 8)
    return Image.fromarray(_tj_decode(data, TJPF_RGB, (eighths // divisor, 8 // divisor)), "RGB")


def prepare_image(data: bytes, options: PrepareOptions) -> tuple[Image.Image | None, bytes, int]:
    """Check one input and return (decoded RGB image or None, stored JPEG bytes, orientation applied).

    The decoded image is returned only when it was needed anyway (re-encoding),
    so that a mask can follow the same geometry.
    """
    if is_jpeg(data):
        info = read_jpeg_header(data)
        keep = info.components == 3 and info.orientation == 1
        if keep and not _needs_resize(info.width, info.height, options.resize):
            if options.check == "decode":
                _decode_check(data)
            return None, data, 1
        if keep:
            image = _decode_jpeg_for_resize(data, info, options.resize)
            image = image.resize(_shrunk_size(*image.size, options.resize), Image.Resampling.BILINEAR)
            return image, _encode(image, options.quality), 1
        if info.components == 1 and info.orientation == 1 and not _needs_resize(info.width, info.height, options.resize):
            gray, jpeg = _gray_to_color_jpeg(data, options.quality)
            return gray, jpeg, 1
        orientation = info.orientation
    else:
        orientation = 1
    image = _open_image(data)
    orientation = image.getexif().get(0x0112, orientation) if orientation == 1 else orientation
    image = _to_8bit_rgb(ImageOps.exif_transpose(image))
    if _needs_resize(*image.size, options.resize):
        image = image.resize(_shrunk_size(*image.size, options.resize), Image.Resampling.BILINEAR)
    return image, _encode(image, options.quality), orientation


_LOSSLESS_MASK_FORMATS = frozenset({"PNG", "BMP", "TIFF", "GIF", "PPM"})
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def prepare_mask(data: bytes, orientation: int, raw_size: tuple[int, int], final_size: tuple[int, int]) -> bytes:
    """Validate a label mask against its image and return the PNG bytes to store."""
    mask = _open_image(data)
    if mask.format not in _LOSSLESS_MASK_FORMATS:
        raise BadImageError(f"mask is {mask.format}, not a lossless format such as PNG")
    if mask.size != raw_size:
        raise BadImageError(f"mask is {mask.size[0]}x{mask.size[1]} but its image is {raw_size[0]}x{raw_size[1]}")
    changed = mask.format != "PNG"
    if orientation in _TRANSPOSE_FOR_ORIENTATION:
        mask, changed = mask.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation]), True
    if mask.size != final_size:
        mask, changed = mask.resize(final_size, Image.Resampling.NEAREST), True
    if not changed:
        return data
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def prepare(image_path: str, mask_path: str | None, options: PrepareOptions) -> Prepared:
    """Read, check and convert one source item.  Raises BadImageError with the reason."""
    data = read_file(image_path)
    decoded, stored, orientation = prepare_image(data, options)
    if mask_path is None:
        return Prepared(stored, b"", decoded is not None, len(data))
    try:
        mask_data = read_file(mask_path)
    except BadImageError as error:
        raise BadImageError(f"mask {mask_path}: {error.reason}") from None
    raw_size = _raw_size(data)
    final_size = decoded.size if decoded is not None else raw_size
    try:
        mask = prepare_mask(mask_data, orientation, raw_size, final_size)
    except BadImageError as error:
        raise BadImageError(f"mask {mask_path}: {error.reason}") from None
    return Prepared(stored, mask, decoded is not None, len(data) + len(mask_data))


def _raw_size(data: bytes) -> tuple[int, int]:
    """Width and height as stored in the file, before any orientation is applied."""
    if is_jpeg(data):
        info = read_jpeg_header(data)
        return info.width, info.height
    with Image.open(io.BytesIO(data)) as image:
        return image.size
