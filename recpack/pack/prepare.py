"""Turn one input file into the bytes a record stores: the packing policy for images and masks.

Decisions, in one place:

* JPEGs are stored byte-identical when they are 3-component and upright.
  ``check="decode"`` (the default) first makes sure that every block of
  their entropy-coded data parses, which finds corrupt data: a walk over the
  blocks that decodes nothing (``_jpegscan``) settles baseline files, and
  libjpeg's entropy decoder settles whatever the walk is unsure of
  (progressive files, damage).  ``check="header"`` only walks their markers
  (see ``recpack.jpeg.header``).
* Every record decodes to 3 channels in every reader.  Grayscale JPEGs get
  two flat chroma planes added in the DCT domain, losslessly: baseline ones
  by splicing their entropy-coded data, bit for bit, between all-zero chroma
  blocks (``_jpegscan``, which also parses every block), any other kind
  through libjpeg's transcoder (``_libjpeg``), which checks as it goes.
  Everything else becomes an RGB JPEG at ``quality``: PNG, BMP, WebP, GIF,
  TIFF..., and CMYK JPEGs.  The file's content decides its type, never its
  extension.
* EXIF orientation is applied at pack time: a JPEG whose orientation tag is
  not 1 is decoded, turned upright and re-encoded (without EXIF).  Readers
  disagree on whether to honour the tag (OpenCV does, PIL and libjpeg do not),
  so storing upright pixels is the only way all of them see the same image.
* Alpha is composited over white: transparent pixels become white instead of
  whatever colour happens to hide under them.
* 16-bit images are scaled to 8 bits (value / 257), not clipped.
* ``resize`` shrinks the shorter side to that many pixels (never enlarges;
  images already small enough are kept as they are), with a bilinear
  filter, re-encoding at ``quality`` as 4:2:0.  JPEGs are decoded at the
  smallest SIMD DCT scale that leaves enough pixels, and YCbCr ones are
  shrunk in their planes without a colour conversion (``_libjpeg.shrink``).
* Masks must be lossless (PNG as is; BMP/TIFF/GIF are re-saved as PNG keeping
  their mode, so palette indices survive), must match the image's size, and
  get the image's orientation and resize (nearest neighbour).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadImageError
from ..jpeg._jpegscan import gray_to_color as splice_gray_to_color
from ..jpeg._jpegscan import scan_is_clean
from ..jpeg._libjpeg import check as check_jpeg
from ..jpeg._libjpeg import decode_whole
from ..jpeg._libjpeg import encode as encode_jpeg
from ..jpeg._libjpeg import gray_to_color as gray_to_color_jpeg
from ..jpeg._libjpeg import shrink as shrink_jpeg
from ..jpeg.header import JpegInfo, is_jpeg, read_jpeg_header
from ..jpeg.scales import dct_eighths

Check = Literal["decode", "header"]


@dataclass(frozen=True)
class PrepareOptions:
    check: Check = "decode"
    resize: int | None = None  # target shorter side, or None to keep sizes
    quality: int = 95  # JPEG quality wherever an image is (re-)encoded


@dataclass(frozen=True)
class Converted:
    """One image as it will be stored."""

    stored: bytes  # the JPEG to store
    size: tuple[int, int]  # its (width, height), which a mask must end up with
    orientation: int  # the EXIF orientation that was applied (1: none)
    rewritten: bool  # whether ``stored`` differs from the input


@dataclass(frozen=True)
class Prepared:
    image: bytes
    mask: bytes = b""
    reencoded: bool = False
    source_bytes: int = 0  # size of the input files read


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


def _checked(operation, data: bytes, *args):
    """Run a ``_libjpeg`` operation that parses every scan; damaged data fails it as this input's BadImageError.

    ``check_jpeg`` is the decode check itself (the reconstruction the entropy
    decoder would feed cannot fail, so it is skipped); ``gray_to_color_jpeg``
    transcodes losslessly, ``shrink_jpeg`` and ``decode_whole`` decode, all checking on the way.
    """
    try:
        return operation(data, *args)
    except ValueError as error:
        raise BadImageError(f"does not decode cleanly ({error})") from None


def _check_decodes(data: bytes) -> None:
    """The default check of a JPEG stored as is; damaged data fails as BadImageError.

    The block walk settles clean baseline files (nearly all) at about 0.6x
    the cost of libjpeg's entropy decoder and refuses anything it is not sure
    of; libjpeg then decides, and names the damage.
    """
    if not scan_is_clean(data):
        _checked(check_jpeg, data)


def _gray_to_color(data: bytes) -> bytes:
    """A grey JPEG as a colour one, losslessly; damaged data fails as BadImageError.

    The splice handles baseline files (nearly all) at the cost of one walk
    over their blocks and refuses anything it is not sure of, damage
    included; libjpeg's transcoder, twice as slow, then decides.
    """
    spliced = splice_gray_to_color(data)
    return spliced if spliced is not None else _checked(gray_to_color_jpeg, data)


def _open_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:  # its message names a BytesIO object by address
        raise BadImageError("not a decodable image (no known image format)") from None
    except Image.DecompressionBombError as error:  # memory stays bounded: refuse rather than decode
        raise BadImageError(f"too large to convert ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
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
    """JPEG-encode an RGB or RGBX image (4:2:0), handing libjpeg-turbo Pillow's own pixel layout."""
    return encode_jpeg(image.tobytes(), image.width, image.height, 4 if image.mode == "RGBX" else 3, quality)


def _shrink_jpeg(data: bytes, info: JpegInfo, shorter: int, quality: int) -> Converted:
    """Decode a 3-component JPEG at the cheapest DCT scale that still leaves ``shorter`` pixels, shrink, re-encode.

    YCbCr JPEGs (nearly all) never leave their planes (``_libjpeg.shrink``);
    the rest go through RGBX pixels, which Pillow wraps without a copy and
    hands back to the encoder in its own layout.
    """
    eighths = dct_eighths(min(info.width, info.height), shorter)
    scaled = (-(-info.width * eighths // 8), -(-info.height * eighths // 8))  # libjpeg's scaled size
    if scaled[0] * scaled[1] > 2 * Image.MAX_IMAGE_PIXELS:  # what Pillow refuses of other formats: memory stays bounded
        raise BadImageError(f"too large to convert ({scaled[0]}x{scaled[1]} pixels to decode, "
                            f"over {2 * Image.MAX_IMAGE_PIXELS:,})")
    size = _shrunk_size(*scaled, shorter)
    stored = _checked(shrink_jpeg, data, eighths, *size, quality)
    if stored is None:
        pixels, width, height = _checked(decode_whole, data, eighths)
        image = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
        stored = _encode(image.resize(size, Image.Resampling.BILINEAR), quality)
    return Converted(stored, size, 1, rewritten=True)


def _upright_and_small(info: JpegInfo, options: PrepareOptions) -> bool:
    return info.orientation == 1 and not _needs_resize(info.width, info.height, options.resize)


def stored_as_is(data: bytes | memoryview, options: PrepareOptions) -> bool:
    """Whether ``prepare_image`` would store ``data`` unchanged after a header check alone.

    The packer then writes the bytes from where they already are.  A damaged
    file is False too: the ordinary path reads it again and says what is wrong.
    """
    if options.check != "header" or not is_jpeg(data):
        return False
    try:
        info = read_jpeg_header(data)
    except BadImageError:
        return False
    return info.components == 3 and _upright_and_small(info, options)


def prepare_image(data: bytes, options: PrepareOptions) -> Converted:
    """Check one input and return the JPEG bytes to store, and what happened to get them."""
    if is_jpeg(data):
        info = read_jpeg_header(data)
        upright_and_small = _upright_and_small(info, options)
        if info.components == 3 and upright_and_small:
            if options.check == "decode":
                _check_decodes(data)
            return Converted(data, (info.width, info.height), 1, rewritten=False)
        if info.components == 1 and upright_and_small:
            return Converted(_gray_to_color(data), (info.width, info.height), 1, rewritten=True)
        if info.components == 3 and info.orientation == 1:
            return _shrink_jpeg(data, info, options.resize, options.quality)
        orientation = info.orientation
    else:
        orientation = 1
    image = _open_image(data)
    orientation = image.getexif().get(0x0112, orientation) if orientation == 1 else orientation
    image = _to_8bit_rgb(ImageOps.exif_transpose(image))
    if _needs_resize(*image.size, options.resize):
        image = image.resize(_shrunk_size(*image.size, options.resize), Image.Resampling.BILINEAR)
    return Converted(_encode(image, options.quality), image.size, orientation, rewritten=True)


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


@dataclass(frozen=True)
class Inputs:
    """One source item's files, read (possibly ahead of time); a file that could not be read holds its error."""

    image: bytes | BadImageError
    mask: bytes | BadImageError | None = None


def read_inputs(image_path: str, mask_path: str | None) -> Inputs:
    return Inputs(_read_or_error(image_path), None if mask_path is None else _read_or_error(mask_path))


def _read_or_error(path: str) -> bytes | BadImageError:
    try:
        return read_file(path)
    except BadImageError as error:
        return error


def prepare(image_path: str, mask_path: str | None, options: PrepareOptions, inputs: Inputs | None = None) -> Prepared:
    """Check and convert one source item, from ``inputs`` if already read.  Raises BadImageError with the reason."""
    inputs = inputs or read_inputs(image_path, mask_path)
    if isinstance(inputs.image, BadImageError):
        raise inputs.image
    data = inputs.image
    converted = prepare_image(data, options)
    if mask_path is None:
        return Prepared(converted.stored, b"", converted.rewritten, len(data))
    if isinstance(inputs.mask, BadImageError):
        raise BadImageError(f"mask {mask_path}: {inputs.mask.reason}")
    mask_data = inputs.mask
    try:
        mask = prepare_mask(mask_data, converted.orientation, _raw_size(data), converted.size)
    except BadImageError as error:
        raise BadImageError(f"mask {mask_path}: {error.reason}") from None
    return Prepared(converted.stored, mask, converted.rewritten, len(data) + len(mask_data))


def _raw_size(data: bytes) -> tuple[int, int]:
    """Width and height as stored in the file, before any orientation is applied."""
    if is_jpeg(data):
        info = read_jpeg_header(data)
        return info.width, info.height
    with Image.open(io.BytesIO(data)) as image:
        return image.size
